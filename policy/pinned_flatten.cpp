// policy/pinned_flatten.cpp: see pinned_flatten.h for the rule.
#include "policy/pinned_flatten.h"

#include <algorithm>

namespace cachemgr::policy {

uint64_t FlattenWork(const PinnedEntry& entry, const PinnedClone& clone) {
  const uint64_t overlap = std::min(clone.size, entry.virtual_size);
  return overlap > clone.own_bytes ? overlap - clone.own_bytes : 0;
}

namespace {

uint64_t EntryWork(const PinnedEntry& e) {
  uint64_t work = 0;
  for (const auto& c : e.clones) work += FlattenWork(e, c);
  return work;
}

// a before b when a frees more per byte copied: a.bytes / a.work > b.bytes / b.work,
// compared as cross products (no division: a clone that rewrote everything costs 0).
bool RanksBefore(const PinnedEntry& a, uint64_t work_a, const PinnedEntry& b, uint64_t work_b) {
  const long double lhs = static_cast<long double>(a.bytes) * static_cast<long double>(work_b);
  const long double rhs = static_cast<long double>(b.bytes) * static_cast<long double>(work_a);
  if (lhs != rhs) return lhs > rhs;
  if (a.bytes != b.bytes) return a.bytes > b.bytes;
  return a.entry_id < b.entry_id;
}

}  // namespace

std::vector<FlattenStep> PlanPinnedFlatten(std::vector<PinnedEntry> entries, size_t max_clones) {
  std::erase_if(entries, [](const PinnedEntry& e) { return e.clones.empty(); });
  struct Ranked {
    PinnedEntry entry;
    uint64_t work;
  };
  std::vector<Ranked> ranked;
  ranked.reserve(entries.size());
  for (auto& e : entries) {
    const uint64_t work = EntryWork(e);
    std::sort(e.clones.begin(), e.clones.end(), [&](const PinnedClone& a, const PinnedClone& b) {
      const uint64_t wa = FlattenWork(e, a), wb = FlattenWork(e, b);
      return wa != wb ? wa < wb : a.volume_id < b.volume_id;
    });
    ranked.push_back({std::move(e), work});
  }
  std::sort(ranked.begin(), ranked.end(), [](const Ranked& a, const Ranked& b) {
    return RanksBefore(a.entry, a.work, b.entry, b.work);
  });

  std::vector<FlattenStep> plan;
  std::vector<bool> taken(ranked.size(), false);
  for (size_t i = 0; i < ranked.size(); ++i) {
    const auto& e = ranked[i].entry;
    if (e.clones.size() > max_clones - plan.size()) continue;
    for (size_t k = 0; k < e.clones.size(); ++k) {
      plan.push_back({e.entry_id, e.clones[k].volume_id, k + 1 == e.clones.size()});
    }
    taken[i] = true;
  }
  // What is left starts the best entry that did not fit: it is freed over later passes.
  for (size_t i = 0; i < ranked.size() && plan.size() < max_clones; ++i) {
    if (taken[i]) continue;
    for (const auto& c : ranked[i].entry.clones) {
      if (plan.size() == max_clones) break;
      plan.push_back({ranked[i].entry.entry_id, c.volume_id, false});
    }
    taken[i] = true;
  }
  return plan;
}

}  // namespace cachemgr::policy

// engine/reuse.cpp: every access of an entry recorded with its LRU reuse distance
// (policy/reuse_distance.h does the arithmetic, the index keeps the state), and the
// what-if of other cache sizes that `stats --what-if` prints.
#include <algorithm>
#include <cmath>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "cachemgr/error.h"
#include "engine/cache_impl.h"
#include "index/index.h"
#include "policy/reuse_distance.h"

namespace cachemgr::engine {
namespace {

constexpr const char* kUnitEntries = "entries";
constexpr const char* kUnitBytes = "bytes";
constexpr const char* kUnitOutcome = "outcome";
constexpr int64_t kColdBucket = -1;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// The tracker's state in the index's tables (schema/009).
class IndexReuseStore final : public policy::ReuseStore {
 public:
  explicit IndexReuseStore(index::Index& ix) : ix_(ix), head_(ix.GetReuseHead()) {}
  uint64_t Capacity() override { return head_.capacity; }
  uint64_t LastSeq() override { return head_.last_seq; }
  void SetHead(uint64_t capacity, uint64_t last_seq) override {
    head_ = {capacity, last_seq};
    ix_.SetReuseHead(head_);
  }
  std::optional<policy::ReuseMark> Last(const std::string& key) override {
    auto row = ix_.GetReuseLast(key);
    if (!row) return std::nullopt;
    return policy::ReuseMark{row->seq, row->bytes};
  }
  void SetLast(const std::string& key, const policy::ReuseMark& mark) override {
    ix_.SetReuseLast({key, mark.seq, mark.bytes});
  }
  policy::FenwickCell Cell(uint64_t pos) override {
    const auto c = ix_.GetReuseCell(pos);
    return {c.count, c.bytes};
  }
  void AddCell(uint64_t pos, const policy::FenwickCell& delta) override {
    ix_.AddReuseCell({pos, delta.count, delta.bytes});
  }
  std::vector<std::pair<std::string, policy::ReuseMark>> MarksBySeq() override {
    std::vector<std::pair<std::string, policy::ReuseMark>> out;
    for (auto& row : ix_.ListReuseLastBySeq()) {
      out.emplace_back(std::move(row.image_id), policy::ReuseMark{row.seq, row.bytes});
    }
    return out;
  }
  void Replace(const std::vector<std::pair<std::string, policy::ReuseMark>>& marks,
               const std::vector<policy::FenwickCell>& tree) override {
    std::vector<index::ReuseLastRow> rows;
    rows.reserve(marks.size());
    for (const auto& [key, mark] : marks) rows.push_back({key, mark.seq, mark.bytes});
    std::vector<index::ReuseCellRow> cells;
    for (uint64_t i = 1; i < tree.size(); ++i) cells.push_back({i, tree[i].count, tree[i].bytes});
    ix_.ReplaceReuse(rows, cells);
  }

 private:
  index::Index& ix_;
  index::ReuseHeadRow head_;
};

struct Histograms {
  policy::ReuseHistogram entries, bytes;
  uint64_t hits = 0;
};

Histograms ReadHistograms(index::Index& ix) {
  Histograms h;
  for (const auto& row : ix.ReuseHistogram()) {
    if (row.unit == kUnitOutcome) {
      if (row.bucket == 1) h.hits += row.count;
      continue;
    }
    policy::ReuseHistogram* into = row.unit == kUnitEntries ? &h.entries
                                   : row.unit == kUnitBytes ? &h.bytes
                                                            : nullptr;
    if (!into) continue;
    if (row.bucket == kColdBucket) {
      into->cold += row.count;
    } else if (row.bucket >= 0) {
      into->buckets[static_cast<uint32_t>(row.bucket)] += row.count;
    }
  }
  return h;
}

double Ratio(double hits, uint64_t accesses) {
  return accesses == 0 ? 0.0 : hits / static_cast<double>(accesses);
}

}  // namespace

void CacheImpl::RecordReuse(index::Index& ix, const index::EntryRow& entry, bool hit) {
  try {
    ix.InSavepoint("reuse", [&] {
      const uint64_t own = AccountedBytes(entry);
      IndexReuseStore store(ix);
      const policy::ReuseDistance d = policy::RecordAccess(store, entry.image_id, own);
      if (d.cold) {
        ix.AddReuseHistogram(kUnitEntries, kColdBucket);
        ix.AddReuseHistogram(kUnitBytes, kColdBucket);
      } else {
        ix.AddReuseHistogram(kUnitEntries, policy::ReuseBucket(d.entries));
        ix.AddReuseHistogram(kUnitBytes, policy::ReuseBucket(policy::ReuseBytesValue(d, own)));
      }
      ix.AddReuseHistogram(kUnitOutcome, hit ? 1 : 0);
    });
  } catch (const std::exception& e) {
    // A what-if is not worth failing a volume for.
    log_->warn("reuse distance not recorded image={} error={}", entry.image_id, e.what());
  }
}

WhatIfReport CacheImpl::WhatIf(double target_hit_ratio) {
  if (!(target_hit_ratio > 0 && target_hit_ratio <= 1)) {
    throw Error(Errc::kInvalidArgument,
                "what-if: target hit ratio " + std::to_string(target_hit_ratio) +
                    " is not in (0, 1]; give a fraction such as 0.9");
  }
  const Histograms h = WithIndex([](index::Index& ix) { return ReadHistograms(ix); });
  WhatIfReport report;
  report.accesses = h.entries.Accesses();
  report.cold = h.entries.cold;
  report.measured_hits = h.hits;
  report.target_hit_ratio = target_hit_ratio;
  const double reachable = static_cast<double>(report.accesses - report.cold);
  report.max_hit_ratio = Ratio(reachable, report.accesses);
  const uint64_t max_count = options_.cache.max_count;
  const double max_size_gb = options_.cache.max_size_gb;
  for (double factor : {0.5, 1.0, 2.0, 4.0}) {
    WhatIfRow row;
    row.factor = factor;
    if (max_count > 0) {
      row.max_count = std::max<uint64_t>(1, std::llround(static_cast<double>(max_count) * factor));
      row.hit_ratio_by_count = Ratio(policy::ReuseHits(h.entries, row.max_count), report.accesses);
    } else {
      row.hit_ratio_by_count = report.max_hit_ratio;
    }
    if (max_size_gb > 0) {
      row.max_size_gb = max_size_gb * factor;
      // An access hits iff its bytes value <= the limit: the histogram's limit is one more.
      const auto bytes = static_cast<uint64_t>(row.max_size_gb * kGiB);
      row.hit_ratio_by_size = Ratio(policy::ReuseHits(h.bytes, bytes + 1), report.accesses);
    } else {
      row.hit_ratio_by_size = report.max_hit_ratio;
    }
    row.hit_ratio = std::min(row.hit_ratio_by_count, row.hit_ratio_by_size);
    report.rows.push_back(row);
  }
  report.count_for_target = policy::ReuseLimitFor(h.entries, target_hit_ratio);
  if (auto limit = policy::ReuseLimitFor(h.bytes, target_hit_ratio)) {
    report.size_gb_for_target = static_cast<double>(*limit > 0 ? *limit - 1 : 0) / kGiB;
  }
  return report;
}

}  // namespace cachemgr::engine

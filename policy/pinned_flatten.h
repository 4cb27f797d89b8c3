// policy/pinned_flatten.h: which clones of pinned entries to flatten first.
//
// An evicted entry that still has clones is pinned: kept (in the trash) for them, holding
// its bytes until the last of them is gone. Flattening a clone copies the parent's data
// it still reads into it and detaches it; once every clone of an entry is flattened (or
// gone) the entry is purged and its bytes come back. So an entry is the unit that pays,
// and its clones are the work:
//
//   work(entry)  = sum over its clones of max(overlap - own, 0), where overlap is the
//                  part of the clone's size its parent covers (min of the two sizes) and
//                  own the clone's own data: the bytes a flatten writes, about
//   rank(entry)  = bytes(entry) / work(entry): bytes freed per byte copied, highest first;
//                  ties go to the larger entry, then to the lower entry id.
//
// Entries are taken whole, in rank order, while all their clones fit the clones left
// (`max_clones`): a partly flattened entry frees nothing. Clones left over then go to the
// best-ranked entry not yet taken, so an entry with more clones than `max_clones` is still
// freed over several passes. Within an entry, the clones that copy least go first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace cachemgr::policy {

struct PinnedClone {
  int64_t volume_id = 0;
  uint64_t size = 0;       // virtual size, bytes
  uint64_t own_bytes = 0;  // data the clone holds itself (not read from its parent), bytes
};

struct PinnedEntry {
  int64_t entry_id = 0;
  uint64_t bytes = 0;          // what the purge frees (as the cache accounts the entry)
  uint64_t virtual_size = 0;   // the entry's size: the most of a clone it covers
  std::vector<PinnedClone> clones;  // the clones that can be flattened (the cache's own)
};

struct FlattenStep {
  int64_t entry_id = 0;
  int64_t volume_id = 0;
  bool frees_entry = false;  // the entry's last clone in this plan: the purge follows it
};

// Bytes a flatten of `clone` of `entry` writes (see the header comment).
uint64_t FlattenWork(const PinnedEntry& entry, const PinnedClone& clone);

// At most `max_clones` steps, in the order to run them. Entries without clones are
// skipped (nothing this cache made holds them: other hosts' clones do).
std::vector<FlattenStep> PlanPinnedFlatten(std::vector<PinnedEntry> entries, size_t max_clones);

}  // namespace cachemgr::policy

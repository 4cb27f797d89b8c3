// policy/reuse_distance.h: LRU reuse (stack) distances, their histogram, and what a
// cache of another size would have hit.
//
// An access's reuse distance is the number of distinct other images accessed since the
// previous access of the same image (and the bytes they take); a first access is cold.
// Under LRU with room for C entries an access hits iff its distance is < C (Mattson's
// stack property), so one histogram of distances answers "what if the cache were 2x"
// for every size at once. RecordAccess keeps the distances in O(log n) per access with a
// Fenwick tree over access sequence numbers: each image marks the position of its latest
// access, and the distance is the count (and byte sum) of marks after its previous one.
// The tree's state lives in a ReuseStore (the index keeps it in SQLite; the tests in
// memory): this file does no I/O of its own.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace cachemgr::policy {

// An image's latest access: its position in the sequence and its bytes then.
struct ReuseMark {
  uint64_t seq = 0;
  uint64_t bytes = 0;
};

// One node of the Fenwick tree: marks and their bytes in the node's range.
struct FenwickCell {
  int64_t count = 0;
  int64_t bytes = 0;
};

// Where RecordAccess keeps its state. Positions run 1..capacity.
class ReuseStore {
 public:
  virtual ~ReuseStore() = default;
  virtual uint64_t Capacity() = 0;  // 0: nothing recorded yet
  virtual uint64_t LastSeq() = 0;   // position of the newest access; 0: none
  virtual void SetHead(uint64_t capacity, uint64_t last_seq) = 0;
  virtual std::optional<ReuseMark> Last(const std::string& key) = 0;
  virtual void SetLast(const std::string& key, const ReuseMark& mark) = 0;
  virtual FenwickCell Cell(uint64_t pos) = 0;  // zero when never written
  virtual void AddCell(uint64_t pos, const FenwickCell& delta) = 0;
  // For the renumbering when the positions run out: every key's mark, oldest first,
  // then the whole state replaced (tree[0] unused; zero cells need not be stored).
  virtual std::vector<std::pair<std::string, ReuseMark>> MarksBySeq() = 0;
  virtual void Replace(const std::vector<std::pair<std::string, ReuseMark>>& marks,
                       const std::vector<FenwickCell>& tree) = 0;
};

struct ReuseDistance {
  bool cold = true;      // first access of the key (distance infinite)
  uint64_t entries = 0;  // distinct other keys accessed since its previous access
  uint64_t bytes = 0;    // their bytes, each as of its latest access
};

// Positions a new store starts with; the array doubles when the distinct keys fill half
// of it, so a renumbering comes at most once in capacity / 2 accesses whatever the start.
constexpr uint64_t kReuseInitialCapacity = 64;

// Records an access of `key` taking `bytes` and returns its distance. O(log capacity)
// store calls; when the positions run out, the marks are renumbered 1..k and the tree
// rebuilt in O(capacity), at most once every capacity/2 accesses.
ReuseDistance RecordAccess(ReuseStore& store, const std::string& key, uint64_t bytes,
                           uint64_t initial_capacity = kReuseInitialCapacity);

// --- the histogram
// Buckets of a value v (a distance in entries, or bytes): v < 64 has a bucket of its own
// (exact, where small caches decide); above, each power of two has 8 buckets (1/8 of an
// octave wide, so a bucket's bounds are within 12.5% of each other).
constexpr uint32_t kReuseExactBuckets = 64;
uint32_t ReuseBucket(uint64_t value);
// The values [lo, hi) of a bucket (hi saturates at UINT64_MAX).
std::pair<uint64_t, uint64_t> ReuseBucketRange(uint32_t bucket);

struct ReuseHistogram {
  uint64_t cold = 0;                       // first accesses
  std::map<uint32_t, uint64_t> buckets;    // bucket -> accesses
  uint64_t Accesses() const;
};

// The value recorded for the bytes histogram: the distance in bytes plus the image's own
// bytes, i.e. what an LRU cache must hold for the access to hit.
uint64_t ReuseBytesValue(const ReuseDistance& d, uint64_t own_bytes);

// Expected hits among the histogram's accesses for an LRU cache in which an access hits
// iff its value is < `limit` (entries: limit = max_count; bytes: limit = max bytes + 1).
// Within a bucket the values are taken as spread evenly. Cold accesses never hit.
double ReuseHits(const ReuseHistogram& h, uint64_t limit);
// The smallest limit at which the hits reach `ratio` of the accesses (within a bucket,
// interpolated); nothing when no size does (the cold accesses miss at every size) or
// nothing was recorded.
std::optional<uint64_t> ReuseLimitFor(const ReuseHistogram& h, double ratio);

}  // namespace cachemgr::policy

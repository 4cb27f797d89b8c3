// policy/reuse_distance.cpp: see reuse_distance.h.
#include "policy/reuse_distance.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

namespace cachemgr::policy {
namespace {

uint64_t LowBit(uint64_t i) { return i & (~i + 1); }

FenwickCell Prefix(ReuseStore& store, uint64_t pos) {
  FenwickCell sum;
  for (uint64_t i = pos; i > 0; i -= LowBit(i)) {
    const FenwickCell c = store.Cell(i);
    sum.count += c.count;
    sum.bytes += c.bytes;
  }
  return sum;
}

void Add(ReuseStore& store, uint64_t pos, uint64_t capacity, const FenwickCell& delta) {
  for (uint64_t i = pos; i <= capacity; i += LowBit(i)) store.AddCell(i, delta);
}

// Renumbers the marks 1..k in their order and rebuilds the tree in O(capacity); the
// capacity grows so that at least half of it is free for new accesses afterwards.
uint64_t Compact(ReuseStore& store, uint64_t capacity) {
  auto marks = store.MarksBySeq();
  const uint64_t k = marks.size();
  while (capacity < 2 * (k + 1)) capacity *= 2;
  std::vector<FenwickCell> tree(capacity + 1);
  for (uint64_t i = 1; i <= k; ++i) {
    marks[i - 1].second.seq = i;
    tree[i].count += 1;
    tree[i].bytes += static_cast<int64_t>(marks[i - 1].second.bytes);
  }
  // The linear-time build: each node passes its sum on to its parent.
  for (uint64_t i = 1; i <= capacity; ++i) {
    const uint64_t parent = i + LowBit(i);
    if (parent <= capacity) {
      tree[parent].count += tree[i].count;
      tree[parent].bytes += tree[i].bytes;
    }
  }
  store.Replace(marks, tree);
  store.SetHead(capacity, k);
  return capacity;
}

}  // namespace

ReuseDistance RecordAccess(ReuseStore& store, const std::string& key, uint64_t bytes,
                           uint64_t initial_capacity) {
  uint64_t capacity = store.Capacity();
  if (capacity == 0) capacity = std::max<uint64_t>(initial_capacity, 2);
  uint64_t last = store.LastSeq();
  if (last >= capacity) {
    capacity = Compact(store, capacity);
    last = store.LastSeq();
  }
  ReuseDistance d;
  if (auto prev = store.Last(key)) {
    const FenwickCell newer_all = Prefix(store, last);
    const FenwickCell upto_prev = Prefix(store, prev->seq);
    d.cold = false;
    d.entries = static_cast<uint64_t>(newer_all.count - upto_prev.count);
    d.bytes = static_cast<uint64_t>(newer_all.bytes - upto_prev.bytes);
    Add(store, prev->seq, capacity, {-1, -static_cast<int64_t>(prev->bytes)});
  }
  const uint64_t seq = last + 1;
  Add(store, seq, capacity, {1, static_cast<int64_t>(bytes)});
  store.SetLast(key, {seq, bytes});
  store.SetHead(capacity, seq);
  return d;
}

uint32_t ReuseBucket(uint64_t value) {
  if (value < kReuseExactBuckets) return static_cast<uint32_t>(value);
  const int e = 63 - std::countl_zero(value);  // >= 6
  const uint64_t sub = (value >> (e - 3)) & 7;
  return static_cast<uint32_t>(kReuseExactBuckets + (e - 6) * 8 + sub);
}

std::pair<uint64_t, uint64_t> ReuseBucketRange(uint32_t bucket) {
  if (bucket < kReuseExactBuckets) return {bucket, bucket + 1};
  const uint32_t octave = (bucket - kReuseExactBuckets) / 8;
  const uint64_t sub = (bucket - kReuseExactBuckets) % 8;
  const int e = static_cast<int>(octave) + 6;
  if (e > 63) return {std::numeric_limits<uint64_t>::max(), std::numeric_limits<uint64_t>::max()};
  const uint64_t lo = (8 + sub) << (e - 3);
  const uint64_t width = uint64_t{1} << (e - 3);
  const uint64_t hi = lo > std::numeric_limits<uint64_t>::max() - width
                          ? std::numeric_limits<uint64_t>::max()
                          : lo + width;
  return {lo, hi};
}

uint64_t ReuseHistogram::Accesses() const {
  uint64_t n = cold;
  for (const auto& [bucket, count] : buckets) n += count;
  return n;
}

uint64_t ReuseBytesValue(const ReuseDistance& d, uint64_t own_bytes) {
  return d.bytes > std::numeric_limits<uint64_t>::max() - own_bytes
             ? std::numeric_limits<uint64_t>::max()
             : d.bytes + own_bytes;
}

double ReuseHits(const ReuseHistogram& h, uint64_t limit) {
  double hits = 0;
  for (const auto& [bucket, count] : h.buckets) {
    const auto [lo, hi] = ReuseBucketRange(bucket);
    if (hi <= limit) {
      hits += static_cast<double>(count);
    } else if (lo < limit) {
      hits += static_cast<double>(count) * static_cast<double>(limit - lo) /
              static_cast<double>(hi - lo);
    }
  }
  return hits;
}

std::optional<uint64_t> ReuseLimitFor(const ReuseHistogram& h, double ratio) {
  const uint64_t total = h.Accesses();
  if (total == 0) return std::nullopt;
  const double need = ratio * static_cast<double>(total);
  if (need <= 0) return 0;
  double cum = 0;
  for (const auto& [bucket, count] : h.buckets) {
    if (cum + static_cast<double>(count) + 1e-9 >= need) {
      const auto [lo, hi] = ReuseBucketRange(bucket);
      const double fraction = std::clamp((need - cum) / static_cast<double>(count), 0.0, 1.0);
      const double width = static_cast<double>(hi - lo);
      return lo + std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(fraction * width - 1e-9)));
    }
    cum += static_cast<double>(count);
  }
  return std::nullopt;
}

}  // namespace cachemgr::policy

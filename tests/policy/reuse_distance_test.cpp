// policy/reuse_distance: the Fenwick tracker against an O(n) reference on random traces
// (renumbering included), the buckets, and the what-if sums against a simulated LRU.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <list>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "policy/reuse_distance.h"

using namespace cachemgr::policy;

namespace {

// The store in memory, as the index keeps it in SQLite: absent cells are zero.
class MemoryStore final : public ReuseStore {
 public:
  uint64_t Capacity() override { return capacity_; }
  uint64_t LastSeq() override { return last_; }
  void SetHead(uint64_t capacity, uint64_t last_seq) override {
    capacity_ = capacity;
    last_ = last_seq;
  }
  std::optional<ReuseMark> Last(const std::string& key) override {
    auto it = marks_.find(key);
    if (it == marks_.end()) return std::nullopt;
    return it->second;
  }
  void SetLast(const std::string& key, const ReuseMark& mark) override { marks_[key] = mark; }
  FenwickCell Cell(uint64_t pos) override {
    ++cell_reads;
    auto it = cells_.find(pos);
    return it == cells_.end() ? FenwickCell{} : it->second;
  }
  void AddCell(uint64_t pos, const FenwickCell& delta) override {
    REQUIRE(pos >= 1);
    max_pos = std::max(max_pos, pos);
    cells_[pos].count += delta.count;
    cells_[pos].bytes += delta.bytes;
  }
  std::vector<std::pair<std::string, ReuseMark>> MarksBySeq() override {
    std::vector<std::pair<std::string, ReuseMark>> out(marks_.begin(), marks_.end());
    std::sort(out.begin(), out.end(),
              [](const auto& a, const auto& b) { return a.second.seq < b.second.seq; });
    return out;
  }
  void Replace(const std::vector<std::pair<std::string, ReuseMark>>& marks,
               const std::vector<FenwickCell>& tree) override {
    ++compactions;
    marks_.clear();
    for (const auto& [key, mark] : marks) marks_[key] = mark;
    cells_.clear();
    for (uint64_t i = 1; i < tree.size(); ++i) {
      if (tree[i].count != 0 || tree[i].bytes != 0) cells_[i] = tree[i];
    }
  }

  uint64_t cell_reads = 0;
  uint64_t max_pos = 0;  // the highest cell ever written
  int compactions = 0;

 private:
  uint64_t capacity_ = 0, last_ = 0;
  std::map<std::string, ReuseMark> marks_;
  std::map<uint64_t, FenwickCell> cells_;
};

// O(n) per access: walk back to the key's previous access, collecting distinct keys.
struct Reference {
  std::vector<std::pair<std::string, uint64_t>> trace;
  std::map<std::string, uint64_t> latest_bytes;
  ReuseDistance Access(const std::string& key, uint64_t bytes) {
    ReuseDistance d;
    std::set<std::string> seen;
    for (auto it = trace.rbegin(); it != trace.rend(); ++it) {
      if (it->first == key) {
        d.cold = false;
        break;
      }
      seen.insert(it->first);
    }
    if (!d.cold) {
      d.entries = seen.size();
      for (const auto& k : seen) d.bytes += latest_bytes[k];
    }
    trace.emplace_back(key, bytes);
    latest_bytes[key] = bytes;
    return d;
  }
};

// A real LRU cache of `capacity` entries: whether each access hits.
struct Lru {
  size_t capacity;
  std::list<std::string> order;  // most recent first
  bool Access(const std::string& key) {
    auto it = std::find(order.begin(), order.end(), key);
    const bool hit = it != order.end();
    if (hit) order.erase(it);
    order.push_front(key);
    if (order.size() > capacity) order.pop_back();
    return hit;
  }
};

}  // namespace

TEST_CASE("reuse distances match the O(n) reference on random traces, renumbering included") {
  for (uint64_t initial : {2u, 8u, 1024u}) {
    for (int keys : {1, 3, 20, 200}) {
      std::mt19937_64 rng(1000 * initial + keys);
      std::uniform_int_distribution<int> pick(0, keys - 1);
      std::uniform_int_distribution<uint64_t> size(1, 1 << 20);
      MemoryStore store;
      Reference ref;
      for (int i = 0; i < 3000; ++i) {
        const std::string key = "img-" + std::to_string(pick(rng));
        const uint64_t bytes = size(rng);
        const ReuseDistance want = ref.Access(key, bytes);
        const ReuseDistance got = RecordAccess(store, key, bytes, initial);
        INFO("initial=" << initial << " keys=" << keys << " access=" << i);
        REQUIRE(got.cold == want.cold);
        REQUIRE(got.entries == want.entries);
        REQUIRE(got.bytes == want.bytes);
      }
      // The positions never run past the array; a small start renumbers many times.
      CHECK(store.LastSeq() <= store.Capacity());
      CHECK(store.max_pos <= store.Capacity());
      if (initial == 2) CHECK(store.compactions > 10);
    }
  }
}

TEST_CASE("an access reads O(log n) cells") {
  MemoryStore store;
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int> pick(0, 499);
  for (int i = 0; i < 20000; ++i) RecordAccess(store, std::to_string(pick(rng)), 1);
  const uint64_t before = store.cell_reads;
  RecordAccess(store, "0", 1);
  // Two prefix sums over at most log2(capacity) + 1 nodes each.
  const uint64_t bound = 2 * (std::bit_width(store.Capacity()) + 1);
  CHECK(store.cell_reads - before <= bound);
}

TEST_CASE("buckets: exact below 64, then eight to an octave") {
  for (uint64_t v = 0; v < 64; ++v) {
    CHECK(ReuseBucket(v) == v);
    CHECK(ReuseBucketRange(ReuseBucket(v)) == std::pair<uint64_t, uint64_t>{v, v + 1});
  }
  CHECK(ReuseBucketRange(ReuseBucket(64)) == std::pair<uint64_t, uint64_t>{64, 72});
  CHECK(ReuseBucketRange(ReuseBucket(127)) == std::pair<uint64_t, uint64_t>{120, 128});
  CHECK(ReuseBucketRange(ReuseBucket(128)) == std::pair<uint64_t, uint64_t>{128, 144});
  std::mt19937_64 rng(3);
  for (int i = 0; i < 100000; ++i) {
    const uint64_t v = rng() >> (rng() % 64);
    const auto [lo, hi] = ReuseBucketRange(ReuseBucket(v));
    REQUIRE(lo <= v);
    REQUIRE((v < hi || hi == UINT64_MAX));
    if (v >= 64) REQUIRE(static_cast<double>(hi - lo) <= static_cast<double>(lo) / 8 + 1);
  }
  // Buckets grow with the value: a histogram's order is the values' order.
  for (uint64_t v = 1; v < 100000; v += 7) REQUIRE(ReuseBucket(v) >= ReuseBucket(v - 1));
}

TEST_CASE("the histogram predicts an LRU cache exactly where its buckets are exact") {
  std::mt19937_64 rng(11);
  std::vector<double> weights;
  for (int i = 1; i <= 50; ++i) weights.push_back(1.0 / i);
  std::discrete_distribution<int> zipf(weights.begin(), weights.end());
  std::vector<std::string> trace;
  for (int i = 0; i < 1000; ++i) trace.push_back("img-" + std::to_string(zipf(rng)));
  MemoryStore store;
  ReuseHistogram entries;
  for (const auto& key : trace) {
    const ReuseDistance d = RecordAccess(store, key, 1);
    if (d.cold) {
      entries.cold += 1;
    } else {
      entries.buckets[ReuseBucket(d.entries)] += 1;
    }
  }
  CHECK(entries.Accesses() == 1000);
  for (size_t c : {1u, 5u, 10u, 20u, 40u, 60u}) {
    Lru lru{c};
    int hits = 0;
    for (const auto& key : trace) hits += lru.Access(key);
    INFO("capacity=" << c);
    CHECK(ReuseHits(entries, c) == doctest::Approx(hits));
  }
  // The size for a ratio is the smallest at which the simulated cache reaches it.
  const double reachable = 1.0 - static_cast<double>(entries.cold) / 1000;
  CHECK_FALSE(ReuseLimitFor(entries, reachable + 0.01).has_value());
  const auto need = ReuseLimitFor(entries, 0.5);
  REQUIRE(need.has_value());
  CHECK(ReuseHits(entries, *need) >= 500);
  CHECK(ReuseHits(entries, *need - 1) < 500);
}

TEST_CASE("within a wide bucket the hits are interpolated; nothing recorded predicts nothing") {
  ReuseHistogram h;
  h.cold = 10;
  h.buckets[ReuseBucket(1000)] = 90;  // [960, 1024)
  CHECK(ReuseHits(h, 960) == 0);
  CHECK(ReuseHits(h, 992) == doctest::Approx(45));
  CHECK(ReuseHits(h, 1024) == doctest::Approx(90));
  CHECK(ReuseLimitFor(h, 0.45) == 992u);
  CHECK_FALSE(ReuseLimitFor(h, 0.95).has_value());
  CHECK(ReuseBytesValue({false, 3, 100}, 20) == 120);
  CHECK_FALSE(ReuseLimitFor(ReuseHistogram{}, 0.5).has_value());
}

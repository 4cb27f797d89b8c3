// bench_index: the SQLite index and the eviction policy at 100,000 entries.
//
// Fills an index with `entries` ready rows (one transaction, not timed as a goal), then
//   lookup:  FindEntry of random image ids, each timed;
//   select:  what an eviction pass does to choose victims: the live totals (one
//            aggregate over the entries_lru index), then ready rows least recently used
//            first, page by page, only while PlanEvictionLru still needs candidates, with
//            a max_count one below the current count (so exactly one LRU victim), timed
//            whole and the policy alone;
//   memory:  the process's VmHWM (peak RSS) before and after.
//
//   bench_index --dir DIR [--entries 100000] [--lookups 20000] [--selects 20] --out FILE

#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

#include "common.h"
#include "index/index.h"
#include "index/transaction.h"
#include "policy/eviction.h"

using namespace cachemgr;
using namespace cachemgr::bench;

namespace {

uint64_t VmHwmKib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6));
  }
  return 0;
}

std::string ImageId(long i) {
  // Glance ids are UUIDs: keep the key the same length and shape.
  char buf[64];
  std::snprintf(buf, sizeof buf, "00000000-0000-4000-8000-%012ld", i);
  return buf;
}

}  // namespace

int main(int argc, char** argv) try {
  Args args(argc, argv);
  const std::filesystem::path dir = args.Get("dir");
  const long entries = args.GetInt("entries", 100000);
  const long lookups = args.GetInt("lookups", 20000);
  const long selects = args.GetInt("selects", 20);
  std::filesystem::create_directories(dir);
  const auto path = dir / "bench-index.db";
  for (const char* ext : {"", "-wal", "-shm"}) std::filesystem::remove(path.string() + ext);

  const uint64_t hwm_start = VmHwmKib();
  auto index = index::Index::Open(path);
  const std::string backend = "rbd", pool = "volumes";

  auto fill_start = Clock::now();
  {
    index::Transaction tx(*index, "fill the bench index");
    for (long i = 0; i < entries; ++i) {
      index::EntryRow row;
      row.backend = backend;
      row.pool = pool;
      row.image_id = ImageId(i);
      row.cache_name = "image-" + row.image_id;
      row.snap_name = "cache";
      row.state = index::State::kReady;
      row.virtual_size = (1ull << 30) * static_cast<uint64_t>(1 + i % 8);
      row.allocated_bytes = row.virtual_size / 4;
      row.disk_format = i % 2 ? "qcow2" : "raw";
      row.checksum = std::string(32, 'a');
      row.os_hash = "sha512:" + std::string(128, 'b');
      row.image_updated_at = "2026-01-01T00:00:00Z";
      row.created_at = 1700000000;
      // Shuffled recency, so the LRU victim is not simply the first row.
      row.last_used = 1700000000 + static_cast<int64_t>((i * 7919) % entries);
      row.owner = "host:1";
      index->InsertEntry(row);
    }
    tx.Commit();
  }
  const double fill_ms = MsSince(fill_start);

  std::mt19937_64 rng(42);
  std::uniform_int_distribution<long> pick(0, entries - 1);
  std::vector<double> lookup_ms;
  lookup_ms.reserve(static_cast<size_t>(lookups));
  for (long i = 0; i < lookups; ++i) {
    const std::string id = ImageId(pick(rng));
    auto t0 = Clock::now();
    auto row = index->FindEntry(backend, pool, id);
    lookup_ms.push_back(MsSince(t0));
    if (!row) throw std::runtime_error("lookup lost entry " + id);
  }

  std::vector<double> select_ms, plan_ms;
  for (long s = 0; s < selects; ++s) {
    auto t0 = Clock::now();
    policy::EvictionLimits limits;
    limits.max_count = static_cast<uint64_t>(entries) - 1;
    const auto sums = index->LiveTotals(backend, pool);
    std::vector<index::LruRow> page;
    size_t pos = 0;
    auto next = [&]() -> std::optional<policy::EvictionCandidate> {
      if (pos == page.size()) {
        page = page.empty() ? index->ReadyByLastUsed(backend, pool, 64)
                            : index->ReadyByLastUsed(backend, pool, 64, page.back().last_used,
                                                     page.back().id);
        pos = 0;
        if (page.empty()) return std::nullopt;
      }
      const auto& r = page[pos++];
      return policy::EvictionCandidate{r.id, r.virtual_size, r.allocated_bytes, r.last_used};
    };
    auto t1 = Clock::now();
    auto plan = policy::PlanEvictionLru({sums.count, sums.virtual_bytes}, next, limits);
    plan_ms.push_back(MsSince(t1));
    select_ms.push_back(MsSince(t0));
    if (plan.victims.size() != 1) {
      throw std::runtime_error("expected one victim, got " + std::to_string(plan.victims.size()));
    }
    if (plan.victims[0] != 1) {  // row 0 has the oldest last_used
      throw std::runtime_error("wrong victim " + std::to_string(plan.victims[0]));
    }
  }
  const uint64_t hwm_end = VmHwmKib();

  Results results;
  Series lookup{"index", "lookup", "ms", lookup_ms, {}};
  lookup.extra["entries"] = entries;
  lookup.extra["fill_ms"] = fill_ms;
  lookup.extra["db_bytes"] = std::filesystem::file_size(path);
  results.Add(std::move(lookup));
  results.Add({"index", "select", "ms", select_ms, {{"entries", entries}}});
  results.Add({"index", "plan", "ms", plan_ms, {{"entries", entries}}});
  results.Add({"index", "peak_rss", "MiB", {static_cast<double>(hwm_end) / 1024.0},
               {{"start_mib", static_cast<double>(hwm_start) / 1024.0}}});
  results.Write(args.Get("out", "-"));
  index.reset();
  for (const char* ext : {"", "-wal", "-shm"}) std::filesystem::remove(path.string() + ext);
  return 0;
} catch (const std::exception& e) {
  std::cerr << "bench_index: " << e.what() << "\n";
  return 1;
}

// bench_index: the SQLite index and the eviction policy at 100,000 entries.
//
// Fills an index with `entries` ready rows (one transaction, not timed as a goal), then
//   lookup:  FindEntry of random image ids, each timed;
//   select:  what an eviction pass does to choose victims: the live totals (one
//            aggregate over the entries_lru index), then ready rows least recently used
//            first, page by page, only while PlanEvictionLru still needs candidates, with
//            a max_count one below the current count (so exactly one LRU victim), timed
//            whole and the policy alone;
//   open:    Index::Open of the filled index (its quick_check and migrations), each timed;
//   memory:  the process's VmHWM (peak RSS) before and after.
// Then the library's own eviction pass (Cache::RunEvictionPass, source check off) on the
// local backend with `pass-entries` entries, made directly (sparse raw files, sidecars,
// index rows, the pool's table of last uses) rather than filled, which would take hours:
//   pass_dry:    a dry run with nothing to evict;
//   pass_idle:   a real pass with nothing to evict (after one untimed first pass, with
//                2.1 s for the pool's stamps to settle before and after it: a pass from a
//                timer finds the pool as the last one left it, minutes old);
//   pass_changed: the same after a name was made and removed in the pool folder (as
//                another host's fill or eviction does), the stamps settled again: the
//                pass that compares the pool with the index in full;
//   pass_plan:   a dry run that plans `evict` evictions;
//   pass_evict:  the real pass that evicts them, with `pinned` entries that have a clone
//                (kept in the trash for it) and `busy` entries (their image lock held,
//                so the pass waits for it and skips them) first in LRU order.
//
//   bench_index --dir DIR [--entries 100000] [--lookups 20000] [--selects 20] [--opens 5]
//               [--pass-entries 100000] [--evict 1000] [--pinned 3] [--busy 3]
//               [--passes 3] --out FILE

#include <fcntl.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <thread>

#include "cachemgr/cache.h"
#include "common.h"
#include "engine/marks.h"
#include "engine/naming.h"
#include "index/index.h"
#include "index/transaction.h"
#include "policy/eviction.h"
#include "storage/factory.h"

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

void WriteFile(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

// BENCH_INDEX_LOG=FILE: the passes' debug log (each step's time) goes to FILE.
std::shared_ptr<spdlog::logger> PassLogger() {
  const char* file = std::getenv("BENCH_INDEX_LOG");
  if (!file || !*file) return nullptr;
  static auto logger = [&] {
    auto l = std::make_shared<spdlog::logger>(
        "cachemgr", std::make_shared<spdlog::sinks::basic_file_sink_mt>(file));
    l->set_level(spdlog::level::debug);
    return l;
  }();
  return logger;
}

Options PassOptions(const std::filesystem::path& dir, uint64_t max_count) {
  Options o;
  o.index = (dir / "pass.db").string();
  o.conversion.dir = (dir / "conversion").string();
  o.source.type = SourceType::kFile;
  o.source.file.dir = (dir / "images").string();
  o.backend.type = BackendType::kLocal;
  o.backend.local.root = (dir / "root").string();
  o.backend.local.clone_mode = CloneMode::kQcow2;
  o.host_id = "bench";
  o.cache.max_count = max_count;
  return o;
}

// The entries a cache of `entries` images holds after its fills: per entry a sparse raw
// file, its sidecar (protected snapshot, the cache's mark), a ready row, its last use in
// the pool's table (as a pass after the hits leaves it) and its fate ("cached"). Entry i
// was used at base + i's place in a shuffled order; the first `head` are the least
// recently used.
void SeedEntries(const std::filesystem::path& dir, long entries, long head) {
  namespace fs = std::filesystem;
  const Options o = PassOptions(dir, 0);
  fs::create_directories(o.conversion.dir);
  fs::create_directories(o.source.file.dir);
  Cache::Open(o, nullptr).reset();  // the root (with its marker) and the index schema
  auto logger = std::make_shared<spdlog::logger>("bench-seed");
  auto backend = storage::MakeLocalBackend(o.backend.local, logger);
  const fs::path root = o.backend.local.root;
  const fs::path base = root / backend->entry_pool();
  fs::create_directories(base / ".meta");
  fs::create_directories(root / ".state" / "uses");
  fs::create_directories(root / ".state" / "fates");
  constexpr uint64_t kSize = 1 << 20;
  auto index = index::Index::Open(o.index);
  index::Transaction tx(*index, "seed the pass bench");
  for (long i = 0; i < entries; ++i) {
    const std::string image_id = ImageId(i);
    const std::string name = engine::EntryName(image_id);
    const fs::path file = base / name;
    {
      int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd < 0 || ::ftruncate(fd, kSize) != 0) throw std::runtime_error("cannot make " + file.string());
      ::close(fd);
    }
    const std::string identity = backend->Identity({backend->entry_pool(), name});
    // The local backend's sidecar (storage/local/local_sidecar.cpp, schema 1).
    nlohmann::json snap = nlohmann::json::object();
    snap["name"] = engine::kSnapName;
    snap["protected"] = true;
    snap["size"] = kSize;
    nlohmann::json sidecar = nlohmann::json::object();
    sidecar["schema"] = 1;
    sidecar["format"] = "raw";
    sidecar["metadata"] = nlohmann::json::object();
    sidecar["metadata"][engine::kMetaMark] = std::string(engine::kMarkEntry) + " " + identity;
    sidecar["snapshots"] = nlohmann::json::array();
    sidecar["snapshots"].push_back(snap);
    sidecar["parent"] = nullptr;
    WriteFile(base / ".meta" / (name + ".json"), sidecar.dump(2));
    index::EntryRow row;
    row.backend = backend->kind();
    row.pool = backend->location();
    row.image_id = image_id;
    row.cache_name = name;
    row.snap_name = engine::kSnapName;
    row.state = index::State::kReady;
    row.virtual_size = kSize;
    row.allocated_bytes = 0;
    row.disk_format = "raw";
    row.checksum = std::string(32, 'a');
    row.created_at = 1700000000;
    // The head first in LRU order, the rest shuffled.
    row.last_used = 1700000000 + (i < head ? i : head + (i * 7919) % (entries - head));
    row.owner = "bench";
    row.source_checked_at = row.created_at;
    row.identity = identity;
    row.shared_at = row.last_used;
    index->InsertEntry(row);
    WriteFile(root / ".state" / "uses" / name, std::to_string(row.last_used) + " bench");
    // Its fate, as its fill shares it (engine/miss_reasons.cpp).
    WriteFile(root / ".state" / "fates" / name, std::to_string(row.created_at) + " cached bench");
  }
  tx.Commit();
}

struct PassFigures {
  double ms = 0;
  size_t evicted = 0, deferred = 0, skipped = 0, planned = 0, other = 0;
};

PassFigures RunPass(Cache& cache, bool dry_run) {
  EvictOptions eo;
  eo.dry_run = dry_run;
  eo.check_source = false;
  auto t0 = Clock::now();
  const auto report = cache.RunEvictionPass(eo);
  PassFigures f;
  f.ms = MsSince(t0);
  for (const auto& a : report.actions) {
    if (a.kind == "evict" && !a.done) {
      (a.reason.find("skipped") != std::string::npos ? f.skipped : f.planned) += 1;
    } else if (a.kind == "evict") {
      f.evicted += 1;
    } else if (a.kind == "defer") {
      f.deferred += 1;
    } else {
      f.other += 1;
    }
  }
  return f;
}

void PassBench(const Args& args, Results* results) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::absolute(args.Get("dir")) / "pass";
  const long entries = args.GetInt("pass-entries", 100000);
  const long evict = args.GetInt("evict", 1000);
  const long pinned = args.GetInt("pinned", 3);
  const long busy = args.GetInt("busy", 3);
  const long passes = args.GetInt("passes", 3);
  if (entries <= 0) return;
  if (evict < pinned + busy || evict >= entries) throw std::runtime_error("--evict out of range");
  fs::remove_all(dir);
  auto t0 = Clock::now();
  SeedEntries(dir, entries, pinned + busy);
  const double seed_ms = MsSince(t0);
  // The pinned: a clone of each of the first entries (a real qcow2 overlay).
  {
    const Options o = PassOptions(dir, 0);
    auto backend = storage::MakeLocalBackend(o.backend.local, std::make_shared<spdlog::logger>("bench-clone"));
    for (long i = 0; i < pinned; ++i) {
      backend->Clone({{backend->entry_pool(), engine::EntryName(ImageId(i))}, engine::kSnapName},
                     {backend->volume_pool(), "bench-volume-" + std::to_string(i)});
    }
  }
  const nlohmann::json common = {{"entries", entries}, {"seed_ms", seed_ms}};
  std::vector<double> dry_ms, idle_ms, changed_ms;
  double first_ms = 0;
  // Local stamps are given once a folder's times are 2 s old (LocalBackend::PoolStamp).
  auto settle = [] { std::this_thread::sleep_for(std::chrono::milliseconds(2100)); };
  {
    auto cache = Cache::Open(PassOptions(dir, static_cast<uint64_t>(entries) + 1), PassLogger());
    for (long p = 0; p < passes; ++p) {
      const auto f = RunPass(*cache, true);
      if (f.planned + f.evicted + f.deferred != 0) throw std::runtime_error("dry run planned evictions");
      dry_ms.push_back(f.ms);
    }
    // Settled before the first pass as well: the pass a timer ran before finds the pool
    // as its last change left it, seconds or minutes old, and records that it is in step
    // with the index (a look). Run within 2 s of the seeding, the first pass could not,
    // and the first timed pass would be this bench's artefact: the full compare, which
    // pass_changed measures.
    settle();
    first_ms = RunPass(*cache, false).ms;
    settle();
    for (long p = 0; p < passes; ++p) {
      const auto f = RunPass(*cache, false);
      if (f.evicted + f.deferred != 0) throw std::runtime_error("idle pass evicted");
      idle_ms.push_back(f.ms);
    }
    const Options o = PassOptions(dir, 0);
    const fs::path pool = fs::path(o.backend.local.root) / "_base";
    for (long p = 0; p < passes; ++p) {
      WriteFile(pool / "bench-moved", "x");
      fs::remove(pool / "bench-moved");
      settle();
      const auto f = RunPass(*cache, false);
      if (f.evicted + f.deferred != 0) throw std::runtime_error("pass after a change evicted");
      changed_ms.push_back(f.ms);
    }
  }
  Series dry{"index", "pass_dry", "ms", dry_ms, common};
  results->Add(std::move(dry));
  Series idle{"index", "pass_idle", "ms", idle_ms, common};
  idle.extra["first_pass_ms"] = first_ms;
  results->Add(std::move(idle));
  Series changed{"index", "pass_changed", "ms", changed_ms, common};
  results->Add(std::move(changed));

  // The evicting pass: the busy entries' image locks are held (as a fill or a stale
  // replacement holds them), so the pass waits its bounded time for each and skips it.
  std::vector<int> held;
  const fs::path lock_dir = dir / "locks";
  fs::create_directories(lock_dir);
  for (long i = pinned; i < pinned + busy; ++i) {
    const auto path = lock_dir / (engine::EntryName(ImageId(i)) + ".lock");
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || ::flock(fd, LOCK_EX | LOCK_NB) != 0) throw std::runtime_error("cannot hold " + path.string());
    held.push_back(fd);
  }
  auto cache = Cache::Open(PassOptions(dir, static_cast<uint64_t>(entries - evict)), PassLogger());
  const auto plan = RunPass(*cache, true);
  const auto done = RunPass(*cache, false);
  for (int fd : held) ::close(fd);
  if (plan.planned != static_cast<size_t>(evict)) {
    throw std::runtime_error("planned " + std::to_string(plan.planned) + " evictions, not " +
                             std::to_string(evict));
  }
  if (done.evicted != static_cast<size_t>(evict - pinned - busy) ||
      done.deferred != static_cast<size_t>(pinned) || done.skipped != static_cast<size_t>(busy)) {
    throw std::runtime_error("evicting pass: evicted " + std::to_string(done.evicted) +
                             " deferred " + std::to_string(done.deferred) + " skipped " +
                             std::to_string(done.skipped));
  }
  Series ps{"index", "pass_plan", "ms", {plan.ms}, common};
  ps.extra["planned"] = plan.planned;
  results->Add(std::move(ps));
  Series es{"index", "pass_evict", "ms", {done.ms}, common};
  es.extra["evicted"] = done.evicted;
  es.extra["deferred"] = done.deferred;
  es.extra["skipped_busy"] = done.skipped;
  es.extra["ms_per_eviction"] = done.ms / static_cast<double>(evict);
  results->Add(std::move(es));
  cache.reset();
  fs::remove_all(dir);
}

}  // namespace

int main(int argc, char** argv) try {
  Args args(argc, argv);
  // BENCH_LOG=debug: the library's log (each pass step's time among it) on stderr.
  if (const char* level = std::getenv("BENCH_LOG")) {
    std::string name(level);
    for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    auto logger = spdlog::stderr_logger_mt("cachemgr");
    logger->set_level(spdlog::level::from_str(name));  // trace, debug, info, warn, ...
  }
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
  // Opening the index as the engine does on every run of the tool: quick_check included.
  std::vector<double> open_ms;
  index.reset();
  for (long i = 0; i < args.GetInt("opens", 5); ++i) {
    auto t0 = Clock::now();
    auto reopened = index::Index::Open(path);
    open_ms.push_back(MsSince(t0));
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
  results.Add({"index", "open", "ms", open_ms, {{"entries", entries}}});
  results.Add({"index", "peak_rss", "MiB", {static_cast<double>(hwm_end) / 1024.0},
               {{"start_mib", static_cast<double>(hwm_start) / 1024.0}}});
  for (const char* ext : {"", "-wal", "-shm"}) std::filesystem::remove(path.string() + ext);
  PassBench(args, &results);
  results.Write(args.Get("out", "-"));
  return 0;
} catch (const std::exception& e) {
  std::cerr << "bench_index: " << e.what() << "\n";
  return 1;
}

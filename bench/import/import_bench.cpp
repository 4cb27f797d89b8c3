// bench_import: imports one raw file into RBD through the backend's writer and with
// `rbd import`, alternately, several runs each, and prints medians and the ratio
// (rbd import time / writer time; >= 1.0 means the writer is at least as fast).
//
//   bench_import --conf DIR/ceph.conf --file RAW [--pool volumes] [--runs 5]
//                [--queue-depth 16] [--make-raw SIZE_MIB]
//   bench_import --conf C --file RAW --write-one NAME [--pool P] [--queue-depth Q]
//
// --make-raw writes RAW first: a mix of data and holes (see MakeRaw).
// Both sides are timed alike, from the start of their process to its exit (start-up,
// cluster connection, import, close): the writer runs as a child of its own
// (--write-one), and `rbd import` is given the same in-flight window
// (--rbd-concurrent-management-ops, which bounds its aio writes) as the writer's
// queue depth.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "cachemgr/error.h"
#include "storage/factory.h"
#include "util/process.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kMiB = 1024 * 1024;

// The first quarter is data (an OS install), the rest alternates 8 MiB of data with a
// 24 MiB hole, and one 16 MiB run of written zeros sits in the middle (what a converted
// image often has): both importers must skip holes and zero runs.
void MakeRaw(const std::string& path, uint64_t size_mib) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot create " + path);
  std::mt19937_64 rng(7);
  std::vector<uint64_t> block(kMiB / 8);
  auto write_data = [&](uint64_t off_mib, uint64_t len_mib, bool zeros) {
    for (uint64_t m = 0; m < len_mib && off_mib + m < size_mib; ++m) {
      for (auto& v : block) v = zeros ? 0 : (rng() | 1);
      if (::pwrite(fd, block.data(), kMiB, static_cast<off_t>((off_mib + m) * kMiB)) !=
          static_cast<ssize_t>(kMiB)) {
        throw std::runtime_error("write failed: " + path);
      }
    }
  };
  write_data(0, size_mib / 4, false);
  for (uint64_t off = size_mib / 4; off < size_mib; off += 32) write_data(off, 8, false);
  write_data(size_mib / 2 + 8, 16, true);
  if (::ftruncate(fd, static_cast<off_t>(size_mib * kMiB)) != 0) {
    throw std::runtime_error("truncate failed: " + path);
  }
  ::close(fd);
}

// --write-one: the child that imports RAW as image NAME with the backend's writer.
void WriteOne(const std::string& conf, const std::string& pool, const std::string& file,
              uint32_t queue_depth, const std::string& name) {
  cachemgr::RbdBackendOptions options;
  options.conf = conf;
  options.pool = pool;
  options.queue_depth = queue_depth;
  auto backend = cachemgr::storage::MakeRbdBackend(options, nullptr);
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("cannot open " + file);
  const auto size = static_cast<uint64_t>(std::filesystem::file_size(file));
  auto w = backend->Create({pool, name}, size);
  std::vector<char> buf(4 * kMiB);
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) throw std::runtime_error("read failed: " + file);
    if (n == 0) break;
    w->Append({reinterpret_cast<const std::byte*>(buf.data()), static_cast<size_t>(n)});
  }
  ::close(fd);
  std::printf("written %llu\n", static_cast<unsigned long long>(w->Finish().bytes_written));
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string conf;
  std::string file;
  std::string pool = "volumes";
  int runs = 5;
  uint32_t queue_depth = 16;
  uint64_t make_raw_mib = 0;
  std::string write_one;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("missing value for " + a);
      return argv[++i];
    };
    if (a == "--conf") conf = next();
    else if (a == "--file") file = next();
    else if (a == "--pool") pool = next();
    else if (a == "--runs") runs = std::stoi(next());
    else if (a == "--queue-depth") queue_depth = static_cast<uint32_t>(std::stoul(next()));
    else if (a == "--make-raw") make_raw_mib = std::stoull(next());
    else if (a == "--write-one") write_one = next();
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (conf.empty() || file.empty()) {
    std::fprintf(stderr, "usage: %s --conf CONF --file RAW [--runs N] [--make-raw MIB]\n",
                 argv[0]);
    return 2;
  }
  try {
    if (!write_one.empty()) {
      WriteOne(conf, pool, file, queue_depth, write_one);
      return 0;
    }
    if (make_raw_mib) MakeRaw(file, make_raw_mib);
    const uint64_t size = static_cast<uint64_t>(
        std::filesystem::file_size(file));

    cachemgr::RbdBackendOptions options;
    options.conf = conf;
    options.pool = pool;
    options.queue_depth = queue_depth;
    auto backend = cachemgr::storage::MakeRbdBackend(options, nullptr);

    std::vector<double> ours;
    std::vector<double> theirs;
    uint64_t written = 0;
    const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    const std::string qd = std::to_string(queue_depth);
    cachemgr::util::RunOptions ro;
    ro.timeout = std::chrono::seconds(1800);
    for (int run = 0; run < runs; ++run) {
      // Alternate which goes first so page cache and cluster warm-up favour neither.
      for (int turn = 0; turn < 2; ++turn) {
        const bool writer_turn = (turn == 0) == (run % 2 == 0);
        const std::string name = "bench-import-" + std::to_string(::getpid()) + "-" +
                                 std::to_string(run) + (writer_turn ? "-writer" : "-rbd");
        const std::vector<std::string> argv =
            writer_turn ? std::vector<std::string>{self, "--conf", conf, "--pool", pool,
                                                   "--file", file, "--queue-depth", qd,
                                                   "--write-one", name}
                        : std::vector<std::string>{"rbd", "--conf", conf,
                                                   "--rbd-concurrent-management-ops", qd,
                                                   "import", "--no-progress", file,
                                                   pool + "/" + name};
        const auto start = Clock::now();
        auto r = cachemgr::util::Run(argv, ro);
        const double s = std::chrono::duration<double>(Clock::now() - start).count();
        if (r.exit_code != 0) {
          throw std::runtime_error(std::string(writer_turn ? "writer" : "rbd import") +
                                   " failed: " + r.err);
        }
        if (writer_turn) {
          unsigned long long n = 0;
          if (std::sscanf(r.out.c_str(), "written %llu", &n) == 1) written = n;
        }
        (writer_turn ? ours : theirs).push_back(s);
        std::printf("run %d %-11s %7.3f s  %7.1f MiB/s\n", run + 1,
                    writer_turn ? "writer" : "rbd-import", s, size / double(kMiB) / s);
        std::fflush(stdout);
        backend->Remove({pool, name});
      }
    }
    const double m_ours = Median(ours);
    const double m_theirs = Median(theirs);
    std::printf("file %.0f MiB (%.0f MiB data written), runs %d, queue depth %u for both, "
                "each timed from its process's start\n",
                size / double(kMiB), written / double(kMiB), runs, queue_depth);
    std::printf("median writer      %7.3f s  %7.1f MiB/s\n", m_ours, size / double(kMiB) / m_ours);
    std::printf("median rbd import  %7.3f s  %7.1f MiB/s\n", m_theirs,
                size / double(kMiB) / m_theirs);
    std::printf("ratio (rbd import time / writer time) %.2f  (goal >= 1.0)\n", m_theirs / m_ours);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_import: %s\n", e.what());
    return 1;
  }
  return 0;
}

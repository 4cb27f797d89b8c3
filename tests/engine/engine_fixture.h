// tests/engine/engine_fixture.h: the engine tests' Env: one cache with its own dir,
// index, source dir and (RBD, built with ENGINE_RBD) namespace, and a way to run
// engine_child (ENGINE_CHILD) against it. Included by one .cpp per test executable.
#pragma once

#include <SQLiteCpp/SQLiteCpp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cachemgr/cache.h"
#include "engine/failpoints.h"
#include "engine_env.h"
#include "storage/factory.h"
#include "support/test_util.h"

namespace cachemgr::test {
namespace {

#ifdef ENGINE_RBD
constexpr bool kRbd = true;
#else
constexpr bool kRbd = false;
#endif
constexpr uint64_t kMiB = 1 << 20;

// One cache with its own dir, index, source dir and (RBD) namespace.
struct Env {
  TempDir dir{"engine"};
  std::string ns = kRbd ? Unique("ns") : "";
  Options options;
  std::unique_ptr<storage::Backend> backend;

  Env() {
    if (kRbd) CreateRbdNamespace(ns);
    options = EngineOptions(dir.path(), kRbd, ns);
    backend = storage::MakeBackend(options.backend, nullptr);
  }
  std::filesystem::path Image(const std::string& id) const { return dir / ("images/" + id); }
  // A raw image of `size` bytes, `data` of them written with `seed`.
  std::string AddImage(uint64_t size = 8 * kMiB, uint32_t seed = 1, uint64_t data = 0) {
    std::string id = Unique("img");
    WriteRawImage(Image(id), size, data ? data : size / 2, seed);
    return id;
  }
  std::unique_ptr<Cache> Open() const { return Cache::Open(options); }
  storage::ImageRef Vol(const std::string& name) const { return {backend->volume_pool(), name}; }
  // The volume reads back the image's bytes.
  bool SameData(const std::string& volume, const std::string& image_id) const {
    auto size = std::filesystem::file_size(Image(image_id));
    return Md5OfImage(*backend, Vol(volume), size) == Md5OfFile(Image(image_id), size);
  }
  uint64_t CountRows(const std::string& sql) const {
    SQLite::Database db(options.index, SQLite::OPEN_READONLY);
    return static_cast<uint64_t>(db.execAndGet(sql).getInt64());
  }
  std::vector<std::string> EntryObjects() const { return backend->List(backend->entry_pool()); }
  std::string ChildPath() const { return ENGINE_CHILD; }
  // Runs engine_child with ops; returns the raw wait status.
  int RunChild(const std::vector<std::string>& ops, const std::string& failpoint = "",
               uint64_t max_count = 0) const {
    pid_t pid = StartChild(ops, failpoint, max_count);
    int status = 0;
    waitpid(pid, &status, 0);
    return status;
  }
  // Starts engine_child with ops and returns its pid (the caller waits for it).
  pid_t StartChild(const std::vector<std::string>& ops, const std::string& failpoint = "",
                   uint64_t max_count = 0) const {
    pid_t pid = fork();
    if (pid == 0) {
      if (!failpoint.empty()) setenv(engine::kFailpointEnv, failpoint.c_str(), 1);
      std::vector<std::string> args = {ChildPath(), kRbd ? "rbd" : "local", dir.path().string(),
                                       ns.empty() ? "-" : ns, std::to_string(max_count)};
      args.insert(args.end(), ops.begin(), ops.end());
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    return pid;
  }
};

}  // namespace
}  // namespace cachemgr::test

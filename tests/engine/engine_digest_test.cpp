// The file source's digests are computed once per file version and kept in the index:
// hits, passes and prefills of an unchanged image read none of it, in this process or
// the next; a file rewritten in place is noticed even when its size and mtime are put back.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include "cachemgr/cache.h"
#include "engine_fixture.h"

using namespace cachemgr;
using namespace cachemgr::test;

namespace {

// Bytes this process has read so far; a test of bytes read needs the count.
uint64_t BytesRead() {
  const uint64_t n = test::BytesReadSoFar();
  REQUIRE(n > 0);
  return n;
}

// Rewrites one byte in place and puts the size and mtime back, as `touch -d` would:
// only ctime (which nobody can set) tells the new version from the old.
void RewriteKeepingMtime(const std::filesystem::path& path, uint64_t offset) {
  struct stat before {};
  REQUIRE(::stat(path.c_str(), &before) == 0);
  // Until the filesystem's (coarse) clock has passed the old ctime: the rewrite then
  // gets a ctime of its own.
  REQUIRE(WaitUntil(
      [&] {
        struct timespec now {};
        ::clock_gettime(CLOCK_REALTIME_COARSE, &now);
        return now.tv_sec > before.st_ctim.tv_sec ||
               (now.tv_sec == before.st_ctim.tv_sec && now.tv_nsec > before.st_ctim.tv_nsec);
      },
      std::chrono::seconds(5)));
  int fd = ::open(path.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  unsigned char b = 0;
  REQUIRE(::pread(fd, &b, 1, static_cast<off_t>(offset)) == 1);
  b ^= 0xff;
  REQUIRE(::pwrite(fd, &b, 1, static_cast<off_t>(offset)) == 1);
  struct timespec times[2] = {before.st_atim, before.st_mtim};
  REQUIRE(::futimens(fd, times) == 0);
  ::close(fd);
  struct stat after {};
  REQUIRE(::stat(path.c_str(), &after) == 0);
  REQUIRE(after.st_size == before.st_size);
  REQUIRE(after.st_mtim.tv_nsec == before.st_mtim.tv_nsec);
  REQUIRE(after.st_mtim.tv_sec == before.st_mtim.tv_sec);
}

constexpr uint64_t kImage = 64 * kMiB;
constexpr uint64_t kFew = 2 * kMiB;  // headers, sidecar probes, the index: not the image

}  // namespace

TEST_CASE("a hit, a pass and a prefill read none of an unchanged image, in the next process too") {
  Env env;
  auto id = env.AddImage(kImage, 7, kImage);
  {
    auto cache = env.Open();
    CHECK(cache->CreateVolume({.image_id = id, .volume = "v1"}).plan == Plan::kMiss);
    const uint64_t before = BytesRead();
    CHECK(cache->CreateVolume({.image_id = id, .volume = "v2"}).plan == Plan::kClone);
    CHECK(BytesRead() - before < kFew);
  }
  // A new Cache is what a new `cachemgr` process starts from: only the index is shared.
  auto cache = env.Open();
  uint64_t before = BytesRead();
  CHECK(cache->CreateVolume({.image_id = id, .volume = "v3"}).plan == Plan::kClone);
  CHECK(BytesRead() - before < kFew);

  before = BytesRead();
  auto report = cache->RunEvictionPass({});
  CHECK(BytesRead() - before < kFew);
  CHECK(report.actions.empty());
  CHECK(report.source_requests == 0);

  before = BytesRead();
  CHECK(cache->Prefill(id).outcome == PrefillOutcome::kFresh);
  auto listed = cache->SourceImages();
  CHECK(listed.size() == 1);
  CHECK(cache->Prefill(id).outcome == PrefillOutcome::kFresh);
  CHECK(BytesRead() - before < kFew);
  CHECK(env.CountRows("SELECT COUNT(*) FROM source_digests") == 1);
}

TEST_CASE("a file rewritten in place with its size and mtime put back is a new version") {
  Env env;
  auto id = env.AddImage(kImage, 9, kImage);
  auto cache = env.Open();
  CHECK(cache->CreateVolume({.image_id = id, .volume = "v1"}).plan == Plan::kMiss);
  const auto old_md5 = cache->Lookup(id)->checksum;

  RewriteKeepingMtime(env.Image(id), kImage / 2);
  // The same Cache (a long-lived embedder) and a new one (the next process) both see it.
  auto dry = env.Open()->RunEvictionPass({.dry_run = true});
  REQUIRE(dry.actions.size() == 1);
  CHECK(dry.actions[0].kind == "stale");
  const uint64_t before = BytesRead();
  auto report = cache->RunEvictionPass({});
  CHECK(BytesRead() - before < kFew);  // hashed once, by the pass above
  REQUIRE(report.actions.size() == 1);
  // Stale, and deferred: volume v1 still reads from it.
  CHECK(report.actions[0].kind == "defer");
  CHECK_MESSAGE(report.actions[0].reason.find("changed") != std::string::npos,
                report.actions[0].reason);
  CHECK(report.actions[0].image_id == id);

  auto again = cache->CreateVolume({.image_id = id, .volume = "v2"});
  CHECK(again.plan == Plan::kMiss);
  CHECK(env.SameData("v2", id));
  CHECK(cache->Lookup(id)->checksum != old_md5);
}

TEST_CASE("a removed image's kept digests go with it") {
  Env env;
  auto id = env.AddImage(kMiB, 3, kMiB);
  auto cache = env.Open();
  cache->Prefill(id);
  CHECK(env.CountRows("SELECT COUNT(*) FROM source_digests") == 1);
  std::filesystem::remove(env.Image(id));
  auto report = cache->RunEvictionPass({});
  REQUIRE(report.actions.size() == 1);
  CHECK(report.actions[0].kind == "gone");
  CHECK(env.CountRows("SELECT COUNT(*) FROM source_digests") == 0);
}

TEST_CASE("a rewrite with its mtime put back is noticed even when a hard link comes with it") {
  // Only ctime and the link count tell this from a link alone: the kept digests are
  // never carried over to another identity, so the image is hashed again.
  Env env;
  auto id = env.AddImage(4 * kMiB, 11, 4 * kMiB);
  auto cache = env.Open();
  CHECK(cache->CreateVolume({.image_id = id, .volume = "v1"}).plan == Plan::kMiss);
  const auto old_md5 = cache->Lookup(id)->checksum;
  RewriteKeepingMtime(env.Image(id), kMiB);
  const auto link = env.Image(id).string() + ".someone-elses-link";
  std::filesystem::create_hard_link(env.Image(id), link);
  auto next = env.Open();
  auto again = next->CreateVolume({.image_id = id, .volume = "v2"});
  CHECK(again.plan == Plan::kMiss);
  CHECK(env.SameData("v2", id));
  CHECK(next->Lookup(id)->checksum != old_md5);
  std::filesystem::remove(link);
}

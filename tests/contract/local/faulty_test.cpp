// The fault-injecting wrapper injects what it is told, and nothing half-made survives.
#include <doctest/doctest.h>

#include <memory>

#include "cachemgr/error.h"
#include "storage/local/local_backend.h"
#include "support/faulty_backend.h"
#include "support/test_util.h"

namespace cachemgr::test {
namespace {

using storage::ImageRef;
constexpr uint64_t kMiB = 1024 * 1024;

struct Fixture {
  TempDir dir{"faulty"};
  FaultyBackend* faulty = nullptr;
  storage::LocalBackend* local = nullptr;
  std::unique_ptr<storage::Backend> backend;
  Fixture() {
    LocalBackendOptions options;
    options.root = (dir.path() / "root").string();
    options.clone_mode = CloneMode::kQcow2;
    auto l = std::make_unique<storage::LocalBackend>(options, nullptr);
    local = l.get();
    auto f = std::make_unique<FaultyBackend>(std::move(l));
    faulty = f.get();
    backend = std::move(f);
  }
};

std::string Data(uint64_t n, char c) { return std::string(n, c); }
std::span<const std::byte> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// Names in a pool folder that are not images (temporary files, sidecars).
std::vector<std::string> Leftovers(const std::filesystem::path& pool_dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(pool_dir))
    if (e.path().filename().string().rfind(".tmp-", 0) == 0) out.push_back(e.path().string());
  for (const auto& e : std::filesystem::directory_iterator(pool_dir / ".meta"))
    out.push_back(e.path().string());
  return out;
}

TEST_CASE("an injected failure mid-write leaves no image behind") {
  Fixture f;
  ImageRef ref{f.backend->entry_pool(), "midwrite"};
  f.faulty->FailWritesAfter(1 * kMiB + 100);
  bool thrown = false;
  {
    auto writer = f.backend->Create(ref, 4 * kMiB);
    try {
      for (int i = 0; i < 16; ++i) writer->Append(Bytes(Data(256 * 1024, 'a' + i)));
      writer->Finish();
    } catch (const Error& e) {
      thrown = true;
      CHECK(e.code() == Errc::kBackend);
      CHECK(std::string(e.what()).find("injected fault") != std::string::npos);
    }
  }
  CHECK(thrown);
  CHECK(f.faulty->faults() == 1);
  CHECK_FALSE(f.backend->Exists(ref));
  CHECK(f.backend->List(ref.pool).empty());
  CHECK(Leftovers(f.local->PathOf(ref).parent_path()).empty());

  // Disarmed, the same name can be made.
  f.faulty->Clear();
  auto writer = f.backend->Create(ref, 1 * kMiB);
  writer->Append(Bytes(Data(1 * kMiB, 'z')));
  writer->Finish();
  CHECK(f.backend->Exists(ref));
}

TEST_CASE("a failure in Finish leaves no image behind") {
  Fixture f;
  ImageRef ref{f.backend->entry_pool(), "finish"};
  f.faulty->FailNthCall(Verb::kFinish, 1);
  {
    auto writer = f.backend->Create(ref, 1 * kMiB);
    writer->Append(Bytes(Data(1 * kMiB, 'q')));
    CHECK_THROWS_AS(writer->Finish(), Error);
  }
  CHECK_FALSE(f.backend->Exists(ref));
  CHECK(Leftovers(f.local->PathOf(ref).parent_path()).empty());
}

TEST_CASE("the nth call of a verb fails, and only that one") {
  Fixture f;
  ImageRef base{f.backend->entry_pool(), "base"};
  {
    auto w = f.backend->Create(base, 1 * kMiB);
    w->Append(Bytes(Data(1 * kMiB, 'b')));
    w->Finish();
  }
  f.backend->CreateSnapshot({base, "snap"});
  f.backend->ProtectSnapshot({base, "snap"});
  f.faulty->FailNthCall(Verb::kClone, 2);
  f.backend->Clone({base, "snap"}, {"volumes", "v1"});
  try {
    f.backend->Clone({base, "snap"}, {"volumes", "v2"});
    FAIL("the second clone did not fail");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::kBackend);
    CHECK(std::string(e.what()).find("Clone call #2") != std::string::npos);
  }
  CHECK_FALSE(f.local->Exists({"volumes", "v2"}));  // never reached the wrapped backend
  f.backend->Clone({base, "snap"}, {"volumes", "v3"});
  CHECK(f.faulty->calls(Verb::kClone) == 3);
  CHECK(f.backend->Exists({"volumes", "v1"}));
  CHECK(f.backend->Exists({"volumes", "v3"}));

  f.faulty->FailAlways(Verb::kRemove);
  CHECK_THROWS_AS(f.backend->Remove({"volumes", "v1"}), Error);
  CHECK_THROWS_AS(f.backend->Remove({"volumes", "v1"}), Error);
  f.faulty->Clear();
  CHECK(f.backend->Remove({"volumes", "v1"}) == storage::RemoveOutcome::kRemoved);

  f.faulty->FailNthCall(Verb::kRead, 1);
  auto reader = f.backend->Open(base, std::nullopt);
  std::string buf(4096, '\0');
  CHECK_THROWS_AS(reader->Read(0, {reinterpret_cast<std::byte*>(buf.data()), buf.size()}),
                  Error);
  CHECK(reader->Read(0, {reinterpret_cast<std::byte*>(buf.data()), buf.size()}) == buf.size());
  CHECK(buf == Data(4096, 'b'));
}

}  // namespace
}  // namespace cachemgr::test

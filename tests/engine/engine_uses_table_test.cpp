// Local backend, two hosts sharing one root: the pass's reconcile skips the pool's table of
// last uses when it is unchanged since this index merged all of it (its stamp), and then
// still tells the uses this host made since; a change any host makes is read again.
#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "cachemgr/cache.h"
#include "engine/naming.h"
#include "engine_fixture.h"
#include "support/engine_harness.h"

namespace cachemgr::test {
namespace {

// The table folder's times give a stamp only once older than 2 s (in whole seconds).
void Settle() { std::this_thread::sleep_for(std::chrono::milliseconds(3100)); }

int64_t SharedUse(const Env& env, const std::string& image_id) {
  const auto uses = env.backend->ReadTable("uses");
  auto it = uses.find(engine::EntryName(image_id));
  return it == uses.end() ? 0 : std::stoll(it->second);
}

TEST_CASE("a pass skips the table of last uses it merged already, reads it again once any "
          "host wrote to it, and tells its own uses made since") {
  Env env;
  const auto a = env.AddImage(4 * kMiB, 41);
  auto clock = std::make_shared<FakeClock>();
  Options oa = env.options;
  oa.host_id = "host-a";
  oa.index = (env.dir.path() / "a.db").string();
  oa.cache.share_use_interval_s = 3600;  // A's hits never write the table themselves
  Options ob = env.options;
  ob.host_id = "host-b";
  ob.index = (env.dir.path() / "b.db").string();
  auto host_a = OpenDrivenEngine(oa, clock).cache;
  auto host_b = OpenDrivenEngine(ob, clock).cache;

  host_a->CreateVolume({.image_id = a, .volume = "a1"});
  host_b->RunEvictionPass({});  // adopts a
  host_a->RunEvictionPass({});
  Settle();
  host_a->RunEvictionPass({});  // merges all of it, writes nothing: the stamp is kept
  const int64_t first = host_a->Lookup(a)->last_used;

  // B uses it later, and writes that to the table.
  clock->Advance(std::chrono::seconds(600));
  host_b->CreateVolume({.image_id = a, .volume = "b1"});
  REQUIRE(SharedUse(env, a) == first + 600);
  Settle();
  host_a->RunEvictionPass({});  // another stamp: read, and merged
  CHECK(host_a->Lookup(a)->last_used == first + 600);

  Settle();
  host_a->RunEvictionPass({});  // nothing new: the stamp is kept again
  // A uses it; its hit does not write the table. The next pass skips the read and tells it.
  clock->Advance(std::chrono::seconds(30));
  host_a->CreateVolume({.image_id = a, .volume = "a2"});
  REQUIRE(SharedUse(env, a) == first + 600);
  host_a->RunEvictionPass({});
  CHECK(SharedUse(env, a) == first + 630);
  CHECK(host_a->Lookup(a)->last_used == first + 630);
  // And B learns it by the table.
  Settle();
  host_b->RunEvictionPass({});
  CHECK(host_b->Lookup(a)->last_used == first + 630);
}

}  // namespace
}  // namespace cachemgr::test

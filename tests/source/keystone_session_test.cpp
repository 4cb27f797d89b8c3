// The Keystone session against the real test Keystone (fixture keystone, 40 s tokens):
// threads that need a token at once share one authentication, and after a 401 one
// renewal; the token is renewed before it expires; the catalog gives a service's
// endpoint and names what it has when asked for what it has not. Needs Keystone alone,
// so the TSan suite runs it too.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include "cachemgr/error.h"
#include "source/keystone.h"
#include "support/test_util.h"

namespace cachemgr::test {
namespace {

std::map<std::string, std::string> Credentials() {
  std::map<std::string, std::string> env;
  std::ifstream in(RunDir() / "keystone" / "credentials.env");
  for (std::string line; std::getline(in, line);) {
    auto eq = line.find('=');
    if (eq != std::string::npos) env[line.substr(0, eq)] = line.substr(eq + 1);
  }
  REQUIRE_MESSAGE(env.count("OS_AUTH_URL"), "the keystone fixture wrote no credentials");
  return env;
}

KeystoneAuthOptions AppCredential() {
  auto env = Credentials();
  KeystoneAuthOptions o;
  o.auth_url = env["OS_AUTH_URL"];
  o.application_credential_id = env["OS_APPLICATION_CREDENTIAL_ID"];
  o.application_credential_secret = env["OS_APPLICATION_CREDENTIAL_SECRET"];
  return o;
}

// Runs `fn` on `n` threads released together; returns what each returned.
std::vector<std::string> AtOnce(int n, const std::function<std::string()>& fn) {
  std::vector<std::string> out(n);
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      ready.fetch_add(1);
      while (!go.load()) std::this_thread::yield();
      out[i] = fn();
    });
  }
  while (ready.load() < n) std::this_thread::yield();
  go.store(true);
  for (auto& t : threads) t.join();
  return out;
}

TEST_CASE("concurrent requests share one authentication, and one renewal after a 401") {
  source::KeystoneSession session(AppCredential(), {}, nullptr);
  auto tokens = AtOnce(8, [&] { return session.Token(); });
  CHECK(std::set<std::string>(tokens.begin(), tokens.end()).size() == 1);
  CHECK(session.authentications() == 1);

  // Every thread saw its request refused with the same token: one new token for all.
  const std::string refused = tokens[0];
  auto renewed = AtOnce(8, [&] {
    session.Invalidate(refused);
    return session.Token();
  });
  CHECK(session.authentications() == 2);
  CHECK(std::set<std::string>(renewed.begin(), renewed.end()).size() == 1);
  CHECK(renewed[0] != refused);
  // A late thread invalidating the old token does not throw away the new one.
  session.Invalidate(refused);
  CHECK(session.Token() == renewed[0]);
  CHECK(session.authentications() == 2);
}

TEST_CASE("a token is renewed before it expires") {
  auto options = AppCredential();
  options.renew_before_s = 60;  // more than the 40 s life: renewed half way through
  source::KeystoneSession session(options, {}, nullptr);
  const auto start = std::chrono::steady_clock::now();
  const std::string first = session.Token();
  std::string now = first;
  // Real time must pass for a real token to age: poll, bounded by the token's life.
  while (now == first && std::chrono::steady_clock::now() - start < std::chrono::seconds(60)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    now = session.Token();
  }
  const auto renewed_after = std::chrono::steady_clock::now() - start;
  CHECK(now != first);
  CHECK(session.authentications() == 2);
  CHECK(renewed_after < std::chrono::seconds(40));   // before the first token expired
  CHECK(renewed_after >= std::chrono::seconds(18));  // not at once: about half its life
}

TEST_CASE("the catalog's endpoint of a service, and a clear error for a missing one") {
  // Keystone's own identity endpoints are in the catalog (the image endpoint's lookup
  // runs against a real Glance in source_keystone).
  auto options = AppCredential();
  source::KeystoneSession session(options, {}, nullptr);
  const std::string base = options.auth_url.substr(0, options.auth_url.rfind("/v3"));
  CHECK(session.Endpoint("identity").rfind(base, 0) == 0);
  try {
    session.Endpoint("no-such-service");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::kConfig);
    CHECK(std::string(e.what()).find("no no-such-service endpoint") != std::string::npos);
  }
  options.region_name = "Elsewhere";
  source::KeystoneSession other(options, {}, nullptr);
  try {
    other.Endpoint("identity");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("region 'Elsewhere'") != std::string::npos);
    CHECK(std::string(e.what()).find("public@RegionOne") != std::string::npos);
  }
}

TEST_CASE("bad auth settings are config errors that name the key, never the secret") {
  auto options = AppCredential();
  options.application_credential_secret.clear();
  CHECK_THROWS_WITH_AS(source::KeystoneSession(options, {}, nullptr),
                       doctest::Contains("application_credential_secret"), Error);
  options = AppCredential();
  options.interface = "private";
  CHECK_THROWS_WITH_AS(source::KeystoneSession(options, {}, nullptr),
                       doctest::Contains("'private' is not public, internal or admin"), Error);
  options = AppCredential();
  options.auth_url = "ftp://keystone";
  CHECK_THROWS_WITH_AS(source::KeystoneSession(options, {}, nullptr),
                       doctest::Contains("auth_url"), Error);
}

}  // namespace
}  // namespace cachemgr::test

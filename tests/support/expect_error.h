// The cachemgr::Error a call throws, for tests that check its code and message.
#pragma once

#include <doctest/doctest.h>

#include <exception>

#include "cachemgr/error.h"

namespace cachemgr::test {

// Runs fn, which must throw cachemgr::Error; returns it. Anything else fails the test.
template <typename Fn>
Error CatchError(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e;
  } catch (const std::exception& e) {
    FAIL("expected cachemgr::Error, got another exception: " << e.what());
  }
  FAIL("expected cachemgr::Error, nothing was thrown");
  return Error(Errc::kInternal, "unreachable");
}

}  // namespace cachemgr::test

// storage/rbd/rbd_buffers.h: calls into librbd/librados whose output buffer the caller
// sizes. Such a call answers -ERANGE when the buffer is too small and writes the size it
// needs through its size argument; the call is then made again with that size.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <vector>

namespace cachemgr::storage::rbd {

// How many times a call is retried for -ERANGE: the size it reports is what it needs at
// that moment, so only a list that keeps growing between calls needs another round.
inline constexpr int kMaxErangeRetries = 8;

// Runs `attempt()` until it returns something other than -ERANGE, at most
// 1 + kMaxErangeRetries times; returns its last result. `attempt` sizes its buffers from
// the sizes the previous call reported (for calls with several buffers).
template <typename Attempt>
int RetryOnErange(Attempt&& attempt) {
  int r = attempt();
  for (int i = 0; i < kMaxErangeRetries && r == -ERANGE; ++i) r = attempt();
  return r;
}

// For a call with one array buffer and its element count passed by pointer, such as
// rbd_list2(io, specs, &n): calls `call(buffer.data(), &n)` with n = buffer.size(), and
// on -ERANGE grows `buffer` to the reported n (plus `spare` elements, for calls that
// want room for an end marker) and calls again. Returns the last result; `n` holds the
// count the last call wrote.
template <typename T, typename N, typename Call>
int CallWithBuffer(std::vector<T>& buffer, N& n, Call&& call, size_t spare = 0) {
  return RetryOnErange([&] {
    n = static_cast<N>(buffer.size());
    const int r = call(buffer.data(), &n);
    if (r == -ERANGE) {
      buffer.resize(std::max(buffer.size(), static_cast<size_t>(n) + spare));
    }
    return r;
  });
}

}  // namespace cachemgr::storage::rbd

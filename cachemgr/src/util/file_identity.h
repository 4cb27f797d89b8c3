// util/file_identity.h: one version of a file, as a stat tells it.
#pragma once

#include <sys/stat.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace cachemgr::util {

inline int64_t Nanoseconds(const struct timespec& t) {
  return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

// "dev:ino:size:mtime_ns:ctime_ns:nlink". Any write, truncation, replacement or
// `touch -d` back to an old mtime moves ctime (which no one can set), so two stats
// with the same identity saw the same bytes. The file source's kept digests and the
// local backend's hard-linked bases are both checked against it.
inline std::string FileIdentity(const struct stat& st) {
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" +
         std::to_string(st.st_size) + ":" + std::to_string(Nanoseconds(st.st_mtim)) + ":" +
         std::to_string(Nanoseconds(st.st_ctim)) + ":" + std::to_string(st.st_nlink);
}

// FileIdentity(st), returned once the clock has passed the file's times. File times come
// from a coarse clock (one tick, 1-10 ms): a write in the tick the identity was taken in
// would leave every field as recorded. Waiting out that tick (as git does for "racily
// clean" files) makes any change after this returns show in ctime.
inline std::string SettledFileIdentity(const struct stat& st) {
  const int64_t newest = std::max(Nanoseconds(st.st_ctim), Nanoseconds(st.st_mtim));
  for (int i = 0; i < 200; ++i) {  // a tick is at most 10 ms; 200 ms bounds a stuck clock
    struct timespec now {};
    ::clock_gettime(CLOCK_REALTIME_COARSE, &now);
    if (Nanoseconds(now) > newest) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return FileIdentity(st);
}

// Whether identity `is` differs from `was` only in ctime and the link count: a hard link
// added or dropped, or a write with its mtime put back together with a link (ctime cannot
// tell the two apart). Not proof of the same bytes: the caller compares those.
inline bool OnlyLinksMoved(const std::string& was, const std::string& is) {
  auto fields = [](const std::string& id) {
    std::vector<std::string> out;
    std::stringstream in(id);
    for (std::string f; std::getline(in, f, ':');) out.push_back(f);
    return out;
  };
  auto a = fields(was), b = fields(is);
  return a.size() == 6 && b.size() == 6 && std::equal(a.begin(), a.begin() + 4, b.begin()) &&
         a[5] != b[5];
}

}  // namespace cachemgr::util

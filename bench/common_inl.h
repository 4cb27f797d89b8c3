// bench/common_inl.h: template part of common.h.
#pragma once

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <exception>
#include <iostream>

namespace cachemgr::bench {

template <typename Fn>
ChildResult ForkChild(Fn&& fn) {
  std::cout.flush();
  std::cerr.flush();
  auto start = Clock::now();
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int code = 1;
    try {
      code = fn();
    } catch (const std::exception& e) {
      std::cerr << "child: " << e.what() << "\n";
    }
    std::cout.flush();
    std::cerr.flush();
    _exit(code);
  }
  int status = 0;
  struct rusage usage {};
  if (wait4(pid, &status, 0, &usage) < 0) throw std::runtime_error("wait4 failed");
  ChildResult r;
  r.wall_ms = MsSince(start);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.max_rss_kib = static_cast<uint64_t>(usage.ru_maxrss);
  return r;
}

}  // namespace cachemgr::bench

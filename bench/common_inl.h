// bench/common_inl.h: template part of common.h.
#pragma once

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
  return WaitChild(pid, start);
}

}  // namespace cachemgr::bench

// config/config_file.h: reading the config file and checking the folders it names,
// before anything trusts them (config_file.cpp).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace cachemgr::config {

// The largest config file read; a real one is a few KiB.
inline constexpr uint64_t kMaxConfigBytes = 1 << 20;

// The text of a config file: a regular file of at most kMaxConfigBytes, opened without
// blocking (a FIFO never hangs) and checked with fstat before a byte is read. Anything
// else is a kConfig error naming the file.
std::string ReadConfigText(const std::filesystem::path& path);

// Throws kConfig naming `key` when `dir` (after resolving symlinks and "..") is a system
// folder the cache must never create files in or remove files from: "/", /etc, /usr,
// /var, /home, /tmp itself, and everything under /proc, /sys, /dev, /boot, /etc, /usr,
// /bin, /sbin and /lib*.
void RefuseSystemFolder(const std::string& key, const std::filesystem::path& dir);

}  // namespace cachemgr::config

// engine/floor_reservations.h: the bytes misses in progress will write, as every process
// of a host (and hosts sharing a local root) sees them, for the free-space floor.
//
// A miss reserves its image's bytes before it fills, so misses at once in other threads or
// processes count them: the filesystem (or the pool's figure) shows a fill only as it is
// written. Each reservation is a file in one folder, held under an exclusive flock while
// the fill runs: a file nobody holds is a fill that ended (or a process that died), and
// is dropped. (A released reservation is not counted on: on RBD the pool's MAX AVAIL
// shows a write seconds late, so a miss right after another's fill may still see the
// earlier figure; counting the fill on for a while would count it twice once it shows.)
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>

#include "util/unique_fd.h"

namespace cachemgr::engine {

class FloorReservations {
 public:
  explicit FloorReservations(std::filesystem::path dir) : dir_(std::move(dir)) {}

  // One reservation, released by the destructor (after the fill).
  class Hold {
   public:
    Hold() = default;
    Hold(util::UniqueFd fd, std::filesystem::path path)
        : fd_(std::move(fd)), path_(std::move(path)) {}
    Hold(Hold&&) noexcept = default;
    Hold& operator=(Hold&&) noexcept = default;
    ~Hold();

   private:
    util::UniqueFd fd_;
    std::filesystem::path path_;
  };

  // Exclusive across threads and processes while a miss decides and reserves: without it,
  // two could both take the last room. kBusy naming the folder past `timeout`.
  util::UniqueFd Decide(std::chrono::milliseconds timeout) const;
  // Bytes reserved by every holder but those of `key` (the same image: one fill serves
  // them all). Removes the files of ended fills. Under Decide.
  uint64_t Others(const std::string& key) const;
  // Reserves `bytes` for `key` until the hold goes. Under Decide.
  Hold Reserve(const std::string& key, uint64_t bytes) const;

 private:
  std::filesystem::path dir_;
};

}  // namespace cachemgr::engine

// engine/volume_guard.h: what a create made of a volume, removed unless it commits.
#pragma once

#include <spdlog/spdlog.h>

#include <functional>
#include <memory>
#include <optional>

#include "cachemgr/error.h"
#include "storage/backend.h"

namespace cachemgr::engine {

// Removes what this call made of a volume unless Commit() runs, and drops its claim:
// the object under the staging name its claim recorded before anything was made (so it
// can only be this call's), or, once this call renamed it into place, the volume at its
// name. Never anything else: an object that held the name first is not this call's, and
// once the object's identity is known (Identify) only the object of that identity goes.
// Never throws.
class VolumeGuard {
 public:
  VolumeGuard(storage::Backend& backend, std::function<void()> drop_claim,
              std::shared_ptr<spdlog::logger> log)
      : backend_(backend), drop_claim_(std::move(drop_claim)), log_(std::move(log)) {}
  ~VolumeGuard() {
    if (committed_) return;
    if (made_) {
      try {
        if (!identity_.empty() && backend_.Identity(*made_) != identity_) {
          log_->warn("half-made volume left: {} now holds another object than this call's {}",
                     made_->name, identity_);
        } else {
          backend_.Remove(*made_);
        }
      } catch (const Error& e) {
        // Not found: the clone or copy failed before it made anything.
        if (e.code() != Errc::kNotFound) {
          log_->warn("half-made volume not removed volume={} error={}", made_->name, e.what());
        }
      } catch (const std::exception& e) {
        log_->warn("half-made volume not removed volume={} error={}", made_->name, e.what());
      }
    }
    try {
      drop_claim_();
    } catch (const std::exception& e) {
      log_->warn("volume claim left for gc error={}", e.what());
    }
  }
  // What this call makes (or made) and must remove if it fails: the object at `ref`, of
  // `identity` when given (else whatever is there: a name only this call uses).
  void Track(const storage::ImageRef& ref, std::string identity = "") {
    made_ = ref;
    identity_ = std::move(identity);
  }
  // The identity of the object tracked, once known.
  void Identify(std::string identity) { identity_ = std::move(identity); }
  void Commit() { committed_ = true; }

 private:
  storage::Backend& backend_;
  std::function<void()> drop_claim_;
  std::shared_ptr<spdlog::logger> log_;
  std::optional<storage::ImageRef> made_;
  std::string identity_;
  bool committed_ = false;
};

}  // namespace cachemgr::engine

// storage/factory.cpp: picks the configured backend.
#include "storage/factory.h"

#include "cachemgr/error.h"

namespace cachemgr::storage {

std::unique_ptr<Backend> MakeBackend(const BackendOptions& options,
                                     std::shared_ptr<spdlog::logger> logger) {
  switch (options.type) {
    case BackendType::kLocal:
      return MakeLocalBackend(options.local, std::move(logger));
    case BackendType::kRbd:
      return MakeRbdBackend(options.rbd, std::move(logger));
  }
  throw Error(Errc::kConfig, "backend.type: unknown backend type");
}

}  // namespace cachemgr::storage

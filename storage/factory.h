// storage/factory.h: makes the configured backend.
#pragma once

#include <memory>

#include "cachemgr/options.h"
#include "storage/backend.h"

namespace spdlog {
class logger;
}

namespace cachemgr::storage {

std::unique_ptr<Backend> MakeLocalBackend(const LocalBackendOptions& options,
                                          std::shared_ptr<spdlog::logger> logger);
std::unique_ptr<Backend> MakeRbdBackend(const RbdBackendOptions& options,
                                        std::shared_ptr<spdlog::logger> logger);
std::unique_ptr<Backend> MakeBackend(const BackendOptions& options,
                                     std::shared_ptr<spdlog::logger> logger);

}  // namespace cachemgr::storage

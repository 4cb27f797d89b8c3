// tests/support/engine_harness.cpp
#include "support/engine_harness.h"

#include <spdlog/spdlog.h>

#include "cachemgr/config.h"
#include "engine/cache_impl.h"
#include "index/index.h"
#include "source/source.h"
#include "storage/factory.h"

namespace cachemgr::test {

DrivenEngine OpenDrivenEngine(const Options& options, std::shared_ptr<FakeClock> clock) {
  ValidateOptions(options);
  auto logger = spdlog::get("cachemgr");
  if (!logger) logger = std::make_shared<spdlog::logger>("cachemgr-test", spdlog::sinks_init_list{});
  BackendOptions backend_options = options.backend;
  backend_options.rbd.host_id = options.host_id;
  auto faulty = std::make_unique<FaultyBackend>(storage::MakeBackend(backend_options, logger));
  DrivenEngine out;
  out.faults = faulty.get();
  out.clock = clock ? std::move(clock) : std::make_shared<FakeClock>();
  engine::Parts parts;
  parts.backend = std::move(faulty);
  parts.index = index::Index::Open(options.index);
  parts.source = source::MakeSource(options.source, logger);
  parts.clock = out.clock;
  out.cache = std::make_unique<engine::CacheImpl>(options, logger, std::move(parts));
  return out;
}

}  // namespace cachemgr::test

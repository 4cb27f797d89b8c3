// engine/digest_store.h: the index as the file source's DigestCache.
#pragma once

#include <memory>
#include <mutex>

#include "index/index.h"
#include "source/source.h"
#include "util/clock.h"

namespace cachemgr::engine {

// Keeps the file source's digests in the index's source_digests table (schema/005), so
// that every process (each `cachemgr create`, each pass from cron) finds them. `mu`
// guards `index` as everywhere in the engine; both outlive every call made through it.
// `clock` dates each digest kept.
std::shared_ptr<source::DigestCache> MakeIndexDigestCache(
    std::mutex& mu, index::Index& index, std::shared_ptr<const util::Clock> clock);

}  // namespace cachemgr::engine

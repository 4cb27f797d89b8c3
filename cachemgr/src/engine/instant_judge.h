// engine/instant_judge.h: the judgement of an instant miss's import. The bytes the
// import copied are hashed (the image's file as the import reads it, Glance's file for a
// relayed qcow2, or the entry itself) and held against the digests the import record
// claims; a disagreement is a "bad" verdict with its reason.
#pragma once

#include <spdlog/logger.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cachemgr/cache.h"
#include "cachemgr/options.h"
#include "convert/format.h"
#include "engine/instant_records.h"
#include "source/source.h"
#include "storage/backend.h"

namespace cachemgr::engine {

// What reading the image's file showed.
struct Judged {
  std::string verdict, reason, md5, sha512, guest_md5;
};

// `algo` of every byte of the entry as it is now: what the import put there.
std::string EntryDigest(storage::Backend& backend, const storage::ImageRef& ref,
                        const std::string& algo);

// Runs `execute` (librbd's copy of what is not copied yet; may be empty) on a thread of
// its own while `judge` reads the image, and returns the judgement once both ended. An
// error of either is thrown, the judge's first.
Judged BesideExecute(const std::function<void()>& execute, const std::function<Judged()>& judge);

// Hashes the image's file from a descriptor opened safely by the source (while the import
// copies it), and judges what was read against the record's claims and against the file
// the import began with.
Judged JudgeFile(source::Source& source, const ImportRecord& rec, const ProgressFn& progress,
                 const std::function<std::optional<std::vector<convert::Extent>>()>& map);

// A relayed qcow2 (the entry holds its disk's bytes, Glance's digests describe its file):
// the file downloaded whole while the import copies, judged against Glance's claims, and
// the disk's bytes it holds by its map, which the committed entry must hold too.
Judged JudgeRelayedQcow2(source::Source& source, const ImportRecord& rec,
                         const ProgressFn& progress, const ConversionOptions& options,
                         const std::shared_ptr<spdlog::logger>& log);

// Hashes the entry's own bytes (a relayed raw image: the image's bytes exactly) once
// they are all copied, and judges them against the digests Glance claims.
Judged JudgeEntry(storage::Backend& backend, const storage::ImageRef& ref, const ImportRecord& rec,
                  const ProgressFn& progress);

}  // namespace cachemgr::engine

// engine/instant_records.h: what the pool keeps of instant misses, so that any host
// finishes an import another began, and every host sees an entry found bad.
//   imports  entry name -> ImportRecord (JSON): an import not finished yet, written
//            before the entry is renamed into place and erased once it is committed
//            and judged (or its entry is gone).
//   bad      sha1(entry identity) -> BadRecord (JSON): an entry whose import found bytes
//            other than the image's, with the volumes made from it; erased by the pass
//            once none of those volumes exists.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/shared_tables.h"

namespace cachemgr::engine {

// The tables kImportsTable, kBadTable and kBadFilesTable (engine/shared_tables.h). The
// last maps sha1(image id) -> util::FileIdentity of the last version of its file an import
// found bad: that version is checked (a normal miss) before it is served, for as long as
// it is the file (one key per image, overwritten, never needing a sweep).

struct ImportRecord {
  std::string image_id;
  std::string identity;       // the entry object's (Backend::Identity)
  std::string path;           // the file every host reads through, or the relay's URL
  std::string format;         // raw | qcow2
  std::string file_identity;  // util::FileIdentity of that file when the import began
  std::string checksum;       // claimed md5 ("" when the digests are the file's own)
  std::string os_hash_algo, os_hash_value;
  std::string host;
  int64_t at = 0;
  uint64_t size = 0;  // relayed (Glance): the image's bytes, served before the entry opens
  // Set once the bytes were judged, before the commit: "ok" or "bad", and what the
  // file's digests were (a run killed after the commit finishes from these).
  std::string verdict, reason, md5, sha512;
  // md5 of the disk's bytes as read from the file (raw: md5; qcow2: its plain extents),
  // compared after the commit with the md5 of the entry's own bytes: what librbd copied.
  std::string guest_md5;

  std::string Dump() const;
  // nullopt for a value that is not a record (a damaged or foreign value).
  static std::optional<ImportRecord> Parse(const std::string& value);
};

struct BadRecord {
  std::string image_id;
  std::string entry;  // the entry's name when it was found bad
  std::string reason;
  std::string file_identity;  // of the file version imported
  int64_t at = 0;
  std::vector<std::string> volumes;

  std::string Dump() const;
  static std::optional<BadRecord> Parse(const std::string& value);
};

}  // namespace cachemgr::engine

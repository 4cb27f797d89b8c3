// index/index_digests.cpp: the source_digests table (schema/005).
#include <SQLiteCpp/SQLiteCpp.h>

#include <string>

#include "cachemgr/error.h"
#include "index/index.h"
#include "index/index_sql.h"

namespace cachemgr::index {

std::optional<SourceDigestRow> Index::FindSourceDigest(const std::string& location,
                                                       const std::string& image_id) {
  return Guard(path_, "find source digest image=" + image_id,
               [&]() -> std::optional<SourceDigestRow> {
                 SQLite::Statement q(*db_,
                                     "SELECT identity, disk_format, md5, sha512, computed_at "
                                     "FROM source_digests WHERE location = ? AND image_id = ?");
                 q.bind(1, location);
                 q.bind(2, image_id);
                 if (!q.executeStep()) return std::nullopt;
                 SourceDigestRow r;
                 r.location = location;
                 r.image_id = image_id;
                 r.identity = q.getColumn(0).getString();
                 r.disk_format = q.getColumn(1).getString();
                 r.md5 = q.getColumn(2).getString();
                 r.sha512 = q.getColumn(3).getString();
                 r.computed_at = q.getColumn(4).getInt64();
                 return r;
               });
}

void Index::PutSourceDigest(const SourceDigestRow& r) {
  Guard(path_, "record source digest image=" + r.image_id, [&] {
    SQLite::Statement q(*db_,
                        "INSERT OR REPLACE INTO source_digests (location, image_id, identity, "
                        "disk_format, md5, sha512, computed_at) VALUES (?, ?, ?, ?, ?, ?, ?)");
    q.bind(1, r.location);
    q.bind(2, r.image_id);
    q.bind(3, r.identity);
    q.bind(4, r.disk_format);
    q.bind(5, r.md5);
    q.bind(6, r.sha512);
    q.bind(7, r.computed_at);
    q.exec();
  });
}

void Index::DeleteSourceDigest(const std::string& location, const std::string& image_id) {
  Guard(path_, "delete source digest image=" + image_id, [&] {
    SQLite::Statement q(*db_, "DELETE FROM source_digests WHERE location = ? AND image_id = ?");
    q.bind(1, location);
    q.bind(2, image_id);
    q.exec();
  });
}

}  // namespace cachemgr::index

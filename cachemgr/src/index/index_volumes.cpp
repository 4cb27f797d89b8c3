// index/index_volumes.cpp: the volumes table of the index.
#include <SQLiteCpp/SQLiteCpp.h>

#include <string>

#include "cachemgr/error.h"
#include "index/index.h"
#include "index/index_sql.h"

namespace cachemgr::index {
namespace {

constexpr const char* kVolumeColumns =
    "id, entry_id, image_id, name, pool, created_at, depth, plan, size_bytes, flattened, "
    "state, owner, staging_name, identity";

VolumeRow ReadVolume(SQLite::Statement& q) {
  VolumeRow r;
  r.id = q.getColumn(0).getInt64();
  r.entry_id = q.getColumn(1).isNull() ? 0 : q.getColumn(1).getInt64();
  r.image_id = q.getColumn(2).getString();
  r.name = q.getColumn(3).getString();
  r.pool = q.getColumn(4).getString();
  r.created_at = q.getColumn(5).getInt64();
  r.depth = static_cast<uint32_t>(q.getColumn(6).getInt64());
  r.plan = q.getColumn(7).getString();
  r.size_bytes = static_cast<uint64_t>(q.getColumn(8).getInt64());
  r.flattened = q.getColumn(9).getInt() != 0;
  r.state = ParseState(q.getColumn(10).getString());
  r.owner = q.getColumn(11).getString();
  r.staging_name = q.getColumn(12).getString();
  r.identity = q.getColumn(13).getString();
  return r;
}

// The entry an updated volume row names: NULL when the entry's row is gone. Another
// process may forget an entry (another host evicted it, say) between a create's clone and
// its record, or a flatten's read of the row and its write; the schema's ON DELETE SET
// NULL covers a row written before, this one written after: a volume made is recorded
// either way. (An insert still refuses an entry that does not exist: a claim names none.)
// The image id is part of the test: a forgotten entry's id may be given to a new row.
constexpr const char* kEntryOrNull = "(SELECT id FROM entries WHERE id = ?1 AND image_id = ?2)";

void BindVolume(SQLite::Statement& q, const VolumeRow& r) {
  // entry_id 0 means "no entry": NULL keeps the foreign key satisfied.
  if (r.entry_id == 0) {
    q.bind(1);
  } else {
    q.bind(1, r.entry_id);
  }
  q.bind(2, r.image_id);
  q.bind(3, r.name);
  q.bind(4, r.pool);
  q.bind(5, r.created_at);
  q.bind(6, static_cast<int64_t>(r.depth));
  q.bind(7, r.plan);
  q.bind(8, static_cast<int64_t>(r.size_bytes));
  q.bind(9, r.flattened ? 1 : 0);
  q.bind(10, std::string(StateName(r.state)));
  q.bind(11, r.owner);
  q.bind(12, r.staging_name);
  q.bind(13, r.identity);
}

std::vector<VolumeRow> QueryVolumes(SQLite::Statement& q) {
  std::vector<VolumeRow> rows;
  while (q.executeStep()) rows.push_back(ReadVolume(q));
  return rows;
}

}  // namespace

int64_t Index::InsertVolume(const VolumeRow& row) {
  return Guard(path_, "insert volume=" + row.name, [&] {
    SQLite::Statement q(*db_,
                        "INSERT INTO volumes (entry_id, image_id, name, pool, created_at, depth, "
                        "plan, size_bytes, flattened, state, owner, staging_name, identity) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    BindVolume(q, row);
    q.exec();
    return db_->getLastInsertRowid();
  });
}

std::optional<VolumeRow> Index::FindVolume(const std::string& pool, const std::string& name) {
  return Guard(path_, "find volume=" + name, [&]() -> std::optional<VolumeRow> {
    SQLite::Statement q(*db_, std::string("SELECT ") + kVolumeColumns +
                                  " FROM volumes WHERE pool = ? AND name = ?");
    q.bind(1, pool);
    q.bind(2, name);
    if (!q.executeStep()) return std::nullopt;
    return ReadVolume(q);
  });
}

std::vector<VolumeRow> Index::VolumesOf(int64_t entry_id) {
  return Guard(path_, "list volumes", [&] {
    SQLite::Statement q(*db_, std::string("SELECT ") + kVolumeColumns +
                                  " FROM volumes WHERE entry_id = ? ORDER BY id");
    q.bind(1, entry_id);
    return QueryVolumes(q);
  });
}

std::vector<VolumeRow> Index::ListVolumes() {
  return Guard(path_, "list volumes", [&] {
    SQLite::Statement q(*db_,
                        std::string("SELECT ") + kVolumeColumns + " FROM volumes ORDER BY id");
    return QueryVolumes(q);
  });
}

void Index::UpdateVolume(const VolumeRow& row) {
  Guard(path_, "update volume=" + row.name, [&] {
    SQLite::Statement q(*db_,
                        std::string("UPDATE volumes SET entry_id = ") + kEntryOrNull +
                            ", image_id = ?2, name = ?3, pool = ?4, created_at = ?5, depth = ?6, "
                            "plan = ?7, size_bytes = ?8, flattened = ?9, state = ?10, "
                            "owner = ?11, staging_name = ?12, identity = ?13 "
                            "WHERE id = ?14 AND staging_name = ?12");
    BindVolume(q, row);
    q.bind(14, row.id);
    // The staging name is random per claim and never changes: a row id SQLite gave again
    // after the claim's row was dropped is another volume's row, never written here.
    if (q.exec() == 0) {
      throw Error(Errc::kNotFound, "index " + path_.string() + ": no volume with id " +
                                       std::to_string(row.id) + " (volume=" + row.name +
                                       ") under staging name '" + row.staging_name + "'");
    }
  });
}

void Index::DeleteVolume(int64_t id) {
  Guard(path_, "delete volume id=" + std::to_string(id), [&] {
    SQLite::Statement q(*db_, "DELETE FROM volumes WHERE id = ?");
    q.bind(1, id);
    q.exec();
  });
}

bool Index::DeleteVolumeRow(const VolumeRow& row) {
  return Guard(path_, "delete volume=" + row.name, [&] {
    SQLite::Statement q(*db_,
                        "DELETE FROM volumes WHERE id = ? AND pool = ? AND name = ? AND "
                        "staging_name = ? AND state = ?");
    q.bind(1, row.id);
    q.bind(2, row.pool);
    q.bind(3, row.name);
    q.bind(4, row.staging_name);
    q.bind(5, std::string(StateName(row.state)));
    return q.exec() > 0;
  });
}

bool Index::DeleteVolumeClaim(const VolumeRow& row) {
  return Guard(path_, "delete volume claim=" + row.name, [&] {
    SQLite::Statement q(*db_,
                        "DELETE FROM volumes WHERE id = ? AND staging_name = ? AND owner = ? "
                        "AND state = 'creating'");
    q.bind(1, row.id);
    q.bind(2, row.staging_name);
    q.bind(3, row.owner);
    return q.exec() > 0;
  });
}

uint64_t Index::CountVolumes(int64_t entry_id) {
  return Guard(path_, "count volumes", [&] {
    SQLite::Statement q(*db_, "SELECT count(*) FROM volumes WHERE entry_id = ?");
    q.bind(1, entry_id);
    q.executeStep();
    return static_cast<uint64_t>(q.getColumn(0).getInt64());
  });
}

}  // namespace cachemgr::index

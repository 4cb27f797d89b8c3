// index/index_fates.cpp: why misses happen (schema/008): what last happened to each
// image's entry (its fate), read when the image next misses, and the totals per reason
// the trigger keeps.
//
// A fate is one row per image and backend location, so the table is bounded by the
// images ever cached there; the retention of the events bounds it further (by age, then
// by count), sparing the images that have a live entry: their "cached" fate is what
// makes a later unexplained disappearance a "lost" miss rather than a "cold" one.
#include <SQLiteCpp/SQLiteCpp.h>

#include <algorithm>
#include <limits>
#include <string>

#include "index/index.h"
#include "index/index_sql.h"

namespace cachemgr::index {
namespace {

// The fates no live entry holds: those the retention may delete.
constexpr const char* kUnheld =
    "NOT EXISTS (SELECT 1 FROM entries AS e WHERE e.backend = f.backend AND e.pool = f.pool "
    "AND e.image_id = f.image_id AND e.pinned = 0)";

}  // namespace

void Index::NoteEntryFate(const std::string& backend, const std::string& pool,
                          const std::string& image_id, int64_t ts, const std::string& fate) {
  Guard(path_, "note entry fate image=" + image_id, [&] {
    SQLite::Statement q(*db_,
                        "INSERT INTO entry_fates (backend, pool, image_id, ts, fate) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (backend, pool, image_id) "
                        "DO UPDATE SET ts = excluded.ts, fate = excluded.fate");
    q.bind(1, backend);
    q.bind(2, pool);
    q.bind(3, image_id);
    q.bind(4, ts);
    q.bind(5, fate);
    q.exec();
  });
}

std::optional<EntryFateRow> Index::EntryFate(const std::string& backend, const std::string& pool,
                                             const std::string& image_id) {
  return Guard(path_, "entry fate image=" + image_id, [&]() -> std::optional<EntryFateRow> {
    SQLite::Statement q(
        *db_, "SELECT ts, fate FROM entry_fates WHERE backend = ? AND pool = ? AND image_id = ?");
    q.bind(1, backend);
    q.bind(2, pool);
    q.bind(3, image_id);
    if (!q.executeStep()) return std::nullopt;
    return EntryFateRow{q.getColumn(0).getInt64(), q.getColumn(1).getString()};
  });
}

std::vector<MissTotals> Index::MissTotalsByReason() {
  return Guard(path_, "miss totals", [&] {
    SQLite::Statement q(*db_,
                        "SELECT reason, count, bytes FROM miss_totals WHERE count > 0 "
                        "ORDER BY reason");
    std::vector<MissTotals> totals;
    while (q.executeStep()) {
      totals.push_back({q.getColumn(0).getString(),
                        static_cast<uint64_t>(q.getColumn(1).getInt64()),
                        static_cast<uint64_t>(q.getColumn(2).getInt64())});
    }
    return totals;
  });
}

uint64_t Index::PruneEntryFates(int64_t now) {
  uint64_t deleted = 0;
  if (retention_.max_age_days > 0) {
    deleted += Guard(path_, "prune entry fates beyond max_age_days", [&] {
      SQLite::Statement q(*db_, std::string("DELETE FROM entry_fates AS f WHERE ts < ? AND ") +
                                    kUnheld);
      q.bind(1, now - static_cast<int64_t>(retention_.max_age_days) * kSecondsPerDay);
      return static_cast<uint64_t>(q.exec());
    });
  }
  if (retention_.max_rows > 0) {
    deleted += Guard(path_, "prune entry fates beyond max_rows", [&] {
      // The newest max_rows of those no live entry holds stay, and the live entries'.
      constexpr uint64_t kMaxKeep = std::numeric_limits<int64_t>::max();
      SQLite::Statement q(
          *db_, std::string("DELETE FROM entry_fates WHERE rowid IN (SELECT rowid FROM "
                            "entry_fates AS f WHERE ") +
                    kUnheld + " ORDER BY ts DESC, rowid DESC LIMIT -1 OFFSET ?)");
      q.bind(1, static_cast<int64_t>(std::min(retention_.max_rows, kMaxKeep)));
      return static_cast<uint64_t>(q.exec());
    });
  }
  return deleted;
}

}  // namespace cachemgr::index

// index/index_events.cpp: the events table (schema/002) behind `cachemgr stats`, its
// totals per kind (schema/007) and its retention.
//
// Events are written on every hit, miss and pass, so without a bound the table would
// grow for as long as the cache runs. The retention deletes the oldest rows beyond
// max_rows and the rows older than max_age_days, a bounded batch at a time: on every
// kPruneEvery-th insert (so the table stays near its bound even where no pass runs) and
// whole in the eviction pass. SQLite reuses the freed pages, so the file stops growing
// once the table is at its bound.
#include <SQLiteCpp/SQLiteCpp.h>

#include <algorithm>
#include <exception>
#include <limits>
#include <string>

#include "cachemgr/error.h"
#include "index/index.h"
#include "index/index_sql.h"

namespace cachemgr::index {

void Index::RecordEvent(const EventRow& event) {
  const int64_t id = Guard(path_, "record event kind=" + event.kind, [&] {
    SQLite::Statement q(*db_,
                        "INSERT INTO events (ts, kind, image_id, bytes, micros, reason) "
                        "VALUES (?, ?, ?, ?, ?, ?)");
    q.bind(1, event.ts);
    q.bind(2, event.kind);
    q.bind(3, event.image_id);
    q.bind(4, static_cast<int64_t>(event.bytes));
    q.bind(5, event.micros);
    q.bind(6, event.reason);
    q.exec();
    return db_->getLastInsertRowid();
  });
  // The rowid, not a counter of this object: every process sharing the index takes its
  // turn, and a process that records one event per run still prunes.
  // The prune may run inside a caller's transaction (the hit records its event in the one
  // that records its volume): in a savepoint of its own, and never its failure (a damaged
  // page among the oldest events, a busy index) the caller's. The pass prunes again and
  // reports what fails there; `doctor` checks the whole file.
  if (id > 0 && static_cast<uint64_t>(id) % kPruneEvery == 0) {
    try {
      db_->exec("SAVEPOINT prune_events");
      try {
        PruneEventBatch(event.ts, 2 * kPruneEvery);
        db_->exec("RELEASE prune_events");
      } catch (const Error&) {
        db_->exec("ROLLBACK TO prune_events");
        db_->exec("RELEASE prune_events");
      }
    } catch (const std::exception&) {
      // The savepoint itself failed: nothing of the prune stands; the event does.
    }
  }
}

std::vector<EventTotals> Index::EventTotalsByKind() {
  return Guard(path_, "event totals", [&] {
    // Every event ever recorded, pruned or not: counters that never go down.
    SQLite::Statement q(*db_,
                        "SELECT kind, count, bytes, micros FROM event_totals WHERE count > 0 "
                        "ORDER BY kind");
    std::vector<EventTotals> totals;
    while (q.executeStep()) {
      EventTotals t;
      t.kind = q.getColumn(0).getString();
      t.count = static_cast<uint64_t>(q.getColumn(1).getInt64());
      t.bytes = static_cast<uint64_t>(q.getColumn(2).getInt64());
      t.micros = q.getColumn(3).getInt64();
      totals.push_back(std::move(t));
    }
    return totals;
  });
}

std::optional<EventRow> Index::LastEvent(const std::string& kind) {
  return Guard(path_, "last event kind=" + kind, [&]() -> std::optional<EventRow> {
    // From the totals, not the events: the retention may have pruned the row itself.
    SQLite::Statement q(*db_,
                        "SELECT last_ts, kind, last_image_id, last_bytes, last_micros "
                        "FROM event_totals WHERE kind = ? AND count > 0");
    q.bind(1, kind);
    if (!q.executeStep()) return std::nullopt;
    return EventRow{q.getColumn(0).getInt64(), q.getColumn(1).getString(),
                    q.getColumn(2).getString(), static_cast<uint64_t>(q.getColumn(3).getInt64()),
                    q.getColumn(4).getInt64(), ""};
  });
}

std::vector<EventRow> Index::ListEvents(int64_t since) {
  return Guard(path_, "list events", [&] {
    SQLite::Statement q(*db_,
                        "SELECT ts, kind, image_id, bytes, micros FROM events WHERE ts >= ? "
                        "ORDER BY ts, id");
    q.bind(1, since);
    std::vector<EventRow> rows;
    while (q.executeStep()) {
      EventRow e;
      e.ts = q.getColumn(0).getInt64();
      e.kind = q.getColumn(1).getString();
      e.image_id = q.getColumn(2).getString();
      e.bytes = static_cast<uint64_t>(q.getColumn(3).getInt64());
      e.micros = q.getColumn(4).getInt64();
      rows.push_back(std::move(e));
    }
    return rows;
  });
}

uint64_t Index::PruneEvents(int64_t before) {
  return Guard(path_, "prune events", [&] {
    SQLite::Statement q(*db_, "DELETE FROM events WHERE ts < ?");
    q.bind(1, before);
    return static_cast<uint64_t>(q.exec());
  });
}

uint64_t Index::PruneEventBatch(int64_t now, uint64_t limit) {
  uint64_t deleted = 0;
  if (retention_.max_rows > 0) {
    deleted += Guard(path_, "prune events beyond max_rows", [&]() -> uint64_t {
      // The newest max_rows ids stay: ids grow with time (INTEGER PRIMARY KEY, the rowid)
      // and rows only ever go oldest first, so the ids left are one run and this keeps
      // max_rows rows. Two lookups at the ends of the rowid tree, not a count(*).
      SQLite::Statement q(*db_,
                          "DELETE FROM events WHERE id IN "
                          "(SELECT id FROM events WHERE id <= (SELECT max(id) FROM events) - ? "
                          "ORDER BY id LIMIT ?)");
      constexpr uint64_t kMaxKeep = std::numeric_limits<int64_t>::max();
      q.bind(1, static_cast<int64_t>(std::min(retention_.max_rows, kMaxKeep)));
      q.bind(2, static_cast<int64_t>(std::min(limit, kMaxKeep)));
      return static_cast<uint64_t>(q.exec());
    });
  }
  if (retention_.max_age_days > 0 && deleted < limit) {
    deleted += Guard(path_, "prune events beyond max_age_days", [&] {
      SQLite::Statement q(*db_,
                          "DELETE FROM events WHERE id IN "
                          "(SELECT id FROM events WHERE ts < ? ORDER BY ts LIMIT ?)");
      q.bind(1, now - static_cast<int64_t>(retention_.max_age_days) * kSecondsPerDay);
      q.bind(2, static_cast<int64_t>(limit - deleted));
      return static_cast<uint64_t>(q.exec());
    });
  }
  return deleted;
}

uint64_t Index::ApplyEventRetention(int64_t now) {
  uint64_t total = 0;
  for (;;) {
    const uint64_t n = PruneEventBatch(now, kPruneBatch);
    total += n;
    if (n < kPruneBatch) return total;
  }
}

}  // namespace cachemgr::index

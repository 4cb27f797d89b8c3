// index/index_reuse.cpp: the reuse-distance tracker's tables (schema/009): the head,
// each image's latest access, the Fenwick tree's non-zero nodes and the histograms.
// An access runs some 30 short statements on primary keys, in the caller's transaction.
#include <SQLiteCpp/SQLiteCpp.h>

#include <exception>
#include <string>

#include "cachemgr/error.h"
#include "index/index.h"
#include "index/index_sql.h"

namespace cachemgr::index {

ReuseHeadRow Index::GetReuseHead() {
  return Guard(path_, "read reuse head", [&] {
    SQLite::Statement q(*db_, "SELECT capacity, last_seq FROM reuse_head WHERE id = 1");
    ReuseHeadRow head;
    if (q.executeStep()) {
      head.capacity = static_cast<uint64_t>(q.getColumn(0).getInt64());
      head.last_seq = static_cast<uint64_t>(q.getColumn(1).getInt64());
    }
    return head;
  });
}

void Index::SetReuseHead(const ReuseHeadRow& head) {
  Guard(path_, "write reuse head", [&] {
    SQLite::Statement q(*db_,
                        "INSERT INTO reuse_head (id, capacity, last_seq) VALUES (1, ?, ?) "
                        "ON CONFLICT (id) DO UPDATE SET capacity = excluded.capacity, "
                        "last_seq = excluded.last_seq");
    q.bind(1, static_cast<int64_t>(head.capacity));
    q.bind(2, static_cast<int64_t>(head.last_seq));
    q.exec();
  });
}

std::optional<ReuseLastRow> Index::GetReuseLast(const std::string& image_id) {
  return Guard(path_, "read reuse mark image=" + image_id, [&]() -> std::optional<ReuseLastRow> {
    SQLite::Statement q(*db_, "SELECT seq, bytes FROM reuse_last WHERE image_id = ?");
    q.bind(1, image_id);
    if (!q.executeStep()) return std::nullopt;
    return ReuseLastRow{image_id, static_cast<uint64_t>(q.getColumn(0).getInt64()),
                        static_cast<uint64_t>(q.getColumn(1).getInt64())};
  });
}

void Index::SetReuseLast(const ReuseLastRow& row) {
  Guard(path_, "write reuse mark image=" + row.image_id, [&] {
    SQLite::Statement q(*db_,
                        "INSERT INTO reuse_last (image_id, seq, bytes) VALUES (?, ?, ?) "
                        "ON CONFLICT (image_id) DO UPDATE SET seq = excluded.seq, "
                        "bytes = excluded.bytes");
    q.bind(1, row.image_id);
    q.bind(2, static_cast<int64_t>(row.seq));
    q.bind(3, static_cast<int64_t>(row.bytes));
    q.exec();
  });
}

ReuseCellRow Index::GetReuseCell(uint64_t pos) {
  return Guard(path_, "read reuse tree", [&] {
    SQLite::Statement q(*db_, "SELECT count, bytes FROM reuse_tree WHERE pos = ?");
    q.bind(1, static_cast<int64_t>(pos));
    ReuseCellRow cell{pos, 0, 0};
    if (q.executeStep()) {
      cell.count = q.getColumn(0).getInt64();
      cell.bytes = q.getColumn(1).getInt64();
    }
    return cell;
  });
}

void Index::AddReuseCell(const ReuseCellRow& delta) {
  Guard(path_, "write reuse tree", [&] {
    SQLite::Statement q(*db_,
                        "INSERT INTO reuse_tree (pos, count, bytes) VALUES (?, ?, ?) "
                        "ON CONFLICT (pos) DO UPDATE SET count = count + excluded.count, "
                        "bytes = bytes + excluded.bytes");
    q.bind(1, static_cast<int64_t>(delta.pos));
    q.bind(2, delta.count);
    q.bind(3, delta.bytes);
    q.exec();
  });
}

std::vector<ReuseLastRow> Index::ListReuseLastBySeq() {
  return Guard(path_, "list reuse marks", [&] {
    SQLite::Statement q(*db_, "SELECT image_id, seq, bytes FROM reuse_last ORDER BY seq");
    std::vector<ReuseLastRow> rows;
    while (q.executeStep()) {
      rows.push_back({q.getColumn(0).getString(), static_cast<uint64_t>(q.getColumn(1).getInt64()),
                      static_cast<uint64_t>(q.getColumn(2).getInt64())});
    }
    return rows;
  });
}

void Index::ReplaceReuse(const std::vector<ReuseLastRow>& marks,
                         const std::vector<ReuseCellRow>& cells) {
  Guard(path_, "renumber reuse marks", [&] {
    db_->exec("DELETE FROM reuse_last");
    db_->exec("DELETE FROM reuse_tree");
    SQLite::Statement mark(*db_, "INSERT INTO reuse_last (image_id, seq, bytes) VALUES (?, ?, ?)");
    for (const auto& m : marks) {
      mark.bind(1, m.image_id);
      mark.bind(2, static_cast<int64_t>(m.seq));
      mark.bind(3, static_cast<int64_t>(m.bytes));
      mark.exec();
      mark.reset();
    }
    SQLite::Statement cell(*db_, "INSERT INTO reuse_tree (pos, count, bytes) VALUES (?, ?, ?)");
    for (const auto& c : cells) {
      if (c.count == 0 && c.bytes == 0) continue;
      cell.bind(1, static_cast<int64_t>(c.pos));
      cell.bind(2, c.count);
      cell.bind(3, c.bytes);
      cell.exec();
      cell.reset();
    }
  });
}

void Index::AddReuseHistogram(const std::string& unit, int64_t bucket, uint64_t n) {
  Guard(path_, "count reuse distance", [&] {
    SQLite::Statement q(*db_,
                        "INSERT INTO reuse_hist (unit, bucket, count) VALUES (?, ?, ?) "
                        "ON CONFLICT (unit, bucket) DO UPDATE SET count = count + excluded.count");
    q.bind(1, unit);
    q.bind(2, bucket);
    q.bind(3, static_cast<int64_t>(n));
    q.exec();
  });
}

std::vector<ReuseHistRow> Index::ReuseHistogram() {
  return Guard(path_, "read reuse histogram", [&] {
    SQLite::Statement q(*db_, "SELECT unit, bucket, count FROM reuse_hist ORDER BY unit, bucket");
    std::vector<ReuseHistRow> rows;
    while (q.executeStep()) {
      rows.push_back({q.getColumn(0).getString(), q.getColumn(1).getInt64(),
                      static_cast<uint64_t>(q.getColumn(2).getInt64())});
    }
    return rows;
  });
}

void Index::InSavepoint(const std::string& name, const std::function<void()>& fn) {
  Guard(path_, "savepoint " + name, [&] { db_->exec("SAVEPOINT \"" + name + "\""); });
  try {
    fn();
  } catch (...) {
    try {
      db_->exec("ROLLBACK TO \"" + name + "\"");
      db_->exec("RELEASE \"" + name + "\"");
    } catch (const std::exception&) {  // NOLINT(bugprone-empty-catch): SQLite rolled back
    }
    throw;
  }
  Guard(path_, "release " + name, [&] { db_->exec("RELEASE \"" + name + "\""); });
}

}  // namespace cachemgr::index

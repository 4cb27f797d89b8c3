// index/transaction.cpp: BEGIN IMMEDIATE, COMMIT and ROLLBACK, with SQLite errors mapped.
#include "index/transaction.h"

#include <SQLiteCpp/SQLiteCpp.h>

#include <utility>

#include "index/index_sql.h"

namespace cachemgr::index {

Transaction::Transaction(Index& index, std::string purpose)
    : index_(index), purpose_(std::move(purpose)) {
  Guard(index_.path(), "begin transaction (" + purpose_ + ")",
        [&] { IndexInternals::Db(index_).exec("BEGIN IMMEDIATE"); });
  open_ = true;
}

Transaction::~Transaction() {
  if (!open_) return;
  try {
    IndexInternals::Db(index_).exec("ROLLBACK");
  } catch (...) {  // NOLINT(bugprone-empty-catch): SQLite rolled back on the failure
  }
}

void Transaction::Commit() {
  if (!open_) {
    throw Error(Errc::kInternal, "index " + index_.path().string() + ": commit (" + purpose_ +
                                     "): the transaction is not open");
  }
  Guard(index_.path(), "commit (" + purpose_ + ")",
        [&] { IndexInternals::Db(index_).exec("COMMIT"); });
  open_ = false;
}

}  // namespace cachemgr::index

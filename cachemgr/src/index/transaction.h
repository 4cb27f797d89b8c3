// index/transaction.h: several statements of the index as one write, all or nothing.
//
// The index's own transaction type, so that callers (the engine) group statements
// without a SQLite type: it begins at once (BEGIN IMMEDIATE: the write lock is taken
// here, so a busy index fails before any statement ran, as kBusy naming the index and
// the purpose), rolls back in its destructor unless Commit() ran, and turns every SQLite
// failure into cachemgr::Error. One at a time per Index; an Index's methods run in it.
#pragma once

#include <string>

#include "index/index.h"

namespace cachemgr::index {

class Transaction {
 public:
  // `purpose` names the work in errors ("record hit volume=vm-1").
  Transaction(Index& index, std::string purpose);
  // Rolls back unless committed; never throws (a failed rollback is SQLite's own: the
  // connection has rolled back already).
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  // Makes every statement since the constructor durable as one. kBusy, kIo, ... on
  // failure, after which the transaction is rolled back.
  void Commit();

 private:
  Index& index_;
  std::string purpose_;
  bool open_ = false;
};

}  // namespace cachemgr::index

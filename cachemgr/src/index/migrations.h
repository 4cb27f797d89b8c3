// index/migrations.h: the numbered migrations of schema/, compiled into the library.
#pragma once

#include <span>

namespace cachemgr::index {

struct Migration {
  int version;          // the number the file name starts with; user_version after it
  const char* name;     // file name, for messages
  const char* sql;
};

// Every migration, in ascending version order.
std::span<const Migration> Migrations();

}  // namespace cachemgr::index

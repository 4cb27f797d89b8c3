// engine/shared_tables.h: the names of the tables that the hosts of one pool (or one
// local root) share through the backend (Backend::ReadTable and WriteTable), in one
// place, so that `doctor` reads every one of them.
#pragma once

#include <array>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace cachemgr::engine {

// shared.cpp: each entry's last use by any host, entries deferred for their clones, the
// pass's totals, the hosts that ran passes, fills in progress.
inline constexpr const char* kUsesTable = "uses";
inline constexpr const char* kDeferredTable = "deferred";
inline constexpr const char* kTotalsTable = "totals";
inline constexpr const char* kHostsTable = "hosts";
inline constexpr const char* kFillsTable = "fills";
// miss_reasons.cpp: what became of each miss.
inline constexpr const char* kFatesTable = "fates";
// instant_records.h and instant_relay.cpp: the instant miss's imports, the imports found
// bad, the files found bad, the relays serving imports.
inline constexpr const char* kImportsTable = "imports";
inline constexpr const char* kBadTable = "bad";
inline constexpr const char* kBadFilesTable = "bad_files";
inline constexpr const char* kRelaysTable = "relays";

inline constexpr std::array<const char*, 10> kSharedTables = {
    kUsesTable,   kDeferredTable, kTotalsTable, kHostsTable,     kFillsTable,
    kFatesTable,  kImportsTable,  kBadTable,    kBadFilesTable,  kRelaysTable};

// A table value's leading number ("<unix seconds> <host>"): 0 when it has none.
inline int64_t LeadingSeconds(const std::string& value) {
  try {
    return std::stoll(value);
  } catch (const std::exception&) {
    return 0;
  }
}

// A table value's words, split at blanks.
inline std::vector<std::string> Words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

}  // namespace cachemgr::engine

// util/proc_stat.h: what /proc/<pid>/stat says of a process, to tell a live owner from
// a dead one whose pid was reused.
#pragma once

#include <optional>
#include <string>

namespace cachemgr::util {

struct ProcStat {
  char state = '?';        // field 3: R, S, D, Z (zombie), X (dead), ...
  std::string start_time;  // field 22: clock ticks since boot; with the pid it names one
                           // process (a pid is reused, the pair is not)
};

// nullopt when the process is gone or its stat cannot be read whole.
std::optional<ProcStat> ReadProcStat(long pid);

}  // namespace cachemgr::util

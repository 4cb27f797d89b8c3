// util/proc_stat.cpp: see proc_stat.h.
#include "util/proc_stat.h"

#include <fstream>
#include <sstream>

namespace cachemgr::util {

std::optional<ProcStat> ReadProcStat(long pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(in, stat);
  const auto paren = stat.rfind(')');  // the command name may hold spaces and parentheses
  if (paren == std::string::npos) return std::nullopt;
  std::istringstream fields(stat.substr(paren + 1));
  ProcStat out;
  std::string field;
  // Fields after the command: state (3rd) ... starttime (22nd).
  for (int i = 3; i <= 22 && fields >> field; ++i) {
    if (i == 3) out.state = field.empty() ? '?' : field[0];
    if (i == 22) {
      out.start_time = field;
      return out;
    }
  }
  return std::nullopt;
}

}  // namespace cachemgr::util

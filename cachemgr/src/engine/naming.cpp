#include "engine/naming.h"

#include <openssl/evp.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>

#include "cachemgr/error.h"
#include "storage/backend.h"
#include "util/hex.h"
#include "util/proc_stat.h"

namespace cachemgr::engine {

namespace {

bool IsHex40(const std::string& s) {
  if (s.size() != 40) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

std::string HostName() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

void ValidateImageId(const std::string& image_id) {
  if (image_id.empty() || image_id.size() > 128) {
    throw Error(Errc::kInvalidArgument,
                "image id '" + util::Printable(image_id) + "': must be 1..128 characters");
  }
  if (image_id[0] == '.' || image_id[0] == '-') {
    throw Error(Errc::kInvalidArgument,
                "image id '" + util::Printable(image_id) + "': must not start with '.' or '-'");
  }
  for (char c : image_id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) {
      throw Error(Errc::kInvalidArgument,
                  "image id '" + util::Printable(image_id) + "': only [A-Za-z0-9._-] are allowed");
    }
  }
}

void ValidateVolumeName(const std::string& volume) {
  storage::ValidateName("volume", volume);
  if (IsEntryName(volume) || volume.starts_with(kStagingPrefix)) {
    throw Error(Errc::kInvalidArgument,
                "volume '" + volume + "': name is reserved for cache entries");
  }
}

std::string Sha1Hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha1(), nullptr) != 1) {
    throw Error(Errc::kInternal, "sha1 failed");
  }
  return util::HexEncode({md, len});
}

std::string EntryName(const std::string& image_id) { return Sha1Hex(image_id); }

std::string StagingName(const std::string& image_id) {
  return kStagingPrefix + Sha1Hex(image_id) + "-" + util::RandomHex(16);
}

namespace {
constexpr std::string_view kVolumeStagingPrefix = "staging-vol-";
}  // namespace

std::string VolumeStagingName() { return std::string(kVolumeStagingPrefix) + util::RandomHex(32); }

bool IsVolumeStagingName(const std::string& name) {
  return name.starts_with(kVolumeStagingPrefix) && storage::IsValidName(name);
}

bool IsEntryName(const std::string& name) { return IsHex40(name); }

std::optional<std::string> StagingKey(const std::string& name) {
  std::string prefix = kStagingPrefix;
  if (!name.starts_with(prefix) || name.size() < prefix.size() + 41) return std::nullopt;
  std::string key = name.substr(prefix.size(), 40);
  if (!IsHex40(key) || name[prefix.size() + 40] != '-') return std::nullopt;
  if (!storage::IsValidName(name)) return std::nullopt;  // not a name the cache makes
  return key;
}

namespace {
// When the process started ("" if unknown): see util::ProcStat.
std::string StartTime(pid_t pid) {
  const auto stat = util::ReadProcStat(pid);
  return stat ? stat->start_time : "";
}
}  // namespace

// "host:pid.start": the start time tells a reused pid from the owner that died.
std::string OwnerId() {
  const std::string start = StartTime(getpid());
  return HostName() + ":" + std::to_string(getpid()) + (start.empty() ? "" : "." + start);
}

bool OwnerAlive(const std::string& owner) {
  auto colon = owner.rfind(':');
  if (colon == std::string::npos) return false;
  if (owner.substr(0, colon) != HostName()) return true;
  const std::string last = owner.substr(colon + 1);
  const auto dot = last.find('.');
  pid_t pid = 0;
  try {
    pid = static_cast<pid_t>(std::stol(last.substr(0, dot)));
  } catch (...) {
    return false;
  }
  if (pid <= 0) return false;
  if (!(kill(pid, 0) == 0 || errno == EPERM)) return false;
  // Owners written before start times were recorded: the pid alone decides.
  if (dot == std::string::npos) return true;
  const std::string now = StartTime(pid);
  return now.empty() || now == last.substr(dot + 1);
}

}  // namespace cachemgr::engine

// storage/names.cpp: the one check every backend applies to image and snapshot names.
#include <string>

#include "cachemgr/error.h"
#include "storage/backend.h"
#include "util/hex.h"

namespace cachemgr::storage {

namespace {
constexpr size_t kMaxNameLength = 200;

bool Allowed(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '.' || c == '_' || c == '-';
}

// Names reach file paths (local backend) and RBD object names; quote them so a control
// byte in a hostile name cannot garble the message or the log line.
std::string Quoted(const std::string& name) { return "\"" + util::Printable(name) + "\""; }
}  // namespace

bool IsValidName(const std::string& name) {
  if (name.empty() || name.size() > kMaxNameLength || name[0] == '.' || name[0] == '-') {
    return false;
  }
  for (char c : name) {
    if (!Allowed(c)) return false;
  }
  return true;
}

void ValidateName(const std::string& what, const std::string& name) {
  auto refuse = [&](const std::string& why) {
    throw Error(Errc::kInvalidArgument, what + " name " + Quoted(name) + ": " + why);
  };
  if (name.empty()) refuse("empty");
  if (name.size() > kMaxNameLength)
    refuse("longer than " + std::to_string(kMaxNameLength) + " characters");
  if (name[0] == '.' || name[0] == '-') refuse("must not start with '.' or '-'");
  for (char c : name) {
    if (!Allowed(c)) refuse("only A-Z a-z 0-9 . _ - are allowed");
  }
}

}  // namespace cachemgr::storage

// Tables shared by the hosts of one local root (a `_base` root on an NFS export every
// host mounts): <root>/.state/<table>/<key> holds the key's value. A write lands by
// rename(2) over the key's file, which NFS makes atomic on the server; a reader sees the
// old value or the new one, never a mix. Files whose names start with '.' are a writer's
// temporaries (swept like every `.tmp-*` file of the root) and are not keys.
#include <cerrno>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>

#include "cachemgr/error.h"
#include "storage/local/local_backend.h"
#include "storage/local/local_files.h"

namespace cachemgr::storage {

namespace fs = std::filesystem;

namespace {
constexpr size_t kMaxValue = 4096;
}  // namespace

std::map<std::string, std::string> LocalBackend::ReadTable(const std::string& table) {
  ValidateName("table", table);
  const fs::path dir = fs::path(location()) / ".state" / table;
  std::map<std::string, std::string> out;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec == std::errc::no_such_file_or_directory) return out;
  if (ec) throw Error(Errc::kIo, "table " + dir.string() + ": cannot list: " + ec.message());
  for (const auto& e : it) {
    const std::string key = e.path().filename().string();
    if (key.empty() || key[0] == '.' || !e.is_regular_file(ec) || e.is_symlink(ec)) continue;
    std::ifstream in(e.path(), std::ios::binary);
    if (!in) continue;  // removed meanwhile
    std::string value(kMaxValue + 1, '\0');
    in.read(value.data(), static_cast<std::streamsize>(value.size()));
    value.resize(static_cast<size_t>(in.gcount()));
    if (value.size() > kMaxValue) continue;  // not a value this backend wrote
    out[key] = std::move(value);
  }
  return out;
}

void LocalBackend::WriteTable(const std::string& table,
                              const std::map<std::string, std::string>& set,
                              const std::vector<std::string>& erase) {
  ValidateName("table", table);
  if (set.empty() && erase.empty()) return;
  const fs::path dir = fs::path(location()) / ".state" / table;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(Errc::kIo, "table " + dir.string() + ": cannot create: " + ec.message());
  for (const auto& [key, value] : set) {
    ValidateName("table key", key);
    if (value.size() > kMaxValue) {
      throw Error(Errc::kInvalidArgument, "table " + table + " key " + key + ": value over 4 KiB");
    }
    WriteDurable(dir / key, value);
  }
  for (const auto& key : erase) {
    ValidateName("table key", key);
    fs::remove(dir / key, ec);
    if (ec && ec != std::errc::no_such_file_or_directory) {
      throw Error(Errc::kIo, "table " + dir.string() + ": cannot remove " + key + ": " +
                                 ec.message());
    }
  }
}

}  // namespace cachemgr::storage

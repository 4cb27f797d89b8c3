// storage/local/local_qcow2_header.cpp: see local_qcow2_header.h.
#include "storage/local/local_qcow2_header.h"

#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <array>
#include <cstring>
#include <string>

#include "util/byte_order.h"
#include "util/unique_fd.h"

namespace cachemgr::storage {

namespace fs = std::filesystem;

namespace {
constexpr char kQcow2Magic[4] = {'Q', 'F', 'I', '\xfb'};

// The "filename" of a json: backing name: top level, "file.filename", or the "file"
// child's (nested as deep as the name nests it).
std::optional<std::string> JsonFilename(const nlohmann::json& j, int depth = 0) {
  if (!j.is_object() || depth > 8) return std::nullopt;
  for (const char* key : {"filename", "file.filename"}) {
    auto it = j.find(key);
    if (it != j.end() && it->is_string()) return it->get<std::string>();
  }
  auto file = j.find("file");
  if (file != j.end()) return JsonFilename(*file, depth + 1);
  return std::nullopt;
}
}  // namespace

std::optional<std::string> LocalFileOfBackingName(const std::string& name) {
  if (name.starts_with("json:")) {
    const auto j = nlohmann::json::parse(name.substr(5), nullptr, /*allow_exceptions=*/false);
    auto file = JsonFilename(j);
    if (!file) return std::nullopt;
    return LocalFileOfBackingName(*file);
  }
  if (name.starts_with("file:")) return name.substr(5);
  // Any other "protocol:" before the first '/' is no local file (qemu reads it so).
  const auto colon = name.find(':');
  if (colon != std::string::npos && colon < name.find('/')) return std::nullopt;
  return name;
}

Qcow2Header ReadQcow2Header(const fs::path& path) {
  Qcow2Header h;
  int raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (raw < 0) return h;
  util::UniqueFd fd(raw);
  std::array<unsigned char, 32> buf{};
  if (::pread(fd.get(), buf.data(), buf.size(), 0) != static_cast<ssize_t>(buf.size())) return h;
  if (std::memcmp(buf.data(), kQcow2Magic, 4) != 0) return h;
  h.is_qcow2 = true;
  uint64_t backing_offset = util::LoadBe64(&buf[8]);
  uint32_t backing_size = util::LoadBe32(&buf[16]);
  h.size = util::LoadBe64(&buf[24]);
  if (backing_offset != 0 && backing_size > 0 && backing_size <= 1023) {
    std::string name(backing_size, '\0');
    if (::pread(fd.get(), name.data(), name.size(), static_cast<off_t>(backing_offset)) ==
            static_cast<ssize_t>(name.size()) &&
        !name.empty()) {
      // A name with a protocol ("file:", "json:{...}") reaches the file it names.
      const auto file = LocalFileOfBackingName(name);
      if (!file || file->empty()) return h;
      fs::path b(*file);
      if (b.is_relative()) b = path.parent_path() / b;
      h.backing_as_opened = b;
      h.backing = b.lexically_normal();
    }
  }
  return h;
}

}  // namespace cachemgr::storage

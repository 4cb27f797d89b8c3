// storage/local/local_qcow2_header.cpp: see local_qcow2_header.h.
#include "storage/local/local_qcow2_header.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <array>
#include <cerrno>
#include <cstring>
#include <string>

#include "util/byte_order.h"
#include "util/unique_fd.h"

namespace cachemgr::storage {

namespace fs = std::filesystem;

namespace {
constexpr char kQcow2Magic[4] = {'Q', 'F', 'I', '\xfb'};

// The "filename" of a json: backing name: the deepest of the node's own, of its "file"
// child's (nested objects), and of flattened keys ("file.filename", "file.file.filename").
void JsonFilename(const nlohmann::json& j, int depth, int* best_depth, std::string* best) {
  if (!j.is_object() || depth > 64) return;
  for (const auto& [key, value] : j.items()) {
    std::string_view k = key;
    int d = depth;
    while (k.starts_with("file.")) {
      k.remove_prefix(5);
      ++d;
    }
    if (k == "filename" && value.is_string() && d > *best_depth) {
      *best_depth = d;
      *best = value.get<std::string>();
    }
  }
  auto file = j.find("file");
  if (file != j.end()) JsonFilename(*file, depth + 1, best_depth, best);
}

std::optional<std::string> JsonFilename(const nlohmann::json& j) {
  int depth = -1;
  std::string name;
  JsonFilename(j, 0, &depth, &name);
  if (depth < 0) return std::nullopt;
  return name;
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
  // O_NONBLOCK: a FIFO put at the name after its stat never blocks the scan; only a
  // regular file is read.
  int raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (raw < 0) {
    // Gone, or a name that reaches nothing: no file to name a backing. Anything else
    // (permissions, I/O) leaves it unknown.
    h.unreadable = errno != ENOENT && errno != ENOTDIR && errno != ELOOP;
    h.read_errno = errno;
    return h;
  }
  util::UniqueFd fd(raw);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    h.unreadable = true;
    h.read_errno = errno;
    return h;
  }
  if (!S_ISREG(st.st_mode)) return h;
  std::array<unsigned char, 32> buf{};
  const ssize_t got = ::pread(fd.get(), buf.data(), buf.size(), 0);
  if (got < 0) {
    h.unreadable = true;
    h.read_errno = errno;
  }
  if (got != static_cast<ssize_t>(buf.size())) return h;
  if (std::memcmp(buf.data(), kQcow2Magic, 4) != 0) return h;
  h.is_qcow2 = true;
  uint64_t backing_offset = util::LoadBe64(&buf[8]);
  uint32_t backing_size = util::LoadBe32(&buf[16]);
  h.size = util::LoadBe64(&buf[24]);
  if (backing_offset != 0 && backing_size > 0 && backing_size <= 1023) {
    std::string name(backing_size, '\0');
    const ssize_t n =
        ::pread(fd.get(), name.data(), name.size(), static_cast<off_t>(backing_offset));
    if (n < 0) {
      h.unreadable = true;
      h.read_errno = errno;
    }
    if (n == static_cast<ssize_t>(name.size()) && !name.empty()) {
      // A name with a protocol ("file:", "json:{...}") reaches the file it names.
      const auto file = LocalFileOfBackingName(name);
      if (!file || file->empty()) return h;
      fs::path b(*file);
      const bool protocol = *file != name;
      if (b.is_relative() && protocol) {
        // Opened from qemu's working directory, not the overlay's folder.
        h.backing_from_cwd = true;
      } else if (b.is_relative()) {
        b = path.parent_path() / b;
      }
      h.backing_as_opened = b;
      h.backing = b.lexically_normal();
    }
  }
  return h;
}

}  // namespace cachemgr::storage

// index/index_file.cpp: the index file itself, before SQLite reads it: made whole in
// one step, refused when empty, set aside for rebuild-index.
//
// SQLite takes an empty file for a new database, so a file truncated to 0 bytes (a full
// disk, a bad restore, a crash of a copy) would silently become an empty index. A new
// index is therefore never created in place: it is made in a temporary file next to it
// and linked into place whole. A file at the index path that is empty is then damage,
// never a fresh index.
#include <SQLiteCpp/SQLiteCpp.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <string>
#include <system_error>

#include "cachemgr/error.h"
#include "index/index.h"

namespace cachemgr::index {
namespace {

namespace fs = std::filesystem;

// The smallest valid SQLite file is one page, and a page is at least 512 bytes.
constexpr off_t kMinDatabaseBytes = 512;

[[noreturn]] void FailErrno(Errc code, const fs::path& path, const std::string& what, int e) {
  throw Error(code, "index " + path.string() + ": " + what + ": " + std::strerror(e));
}

// Makes a new, valid (WAL-mode, schema-less) database at `path` unless a file is there.
void CreateWhole(const fs::path& path) {
  std::string tmpl = (path.parent_path() / ("." + path.filename().string() + ".new-XXXXXX"));
  int fd = ::mkostemp(tmpl.data(), O_CLOEXEC);
  if (fd < 0) FailErrno(Errc::kIo, path, "cannot create a temporary file next to it", errno);
  try {
    {
      SQLite::Database db(tmpl, SQLite::OPEN_READWRITE);
      // Writes the header page: the file is a database from now on.
      db.exec("PRAGMA journal_mode = WAL");
    }  // closed: SQLite checkpoints and drops the temporary's -wal and -shm
    if (::fsync(fd) != 0) FailErrno(Errc::kIo, path, "fsync of the new index failed", errno);
    if (::link(tmpl.c_str(), path.c_str()) != 0 && errno != EEXIST) {
      // EEXIST: another process made it first; theirs is as good as ours.
      FailErrno(Errc::kIo, path, "cannot link the new index into place", errno);
    }
  } catch (const SQLite::Exception& e) {
    ::close(fd);
    ::unlink(tmpl.c_str());
    throw Error(Errc::kIo, "index " + path.string() + ": cannot create: " + e.what());
  } catch (...) {
    ::close(fd);
    ::unlink(tmpl.c_str());
    throw;
  }
  ::close(fd);
  ::unlink(tmpl.c_str());
  int dir = ::open(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

}  // namespace

void Index::PrepareFile(const fs::path& path) {
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    throw Error(Errc::kIo, "index " + path.string() + ": cannot create its directory " +
                               dir.string() + ": " + ec.message());
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) FailErrno(Errc::kIo, path, "cannot stat", errno);
    CreateWhole(path.has_parent_path() ? path : fs::path(".") / path);
    if (::stat(path.c_str(), &st) != 0) FailErrno(Errc::kIo, path, "cannot stat", errno);
  }
  if (!S_ISREG(st.st_mode)) {
    throw Error(Errc::kConfig,
                "index " + path.string() + ": not a regular file; point `index` at a file path");
  }
  if (st.st_size < kMinDatabaseBytes) {
    throw Error(Errc::kCorrupt, "index " + path.string() + ": damaged (" +
                                    std::to_string(st.st_size) +
                                    " bytes, too short for a database); run "
                                    "`cachemgr rebuild-index` (it sets the file aside and "
                                    "rebuilds the index from the backend)");
  }
}

fs::path Index::SetAside(const fs::path& path) {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
  fs::path aside = path.string() + ".damaged-" + stamp;
  for (int n = 2; fs::exists(aside); ++n) {
    aside = path.string() + ".damaged-" + stamp + "-" + std::to_string(n);
  }
  if (::rename(path.c_str(), aside.c_str()) != 0) {
    FailErrno(Errc::kIo, path, "cannot move aside to " + aside.string(), errno);
  }
  // Its journal belongs to it, not to the new index.
  for (const char* suffix : {"-wal", "-shm"}) {
    const std::string from = path.string() + suffix;
    if (::access(from.c_str(), F_OK) == 0) {
      ::rename(from.c_str(), (aside.string() + suffix).c_str());
    }
  }
  return aside;
}

}  // namespace cachemgr::index

// storage/local/local_sidecar.cpp: sidecars (see local_sidecar.h): their JSON, reading
// and writing them beside their image, and the image metadata they hold.
#include "storage/local/local_sidecar.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>

#include "storage/local/local_impl.h"

namespace cachemgr::storage {

using nlohmann::json;

json ToJson(const Sidecar& s) {
  json j;
  j["schema"] = 1;
  j["format"] = s.format;
  if (!s.shared_inode.empty()) j["shared_inode"] = s.shared_inode;
  if (!s.shared_sha256.empty()) j["shared_sha256"] = s.shared_sha256;
  j["metadata"] = s.metadata;
  j["snapshots"] = json::array();
  for (const auto& snap : s.snapshots)
    j["snapshots"].push_back(
        {{"name", snap.name}, {"protected", snap.is_protected}, {"size", snap.size}});
  if (s.parent) {
    j["parent"] = {
        {"pool", s.parent->image.pool}, {"name", s.parent->image.name}, {"snap", s.parent->snap}};
  } else {
    j["parent"] = nullptr;
  }
  return j;
}

namespace {

Sidecar FromJsonOrThrow(const json& j) {
  Sidecar s;
  s.format = j.value("format", "raw");
  s.shared_inode = j.value("shared_inode", "");
  s.shared_sha256 = j.value("shared_sha256", "");
  if (j.contains("metadata")) s.metadata = j["metadata"].get<std::map<std::string, std::string>>();
  if (j.contains("snapshots")) {
    for (const auto& e : j["snapshots"]) {
      s.snapshots.push_back({e.at("name").get<std::string>(), e.value("protected", false),
                             e.value("size", uint64_t{0})});
    }
  }
  if (j.contains("parent") && j["parent"].is_object()) {
    const auto& p = j["parent"];
    s.parent = SnapRef{{p.at("pool").get<std::string>(), p.at("name").get<std::string>()},
                       p.at("snap").get<std::string>()};
  }
  return s;
}

}  // namespace

Sidecar FromJson(const json& j) {
  try {
    return FromJsonOrThrow(j);
  } catch (const json::exception& e) {
    // A hand-edited or planted file: named by the caller's context, never a crash.
    Fail(Errc::kCorrupt, std::string("not a sidecar this cache wrote: ") + e.what());
  }
}

bool IsSidecarText(const std::string& text) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return false;
  // Its keys are ToJson's, and no others.
  for (const auto& [key, value] : j.items()) {
    if (key != "schema" && key != "format" && key != "shared_inode" && key != "shared_sha256" &&
        key != "metadata" && key != "snapshots" && key != "parent") {
      return false;
    }
  }
  auto is = [&](const char* key, auto pred) {
    auto it = j.find(key);
    return it != j.end() && pred(*it);
  };
  return is("schema", [](const json& v) { return v.is_number_integer() && v.get<int64_t>() == 1; }) &&
         is("format", [](const json& v) { return v.is_string(); }) &&
         is("metadata", [](const json& v) { return v.is_object(); }) &&
         is("snapshots", [](const json& v) { return v.is_array(); }) &&
         is("parent", [](const json& v) { return v.is_null() || v.is_object(); });
}

json ReadJsonFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) FailErrno("cannot read", path, errno ? errno : ENOENT);
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    Fail(Errc::kCorrupt, "sidecar " + path.string() + ": " + e.what());
  }
}

SnapRecord& FindSnap(Sidecar& s, const SnapRef& snap) {
  ValidateName("snapshot", snap.snap);
  auto* rec = s.Find(snap.snap);
  if (!rec)
    Fail(Errc::kNotFound, "snapshot " + RefName(snap.image) + "@" + snap.snap + ": not found");
  return *rec;
}

Sidecar LocalBackend::Impl::Load(const ImageRef& ref) const {
  auto path = SidecarPath(ref);
  std::error_code ec;  // a link that loops there is no sidecar either, not a failure
  if (!fs::exists(path, ec)) return {};  // an adopted or foreign raw file
  return FromJson(ReadJsonFile(path));
}

void LocalBackend::Impl::Save(const ImageRef& ref, const Sidecar& s) const {
  EnsurePool(ref.pool);
  WriteDurable(SidecarPath(ref), ToJson(s).dump(2));
}

void LocalBackend::Impl::DropSidecar(const ImageRef& ref) const {
  ::unlink(SidecarPath(ref).c_str());
}

UniqueFd LocalBackend::Impl::HoldSidecar(const ImageRef& ref) const {
  const auto path = SidecarPath(ref);
  for (int attempt = 0; attempt < 4; ++attempt) {
    UniqueFd fd(OpenRegularToLock(AT_FDCWD, path.c_str()));
    if (fd.get() < 0) return fd;
    int locked = 0;
    while ((locked = ::flock(fd.get(), LOCK_EX)) != 0 && errno == EINTR) {
    }
    // A filesystem that cannot lock it: held by identity alone (DropHeldSidecar removes
    // only this file, whatever has the name by then).
    if (locked != 0) return fd;
    if (NameHolds(path, fd.get())) return fd;  // else rewritten meanwhile: the new one
  }
  return UniqueFd();
}

void LocalBackend::Impl::DropHeldSidecar(const ImageRef& ref, const UniqueFd& held) const {
  if (held.get() >= 0) UnlinkIfHolds(SidecarPath(ref), held.get());
}

namespace {

// Whether the open file `fd` is a regular file that reads whole as a sidecar.
bool IsSidecarFile(int fd) {
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (1 << 20))
    return false;
  std::string text(static_cast<size_t>(st.st_size), '\0');
  return ::pread(fd, text.data(), text.size(), 0) == static_cast<ssize_t>(text.size()) &&
         IsSidecarText(text);
}

}  // namespace

// A sidecar at `ref`'s name is a leftover (a kill between Publish's two links, or a
// failed writer's) only when, as the sweep takes one (local_temporaries.cpp): its lock is
// free (a writer holds a new sidecar's from SaveNew until its image is linked), it is
// still at the name once locked, no image is beside it, and it reads whole as ours.
LocalBackend::Impl::LeftSidecar LocalBackend::Impl::LockLeftSidecar(const ImageRef& ref) const {
  const auto path = SidecarPath(ref);
  LeftSidecar out;
  out.fd = UniqueFd(OpenRegularToLock(AT_FDCWD, path.c_str()));
  if (out.fd.get() < 0) {
    out.kind = errno == ENOENT   ? LeftSidecar::kNone
               : errno == ESTALE ? LeftSidecar::kHeld
                                 : LeftSidecar::kForeign;
    return out;
  }
  if (::flock(out.fd.get(), LOCK_EX | LOCK_NB) != 0 || !NameHolds(path, out.fd.get())) {
    out.kind = LeftSidecar::kHeld;  // a writer's, or replaced while this call locked it
  } else if (ExistsChecked(ref)) {
    out.kind = LeftSidecar::kImage;
  } else if (!IsSidecarFile(out.fd.get())) {
    out.kind = LeftSidecar::kForeign;
  } else {
    out.kind = LeftSidecar::kLeft;
  }
  return out;
}

bool LocalBackend::Impl::DropLeftSidecar(const ImageRef& ref) const {
  const auto left = LockLeftSidecar(ref);
  return left.kind == LeftSidecar::kLeft && ::unlink(SidecarPath(ref).c_str()) == 0;
}

LocalBackend::Impl::NewSidecar LocalBackend::Impl::SaveNew(const ImageRef& ref,
                                                           const Sidecar& s) const {
  EnsurePool(ref.pool);
  const auto path = SidecarPath(ref);
  const std::string content = ToJson(s).dump(2);
  auto [tmp, fd] = MakeTemp(path.parent_path(), path.filename().string());
  struct stat st {};
  try {
    PwriteAll(fd.get(), content.data(), content.size(), 0, tmp);
    FsyncFd(fd.get(), tmp);
    if (::fstat(fd.get(), &st) != 0) FailErrno("cannot stat", tmp, errno);
    // fd (and its lock) stays open until the temporary name is gone: see MakeTemp.
    // A sidecar already at the name is replaced only when it is a leftover, and while
    // its lock is held: of two writers that found one, one replaces it and the other
    // then finds the first one's sidecar, locked.
    for (int attempt = 0;; ++attempt) {
      if (::link(tmp.c_str(), path.c_str()) == 0) break;
      const int e = errno;
      if (e != EEXIST) FailErrno("cannot link into place", path, e);
      const auto left = LockLeftSidecar(ref);
      switch (left.kind) {
        case LeftSidecar::kNone:
          if (attempt < 3) continue;  // gone meanwhile: link again
          [[fallthrough]];
        case LeftSidecar::kHeld:
          Fail(Errc::kAlreadyExists,
               "image " + RefName(ref) +
                   ": already exists: another process (on this host or another) is making or "
                   "removing it; retry once it is done");
        case LeftSidecar::kImage:
          Fail(Errc::kAlreadyExists, "image " + RefName(ref) + ": already exists");
        case LeftSidecar::kForeign:
          Fail(Errc::kAlreadyExists, "image " + RefName(ref) + ": " + path.string() +
                                         " exists and is not a sidecar of this cache; it is "
                                         "left untouched (move it away to use the name)");
        case LeftSidecar::kLeft:
          if (::rename(tmp.c_str(), path.c_str()) != 0)
            FailErrno("cannot rename into", path, errno);
          break;
      }
      break;
    }
  } catch (...) {
    UnlinkIfHolds(tmp, fd.get());
    throw;
  }
  UnlinkIfHolds(tmp, fd.get());
  FsyncDir(path.parent_path());
  return {st.st_ino, std::move(fd)};
}

// Removes the sidecar SaveNew wrote for an image that then did not appear, unless
// something else has replaced it since.
void LocalBackend::Impl::DropNewSidecar(const ImageRef& ref, ino_t ino) const {
  struct stat st {};
  const auto path = SidecarPath(ref);
  if (::lstat(path.c_str(), &st) == 0 && st.st_ino == ino) ::unlink(path.c_str());
}

// --- metadata

std::map<std::string, std::string> LocalBackend::GetMetadata(const ImageRef& ref) {
  impl_->Require(ref);
  return impl_->Load(ref).metadata;
}

void LocalBackend::SetMetadata(const ImageRef& ref, const std::string& key,
                               const std::string& value) {
  impl_->Require(ref);
  std::lock_guard lock(impl_->mu);
  Sidecar s = impl_->Load(ref);
  s.metadata[key] = value;
  impl_->Save(ref, s);
}

void LocalBackend::RemoveMetadata(const ImageRef& ref, const std::string& key) {
  impl_->Require(ref);
  std::lock_guard lock(impl_->mu);
  Sidecar s = impl_->Load(ref);
  if (s.metadata.erase(key) > 0) impl_->Save(ref, s);
}

}  // namespace cachemgr::storage

// The judgement of an instant miss's import (instant_import.cpp runs it): the bytes
// read, as the import copies them or once it has, hashed and held against the digests
// the image's record claims. See instant_judge.h.
#include "engine/instant_judge.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <thread>

#include "convert/format.h"
#include "engine/instant_qcow2.h"
#include "util/file_identity.h"
#include "util/hash.h"

namespace cachemgr::engine {

namespace {

constexpr size_t kReadBytes = 4 << 20;

// Whether the record claims an os_hash of another algorithm than sha512.
bool OtherAlgo(const ImportRecord& rec) {
  return !rec.os_hash_value.empty() && rec.os_hash_algo != "sha512";
}

// The digests a judgement computes, in this order: md5, sha512, and the algorithm of a
// claimed os_hash that is not sha512; then, with `guest`, kGuestAlgo (a raw file's disk
// bytes, which the committed entry must hold).
std::vector<std::string> JudgedAlgos(const ImportRecord& rec, bool guest) {
  std::vector<std::string> algos = {"md5", "sha512"};
  if (OtherAlgo(rec)) algos.push_back(rec.os_hash_algo);
  if (guest) algos.emplace_back(kGuestAlgo);
  return algos;
}

// Keeps `digests` (JudgedAlgos' order) in `out` and judges them against the record's
// claims: false, with the bad verdict naming `what` was hashed and `who` claims otherwise,
// when they disagree.
bool AgreeWithClaims(const ImportRecord& rec, const std::vector<std::string>& digests,
                     const std::string& what, const std::string& who, Judged* out) {
  out->md5 = digests[0];
  out->sha512 = digests[1];
  const std::string& claimed_algo_digest = OtherAlgo(rec) ? digests[2] : digests[1];
  if (!rec.checksum.empty() && !util::SameDigest(out->md5, rec.checksum)) {
    out->verdict = "bad";
    out->reason = "md5 of " + what + " is " + out->md5 + ", " + who + " says " + rec.checksum;
    return false;
  }
  if (!rec.os_hash_value.empty() && !util::SameDigest(claimed_algo_digest, rec.os_hash_value)) {
    out->verdict = "bad";
    out->reason = rec.os_hash_algo + " of " + what + " is " + claimed_algo_digest + ", " + who +
                  " says " + rec.os_hash_value;
    return false;
  }
  return true;
}

}  // namespace

// `algo` of every byte of the entry as it is now: what the import put there.
std::string EntryDigest(storage::Backend& backend, const storage::ImageRef& ref,
                        const std::string& algo) {
  auto reader = backend.Open(ref, std::nullopt);
  util::Hasher hasher(algo);
  std::vector<std::byte> buf(kReadBytes);
  const uint64_t size = reader->size();
  uint64_t done = 0;
  while (done < size) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - done));
    const size_t n = reader->Read(done, std::span<std::byte>(buf.data(), want));
    if (n == 0) break;
    hasher.Update(std::span<const std::byte>(buf.data(), n));
    done += n;
  }
  return hasher.HexDigest();
}

// Runs `execute` (librbd's copy of what is not copied yet; may be empty) on a thread of
// its own while `judge` reads the image, and returns the judgement once both ended. An
// error of either is thrown, the judge's first.
Judged BesideExecute(const std::function<void()>& execute, const std::function<Judged()>& judge) {
  std::exception_ptr exec_error;
  std::thread exec;
  if (execute) {
    exec = std::thread([&] {
      try {
        execute();
      } catch (...) {
        exec_error = std::current_exception();
      }
    });
  }
  Judged out;
  try {
    out = judge();
  } catch (...) {
    if (exec.joinable()) exec.join();
    throw;
  }
  if (exec.joinable()) exec.join();
  if (exec_error) std::rethrow_exception(exec_error);
  return out;
}

// Hashes the image's file from a descriptor opened safely by the source (while the import
// copies it), and judges what was read against the record's claims and against the file
// the import began with.
Judged JudgeFile(source::Source& source, const ImportRecord& rec, const ProgressFn& progress,
                 const std::function<std::optional<std::vector<convert::Extent>>()>& map) {
  Judged out;
  auto file = source.OpenLocal(rec.image_id);
  struct stat st {};
  if (!file || ::fstat(file->fd(), &st) != 0) {
    throw Error(Errc::kSource, "image " + rec.image_id + ": its file " + rec.path +
                                   " cannot be read to check the import");
  }
  if (util::FileIdentity(st) != rec.file_identity) {
    out.verdict = "bad";
    out.reason = "the image file " + rec.path + " changed since its import began";
  } else {
    util::ParallelHasher hasher(JudgedAlgos(rec, /*guest=*/true));
    std::vector<std::byte> buf(kReadBytes);
    uint64_t done = 0;
    const uint64_t total = file->size();
    while (true) {
      const ssize_t n = ::pread(file->fd(), buf.data(), buf.size(), static_cast<off_t>(done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        throw Error(Errc::kSource, "image " + rec.image_id + ": cannot read " + rec.path + ": " +
                                       std::strerror(errno));
      }
      if (n == 0) break;
      hasher.Update(std::span<const std::byte>(buf.data(), static_cast<size_t>(n)));
      done += static_cast<uint64_t>(n);
      if (progress) progress(Progress{rec.image_id, "import", done, total});
    }
    const auto digests = hasher.Finish();
    out.md5 = digests[0];
    out.sha512 = digests[1];
    struct stat after {};
    const bool same_file =
        ::fstat(file->fd(), &after) == 0 && util::FileIdentity(after) == rec.file_identity;
    struct stat by_path {};
    const bool same_path = ::lstat(rec.path.c_str(), &by_path) == 0 && S_ISREG(by_path.st_mode) &&
                           by_path.st_dev == after.st_dev && by_path.st_ino == after.st_ino;
    if (!same_file || done != total) {
      out.verdict = "bad";
      out.reason = "the image file " + rec.path + " changed while it was imported";
    } else if (!same_path) {
      out.verdict = "bad";
      out.reason = "the path " + rec.path + " no longer names the file imported";
    } else if (AgreeWithClaims(rec, digests, "the imported bytes", "the source", &out)) {
      out.verdict = "ok";
      if (rec.checksum.empty() && rec.os_hash_value.empty()) {
        out.reason = "digests are the file's own (no claimed digest to check)";
      }
    }
    // The disk's bytes as the file holds them, for the check of what was copied.
    if (out.verdict == "ok" && rec.format == "raw") {
      out.guest_md5 = digests.back();
    } else if (out.verdict == "ok") {
      auto extents = map();
      if (!extents) {
        out.verdict = "bad";
        out.reason = "the qcow2 file " + rec.path + " can no longer be read by its map";
      } else {
        out.guest_md5 = GuestDigest(file->fd(), *extents, rec.path, kGuestAlgo);
      }
    }
    if (out.verdict == "ok" && rec.checksum.empty() && rec.os_hash_value.empty()) {
      source.KeepDigests(rec.image_id, *file, out.md5, out.sha512);
    }
  }
  return out;
}

// A relayed qcow2 (the entry holds its disk's bytes, Glance's digests describe its file):
// the file downloaded whole while the import copies, judged against Glance's claims, and
// the disk's bytes it holds by its map, which the committed entry must hold too.
Judged JudgeRelayedQcow2(source::Source& source, const ImportRecord& rec,
                         const ProgressFn& progress, const ConversionOptions& options,
                         const std::shared_ptr<spdlog::logger>& log) {
  Judged out;
  FetchedQcow2 fetched;
  try {
    fetched = FetchRelayedQcow2(
        source, rec.image_id, rec.size, JudgedAlgos(rec, /*guest=*/false), options, log,
        [&](uint64_t done, uint64_t total) {
          if (progress) progress(Progress{rec.image_id, "import", done, total});
        });
  } catch (const Error& e) {
    // A whole file of another length than Glance declares (what librbd read by range was
    // cut to that length) is final: nothing can ever match its digests.
    if (e.code() != Errc::kCorrupt) throw;
    out.verdict = "bad";
    out.reason = std::string("Glance's whole file is not the image it describes: ") + e.what();
    return out;
  }
  if (!AgreeWithClaims(rec, fetched.digests, "the image's file", "Glance", &out)) {
    return out;
  }
  if (fetched.guest_md5.empty()) {
    out.verdict = "bad";
    out.reason = fetched.map_error;
  } else {
    out.verdict = "ok";
    out.guest_md5 = fetched.guest_md5;
  }
  return out;
}

// Hashes the entry's own bytes (a relayed raw image: the image's bytes exactly) once
// they are all copied, and judges them against the digests Glance claims.
Judged JudgeEntry(storage::Backend& backend, const storage::ImageRef& ref, const ImportRecord& rec,
                  const ProgressFn& progress) {
  util::ParallelHasher hasher(JudgedAlgos(rec, /*guest=*/false));
  auto reader = backend.Open(ref, std::nullopt);
  const uint64_t total = reader->size();
  std::vector<std::byte> buf(kReadBytes);
  uint64_t done = 0;
  while (done < total) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), total - done));
    const size_t n = reader->Read(done, std::span<std::byte>(buf.data(), want));
    if (n == 0) break;
    hasher.Update(std::span<const std::byte>(buf.data(), n));
    done += n;
    if (progress) progress(Progress{rec.image_id, "import", done, total});
  }
  const auto digests = hasher.Finish();
  Judged out;
  const bool agree = AgreeWithClaims(rec, digests, "the imported bytes", "Glance", &out);
  out.guest_md5 = out.md5;
  if (done != total || (rec.size != 0 && total != rec.size)) {
    out.verdict = "bad";
    out.reason = "the entry holds " + std::to_string(done) + " bytes, the image has " +
                 std::to_string(rec.size);
  } else if (agree) {
    out.verdict = "ok";
  }
  return out;
}

}  // namespace cachemgr::engine

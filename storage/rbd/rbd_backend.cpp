// storage/rbd/rbd_backend.cpp: the Backend on librbd/librados (see rbd_backend.h).
// The RADOS lock (rbd_lock.cpp), snapshots and clones (rbd_snapshots.cpp), watchers
// (rbd_watchers.cpp), leftovers (rbd_leftovers.cpp), tables (rbd_tables.cpp), the trash
// (rbd_trash.cpp), clones (rbd_clone.cpp) and the instant import (rbd_migration.cpp) are
// apart.
#include "storage/rbd/rbd_backend.h"

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>
#include <vector>

#include "storage/factory.h"
#include "storage/rbd/rbd_buffers.h"
#include "storage/rbd/rbd_connection.h"
#include "storage/rbd/rbd_error.h"
#include "storage/rbd/rbd_headers.h"
#include "storage/rbd/rbd_io.h"
#include "storage/rbd/rbd_progress.h"
#include "storage/rbd/rbd_remove.h"
#include "storage/rbd/rbd_snapshots.h"

namespace cachemgr::storage {

std::unique_ptr<Backend> MakeRbdBackend(const RbdBackendOptions& options,
                                        std::shared_ptr<spdlog::logger> logger) {
  return std::make_unique<rbd::RbdBackend>(options, std::move(logger));
}

}  // namespace cachemgr::storage

namespace cachemgr::storage::rbd {
namespace {

using Clock = std::chrono::steady_clock;

uint64_t FeatureBits(const std::vector<std::string>& names) {
  static const std::map<std::string, uint64_t> kBits = {
      {"layering", RBD_FEATURE_LAYERING},
      {"striping", RBD_FEATURE_STRIPINGV2},
      {"exclusive-lock", RBD_FEATURE_EXCLUSIVE_LOCK},
      {"object-map", RBD_FEATURE_OBJECT_MAP},
      {"fast-diff", RBD_FEATURE_FAST_DIFF},
      {"deep-flatten", RBD_FEATURE_DEEP_FLATTEN},
      {"journaling", RBD_FEATURE_JOURNALING},
  };
  uint64_t bits = 0;
  for (const auto& name : names) {
    auto it = kBits.find(name);
    if (it == kBits.end()) {
      throw Error(Errc::kConfig, "backend.rbd.features: unknown RBD feature '" + name + "'");
    }
    bits |= it->second;
  }
  // Clones need layering whatever the list says.
  return bits | RBD_FEATURE_LAYERING;
}

}  // namespace

std::string PoolCtx::Where(const std::string& name) const {
  return ns.empty() ? pool + "/" + name : pool + "/" + ns + "/" + name;
}

RbdBackend::RbdBackend(const RbdBackendOptions& options, std::shared_ptr<spdlog::logger> logger)
    : options_(options),
      log_(logger ? std::move(logger)
                  : std::make_shared<spdlog::logger>(
                        "rbd", std::make_shared<spdlog::sinks::null_sink_mt>())),
      features_(FeatureBits(options.features)) {
  ValidateName("pool", options_.pool);
  if (!options_.namespace_.empty()) ValidateName("namespace", options_.namespace_);
  if (access(options_.conf.c_str(), R_OK) != 0) {
    throw Error(Errc::kConfig,
                "backend.rbd.conf: cannot read " + options_.conf + ": " + std::strerror(errno));
  }
  if (!options_.keyring.empty() && access(options_.keyring.c_str(), R_OK) != 0) {
    throw Error(Errc::kConfig, "backend.rbd.keyring: cannot read " + options_.keyring + ": " +
                                   std::strerror(errno));
  }
  const auto start = Clock::now();
  SetImageCtxLockWait(options_.op_timeout_s);
  Connect();
  OpenConfiguredPool();
  log_->info("rbd connected conf={} client=client.{} fsid={} location={} ms={}", options_.conf,
             options_.client, fsid_, location(), MsSince(start));
}

// Joins the process's client for the options' identity (rbd_connection.h), connecting
// it when none is alive; cluster_ and fsid_ are set once it answered.
void RbdBackend::Connect() {
  auto connection = SharedConnection(ConnectParamsOf(options_));
  fsid_ = std::move(connection.fsid);
  cluster_ = std::move(connection.cluster);
}

// Opens the configured pool and makes the configured namespace in it if missing.
void RbdBackend::OpenConfiguredPool() {
  // Opening the configured pool now turns a missing pool into an error at start-up: a
  // config error naming the key (the pool is the operator's to create, not ours).
  std::shared_ptr<PoolCtx> pool;
  try {
    pool = Pool(options_.pool);
  } catch (const Error& e) {
    if (e.code() != Errc::kNotFound) throw;
    throw Error(Errc::kConfig,
                "backend.rbd.pool: pool '" + options_.pool + "' does not exist in cluster " +
                    fsid_ + "; create it (ceph osd pool create " + options_.pool +
                    "; rbd pool init " + options_.pool + ") or name an existing pool");
  }
  if (!options_.namespace_.empty()) {
    bool exists = false;
    // The namespace check needs the default-namespace ioctx of the pool.
    auto base = PoolNs(options_.pool, "");
    Check(rbd_namespace_exists(base->io.get(), options_.namespace_.c_str(), &exists),
          "check namespace", options_.pool + "/" + options_.namespace_);
    if (!exists) {
      const int nr = rbd_namespace_create(base->io.get(), options_.namespace_.c_str());
      if (nr < 0 && nr != -EEXIST) {
        ThrowErrno(nr, "create namespace", options_.pool + "/" + options_.namespace_);
      }
      log_->info("rbd namespace created pool={} namespace={}", options_.pool, options_.namespace_);
    }
  }
}

RbdBackend::~RbdBackend() = default;

std::string RbdBackend::location() const {
  return options_.namespace_.empty() ? options_.pool : options_.pool + "/" + options_.namespace_;
}

std::shared_ptr<PoolCtx> RbdBackend::Pool(const std::string& pool) {
  return PoolNs(pool, pool == options_.pool ? options_.namespace_ : std::string());
}

std::shared_ptr<PoolCtx> RbdBackend::PoolNs(const std::string& pool, const std::string& ns) {
  ValidateName("pool", pool);
  const std::string key = pool + "/" + ns;
  std::lock_guard lock(mu_);
  if (auto it = pools_.find(key); it != pools_.end()) return it->second;
  auto ctx = std::make_shared<PoolCtx>();
  ctx->cluster = cluster_;
  ctx->pool = pool;
  ctx->ns = ns;
  const int r = rados_ioctx_create(cluster_->get(), pool.c_str(), ctx->io.out());
  if (r == -ENOENT) {
    throw Error(Errc::kNotFound, "rbd pool " + pool + " does not exist (cluster " + fsid_ + ")");
  }
  Check(r, "open pool", pool);
  rados_ioctx_set_namespace(ctx->io.get(), ns.c_str());
  pools_.emplace(key, ctx);
  return ctx;
}

ImageHandle RbdBackend::OpenImage(const PoolCtx& pool, const std::string& name, bool read_only,
                                  const char* snap) {
  ValidateName("image", name);
  ImageHandle image;
  const int r = WithImageCtxLock([&] {
    return read_only ? rbd_open_read_only(pool.io.get(), name.c_str(), image.out(), snap)
                     : rbd_open(pool.io.get(), name.c_str(), image.out(), snap);
  });
  if (r < 0) {
    ThrowErrno(r, "open", snap != nullptr ? pool.Where(name) + "@" + snap : pool.Where(name));
  }
  return image;
}

ImageOptionsHandle RbdBackend::NewImageOptions() const {
  ImageOptionsHandle opts;
  rbd_image_options_create(opts.out());
  Check(rbd_image_options_set_uint64(opts.get(), RBD_IMAGE_OPTION_FORMAT, 2), "set option",
        "format");
  Check(rbd_image_options_set_uint64(opts.get(), RBD_IMAGE_OPTION_FEATURES, features_),
        "set option", "features");
  return opts;
}

bool RbdBackend::Exists(const ImageRef& ref) {
  auto pool = Pool(ref.pool);
  ValidateName("image", ref.name);
  // From the name's objects: nothing at the name, or only a name bound to a removed image
  // (which no open finds either), is not an image. Asked mostly of names about to be taken
  // (a volume's, before anything is made): read as if nothing were there.
  std::string id;
  switch (ReadNameState(pool->io.get(), ref.name, pool->Where(ref.name), &id,
                        NameGuess{.absent = true, .id = {}})) {
    case NameState::kNone:
    case NameState::kDangling:
      return false;
    case NameState::kWhole:
      return true;
    case NameState::kFormat1:
      break;  // as librbd opens it
  }
  ImageHandle image;
  const int r = WithImageCtxLock(
      [&] { return rbd_open_read_only(pool->io.get(), ref.name.c_str(), image.out(), nullptr); });
  if (r == -ENOENT) return false;
  Check(r, "open", pool->Where(ref.name));
  return true;
}

ImageInfo RbdBackend::Stat(const ImageRef& ref) {
  auto pool = Pool(ref.pool);
  auto image = OpenImage(*pool, ref.name, true);
  ImageInfo info{ref, 0, std::nullopt};
  Check(rbd_get_size(image.get(), &info.size), "get size of", pool->Where(ref.name));
  if (auto p = GetParent(image.get(), pool->Where(ref.name))) {
    info.parent = SnapRef{ImageRef{p->pool, p->image_name}, p->snap};
  }
  return info;
}

std::map<std::string, std::string> RbdBackend::ListIdentities(const std::string& pool_name) {
  auto pool = Pool(pool_name);
  std::vector<rbd_image_spec_t> specs(64);
  size_t max = 0;
  Check(CallWithBuffer(
            specs, max,
            [&](rbd_image_spec_t* data, size_t* n) { return rbd_list2(pool->io.get(), data, n); }),
        "list images in", pool->Where(""));
  // rbd_list2 gives each image's id with its name: the identity, in one round trip.
  std::map<std::string, std::string> out;
  for (size_t i = 0; i < max; ++i) out.emplace(specs[i].name, specs[i].id);
  rbd_image_spec_list_cleanup(specs.data(), max);
  return out;
}

std::vector<std::string> RbdBackend::List(const std::string& pool_name) {
  std::vector<std::string> names;
  for (auto& [name, id] : ListIdentities(pool_name)) names.push_back(name);
  return names;  // sorted: the map's order
}

uint64_t RbdBackend::AllocatedBytes(const ImageRef& ref) {
  auto pool = Pool(ref.pool);
  auto image = OpenImage(*pool, ref.name, true);
  uint64_t size = 0;
  Check(rbd_get_size(image.get(), &size), "get size of", pool->Where(ref.name));
  if (size == 0) return 0;  // librbd 16 asserts in a diff of an empty image
  uint64_t used = 0;
  // Whole objects, from the object map when fast-diff is on: what `rbd du` reports, and
  // cheap. The parent's data is not counted: it is not this image's.
  auto cb = [](uint64_t, size_t len, int exists, void* arg) -> int {
    if (exists) *static_cast<uint64_t*>(arg) += len;
    return 0;
  };
  Check(rbd_diff_iterate2(image.get(), nullptr, 0, size, 0, 1, cb, &used), "diff",
        pool->Where(ref.name));
  return used;
}

std::unique_ptr<ImageWriter> RbdBackend::Create(const ImageRef& ref, uint64_t size) {
  auto pool = Pool(ref.pool);
  ValidateName("image", ref.name);
  auto opts = NewImageOptions();
  Check(WithImageCtxLock(
            [&] { return rbd_create4(pool->io.get(), ref.name.c_str(), size, opts.get()); }),
        "create", pool->Where(ref.name));
  log_->debug("rbd image created image={} size={}", pool->Where(ref.name), size);
  return std::make_unique<RbdImageWriter>(pool, ref.name, size, options_.queue_depth,
                                          std::chrono::seconds(options_.op_timeout_s), log_);
}

bool RbdBackend::Adopt(const std::filesystem::path& /*raw_file*/, const ImageRef& ref) {
  ValidateName("image", ref.name);
  return false;  // RBD cannot take a file's blocks over; the caller streams it.
}

std::unique_ptr<ImageReader> RbdBackend::Open(const ImageRef& ref,
                                              const std::optional<std::string>& snap) {
  auto pool = Pool(ref.pool);
  if (snap) ValidateName("snapshot", *snap);
  auto image = OpenImage(*pool, ref.name, true, snap ? snap->c_str() : nullptr);
  return std::make_unique<RbdImageReader>(
      pool, std::move(image), snap ? pool->Where(ref.name) + "@" + *snap : pool->Where(ref.name));
}

void RbdBackend::Resize(const ImageRef& ref, uint64_t size) {
  auto pool = Pool(ref.pool);
  auto image = OpenImage(*pool, ref.name, false);
  uint64_t current = 0;
  Check(rbd_get_size(image.get(), &current), "get size of", pool->Where(ref.name));
  if (size == current) return;
  if (size < current) {
    throw Error(Errc::kInvalidArgument, "rbd resize " + pool->Where(ref.name) + ": " +
                                            std::to_string(size) + " is smaller than its size " +
                                            std::to_string(current) + " (shrinking loses data)");
  }
  Check(rbd_resize(image.get(), size), "resize", pool->Where(ref.name));
}

void RbdBackend::ResizeImageWithId(PoolCtx& pool, const std::string& name, const std::string& id,
                                   uint64_t size) {
  auto image = OpenImage(pool, name, false);
  char opened[256] = {};
  Check(rbd_get_id(image.get(), opened, sizeof opened - 1), "get id of", pool.Where(name));
  if (id != opened) {
    throw Error(Errc::kBackend, "resize " + pool.Where(name) + ": the name holds image " +
                                    opened + ", not " + id +
                                    " (the image made there was moved meanwhile); nothing resized");
  }
  uint64_t current = 0;
  Check(rbd_get_size(image.get(), &current), "get size of", pool.Where(name));
  if (size < current) {
    throw Error(Errc::kInvalidArgument, "rbd resize " + pool.Where(name) + ": " +
                                            std::to_string(size) + " is smaller than its size " +
                                            std::to_string(current) + " (shrinking loses data)");
  }
  if (size != current) Check(rbd_resize(image.get(), size), "resize", pool.Where(name));
}

void RbdBackend::Rename(const ImageRef& from, const std::string& to_name) {
  auto pool = Pool(from.pool);
  ValidateName("image", from.name);
  ValidateName("image", to_name);
  const std::string where = pool->Where(from.name) + " to " + to_name;
  std::string id;
  if (ReadNameState(pool->io.get(), from.name, where, &id) == NameState::kWhole) {
    // Through the image's objects (rbd_headers.h): a few round trips instead of a
    // read-write open of the image and its parents, and no image-context lock. What it
    // skips (telling watchers the name changed) concerns no one: the cache renames only
    // the images it is making.
    Check(RenameImage(pool->io.get(), from.name, to_name, id), "rename", where);
    return;
  }
  Check(WithImageCtxLock(
            [&] { return rbd_rename(pool->io.get(), from.name.c_str(), to_name.c_str()); }),
        "rename", where);
}

std::string RbdBackend::Identity(const ImageRef& ref) {
  auto pool = Pool(ref.pool);
  ValidateName("image", ref.name);
  // From the name's objects, without an image context (rbd_headers.h): what rbd_get_id of
  // the opened image answers, for a fraction of the round trips.
  std::string bound;
  switch (ReadNameState(pool->io.get(), ref.name, pool->Where(ref.name), &bound)) {
    case NameState::kWhole:
      return bound;
    case NameState::kNone:
    case NameState::kDangling:
      ThrowErrno(-ENOENT, "open", pool->Where(ref.name));
    case NameState::kFormat1:
      break;  // as librbd opens it
  }
  auto image = OpenImage(*pool, ref.name, true);
  // The id is what the image keeps across rename, flatten and the trash; `rbd cp` and a
  // new image of the same name get a new one.
  char id[256] = {};  // ids are a few hex digits; this is far more than librbd writes
  Check(rbd_get_id(image.get(), id, sizeof id - 1), "get id of", pool->Where(ref.name));
  return id;
}

bool RbdBackend::NameTaken(const ImageRef& ref) {
  auto pool = Pool(ref.pool);
  ValidateName("image", ref.name);
  NameBindings bindings;
  Check(ReadNameBindings(pool->io.get(), ref.name, &bindings), "read what binds",
        pool->Where(ref.name));
  return bindings.any();
}

bool RbdBackend::HasIdentity(const ImageRef& ref, const std::string& identity) {
  auto pool = Pool(ref.pool);
  ValidateName("image", ref.name);
  // The id object and the header of `identity` read side by side: one round trip where
  // Identity takes two.
  std::string bound;
  switch (ReadNameState(pool->io.get(), ref.name, pool->Where(ref.name), &bound,
                        NameGuess{.absent = false, .id = identity})) {
    case NameState::kWhole:
      return bound == identity;
    case NameState::kNone:
    case NameState::kDangling:
      return false;
    case NameState::kFormat1:
      break;
  }
  return Identity(ref) == identity;  // as librbd opens it
}

RemoveOutcome RbdBackend::Remove(const ImageRef& ref) {
  auto pool = Pool(ref.pool);
  const std::string where = pool->Where(ref.name);
  bool has_children = false;
  bool importing = false;
  {
    auto image = OpenImage(*pool, ref.name, true);
    has_children = AnySnapHasChildren(image.get(), where);
    uint64_t features = 0;
    importing = rbd_get_features(image.get(), &features) == 0 &&
                (features & RBD_FEATURE_MIGRATING) != 0;
  }
  if (importing) {  // rbd_migration.cpp
    RemoveImporting(ref, has_children);
    return RemoveOutcome::kRemoved;
  }
  if (has_children) {
    // Clone v2 children keep reading from a trashed parent; gc purges it later.
    Check(WithImageCtxLock([&] { return rbd_trash_move(pool->io.get(), ref.name.c_str(), 0); }),
          "move to trash", where);
    log_->info("rbd image has clones, moved to trash image={}", where);
    return RemoveOutcome::kTrashed;
  }
  bool trimmed = false;
  {
    auto image = OpenImage(*pool, ref.name, false);
    RemoveAllSnapshots(image.get(), where);
    trimmed = TrimForRemoval(image.get());  // rbd_remove.cpp
  }
  const int r = RemoveUnderLock(pool->io.get(), ref.name);
  if (r == -EBUSY) {
    // Name what holds it, so the operator (and the pass's log) sees the cause.
    Check(r, "remove", where + " (" + DescribeBusy(*pool, ref.name) + ")");
  }
  Check(r, "remove", where);
  log_->debug("rbd image removed image={} trimmed_first={}", where, trimmed);
  return RemoveOutcome::kRemoved;
}

void RbdBackend::CopyFrom(const ImageRef& source, const char* snap, const ImageRef& dest,
                          const ProgressFn& progress) {
  auto src_pool = Pool(source.pool);
  auto dst_pool = Pool(dest.pool);
  ValidateName("image", dest.name);
  auto image = OpenImage(*src_pool, source.name, true, snap);
  auto opts = NewImageOptions();
  ProgressCtx ctx{&progress};
  const auto start = Clock::now();
  // rbd_copy (not deep copy): it reads through the parent chain, so the copy is an
  // independent image even when the source is a clone; zero runs stay holes.
  Check(rbd_copy_with_progress4(image.get(), dst_pool->io.get(), dest.name.c_str(), opts.get(),
                                ProgressThunk, &ctx, 4096),
        "copy",
        src_pool->Where(source.name) + (snap ? std::string("@") + snap : "") + " to " +
            dst_pool->Where(dest.name));
  log_->debug("rbd copy source={} dest={} ms={}", src_pool->Where(source.name),
              dst_pool->Where(dest.name), MsSince(start));
}

void RbdBackend::Copy(const SnapRef& source, const ImageRef& dest, const ProgressFn& progress) {
  ValidateName("snapshot", source.snap);
  CopyFrom(source.image, source.snap.c_str(), dest, progress);
}

void RbdBackend::Copy(const ImageRef& source, const ImageRef& dest, const ProgressFn& progress) {
  CopyFrom(source, nullptr, dest, progress);
}

void RbdBackend::Flatten(const ImageRef& ref, const ProgressFn& progress) {
  auto pool = Pool(ref.pool);
  auto image = OpenImage(*pool, ref.name, false);
  ProgressCtx ctx{&progress};
  const auto start = Clock::now();
  const int r = rbd_flatten_with_progress(image.get(), ProgressThunk, &ctx);
  if (r == -EINVAL && !GetParent(image.get(), pool->Where(ref.name))) return;  // nothing to do
  Check(r, "flatten", pool->Where(ref.name));
  log_->info("rbd flatten image={} ms={}", pool->Where(ref.name), MsSince(start));
}

std::map<std::string, std::string> RbdBackend::GetMetadata(const ImageRef& ref) {
  auto pool = Pool(ref.pool);
  ValidateName("image", ref.name);
  const std::string where = pool->Where(ref.name);
  std::string id;
  switch (ReadNameState(pool->io.get(), ref.name, where, &id)) {
    case NameState::kWhole: {
      // From the header (rbd_headers.h): the image with that id, even if the name moved on.
      std::map<std::string, std::string> out;
      Check(ReadHeaderMetadata(pool->io.get(), id, &out), "list metadata of", where);
      return out;
    }
    case NameState::kNone:
    case NameState::kDangling:
      ThrowErrno(-ENOENT, "open", where);
    case NameState::kFormat1:
      break;  // as librbd opens it
  }
  auto image = OpenImage(*pool, ref.name, true);
  std::string keys(4096, '\0');
  std::string values(4096, '\0');
  size_t key_len = 0;
  size_t val_len = 0;
  const int r = RetryOnErange([&] {
    key_len = keys.size();
    val_len = values.size();
    const int listed =
        rbd_metadata_list(image.get(), "", 0, keys.data(), &key_len, values.data(), &val_len);
    if (listed == -ERANGE) {
      keys.resize(std::max(key_len, keys.size() * 2));
      values.resize(std::max(val_len, values.size() * 2));
    }
    return listed;
  });
  Check(r, "list metadata of", pool->Where(ref.name));
  keys.resize(key_len);
  values.resize(val_len);
  // Both buffers are NUL-separated lists, key i pairs with value i.
  std::map<std::string, std::string> out;
  size_t kpos = 0;
  size_t vpos = 0;
  while (kpos < keys.size() && keys[kpos] != '\0') {
    const std::string key(keys.c_str() + kpos);
    const std::string value(values.c_str() + vpos);
    kpos += key.size() + 1;
    vpos += value.size() + 1;
    out.emplace(key, value);
  }
  return out;
}

void RbdBackend::SetMetadata(const ImageRef& ref, const std::string& key,
                             const std::string& value) {
  auto pool = Pool(ref.pool);
  ValidateName("image", ref.name);
  const std::string where = pool->Where(ref.name);
  std::string id;
  switch (ReadNameState(pool->io.get(), ref.name, where, &id)) {
    case NameState::kWhole:
      // One write to the header (rbd_headers.h), no read-write open of the image (and of
      // its parents, for a clone).
      Check(WriteHeaderMetadata(pool->io.get(), id, key, value), "set metadata " + key + " on",
            where);
      return;
    case NameState::kNone:
    case NameState::kDangling:
      ThrowErrno(-ENOENT, "open", where);
    case NameState::kFormat1:
      break;  // as librbd opens it
  }
  auto image = OpenImage(*pool, ref.name, false);
  Check(rbd_metadata_set(image.get(), key.c_str(), value.c_str()), "set metadata " + key + " on",
        where);
}

void RbdBackend::RemoveMetadata(const ImageRef& ref, const std::string& key) {
  auto pool = Pool(ref.pool);
  auto image = OpenImage(*pool, ref.name, false);
  const int r = rbd_metadata_remove(image.get(), key.c_str());
  if (r == -ENOENT) return;  // already gone: the state the caller wants
  Check(r, "remove metadata " + key + " from", pool->Where(ref.name));
}

}  // namespace cachemgr::storage::rbd

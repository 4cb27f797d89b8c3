// Tables shared by the hosts of one pool: the omap of one RADOS object per table,
// "cachemgr.table.<name>", in the RADOS namespace of the lock objects (never an RBD
// namespace: nothing there is an image). A write is one RADOS write op, so it applies
// whole or not at all; a read pages through the omap.
#include <rados/librados.h>

#include <cerrno>
#include <optional>
#include <string>
#include <vector>

#include "storage/rbd/rbd_backend.h"
#include "storage/rbd/rbd_error.h"

namespace cachemgr::storage::rbd {

namespace {
constexpr const char* kTablePrefix = "cachemgr.table.";
constexpr size_t kMaxValue = 4096;
// Keys read per round trip.
constexpr uint64_t kPage = 1024;

struct ReadOp {
  rados_read_op_t op = rados_create_read_op();
  ~ReadOp() { rados_release_read_op(op); }
};
struct WriteOp {
  rados_write_op_t op = rados_create_write_op();
  ~WriteOp() { rados_release_write_op(op); }
};
struct OmapIter {
  rados_omap_iter_t it = nullptr;
  ~OmapIter() {
    if (it) rados_omap_get_end(it);
  }
};
}  // namespace

// librbd names every image of a pool (or namespace) in the omap of its `rbd_directory`
// object: a create, clone, rename, move to the trash or restore writes it, and each write
// raises the object's version. An image being removed is moved to the trash first (a
// directory write) and is still listed (rbd_list2 shows trash entries in the "removing"
// state) until the removal ends, which writes only `rbd_trash`: both versions make the
// stamp. A write into an image, its metadata or snapshots writes neither. The versions
// are read by two stats at once, each version from its own completion (an ioctx's "last
// version" is shared by every thread using it), with the cluster, the pool's id and the
// namespace; "" when the pool's name now names another pool or a stat fails.
std::string RbdBackend::PoolStamp(const std::string& pool_name) {
  const auto pool = Pool(pool_name);
  const int64_t id = rados_ioctx_get_id(pool->io.get());
  if (rados_pool_lookup(cluster_->get(), pool->pool.c_str()) != id) return "";
  struct Stat {
    const char* oid;
    rados_completion_t done = nullptr;
    uint64_t size = 0;
    time_t mtime = 0;
    ~Stat() {
      if (done) rados_aio_release(done);
    }
  };
  Stat stats[] = {{"rbd_directory"}, {"rbd_trash"}};
  bool ok = true;
  for (auto& st : stats) {
    if (rados_aio_create_completion2(nullptr, nullptr, &st.done) < 0) st.done = nullptr;
    if (!st.done || rados_aio_stat(pool->io.get(), st.oid, st.done, &st.size, &st.mtime) < 0) {
      if (st.done) rados_aio_release(st.done);
      st.done = nullptr;
      ok = false;
      break;
    }
  }
  // Every stat issued is waited for, even when the stamp is given up: each writes into
  // this frame.
  std::string stamp = fsid_ + "/" + std::to_string(id) + "/" + pool->ns;
  for (auto& st : stats) {
    if (!st.done) continue;
    rados_aio_wait_for_complete(st.done);
    const int r = rados_aio_get_return_value(st.done);
    if (r == -ENOENT) {
      stamp += " none";  // never written here yet
    } else if (r < 0) {
      ok = false;  // cannot tell: the caller compares
    } else {
      stamp += " " + std::to_string(rados_aio_get_version(st.done));
    }
  }
  if (!ok) return "";
  return stamp;
}

std::optional<std::string> RbdBackend::ReadTableValue(const std::string& table,
                                                      const std::string& key) {
  ValidateName("table", table);
  ValidateName("table key", key);
  auto pool = LockPool();
  const std::string oid = kTablePrefix + table;
  ReadOp read;
  OmapIter iter;
  int prval = 0;
  const char* keys[] = {key.c_str()};
  const size_t key_lens[] = {key.size()};
  rados_read_op_omap_get_vals_by_keys2(read.op, keys, 1, key_lens, &iter.it, &prval);
  const int r = rados_read_op_operate(read.op, pool->io.get(), oid.c_str(), 0);
  if (r == -ENOENT) return std::nullopt;  // never written
  Check(r, "read table", pool->Where(oid));
  Check(prval, "read table", pool->Where(oid));
  char* k = nullptr;
  char* val = nullptr;
  size_t key_len = 0, val_len = 0;
  Check(rados_omap_get_next2(iter.it, &k, &val, &key_len, &val_len), "read table",
        pool->Where(oid));
  if (!k) return std::nullopt;
  return std::string(val ? val : "", val_len);
}

std::map<std::string, std::string> RbdBackend::ReadTable(const std::string& table) {
  ValidateName("table", table);
  auto pool = LockPool();
  const std::string oid = kTablePrefix + table;
  std::map<std::string, std::string> out;
  std::string after;
  for (;;) {
    ReadOp read;
    OmapIter iter;
    unsigned char more = 0;
    int prval = 0;
    rados_read_op_omap_get_vals2(read.op, after.c_str(), "", kPage, &iter.it, &more, &prval);
    const int r = rados_read_op_operate(read.op, pool->io.get(), oid.c_str(), 0);
    if (r == -ENOENT) return out;  // never written
    Check(r, "read table", pool->Where(oid));
    Check(prval, "read table", pool->Where(oid));
    size_t n = 0;
    for (;;) {
      char* key = nullptr;
      char* val = nullptr;
      size_t key_len = 0, val_len = 0;
      Check(rados_omap_get_next2(iter.it, &key, &val, &key_len, &val_len), "read table",
            pool->Where(oid));
      if (!key) break;
      after.assign(key, key_len);
      // A key the cache could not have written is another's: passed over, as the local
      // backend passes over such a file (callers write back what they read).
      if (IsValidName(after)) out[after] = std::string(val ? val : "", val_len);
      ++n;
    }
    if (!more || n == 0) return out;
  }
}

void RbdBackend::WriteTable(const std::string& table,
                            const std::map<std::string, std::string>& set,
                            const std::vector<std::string>& erase) {
  ValidateName("table", table);
  if (set.empty() && erase.empty()) return;
  std::vector<const char*> keys, vals, erase_keys;
  std::vector<size_t> key_lens, val_lens, erase_lens;
  for (const auto& [k, v] : set) {
    ValidateName("table key", k);
    if (v.size() > kMaxValue) {
      throw Error(Errc::kInvalidArgument, "table " + table + " key " + k + ": value over 4 KiB");
    }
    keys.push_back(k.c_str());
    key_lens.push_back(k.size());
    vals.push_back(v.c_str());
    val_lens.push_back(v.size());
  }
  for (const auto& k : erase) {
    erase_keys.push_back(k.c_str());
    erase_lens.push_back(k.size());
  }
  auto pool = LockPool();
  const std::string oid = kTablePrefix + table;
  WriteOp write;
  rados_write_op_create(write.op, LIBRADOS_CREATE_IDEMPOTENT, nullptr);
  if (!keys.empty()) {
    rados_write_op_omap_set2(write.op, keys.data(), vals.data(), key_lens.data(),
                             val_lens.data(), keys.size());
  }
  if (!erase_keys.empty()) {
    rados_write_op_omap_rm_keys2(write.op, erase_keys.data(), erase_lens.data(),
                                 erase_keys.size());
  }
  Check(rados_write_op_operate2(write.op, pool->io.get(), oid.c_str(), nullptr, 0),
        "write table", pool->Where(oid));
}

}  // namespace cachemgr::storage::rbd

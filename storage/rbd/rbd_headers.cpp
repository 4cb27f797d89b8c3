#include "storage/rbd/rbd_headers.h"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <map>

#include "storage/rbd/rbd_error.h"

namespace cachemgr::storage::rbd {
namespace {
// What the rbd object class prefixes a metadata key with in the header's omap.
constexpr const char* kMetadataPrefix = "metadata_";
// Keys read per round trip (the cache keeps a handful).
constexpr uint64_t kMetadataPage = 256;
std::string HeaderOid(const std::string& id) { return "rbd_header." + id; }
std::string IdOid(const std::string& name) { return "rbd_id." + name; }
// Ceph's encoding of a string: its length (32 bits, little-endian) then its bytes.
void EncodeString(std::string* out, const std::string& s) {
  const auto n = static_cast<uint32_t>(s.size());
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out->append(s);
}
}  // namespace

int ReadIdObject(rados_ioctx_t io, const std::string& name, std::string* id) {
  // A length-prefixed string, little-endian as every host this runs on. Ids are a few
  // hex digits; 256 bytes is far more than librbd writes.
  char buf[256] = {};
  const int n = rados_read(io, IdOid(name).c_str(), buf, sizeof buf, 0);
  if (n < 0) return n;
  if (n < 4) return -ENOENT;
  uint32_t len = 0;
  std::memcpy(&len, buf, 4);
  if (len == 0 || len > static_cast<uint32_t>(n) - 4) return -ENOENT;
  id->assign(buf + 4, len);
  return 0;
}

NameState ReadNameState(rados_ioctx_t io, const std::string& name, const std::string& where,
                        std::string* id) {
  uint64_t size = 0;
  time_t mtime = 0;
  const int r = ReadIdObject(io, name, id);
  if (r == 0) {
    const int header = rados_stat(io, HeaderOid(*id).c_str(), &size, &mtime);
    if (header == -ENOENT) return NameState::kDangling;
    Check(header, "stat the header of", where);
    return NameState::kWhole;
  }
  if (r != -ENOENT) Check(r, "read the id of", where);
  id->clear();
  const int v1 = rados_stat(io, (name + ".rbd").c_str(), &size, &mtime);
  if (v1 == -ENOENT) return NameState::kNone;
  Check(v1, "stat", where);
  return NameState::kFormat1;
}


int ReadHeaderMetadata(rados_ioctx_t io, const std::string& id,
                       std::map<std::string, std::string>* out) {
  out->clear();
  const size_t prefix_len = std::strlen(kMetadataPrefix);
  std::string after;
  for (;;) {
    rados_read_op_t op = rados_create_read_op();
    rados_omap_iter_t iter = nullptr;
    unsigned char more = 0;
    int prval = 0;
    rados_read_op_assert_exists(op);
    rados_read_op_omap_get_vals2(op, after.empty() ? nullptr : after.c_str(), kMetadataPrefix,
                                 kMetadataPage, &iter, &more, &prval);
    int r = rados_read_op_operate(op, io, HeaderOid(id).c_str(), 0);
    if (r == 0) r = prval;
    if (r == 0) {
      char* key = nullptr;
      char* val = nullptr;
      size_t key_len = 0;
      size_t val_len = 0;
      while (rados_omap_get_next2(iter, &key, &val, &key_len, &val_len) == 0 && key != nullptr) {
        std::string k(key, key_len);
        after = k;
        if (k.size() >= prefix_len) out->emplace(k.substr(prefix_len), std::string(val, val_len));
      }
    }
    if (iter != nullptr) rados_omap_get_end(iter);
    rados_release_read_op(op);
    if (r < 0) return r;
    if (more == 0) return 0;
  }
}

int WriteHeaderMetadata(rados_ioctx_t io, const std::string& id, const std::string& key,
                        const std::string& value) {
  const std::string omap_key = kMetadataPrefix + key;
  const char* keys[] = {omap_key.c_str()};
  const char* vals[] = {value.data()};
  const size_t key_lens[] = {omap_key.size()};
  const size_t val_lens[] = {value.size()};
  rados_write_op_t op = rados_create_write_op();
  rados_write_op_assert_exists(op);  // never makes a header where none is
  rados_write_op_omap_set2(op, keys, vals, key_lens, val_lens, 1);
  const int r = rados_write_op_operate2(op, io, HeaderOid(id).c_str(), nullptr, 0);
  rados_release_write_op(op);
  return r;
}

int RenameImage(rados_ioctx_t io, const std::string& from, const std::string& to,
                const std::string& id) {
  // A format-1 image or any binding at `to` holds the name (the directory's omap knows
  // only format-2 names).
  std::string bound;
  uint64_t size = 0;
  time_t mtime = 0;
  int r = ReadIdObject(io, to, &bound);
  if (r == 0) return -EEXIST;
  if (r != -ENOENT) return r;
  r = rados_stat(io, (to + ".rbd").c_str(), &size, &mtime);
  if (r == 0) return -EEXIST;
  if (r != -ENOENT) return r;
  std::string id_object;
  EncodeString(&id_object, id);
  rados_write_op_t make = rados_create_write_op();
  rados_write_op_create(make, LIBRADOS_CREATE_EXCLUSIVE, nullptr);
  rados_write_op_write_full(make, id_object.data(), id_object.size());
  r = rados_write_op_operate2(make, io, IdOid(to).c_str(), nullptr, 0);
  rados_release_write_op(make);
  if (r < 0) return r;
  std::string args;
  EncodeString(&args, from);
  EncodeString(&args, to);
  EncodeString(&args, id);
  rados_write_op_t rebind = rados_create_write_op();
  rados_write_op_exec(rebind, "rbd", "dir_rename_image", args.data(), args.size(), nullptr);
  r = rados_write_op_operate2(rebind, io, "rbd_directory", nullptr, 0);
  rados_release_write_op(rebind);
  if (r < 0) {
    (void)rados_remove(io, IdOid(to).c_str());  // nothing else changed: the name is free again
    return r;
  }
  r = rados_remove(io, IdOid(from).c_str());
  return r == -ENOENT ? 0 : r;
}

}  // namespace cachemgr::storage::rbd

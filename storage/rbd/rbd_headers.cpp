#include "storage/rbd/rbd_headers.h"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <map>
#include <vector>

#include "storage/rbd/rbd_error.h"

namespace cachemgr::storage::rbd {
namespace {
// What the rbd object class prefixes a metadata key with in the header's omap.
constexpr const char* kMetadataPrefix = "metadata_";
// Keys read per round trip (the cache keeps a handful).
constexpr uint64_t kMetadataPage = 256;
std::string HeaderOid(const std::string& id) { return "rbd_header." + id; }
// The pool directory (the rbd class's dir_* methods): omap "name_<name>" -> id and
// "id_<id>" -> name for every format-2 image.
constexpr const char* kDirectoryOid = "rbd_directory";
constexpr const char* kDirNamePrefix = "name_";
std::string IdOid(const std::string& name) { return "rbd_id." + name; }
// Ceph's encoding of a string: its length (32 bits, little-endian) then its bytes.
void EncodeString(std::string* out, const std::string& s) {
  const auto n = static_cast<uint32_t>(s.size());
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out->append(s);
}

// The id in an id object's bytes: a length-prefixed string, little-endian as every host
// this runs on. 0, or -ENOENT when it holds no id.
int ParseIdObject(const char* buf, int n, std::string* id) {
  if (n < 0) return n;
  if (n < 4) return -ENOENT;
  uint32_t len = 0;
  std::memcpy(&len, buf, 4);
  if (len == 0 || len > static_cast<uint32_t>(n) - 4) return -ENOENT;
  id->assign(buf + 4, len);
  return 0;
}

// One librados aio op whose answer is waited for. Several are started before any is
// waited for, so their round trips overlap. An op's buffers belong to its caller and must
// outlive it: the destructor waits for a started op before it releases the completion,
// whatever way the caller leaves.
class AioOp {
 public:
  AioOp() {
    if (rados_aio_create_completion2(nullptr, nullptr, &done_) < 0) done_ = nullptr;
  }
  AioOp(const AioOp&) = delete;
  AioOp& operator=(const AioOp&) = delete;
  ~AioOp() {
    if (done_ == nullptr) return;
    if (started_) rados_aio_wait_for_complete(done_);
    rados_aio_release(done_);
  }
  // `start` is given the completion and returns what the rados_aio_* call returned.
  template <typename Fn>
  void Start(Fn start) {
    if (done_ == nullptr) {
      error_ = -ENOMEM;
      return;
    }
    error_ = start(done_);
    started_ = error_ >= 0;
  }
  // The op's return value (or why it never started).
  int Wait() {
    if (!started_) return error_;
    rados_aio_wait_for_complete(done_);
    return rados_aio_get_return_value(done_);
  }

 private:
  rados_completion_t done_ = nullptr;
  bool started_ = false;
  int error_ = 0;
};

// Ids are a few hex digits; 256 bytes is far more than librbd writes.
constexpr size_t kIdObjectBytes = 256;
}  // namespace

int ReadIdObject(rados_ioctx_t io, const std::string& name, std::string* id) {
  char buf[kIdObjectBytes] = {};
  return ParseIdObject(buf, rados_read(io, IdOid(name).c_str(), buf, sizeof buf, 0), id);
}

NameState ReadNameState(rados_ioctx_t io, const std::string& name, const std::string& where,
                        std::string* id, const NameGuess& guess) {
  // The id object's read, and beside it the read the guess says comes next: one round
  // trip when the guess is right, the same answer as reading one after the other when not.
  char buf[kIdObjectBytes] = {};
  const std::string id_oid = IdOid(name);
  const std::string v1_oid = name + ".rbd";
  const std::string guessed_header = guess.id.empty() ? "" : HeaderOid(guess.id);
  uint64_t size = 0;
  time_t mtime = 0;
  uint64_t v1_size = 0;
  time_t v1_mtime = 0;
  AioOp read_id;
  AioOp stat_v1;
  AioOp stat_guessed;
  read_id.Start([&](rados_completion_t c) {
    return rados_aio_read(io, id_oid.c_str(), c, buf, sizeof buf, 0);
  });
  if (guess.absent) {
    stat_v1.Start([&](rados_completion_t c) {
      return rados_aio_stat(io, v1_oid.c_str(), c, &v1_size, &v1_mtime);
    });
  }
  if (!guessed_header.empty()) {
    stat_guessed.Start([&](rados_completion_t c) {
      return rados_aio_stat(io, guessed_header.c_str(), c, &size, &mtime);
    });
  }
  const int r = ParseIdObject(buf, read_id.Wait(), id);
  const int v1_answer = guess.absent ? stat_v1.Wait() : 0;
  const int guessed_answer = guessed_header.empty() ? 0 : stat_guessed.Wait();
  if (r == 0) {
    const int header = !guessed_header.empty() && *id == guess.id
                           ? guessed_answer
                           : rados_stat(io, HeaderOid(*id).c_str(), &size, &mtime);
    if (header == -ENOENT) return NameState::kDangling;
    Check(header, "stat the header of", where);
    return NameState::kWhole;
  }
  if (r != -ENOENT) Check(r, "read the id of", where);
  id->clear();
  const int v1 =
      guess.absent ? v1_answer : rados_stat(io, v1_oid.c_str(), &v1_size, &v1_mtime);
  if (v1 == -ENOENT) return NameState::kNone;
  Check(v1, "stat", where);
  return NameState::kFormat1;
}

namespace {
// The three reads of what binds a name, started side by side; Finish waits for them.
class BindingReads {
 public:
  BindingReads(rados_ioctx_t io, const std::string& name)
      : id_oid_(IdOid(name)), v1_oid_(name + ".rbd"), dir_key_(kDirNamePrefix + name) {
    read_id_.Start([&](rados_completion_t c) {
      return rados_aio_read(io, id_oid_.c_str(), c, id_buf_, sizeof id_buf_, 0);
    });
    stat_v1_.Start([&](rados_completion_t c) {
      return rados_aio_stat(io, v1_oid_.c_str(), c, &size_, &mtime_);
    });
    const char* keys[] = {dir_key_.c_str()};
    const size_t key_lens[] = {dir_key_.size()};
    dir_op_ = rados_create_read_op();
    rados_read_op_omap_get_vals_by_keys2(dir_op_, keys, 1, key_lens, &dir_iter_, &dir_prval_);
    read_dir_.Start([&](rados_completion_t c) {
      return rados_aio_read_op_operate(dir_op_, io, c, kDirectoryOid, 0);
    });
  }
  BindingReads(const BindingReads&) = delete;
  BindingReads& operator=(const BindingReads&) = delete;
  ~BindingReads() {
    (void)read_dir_.Wait();  // the op and its iterator outlive the read
    if (dir_iter_ != nullptr) rados_omap_get_end(dir_iter_);
    rados_release_read_op(dir_op_);
  }
  // 0 with *out filled, or the first read's error that is not an absence.
  int Finish(NameBindings* out) {
    *out = {};
    const int id = read_id_.Wait();
    if (id != -ENOENT && id < 0) return id;
    out->id_object = id >= 0;  // any bytes, even none: the name's id object is there
    const int v1 = stat_v1_.Wait();
    if (v1 != -ENOENT && v1 < 0) return v1;
    out->format1 = v1 == 0;
    int dir = read_dir_.Wait();
    if (dir == 0) dir = dir_prval_;
    if (dir != -ENOENT && dir < 0) return dir;
    if (dir == 0 && dir_iter_ != nullptr) {
      char* key = nullptr;
      char* val = nullptr;
      size_t key_len = 0;
      size_t val_len = 0;
      out->directory = rados_omap_get_next2(dir_iter_, &key, &val, &key_len, &val_len) == 0 &&
                       key != nullptr;
    }
    return 0;
  }

 private:
  std::string id_oid_;
  std::string v1_oid_;
  std::string dir_key_;
  char id_buf_[kIdObjectBytes] = {};
  uint64_t size_ = 0;
  time_t mtime_ = 0;
  rados_read_op_t dir_op_ = nullptr;
  rados_omap_iter_t dir_iter_ = nullptr;
  int dir_prval_ = 0;
  // Declared last: destroyed (waited for) first, before the buffers they write.
  AioOp read_id_;
  AioOp stat_v1_;
  AioOp read_dir_;
};
}  // namespace

int ReadNameBindings(rados_ioctx_t io, const std::string& name, NameBindings* out) {
  BindingReads reads(io, name);
  return reads.Finish(out);
}

int ReadIdBesideFormat1(rados_ioctx_t io, const std::string& name, const std::string& to,
                        std::string* id, bool* to_format1) {
  char buf[kIdObjectBytes] = {};
  const std::string id_oid = IdOid(name);
  const std::string v1_oid = to + ".rbd";
  uint64_t size = 0;
  time_t mtime = 0;
  AioOp read_id;
  AioOp stat_v1;
  read_id.Start([&](rados_completion_t c) {
    return rados_aio_read(io, id_oid.c_str(), c, buf, sizeof buf, 0);
  });
  stat_v1.Start([&](rados_completion_t c) {
    return rados_aio_stat(io, v1_oid.c_str(), c, &size, &mtime);
  });
  const int r = ParseIdObject(buf, read_id.Wait(), id);
  const int v1 = stat_v1.Wait();
  if (r < 0) return r;
  if (v1 != -ENOENT && v1 < 0) return v1;
  *to_format1 = v1 == 0;
  return 0;
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
                const std::string& id, const std::map<std::string, std::string>& metadata,
                bool format1_looked) {
  // Anything that binds `to` holds the name: an id object (whatever it holds), a format-1
  // header, a directory entry. The id object is refused by the exclusive make and the
  // directory entry by the directory's rebind, before the image is listed at the name; a
  // format-1 header only by this look, made before anything is made at the name (an open
  // of the name reads the id object first: one made there would shadow the image).
  if (!format1_looked) {
    NameBindings bindings;
    const int looked = ReadNameBindings(io, to, &bindings);
    if (looked < 0) return looked;
    if (bindings.any()) return -EEXIST;
  }
  std::string id_object;
  EncodeString(&id_object, id);
  const std::string to_id_oid = IdOid(to);
  rados_write_op_t make = rados_create_write_op();
  // Exclusively: one made since the look refuses the name all the same.
  rados_write_op_create(make, LIBRADOS_CREATE_EXCLUSIVE, nullptr);
  rados_write_op_write_full(make, id_object.data(), id_object.size());
  // The metadata goes to the header beside the make: the directory, where the image is
  // listed under its new name, is rebound only once both are written. (Until then the
  // image is also under `from`, which is what a clean-up of a killed rename removes.)
  std::vector<std::string> keys;
  std::vector<const char*> key_ptrs;
  std::vector<const char*> val_ptrs;
  std::vector<size_t> key_lens;
  std::vector<size_t> val_lens;
  keys.reserve(metadata.size());
  for (const auto& [key, value] : metadata) {
    keys.push_back(kMetadataPrefix + key);
    key_ptrs.push_back(keys.back().c_str());
    key_lens.push_back(keys.back().size());
    val_ptrs.push_back(value.data());
    val_lens.push_back(value.size());
  }
  rados_write_op_t mark = rados_create_write_op();
  rados_write_op_assert_exists(mark);  // never makes a header where none is
  rados_write_op_omap_set2(mark, key_ptrs.data(), val_ptrs.data(), key_lens.data(),
                           val_lens.data(), key_ptrs.size());
  const std::string header_oid = HeaderOid(id);
  int made = 0;
  int marked = 0;
  {
    AioOp make_id;
    AioOp write_mark;
    make_id.Start([&](rados_completion_t c) {
      return rados_aio_write_op_operate(make, io, c, to_id_oid.c_str(), nullptr, 0);
    });
    if (!metadata.empty()) {
      write_mark.Start([&](rados_completion_t c) {
        return rados_aio_write_op_operate(mark, io, c, header_oid.c_str(), nullptr, 0);
      });
    }
    made = make_id.Wait();
    marked = metadata.empty() ? 0 : write_mark.Wait();
  }  // both answered: the ops may go
  rados_release_write_op(make);
  rados_release_write_op(mark);
  if (made < 0) return made;  // -EEXIST: bound since the look
  if (marked < 0) {
    (void)rados_remove(io, to_id_oid.c_str());  // ours, made just now: the name is free again
    return marked;
  }
  std::string args;
  EncodeString(&args, from);
  EncodeString(&args, to);
  EncodeString(&args, id);
  rados_write_op_t rebind = rados_create_write_op();
  rados_write_op_exec(rebind, "rbd", "dir_rename_image", args.data(), args.size(), nullptr);
  int r = rados_write_op_operate2(rebind, io, kDirectoryOid, nullptr, 0);
  rados_release_write_op(rebind);
  if (r < 0) {
    (void)rados_remove(io, to_id_oid.c_str());  // nothing else changed: the name is free again
    return r;
  }
  r = rados_remove(io, IdOid(from).c_str());
  return r == -ENOENT ? 0 : r;
}

int RemoveIdObjectIf(rados_ioctx_t io, const std::string& name, const std::string& id) {
  std::string expected;
  EncodeString(&expected, id);
  rados_write_op_t op = rados_create_write_op();
  int cmp = 0;
  // Removed in the same op that compares its bytes: one rebound since is left alone.
  rados_write_op_cmpext(op, expected.data(), expected.size(), 0, &cmp);
  rados_write_op_remove(op);
  int r = rados_write_op_operate2(op, io, IdOid(name).c_str(), nullptr, 0);
  rados_release_write_op(op);
  // A mismatch at byte n is -(4095 + n) (librados's MAX_ERRNO + n): another id.
  constexpr int kMaxErrno = 4095;
  if (r <= -kMaxErrno || cmp <= -kMaxErrno) r = -ESTALE;
  return r;
}

int ReadDirectoryId(rados_ioctx_t io, const std::string& name, std::string* id) {
  std::string args;
  EncodeString(&args, name);
  char buf[kIdObjectBytes] = {};
  const int n = rados_exec(io, kDirectoryOid, "rbd", "dir_get_id", args.data(), args.size(), buf,
                           sizeof buf);
  return ParseIdObject(buf, n, id);  // the answer is one encoded string, as an id object
}

int RemoveDirectoryEntry(rados_ioctx_t io, const std::string& name, const std::string& id) {
  // The rbd class removes both keys only if they map `name` and `id` to each other
  // (-ESTALE otherwise, -ENOENT when the name has no entry).
  std::string args;
  EncodeString(&args, name);
  EncodeString(&args, id);
  rados_write_op_t op = rados_create_write_op();
  rados_write_op_exec(op, "rbd", "dir_remove_image", args.data(), args.size(), nullptr);
  const int r = rados_write_op_operate2(op, io, kDirectoryOid, nullptr, 0);
  rados_release_write_op(op);
  return r;
}

}  // namespace cachemgr::storage::rbd

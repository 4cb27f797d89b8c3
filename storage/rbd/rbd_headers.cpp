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
                const std::string& id, const std::map<std::string, std::string>& metadata) {
  // Any binding at `to` holds the name: the new id object is made exclusively. A format-1
  // image holds it too (the directory's omap knows only format-2 names): its header is
  // looked for beside the make, and the id object made is taken back if one is there.
  std::string id_object;
  EncodeString(&id_object, id);
  const std::string to_id_oid = IdOid(to);
  const std::string to_v1_oid = to + ".rbd";
  uint64_t size = 0;
  time_t mtime = 0;
  rados_write_op_t make = rados_create_write_op();
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
  for (const auto& [key, value] : metadata) keys.push_back(kMetadataPrefix + key);
  size_t i = 0;
  for (const auto& [key, value] : metadata) {
    key_ptrs.push_back(keys[i].c_str());
    key_lens.push_back(keys[i].size());
    val_ptrs.push_back(value.data());
    val_lens.push_back(value.size());
    ++i;
  }
  rados_write_op_t mark = rados_create_write_op();
  rados_write_op_assert_exists(mark);  // never makes a header where none is
  rados_write_op_omap_set2(mark, key_ptrs.data(), val_ptrs.data(), key_lens.data(),
                           val_lens.data(), key_ptrs.size());
  const std::string header_oid = HeaderOid(id);
  int made = 0;
  int v1 = 0;
  int marked = 0;
  {
    AioOp make_id;
    AioOp stat_v1;
    AioOp write_mark;
    make_id.Start([&](rados_completion_t c) {
      return rados_aio_write_op_operate(make, io, c, to_id_oid.c_str(), nullptr, 0);
    });
    stat_v1.Start([&](rados_completion_t c) {
      return rados_aio_stat(io, to_v1_oid.c_str(), c, &size, &mtime);
    });
    if (!metadata.empty()) {
      write_mark.Start([&](rados_completion_t c) {
        return rados_aio_write_op_operate(mark, io, c, header_oid.c_str(), nullptr, 0);
      });
    }
    made = make_id.Wait();
    v1 = stat_v1.Wait();
    marked = metadata.empty() ? 0 : write_mark.Wait();
  }  // all answered: the ops may go
  rados_release_write_op(make);
  rados_release_write_op(mark);
  if (made < 0) return made;  // -EEXIST: bound already
  if (v1 != -ENOENT || marked < 0) {
    (void)rados_remove(io, to_id_oid.c_str());  // ours, made just now: the name is free again
    if (marked < 0) return marked;
    return v1 == 0 ? -EEXIST : v1;
  }
  std::string args;
  EncodeString(&args, from);
  EncodeString(&args, to);
  EncodeString(&args, id);
  rados_write_op_t rebind = rados_create_write_op();
  rados_write_op_exec(rebind, "rbd", "dir_rename_image", args.data(), args.size(), nullptr);
  int r = rados_write_op_operate2(rebind, io, "rbd_directory", nullptr, 0);
  rados_release_write_op(rebind);
  if (r < 0) {
    (void)rados_remove(io, to_id_oid.c_str());  // nothing else changed: the name is free again
    return r;
  }
  r = rados_remove(io, IdOid(from).c_str());
  return r == -ENOENT ? 0 : r;
}

}  // namespace cachemgr::storage::rbd

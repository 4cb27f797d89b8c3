// storage/rbd/rbd_headers.h: an image's id, existence and metadata, read and written
// through its objects without opening it, and its rename.
//
// A format-2 image named N is its id object rbd_id.N, which holds the image's id, and
// its header rbd_header.<id> (see Ceph's rbd_types.h), whose omap keeps the image's
// metadata (`rbd image-meta`) under keys "metadata_<key>", values as given: what the rbd
// object class's metadata_list and metadata_set read and write. A format-1 image is its
// header N.rbd alone. Each read or write here is one round trip and no image context;
// opening the image to ask (rbd_open, rbd_get_id or rbd_metadata_*, rbd_close) takes ten
// or more, more again for a clone, whose parents are opened with it, a watch on the
// header when opened to write, and the process's image-context lock (rbd_ctx_lock.h).
#pragma once

#include <rados/librados.h>

#include <map>
#include <string>

namespace cachemgr::storage::rbd {

// The id the id object of `name` holds. 0 with *id set; -ENOENT when there is no id
// object (or it holds no id); another negative errno when the read failed.
int ReadIdObject(rados_ioctx_t io, const std::string& name, std::string* id);

// What is at `name`.
enum class NameState {
  kNone,     // nothing: no id object, no format-1 header
  kWhole,    // a format-2 image: its id object and the header it names
  kDangling, // an id object whose header is gone (a killed create, rename or removal)
  kFormat1,  // a format-1 image (never made by the cache)
};

// What the caller expects at a name. Reading what is there takes two reads one after the
// other (the id object, then the header it names or the format-1 header); a guess starts
// the second beside the first, so a right guess answers in one round trip. A wrong one
// costs one wasted read and answers the same.
struct NameGuess {
  bool absent = false;  // nothing at the name: the format-1 header is looked for at once
  std::string id;       // the image of this id: its header is looked for at once
};

// Reads what is at `name` (its id into *id when it has one). Throws a cachemgr::Error
// naming `where` when a read fails for another cause than the object's absence.
NameState ReadNameState(rados_ioctx_t io, const std::string& name, const std::string& where,
                        std::string* id, const NameGuess& guess = {});

// What binds a name: any of them makes it taken (librbd refuses to create or rename to
// it, and an open of it may find someone's image).
struct NameBindings {
  bool id_object = false;  // rbd_id.<name>, whatever it holds (even a dangling id)
  bool format1 = false;    // <name>.rbd, a format-1 header
  bool directory = false;  // the pool directory's "name_<name>" key
  bool any() const { return id_object || format1 || directory; }
};

// Reads all three at once (one round trip). 0, or the first negative errno of a read
// that failed for another cause than the object's absence.
int ReadNameBindings(rados_ioctx_t io, const std::string& name, NameBindings* out);

// ReadIdObject of `name` and, beside it, whether a format-1 header is at `to` (what a
// rename of it to `to` must look at first): one round trip. 0, or a negative errno.
int ReadIdBesideFormat1(rados_ioctx_t io, const std::string& name, const std::string& to,
                        std::string* id, bool* to_format1);

// The metadata of the image whose id is `id`, as rbd_metadata_list gives it. 0, or a
// negative errno (-ENOENT: no such header).
int ReadHeaderMetadata(rados_ioctx_t io, const std::string& id,
                       std::map<std::string, std::string>* out);

// Sets one metadata key of the image whose id is `id`, as rbd_metadata_set does but
// without notifying the image's watchers: for the cache's own keys, which librbd never
// reads. Atomic, and only on an existing header: 0, or a negative errno (-ENOENT).
int WriteHeaderMetadata(rados_ioctx_t io, const std::string& id, const std::string& key,
                        const std::string& value);

// Renames the format-2 image `from`, whose id is `id`, to `to`, as librbd's rename does
// for an image no one has open, without opening it: what binds `to` is looked at first
// (any binding refuses the name with -EEXIST and nothing changed; `format1_looked`: the
// caller found no format-1 header there just before, and the exclusive make and the
// directory's rebind refuse the rest), then the new name's id object, the pool
// directory's entry (the rbd class's dir_rename_image, atomic, checked against `id`), then
// the old id object. `metadata` (as WriteHeaderMetadata's keys, all in one write) is
// written to the header beside the new id object's make, and the directory rebound only
// once both are: a rename refused or failed may still have written it. A kill between
// steps leaves what a killed librbd rename leaves (see rbd_leftovers.cpp). 0, or a
// negative errno.
int RenameImage(rados_ioctx_t io, const std::string& from, const std::string& to,
                const std::string& id, const std::map<std::string, std::string>& metadata = {},
                bool format1_looked = false);

// What a killed rename or create leaves, removed one object at a time and only when it is
// the caller's (rbd_leftovers.cpp); never librbd's remove by name, which looks the name up
// in the directory and removes whatever image it finds there.
// Removes the id object of `name` only while it holds `id`: 0, -ENOENT, -ESTALE (another).
int RemoveIdObjectIf(rados_ioctx_t io, const std::string& name, const std::string& id);
// The id the pool directory binds `name` to: 0, or -ENOENT.
int ReadDirectoryId(rados_ioctx_t io, const std::string& name, std::string* id);
// Removes the directory entry binding `name` to `id`: 0, -ENOENT (none), -ESTALE (it binds
// another id, or `id` another name).
int RemoveDirectoryEntry(rados_ioctx_t io, const std::string& name, const std::string& id);

}  // namespace cachemgr::storage::rbd

// engine/marks.h: ownership is recorded, not guessed from names.
//
// Every object the cache makes (entries and volumes) carries in its metadata a mark,
// "cachemgr.mark" = "<kind> <identity>", naming it the cache's, of which kind, and the
// identity (storage::Backend::Identity) it had when made; its index row records that
// identity too. The cache changes or removes an object only when the mark's kind is
// the one expected, the mark's identity is the object's own (a copy made with `rbd cp`
// carries the metadata but not the identity) and, when a row names the object, the
// row's identity as well. Anything else is someone else's: reported, never touched.
#pragma once

#include <string>
#include <string_view>

#include "storage/backend.h"

namespace cachemgr::engine {

inline constexpr const char* kMetaMark = "cachemgr.mark";
inline constexpr std::string_view kMarkEntry = "entry";
inline constexpr std::string_view kMarkVolume = "volume";

// The mark's value for an object of `kind` whose identity is `identity`.
std::string MarkValue(std::string_view kind, const std::string& identity);

// Writes the mark of `kind` on `ref` with the object's identity now; returns it.
std::string Mark(storage::Backend& backend, const storage::ImageRef& ref, std::string_view kind);

struct Ownership {
  bool exists = false;   // an object is at the name
  bool ours = false;     // it is the cache's (see the header comment)
  bool marked = false;   // it carries a mark of `kind` (ours or a copy of ours)
  std::string identity;  // the object's identity, when it exists
  std::string why;       // when not ours: why, for the log and the error
};

// Whether the object at `ref` is the cache's `kind` object. `recorded` is the identity
// the row that names it recorded: nullptr when no row names it (the mark alone decides);
// "" for a row made before marks existed (an unmarked object is taken as that row's).
Ownership CheckOwnership(storage::Backend& backend, const storage::ImageRef& ref,
                         std::string_view kind, const std::string* recorded);

}  // namespace cachemgr::engine

// engine/naming.h: names of cache entries, staging objects and locks on the backend.
//
// A ready entry is named sha1(image_id) in hex, as Nova names its _base files: a
// fixed-size name that no image id can smuggle anything into. Half-made objects are
// "staging-<sha1>-<random>", which can never be mistaken for a ready entry and which
// gc can map back to the image's lock.
#pragma once

#include <optional>
#include <string>

namespace cachemgr::engine {

inline constexpr const char* kSnapName = "cachemgr-base";
inline constexpr const char* kStagingPrefix = "staging-";

// Throws kInvalidArgument unless `image_id` is [A-Za-z0-9._-]{1,128} and does not
// start with '.' or '-' (no path traversal, no shell or RBD separators, no NUL).
void ValidateImageId(const std::string& image_id);
// Backend name rules plus: not shaped like an entry or staging name (volumes and
// entries may share an RBD pool).
void ValidateVolumeName(const std::string& volume);

std::string Sha1Hex(const std::string& data);
std::string EntryName(const std::string& image_id);    // sha1 hex
std::string StagingName(const std::string& image_id);  // staging-<sha1>-<random>
bool IsEntryName(const std::string& name);              // 40 lowercase hex digits
// The sha1 part of a staging name; nullopt when `name` is not one (a name outside the
// backend's rules never is, whatever it starts with: the cache cannot have made it).
std::optional<std::string> StagingKey(const std::string& name);
// "staging-vol-<random>": the name a volume is made under until it is renamed into
// place; recorded in the volume's creating row before anything is made.
std::string VolumeStagingName();
bool IsVolumeStagingName(const std::string& name);  // a valid name with that prefix

// This machine's hostname ("localhost" when it cannot be read).
std::string HostName();

// "host:pid.start" of this process (start: its start time, so a reused pid is not taken
// for it), recorded as the owner of rows it is working on.
std::string OwnerId();
// Whether the owner recorded as "host:pid[.start]" is a live process on this host. Owners on
// other hosts are reported alive (they cannot be checked from here).
bool OwnerAlive(const std::string& owner);

}  // namespace cachemgr::engine

// storage/local/local_root.h: the local backend's root is the cache's own folder.
#pragma once

#include <filesystem>

namespace cachemgr::storage {

// The file that marks a folder as a cache root.
inline constexpr const char* kRootMarker = ".cachemgr-root";

// Makes sure `root` is the cache's: a folder that does not exist yet is created and
// marked; an empty one is marked; a marked one is used. A folder that holds anything
// else and no marker is refused (kConfig naming backend.local.root) before anything is
// created in it. A root made by an older cachemgr (only the cache's own folders, with
// _base/.meta) is marked and used.
void ClaimLocalRoot(const std::filesystem::path& root);

}  // namespace cachemgr::storage

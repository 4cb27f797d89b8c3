// storage/local/local_files.h: file helpers the local backend's files share.
#pragma once

#include <filesystem>
#include <string>

namespace cachemgr::storage {

// Writes `content` to `path` durably: a locked `.tmp-*` file in the same folder (a sweep
// removes it if the writer dies), fsync, rename over `path`, fsync of the folder.
void WriteDurable(const std::filesystem::path& path, const std::string& content);

}  // namespace cachemgr::storage

// tests/engine/engine_env.h: a cache on the local or the RBD backend with a file source
// in a temp dir, shared by the engine tests and the engine_child helper program.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cachemgr/cache.h"
#include "storage/backend.h"

namespace cachemgr::test {

// Options for a cache rooted at `dir`: index in dir/state, images in dir/images. With
// `rbd`, the backend is the fixture's cluster, pool "volumes", RBD namespace `ns`
// (created if missing) so that tests sharing the pool never see each other's entries.
Options EngineOptions(const std::filesystem::path& dir, bool rbd, const std::string& ns);

// Creates the RBD namespace volumes/<ns> on the fixture's cluster.
void CreateRbdNamespace(const std::string& ns);

// A unique suffix for image ids, volume names and namespaces.
std::string Unique(const std::string& prefix);

// md5 hex of the first `len` bytes of a file / of a backend image.
std::string Md5OfFile(const std::filesystem::path& path, uint64_t len);
std::string Md5OfImage(storage::Backend& backend, const storage::ImageRef& ref, uint64_t len);

}  // namespace cachemgr::test

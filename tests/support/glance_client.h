// tests/support/glance_client.h: uploads and removes images in the fixture's Glance
// (the v2 API with no Keystone), for the source, engine and CLI tests.
#pragma once

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

namespace cachemgr::test::glance {

// Creates an image (container_format bare, default visibility) and uploads `file` into
// `store` ("" = Glance's default store "fs"; "ceph" = the rbd store); returns its id once
// the image is active. Throws std::runtime_error with Glance's answer on failure.
std::string CreateImage(const std::string& endpoint, const std::string& disk_format,
                        const std::filesystem::path& file, const std::string& store = "");
// Creates an image record and uploads nothing: the image stays "queued".
std::string CreateQueuedImage(const std::string& endpoint, const std::string& disk_format);
// GET /v2/images/{id} as JSON.
nlohmann::json GetImage(const std::string& endpoint, const std::string& id);
// Adds a location (PATCH add /locations/-) to an image, read through `store` (a store id
// of Glance's, e.g. "ceph"; "" lets Glance match the URL against its stores' prefixes).
// Glance checks only that the location's size is the image's.
void AddLocation(const std::string& endpoint, const std::string& id, const std::string& url,
                 const std::string& store = "");
// Sets a property (PATCH add /<key>): Glance moves the image's updated_at.
void SetProperty(const std::string& endpoint, const std::string& id, const std::string& key,
                 const std::string& value);
// POST /v2/images/{id}/actions/deactivate: the image stays, no longer "active".
void Deactivate(const std::string& endpoint, const std::string& id);
// DELETE /v2/images/{id}; a missing image is not an error.
void DeleteImage(const std::string& endpoint, const std::string& id);

}  // namespace cachemgr::test::glance

// config/clouds_yaml.h: a named cloud from the operators' clouds.yaml, as the Glance
// source's Keystone auth (the same credentials `openstack image list` uses).
#pragma once

#include <string>

#include "cachemgr/options.h"

namespace cachemgr::config {

// Fills g.auth (and, when given there, ca_file, client_cert, client_key, the region,
// the interface and image_endpoint_override) from cloud `name` of the first clouds.yaml
// found: $OS_CLIENT_CONFIG_FILE, ./clouds.yaml, ~/.config/openstack/clouds.yaml,
// /etc/openstack/clouds.yaml; a secure.yaml beside it (same search, same cloud) adds
// or overrides keys, as openstacksdk does. `why` says where the name came from, for
// errors ("source.glance.cloud", "$OS_CLOUD"). Throws kConfig naming the file and the key
// when the cloud is missing, its auth_type is not one spoken here (password,
// v3applicationcredential), or it turns off TLS verification. g.auth.credential_files
// gets the files read.
void ApplyCloud(const std::string& name, const std::string& why, GlanceSourceOptions& g);

}  // namespace cachemgr::config

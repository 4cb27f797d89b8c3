// source/secrets.h: keeping secrets (passwords, application credential secrets, tokens)
// and URL credentials out of every message, log line and output.
#pragma once

#include <string>
#include <vector>

#include "util/url.h"

namespace cachemgr::source {

// `text` with every copy of each non-empty secret replaced by "***": as written, JSON-
// escaped (as a server echoing a request body writes it, ASCII-only or not) and
// percent-encoded. Cut a message only after this: a cut copy is no longer found.
std::string Redact(std::string text, const std::vector<std::string>& secrets);

// URL credentials: util/url.h (HasUserInfo, WithoutUserInfo).
using util::HasUserInfo;
using util::WithoutUserInfo;

}  // namespace cachemgr::source

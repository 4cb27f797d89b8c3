// util/hex.h: the one lower-case hex encoder in the project, and what is built on it.
#pragma once

#include <cstddef>
#include <span>
#include <string>

namespace cachemgr::util {

// Lower-case hex of `bytes`, two digits a byte.
std::string HexEncode(std::span<const unsigned char> bytes);

// `n` random lower-case hex digits (not for secrets: a per-thread mt19937_64).
std::string RandomHex(size_t n);

// `text` for an error message or a log line: at most `max_chars` characters, bytes
// outside printable ASCII as \xNN, "..." when cut. A hostile name cannot garble the
// line it is quoted in.
std::string Printable(const std::string& text, size_t max_chars = 64);

}  // namespace cachemgr::util

// util/hex.cpp: see hex.h.
#include "util/hex.h"

#include <random>

namespace cachemgr::util {

namespace {
constexpr char kHexDigits[] = "0123456789abcdef";

void AppendHexByte(std::string& out, unsigned char byte) {
  out += kHexDigits[byte >> 4];
  out += kHexDigits[byte & 15];
}
}  // namespace

std::string HexEncode(std::span<const unsigned char> bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) AppendHexByte(out, b);
  return out;
}

std::string RandomHex(size_t n) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  std::string out(n, '0');
  for (auto& c : out) c = kHexDigits[rng() & 15];
  return out;
}

std::string Printable(const std::string& text, size_t max_chars) {
  std::string out;
  for (char c : text.substr(0, max_chars)) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) {
      out += c;
    } else {
      out += "\\x";
      AppendHexByte(out, u);
    }
  }
  if (text.size() > max_chars) out += "...";
  return out;
}

}  // namespace cachemgr::util

#include <array>
#include <span>
#include <stdexcept>
#include <string>

#include "cachemgr/error.h"
#include "convert/format.h"
#include "fuzz_entry.h"

namespace cachemgr::fuzz {
namespace {

constexpr std::array<std::string_view, 10> kClaims = {
    "raw", "qcow2", "vmdk", "vdi", "vhd", "vhdx", "iso", "ploop", "ami", ""};

}  // namespace

void FormatOne(const uint8_t* data, size_t size) {
  auto all = std::as_bytes(std::span(data, size));
  auto head = all.first(std::min(size, convert::kHeaderBytes));
  std::span<const std::byte> tail;
  if (size > convert::kHeaderBytes) tail = all.last(convert::kHeaderBytes);

  std::string detected;
  try {
    detected = convert::DetectFormat(head, tail);
  } catch (const Error&) {
    return;
  }
  bool known = false;
  for (auto k : convert::kDetectedFormats) known = known || detected == k;
  if (!known) throw std::logic_error("DetectFormat returned an unknown format: " + detected);
  if (convert::DetectFormat(head, tail) != detected) {
    throw std::logic_error("DetectFormat is not deterministic");
  }
  // A raw claim may only pass for bytes with no image magic at all.
  for (auto claim : kClaims) {
    try {
      convert::RequireFormatMatches("fuzz", std::string(claim), detected);
      if (claim == "raw" && detected != "raw") {
        throw std::logic_error("a " + detected + " header passed as raw");
      }
    } catch (const Error&) {
    }
  }
}

}  // namespace cachemgr::fuzz

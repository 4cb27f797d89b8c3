#include <stdexcept>
#include <string>
#include <string_view>

#include "cachemgr/config.h"
#include "cachemgr/error.h"
#include "fuzz_entry.h"

namespace cachemgr::fuzz {

void ConfigOne(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  Options options;
  try {
    options = ParseConfig(text, "<fuzz>");
  } catch (const Error&) {
    return;  // refused with a message: the expected outcome for most inputs
  }
  // What the parser accepted must pass the same validation an embedding program runs.
  try {
    ValidateOptions(options);
  } catch (const Error& e) {
    throw std::logic_error(std::string("ParseConfig accepted options ValidateOptions refuses: ") +
                           e.what());
  }
}

}  // namespace cachemgr::fuzz

// cli/import.h: the end of an instant miss's import, run here or in a process of its own.
#pragma once

#include <sys/types.h>

#include <string>

namespace cachemgr::cli {

class Context;

// Runs the import of `image_id` to its end in this process (progress on a terminal);
// returns the exit code, or throws naming the volumes when the bytes were bad.
int FinishImportNow(Context& ctx, const std::string& image_id);
// Starts `cachemgr finish-import IMAGE_ID` (this same program, the same config) in a
// session of its own, detached from the caller's stdout and stderr; returns its pid.
// With `only_with_relay`, only when this process serves the image's relay (0 if not).
pid_t StartImportProcess(Context& ctx, const std::string& image_id, bool only_with_relay = false);

}  // namespace cachemgr::cli

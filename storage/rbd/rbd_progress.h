// storage/rbd/rbd_progress.h: a Backend ProgressFn as librbd's progress callback.
#pragma once

#include "storage/backend.h"

namespace cachemgr::storage::rbd {

// Passed as librbd's `cbdata`; `fn` may be null or empty (then nothing is reported).
struct ProgressCtx {
  const ProgressFn* fn = nullptr;
};

// librbd_progress_fn_t: reports (done, total) to the ProgressCtx's function; never stops
// the operation.
inline int ProgressThunk(uint64_t done, uint64_t total, void* arg) {
  const auto* ctx = static_cast<ProgressCtx*>(arg);
  if (ctx->fn != nullptr && *ctx->fn) (*ctx->fn)(done, total);
  return 0;
}

}  // namespace cachemgr::storage::rbd

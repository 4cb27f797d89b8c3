#!/usr/bin/env bash
# librbd-abort-rerun.sh BINARY [ARGS...]: runs a test binary that uses librbd in its own
# process, and runs it once more when, and only when, it died of the librbd 16 abort
# described in docs/architecture.md (a known limit): std::terminate on a librados
# io_context_pool thread (the test's terminate handler names the thread,
# tests/support/doctest_main.cpp) for a std::system_error "Invalid argument". Seen about
# once in 70 runs of a test under CPU contention. An abort on any other thread (this
# project's own included), any other failure, or the same abort twice in a row fails the
# test as it is. Both runs' output is kept in the test log, and the rerun says why it ran.
set -uo pipefail
out=$(mktemp "${TMPDIR:-/tmp}/librbd-abort.XXXXXX") || exec "$@"
trap 'rm -f "$out"' EXIT
"$@" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
if (( rc == 134 )) &&
   grep -qx 'terminate on thread "io_context_pool"' "$out" &&
   grep -q "terminate called after throwing an instance of 'std::system_error'" "$out" &&
   grep -q "what():  Invalid argument" "$out"; then
  echo "librbd-abort-rerun: $(basename "$1") died of the known librbd abort on a librados" \
       "io_context_pool thread (exit 134, std::system_error: Invalid argument); running it" \
       "once more" >&2
  "$@"
  exit $?
fi
exit "$rc"

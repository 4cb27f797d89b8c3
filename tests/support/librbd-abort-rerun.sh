#!/usr/bin/env bash
# librbd-abort-rerun.sh BINARY [ARGS...]: runs a test binary that uses librbd (in its own
# process or in the children it starts), and runs it once more when, and only when, it
# failed of the librbd 16 abort described in docs/architecture.md (a known limit):
# std::terminate on a librados io_context_pool thread (the terminate handler of every
# test process names the thread, tests/support/name_thread_on_terminate.h) for a
# std::system_error "Invalid argument". Seen about once in 70 runs of a test under CPU
# contention.
#
# That abort is the rerun's cause when the run failed and its output shows it: the test
# process died of it (exit 134), or a child the test started did and the test failed or
# hung after it. A run that still has not ended RERUN_HANG_S (60) seconds after the abort
# showed is killed, with every process it started (they share a process group), and
# counts as failed of it: a test waiting on a child that died must not sit until ctest's
# timeout. An abort on any other thread (this project's own included), any failure whose
# output does not show the abort, or the same abort twice in a row fails the test as it
# is. Both runs' output is kept in the test log, and the rerun says why it ran.
set -uo pipefail
hang_s=${RERUN_HANG_S:-60}
out=$(mktemp "${TMPDIR:-/tmp}/librbd-abort.XXXXXX") || exec "$@"
pid=
# ctest's own timeout (SIGTERM) or ^C ends the test's whole group too.
trap '[[ -n $pid ]] && kill -KILL -- "-$pid" 2>/dev/null; rm -f "$out"' EXIT
trap 'exit 143' TERM INT

shows_abort() {
  grep -qx 'terminate on thread "io_context_pool"' "$out" &&
    grep -q "terminate called after throwing an instance of 'std::system_error'" "$out" &&
    grep -q "what():  Invalid argument" "$out"
}

# run_once: runs the test in a process group of its own (setsid execs in place: a
# background job of this shell is no group leader), its output to the log and to $out;
# sets rc, and hung=1 when the watchdog ended it.
run_once() {
  : >"$out"
  hung=0
  setsid "$@" > >(tee -a "$out") 2>&1 &
  pid=$!
  local since=0
  while kill -0 "$pid" 2>/dev/null; do
    if (( since > 0 || $(shows_abort && echo 1 || echo 0) )); then
      if (( ++since > hang_s )); then
        echo "librbd-abort-rerun: $(basename "$1") still running ${hang_s} s after the" \
             "known librbd abort showed in its output; ending it and its children" >&2
        kill -KILL -- "-$pid" 2>/dev/null
        hung=1
        break
      fi
    fi
    sleep 1
  done
  wait "$pid"
  rc=$?
  pid=
  (( hung )) && rc=134
  wait  # the tee: every line is in $out before it is read
}

run_once "$@"
if (( rc != 0 )) && shows_abort; then
  echo "librbd-abort-rerun: $(basename "$1") failed of the known librbd abort on a librados" \
       "io_context_pool thread (exit $rc, std::system_error: Invalid argument); running it" \
       "once more" >&2
  run_once "$@"
fi
exit "$rc"

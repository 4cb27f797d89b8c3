#!/usr/bin/env bash
# crash.sh BACKEND: crash injection at every failpoint of the miss path and of the
# eviction pass (names from cachemgr/src/engine/failpoints.h; CACHEMGR_FAILPOINT=<name>
# makes the process abort at that step).
#
# Miss path: `create` of a cold image aborts at the failpoint; then an eviction pass
# and a fresh `create` of the same image must succeed, the volume must read back the
# image, and nothing may be orphaned (index rows not ready, staging objects, extra
# snapshots or trash entries, conversion files).
# Eviction pass: with three entries (the oldest with a clone) over max_count 1, `evict` aborts at
# the failpoint; then a clean pass and a fresh `create` must succeed, the existing
# volume must still read back, the limit must hold and nothing may be orphaned.
source "$(dirname "$0")/lib.sh"
backend=${1:?usage: crash.sh local|rbd}
rel_init "crash-$backend"

fp_header=$SRC_DIR/cachemgr/src/engine/failpoints.h
if [[ -n ${FAILPOINTS:-} ]]; then
  read -r -a failpoints <<<"$FAILPOINTS"
else
  [[ -f $fp_header ]] || { log "no $fp_header"; record "failpoint list" "$backend" \
    "failpoints.h lists the failpoints" "no $fp_header" 1; exit 1; }
  # Every quoted name that looks like a failpoint ("miss.after_import", "evict_before_rm").
  mapfile -t failpoints < <(grep -v '^\s*//' "$fp_header" | grep -oE '"[a-z][a-z0-9_.:/-]*"' |
    tr -d '"' | awk '!seen[$0]++')
fi
(( ${#failpoints[@]} > 0 )) || { record "failpoint list" "$backend" "at least one failpoint" \
  "none found in $fp_header" 1; exit 1; }
log "failpoints: ${failpoints[*]}"

new_cache "$WORK/c" "$backend" 0
cfg_fill=$CFG
cfg_small=$WORK/c/small.yaml
write_config "$cfg_small" 1

# run_fp FP CMD...: runs the tool with the failpoint set; prints "abort", "librbd-abort"
# (the known librbd abort came first: a crash at some other step), "crash", "ok" or
# "exit N".
run_fp() {
  local fp=$1
  shift
  CACHEMGR_FAILPOINT=$fp timeout 300 "$CACHEMGR_BIN" "$@" >/dev/null 2>"$WORK/fp.err"
  local rc=$?
  if known_librbd_abort "$rc" "$WORK/fp.err"; then
    crash_report "$WORK/fp.err" "cachemgr $* (failpoint $fp)"
    librbd_abort_seen "cachemgr $* (failpoint $fp)" "$WORK/fp.err"
    echo librbd-abort
  # A failpoint aborts without a crash report: a report is a real crash on the way there.
  elif crash_report "$WORK/fp.err" "cachemgr $* (failpoint $fp)"; then
    echo "crash"
  elif (( rc == 0 )); then echo ok
  elif (( rc == 134 || rc == 137 || rc == 139 )); then echo abort  # SIGABRT / KILL / SEGV
  else echo "exit $rc"
  fi
}

# crashed_how OUTCOME TRY: the title's ending for a crash: none at the failpoint, and for
# the known librbd abort which try of the case it ended. That abort is a crash at a step
# of librbd's choosing, followed by the same checks as any crash; the case is then tried
# once more so that the failpoint is still reached. The abort on the second try as well
# is a failure.
crashed_how() {
  [[ $1 == librbd-abort ]] && echo ", try $2 ended by the known librbd abort"
  true
}

# after_crash WHAT IMAGE_ID VOLUME: the checks every crash is followed by.
after_crash() {
  local what=$1 id=$2 vol=$3 obs="" ok=0
  CFG=$cfg_fill
  if ! cm evict >/dev/null; then
    obs+="gc failed: $(last_err); "
    ok=1
  fi
  if ! cm create "$id" "$vol" >/dev/null; then
    obs+="fresh create failed: $(last_err); "
    ok=1
  elif ! read_back "$vol" "$id"; then
    obs+="new volume does not read back the image; "
    ok=1
  fi
  local left
  left=$(orphans | head -n 5 | tr '\n' ';')
  if [[ -n $left ]]; then
    obs+="orphans: $left"
    ok=1
  fi
  echo "${obs:-gc ok, fresh create ok, read back ok, nothing orphaned}"
  return $ok
}

reached_any=0
n=0
# fp_case FP TRY: the miss path and the eviction pass at FP; returns 3 when the known
# librbd abort ended either (its checks recorded), for the caller to try the case again.
fp_case() {
  local fp=$1 try=$2 outcome obs ok count left id id2 id3
  n=$((n + 1))
  # --- miss path
  id=$(new_uuid)
  make_image "$id" qcow2 16 4
  CFG=$cfg_fill
  outcome=$(run_fp "$fp" --config "$cfg_fill" create "$id" "v$n-a")
  if [[ $outcome == abort || ($outcome == librbd-abort && $try == 1) ]]; then
    [[ $outcome == abort ]] && reached_any=1
    obs=$(after_crash miss "$id" "v$n-b")
    ok=$?  # on a line of its own: a $(...) among record's arguments would reset $?
    record "crash at failpoint $fp (create, miss path)$(crashed_how "$outcome" "$try")" \
      "$backend" "gc + fresh create succeed; nothing orphaned" "aborted; $obs" "$ok"
    [[ $outcome == abort ]] || return 3
    return 0
  elif [[ $outcome != ok ]]; then
    record "crash at failpoint $fp (create, miss path)" "$backend" \
      "abort at the failpoint, or not on this path" "$outcome: $(head -c 300 "$WORK/fp.err")" 1
    return 0
  fi

  # --- eviction pass over max_count 1: the entry of `id` (made above, it has the clone
  # v$n-a: deferred delete through the trash), then one without clones (removed at once),
  # then the newest one, which stays.
  id3=$(new_uuid)
  make_image "$id3" raw 16 4
  id2=$(new_uuid)
  make_image "$id2" raw 16 4
  CFG=$cfg_fill
  sleep 1  # last_used has second resolution: make the LRU order certain
  cm prefill "$id3" >/dev/null || record "eviction setup for $fp" "$backend" \
    "prefill succeeds" "$(last_err)" 1
  sleep 1
  if ! cm create "$id2" "v$n-c" >/dev/null; then
    record "eviction setup for $fp" "$backend" "create succeeds" "$(last_err)" 1
    return 0
  fi
  outcome=$(run_fp "$fp" --config "$cfg_small" evict)
  if [[ $outcome == abort || ($outcome == librbd-abort && $try == 1) ]]; then
    [[ $outcome == abort ]] && reached_any=1
    obs=""
    ok=0
    CFG=$cfg_small
    if ! cm evict >/dev/null; then obs+="clean pass failed: $(last_err); "; ok=1; fi
    if ! read_back "v$n-a" "$id" || ! read_back "v$n-c" "$id2"; then
      obs+="a volume lost its parent; "
      ok=1
    fi
    if ! cm create "$id2" "v$n-d" >/dev/null || ! read_back "v$n-d" "$id2"; then
      obs+="fresh create failed: $(last_err); "
      ok=1
    fi
    cm evict >/dev/null
    count=$(ready_count)
    if (( ${count:-99} > 1 )); then obs+="$count entries over max_count 1; "; ok=1; fi
    left=$(orphans | head -n 5 | tr '\n' ';')
    if [[ -n $left ]]; then obs+="orphans: $left"; ok=1; fi
    record "crash at failpoint $fp (evict pass)$(crashed_how "$outcome" "$try")" "$backend" \
      "clean pass + fresh create succeed; volumes keep their parent; max_count holds; nothing orphaned" \
      "aborted; ${obs:-all held}" $ok
    [[ $outcome == abort ]] || return 3
  elif [[ $outcome == ok ]]; then
    record "failpoint $fp" "$backend" "reached by create (miss) or evict" \
      "not on the miss path or the eviction pass" skip
  else
    record "crash at failpoint $fp (evict pass)" "$backend" \
      "abort at the failpoint, or not on this path" "$outcome: $(head -c 300 "$WORK/fp.err")" 1
  fi
  return 0
}

for fp in "${failpoints[@]}"; do
  fp_case "$fp" 1 || fp_case "$fp" 2
done

(( reached_any )) || record "failpoints" "$backend" "at least one failpoint aborts create or evict" \
  "none of ${#failpoints[@]} did (is CACHEMGR_FAILPOINT read?)" 1

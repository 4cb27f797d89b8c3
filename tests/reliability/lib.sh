# tests/reliability/lib.sh: helpers the reliability scripts share (sourced, not run).
#
# Every script drives the real `cachemgr` tool ($CACHEMGR_BIN, set by CTest) against a
# cache of its own: a local root under the run dir, or a pool of its own on the
# fixture's Ceph cluster (RBD). Images come from a file source (a directory of files
# named by image id) unless a script says otherwise, so a failure points at the engine
# and the backend, not at Glance. Each case adds one row to the results table
# ($CACHEMGR_RESULTS, rendered by render-results.sh into RESULTS.md); a script's rows go
# in together when it exits.
set -uo pipefail

: "${CACHEMGR_BIN:?set by CTest: path of the cachemgr tool}"
: "${CACHEMGR_TEST_RUN_DIR:?set by CTest: the test run dir}"
RESULTS=${CACHEMGR_RESULTS:-$CACHEMGR_TEST_RUN_DIR/../reliability/results.tsv}
REL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC_DIR=$(cd "$REL_DIR/../.." && pwd)
CEPH_CONF=$CACHEMGR_TEST_RUN_DIR/ceph/ceph.conf
FAILS=0
CASES=0
CLEANUPS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# rel_init NAME: a fresh work dir ($WORK) for this script, removed at exit unless a
# case failed (then it is kept for a look).
rel_init() {
  TEST_NAME=$1
  WORK=$CACHEMGR_TEST_RUN_DIR/reliability/$TEST_NAME
  rm -rf "$WORK"
  mkdir -p "$WORK" "$(dirname "$RESULTS")"
  # This script's rows, added to the table in one block at exit: scripts run side by
  # side (ctest -j), and their rows must not interleave.
  ROWS=$CACHEMGR_TEST_RUN_DIR/reliability/$TEST_NAME.rows
  rm -f "$ROWS"
  trap rel_exit EXIT
}

# flush_rows: appends this script's rows to the results table, under a lock.
flush_rows() {
  [[ -s ${ROWS:-} ]] || return 0
  (
    flock -w 60 9 || true
    cat "$ROWS" >>"$RESULTS"
  ) 9>>"$RESULTS.lock"
  rm -f "$ROWS"
}

rel_exit() {
  local rc=$?
  local i
  for (( i = ${#CLEANUPS[@]} - 1; i >= 0; i-- )); do
    eval "${CLEANUPS[i]}" >/dev/null 2>&1 || true
  done
  flush_rows
  if (( FAILS == 0 && rc == 0 )); then
    rm -rf "$WORK"
  else
    log "work dir kept: $WORK"
  fi
  log "$TEST_NAME: $CASES cases, $FAILS failed"
  if (( FAILS > 0 )); then exit 1; fi
  if (( CASES == 0 )); then
    log "$TEST_NAME: no case ran"
    exit 1
  fi
  exit "$rc"
}

on_exit() { CLEANUPS+=("$*"); }
# drop_exit CMD: takes back the clean-up CMD (the text given to on_exit) once done. A kill
# of a pid this script has waited for must not run at exit: pid numbers are reused
# (pid_max is 32768 on Debian), and by then the pid may be another test's process.
drop_exit() {
  local i
  for i in "${!CLEANUPS[@]}"; do
    if [[ ${CLEANUPS[i]} == "$*" ]]; then
      CLEANUPS=("${CLEANUPS[@]:0:i}" "${CLEANUPS[@]:i+1}")
      return 0
    fi
  done
}

# record FAULT BACKEND EXPECTED OBSERVED OK: one row of the results table; OK is 0
# (as expected), "skip" (the case could not apply, e.g. a failpoint of another path),
# or anything else (not as expected).
record() {
  local verdict=pass
  CASES=$((CASES + 1))
  if [[ $5 == skip ]]; then
    verdict=n/a
  elif [[ $5 != 0 ]]; then
    verdict=FAIL
    FAILS=$((FAILS + 1))
  fi
  # One line per cell: tabs and newlines would split the row.
  local cells=() c
  for c in "$1" "$2" "$3" "$4"; do
    c=${c//$CACHEMGR_TEST_RUN_DIR/\$RUN}
    c=${c//$'\t'/ }
    c=${c//$'\n'/ }
    cells+=("${c:0:300}")
  done
  printf '%s\t%s\t%s\t%s\t%s\n' "${cells[@]}" "$verdict" >>"${ROWS:-$RESULTS}"
  log "$verdict: [$2] $1 | expected: $3 | observed: $4"
}

# --- a cache of our own

# new_cache DIR BACKEND [MAX_COUNT]: writes DIR/cachemgr.yaml for a cache whose index,
# root, conversion dir and image dir are under DIR; RBD uses a pool of its own, made
# here and removed at exit. Sets CFG, IDX, ROOT, IMAGES, CONV, POOL, BACKEND.
new_cache() {
  local dir=$1
  BACKEND=$2
  local max_count=${3:-0}
  mkdir -p "$dir"/{images,ref,conv}
  CFG=$dir/cachemgr.yaml
  IDX=$dir/index.db
  ROOT=$dir/root
  IMAGES=$dir/images
  CONV=$dir/conv
  POOL=""
  if [[ $BACKEND == rbd ]]; then
    [[ -f $CEPH_CONF ]] || { log "no Ceph cluster at $CEPH_CONF (run through ctest)"; exit 1; }
    POOL=rel-$(basename "$dir" | tr -c 'A-Za-z0-9\n' '-')-$RANDOM
    make_pool "$POOL"
    on_exit "drop_pool $POOL"
  fi
  write_config "$CFG" "$max_count"
}

# write_config FILE MAX_COUNT [SOURCE_YAML]: the config of the current cache.
write_config() {
  local file=$1 max_count=$2
  local source_yaml=${3:-"  type: file
  file:
    dir: $IMAGES"}
  {
    echo "index: $IDX"
    echo "backend:"
    if [[ $BACKEND == rbd ]]; then
      echo "  type: rbd"
      echo "  rbd:"
      echo "    conf: $CEPH_CONF"
      echo "    client: admin"
      echo "    pool: $POOL"
      echo "    connect_timeout_s: 10"
    else
      echo "  type: local"
      echo "  local:"
      echo "    root: $ROOT"
    fi
    echo "source:"
    echo "$source_yaml"
    echo "cache:"
    echo "  max_count: $max_count"
    echo "conversion:"
    echo "  dir: $CONV"
    echo "log:"
    echo "  level: warn"
  } >"$file"
}

ceph_cmd() { timeout 30 ceph --conf "$CEPH_CONF" --connect-timeout 10 "$@"; }
rbd_cmd() { timeout 60 rbd --conf "$CEPH_CONF" "$@"; }

make_pool() {
  ceph_cmd osd pool create "$1" 8 8 >/dev/null 2>&1 || { log "pool create $1 failed"; exit 1; }
  local i
  for i in $(seq 1 30); do
    rbd_cmd pool init "$1" >/dev/null 2>&1 && return 0
    sleep 1
  done
  log "rbd pool init $1 failed"
  exit 1
}

drop_pool() { ceph_cmd osd pool rm "$1" "$1" --yes-i-really-really-mean-it >/dev/null 2>&1; }

# cm ARGS...: the tool on the current cache; stdout to stdout, stderr to $WORK/last.err.
# crash_report FILE WHAT: when FILE (a tool's stderr) holds a crash report (the stack
# the tool writes on a fatal signal), logs it whole under WHAT; true if it did.
crash_report() {
  grep -q '^cachemgr: fatal signal' "$1" 2>/dev/null || return 1
  log "crash report of: $2"
  sed -n '/^cachemgr: fatal signal/,$p' "$1" | head -n 80 >&2
}

# known_librbd_abort RC FILE: true when a run of the tool that exited RC, its stderr in
# FILE, died of the librbd 16 abort (docs/architecture.md, "Known limit"): SIGABRT (134),
# the crash report naming librados' io_context_pool thread, and the std::system_error
# "Invalid argument" that escaped it. Any other abort or failure is not this one.
known_librbd_abort() {
  (( $1 == 134 )) || return 1
  grep -q '^cachemgr: fatal signal ABRT on thread "io_context_pool"' "$2" 2>/dev/null &&
    grep -q "terminate called after throwing an instance of 'std::system_error'" "$2" &&
    grep -q 'what():  Invalid argument' "$2"
}

# librbd_abort_seen WHAT FILE: notes in $WORK/librbd-aborts that WHAT died of that abort,
# with its stderr (FILE), for loops that count it rather than fail on it: the loop goes
# on, and what the script checks afterwards (every volume read back, the limits, the
# index) shows that the abort lost nothing.
librbd_abort_seen() {
  { echo "== $1"; cat "$2"; } >>"$WORK/librbd-aborts.log"
  echo "$1" >>"$WORK/librbd-aborts"
  log "$1: the known librbd abort (counted, not a failure)"
}
# librbd_aborts: how many runs librbd_abort_seen noted, as text for a result row.
librbd_aborts() {
  local n
  n=$(cat "$WORK/librbd-aborts" 2>/dev/null | wc -l)
  (( n == 0 )) || echo "; $n runs died of the known librbd abort"
}

# run_tool ERRFILE ARGS...: the tool with ARGS, its stderr to ERRFILE, run once more
# when it died of the known librbd abort (noted by librbd_abort_seen, with that run's
# stderr); the same abort twice is a failure like any other.
run_tool() {
  local err=$1 rc=0
  shift
  "$CACHEMGR_BIN" "$@" 2>"$err" || rc=$?
  if known_librbd_abort "$rc" "$err"; then
    librbd_abort_seen "cachemgr $*: running it once more" "$err"
    rc=0
    "$CACHEMGR_BIN" "$@" 2>"$err" || rc=$?
  fi
  return $rc
}

# run_logged LOG ARGS...: the tool with ARGS, its stderr alone in LOG.last and appended to
# LOG (a loop's log of every run); the tool's exit status, with no rerun.
run_logged() {
  local log=$1 rc=0
  shift
  "$CACHEMGR_BIN" "$@" 2>"$log.last" || rc=$?
  cat "$log.last" >>"$log"
  return $rc
}

# The tool on this script's cache; a crash report goes to the log whole.
cm() {
  local rc=0
  run_tool "$WORK/last.err" --config "$CFG" "$@" || rc=$?
  crash_report "$WORK/last.err" "cachemgr $*"
  return $rc
}
last_err() { err_line "$WORK/last.err"; }
# err_line FILE: the error line of the tool's stderr (log lines before it skipped).
err_line() {
  local line
  line=$(grep -vE '^\S+: (warning|info|debug|trace): ' "$1" 2>/dev/null | grep -v '^\s*$' | head -n 1)
  [[ -n $line ]] || line=$(tail -n 1 "$1" 2>/dev/null)
  printf '%s' "${line:0:200}"
}

new_uuid() { cat /proc/sys/kernel/random/uuid; }

# make_image ID FORMAT SIZE_MB DATA_MB: an image of FORMAT in the source dir whose raw
# content (kept in ref/ID.raw for read-back) is DATA_MB of random bytes then zeros.
make_image() {
  local id=$1 fmt=$2 size_mb=$3 data_mb=$4
  local ref=$IMAGES/../ref/$id.raw
  head -c $((data_mb * 1024 * 1024)) /dev/urandom >"$ref"
  truncate -s $((size_mb * 1024 * 1024)) "$ref"
  if [[ $fmt == raw ]]; then
    cp --sparse=always "$ref" "$IMAGES/$id"
  else
    qemu-img convert -q -f raw -O "$fmt" "$ref" "$IMAGES/$id"
  fi
}

# --- what the cache holds

sql() { sqlite3 -readonly -cmd '.timeout 5000' "$IDX" "$@" 2>/dev/null; }

# Trash entries of the cache (deferred deletes), one a line.
trash_entries() {
  if [[ $BACKEND == rbd ]]; then
    rbd_cmd trash ls --all "$POOL" 2>/dev/null
  else
    [[ -d $ROOT/.trash ]] && find "$ROOT/.trash" -mindepth 1 -maxdepth 1 -printf '%P\n'
    # a stable backing link that no other name holds is a deferred delete too
    [[ -d $ROOT/.backing ]] && find "$ROOT/.backing" -mindepth 1 -maxdepth 1 -links 1 \
      -printf '.backing/%P\n'
  fi
}

# Backend objects of the cache (image names), one a line.
backend_images() {
  if [[ $BACKEND == rbd ]]; then
    rbd_cmd ls "$POOL" 2>/dev/null
  else
    # lock files are not objects (flock targets under the root stay by design); the
    # trash is counted apart (trash_entries), and so are the stable backing links
    # (second names of images, or deferred deletes)
    # (the root's marker file says the folder is the cache's: not an object either)
    # (nor are the records hosts sharing the root keep under .state/: tables, not images)
    [[ -d $ROOT ]] && find "$ROOT" -type f -not -path "$ROOT/.locks/*" -not -path "$ROOT/.state/*" \
      -not -path "$ROOT/.trash/*" -not -path "$ROOT/.backing/*" \
      -not -path "$ROOT/.cachemgr-root" -printf '%P\n' 2>/dev/null | sort
  fi
}

# volume_spec NAME: how qemu-img reads a volume.
volume_spec() {
  if [[ $BACKEND == rbd ]]; then
    echo "rbd:$POOL/$1:conf=$CEPH_CONF"
  else
    local f
    # the file itself, not its sidecar under .meta/
    f=$(find "$ROOT" -path "*volumes*" -not -path '*/.meta/*' -type f \( -name "$1" -o -name "$1.*" \) \
      2>/dev/null | head -n 1)
    echo "${f:-$ROOT/volumes/$1}"
  fi
}

# read_back VOLUME IMAGE_ID: 0 when the volume reads back the image's bytes (so its
# parent chain is intact).
read_back() {
  local spec
  spec=$(volume_spec "$1")
  local out share=()
  # A local volume may be rebased (its base moved to the trash) by an eviction while it
  # is read: do not take qemu's image lock, the read is read-only anyway.
  [[ $spec == /* ]] && share=(-U)
  if ! out=$(timeout 120 qemu-img compare "${share[@]}" -f raw "$IMAGES/../ref/$2.raw" "$spec" 2>&1); then
    echo "read back $1: ${out//$'\n'/ }" >>"$WORK/readback.err"
    return 1
  fi
}

# orphans: every leftover that must not exist once a gc pass has run, one a line:
# index rows that are not ready, backend objects that are neither a ready entry (or
# its sidecar) nor a recorded volume, snapshots other than a ready entry's own, trash
# entries beyond the pinned rows, files in the conversion dir.
orphans() {
  local ready_names vol_names
  # (pinned rows are evicted entries kept for their clones: counted against the trash)
  sql "SELECT 'index row ' || image_id || ' state=' || state FROM entries
       WHERE state != 'ready' AND pinned = 0;"
  ready_names=$(sql "SELECT cache_name FROM entries WHERE state = 'ready';")
  vol_names=$(sql "SELECT name FROM volumes;")
  local obj base known n
  while IFS= read -r obj; do
    [[ -n $obj ]] || continue
    base=$(basename "$obj")
    known=0
    for n in $ready_names $vol_names; do
      # a local entry may carry a sidecar (name.meta, name.json ...)
      if [[ $base == "$n" || $base == "$n".* ]]; then known=1; break; fi
    done
    (( known )) || echo "backend object $obj"
  done < <(backend_images)
  if [[ $BACKEND == rbd ]]; then
    local img snaps
    for img in $(rbd_cmd ls "$POOL" 2>/dev/null); do
      snaps=$(rbd_cmd snap ls --all --format json "$POOL/$img" 2>/dev/null |
        jq -r '.[].name' 2>/dev/null)
      local s want
      want=$(sql "SELECT snap_name FROM entries WHERE state='ready' AND cache_name='$img';")
      for s in $snaps; do
        [[ -n $want && $s == "$want" ]] || echo "snapshot $img@$s"
      done
    done
  fi
  local pinned
  pinned=$(sql "SELECT count(*) FROM entries WHERE pinned = 1;")
  if (( $(trash_entries | wc -l) > ${pinned:-0} )); then
    trash_entries | sed "s/^/trash (beyond ${pinned:-0} pinned rows) /"
  fi
  find "$CONV" -mindepth 1 2>/dev/null | sed 's/^/conversion file /'
}

# ready_count: live ready entries.
ready_count() { sql "SELECT count(*) FROM entries WHERE state='ready' AND pinned=0;"; }

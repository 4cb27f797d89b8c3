#!/usr/bin/env bash
# multihost-soak.sh [SECONDS]: three hosts share one RBD pool (a namespace of its own in
# the fixture's pool "volumes") and act as one cache: each is a set of `cachemgr`
# processes with its own host_id, index and conversion dir, and the same pool, with
# max_count 2 and four images in the fixture's Glance. For SECONDS (default 60) every
# host runs WORKERS (default 3) loops that create volumes of random images, read each
# back and delete older ones, and an eviction pass every 2-4 s (exit 5, another host's
# pass holds the pool's lock, is counted, not a failure).
#
# It proves: no create (delete, pass) fails; every volume made reads back its image;
# after the volumes are gone and a final pass, the pool holds at most 2 entries, nothing
# in the trash, and every host's `list` names exactly the pool's entries; Glance served
# each image once per residency: its GETs of /v2/images/ID/file (glance-api's access
# log) equal the fills of the image by all hosts (miss events of the three indexes), no
# two downloads of one image overlap, and an eviction of the image lies between any two
# of its fills.
source "$(dirname "$0")/lib.sh"
seconds=${1:-${SOAK_SECONDS:-60}}
workers=${MH_WORKERS:-3}
hosts=3
max_count=2
rel_init multihost-soak
BACKEND=rbd

GLANCE_DIR=$CACHEMGR_TEST_RUN_DIR/glance
[[ -f $CEPH_CONF ]] || { log "no Ceph cluster at $CEPH_CONF (run through ctest)"; exit 1; }
[[ -s $GLANCE_DIR/endpoint ]] || { log "no Glance in $GLANCE_DIR (run through ctest)"; exit 1; }
endpoint=$(cat "$GLANCE_DIR/endpoint")
glance_log=$GLANCE_DIR/log/glance-api.log
[[ -f $glance_log ]] || { log "no Glance access log at $glance_log"; exit 1; }

# One pool for the three hosts: a namespace of our own in "volumes", emptied and removed
# at exit with the RADOS namespace of the cache's locks and tables beside it.
POOL=volumes
NS=mhsoak-$$-$RANDOM
SPEC=$POOL/$NS
rbd_cmd namespace create "$SPEC" || { log "rbd namespace create $SPEC failed"; exit 1; }
on_exit "drop_namespace"
drop_namespace() {
  /usr/bin/python3 "$SRC_DIR/bench/purge.py" --conf "$CEPH_CONF" --pool "$POOL" --namespace "$NS"
  rbd_cmd namespace remove "$SPEC"
  local obj
  timeout 30 rados --conf "$CEPH_CONF" -p "$POOL" -N "$NS.cachemgr-locks" ls 2>/dev/null |
    while read -r obj; do
      timeout 30 rados --conf "$CEPH_CONF" -p "$POOL" -N "$NS.cachemgr-locks" rm "$obj"
    done
}

# --- four small distinct images in Glance (two raw, two qcow2), random data
mkdir -p "$WORK"/{img,logs}
ids=()
md5s=()
upload() {  # upload NAME FORMAT FILE: prints the new image's id
  local id
  id=$(curl -fsS -X POST -H 'Content-Type: application/json' \
    -d "{\"name\": \"$1\", \"disk_format\": \"$2\", \"container_format\": \"bare\"}" \
    "$endpoint/v2/images" | jq -r .id) || return 1
  [[ -n $id && $id != null ]] || return 1
  curl -fsS -X PUT -H 'Content-Type: application/octet-stream' -T "$3" \
    "$endpoint/v2/images/$id/file" >/dev/null || return 1
  echo "$id"
}
sizes=(4 6 8 12)
fmts=(raw qcow2 raw qcow2)
for k in 0 1 2 3; do
  ref=$WORK/img/$k.raw
  head -c $((sizes[k] << 20)) /dev/urandom >"$ref"
  md5s+=("$(md5sum <"$ref" | cut -d' ' -f1)")
  file=$ref
  if [[ ${fmts[k]} == qcow2 ]]; then
    file=$WORK/img/$k.qcow2
    qemu-img convert -q -f raw -O qcow2 "$ref" "$file"
  fi
  id=$(upload "$NS-$k" "${fmts[k]}" "$file") || { log "upload of image $k to $endpoint failed"; exit 1; }
  on_exit "curl -fsS -X DELETE $endpoint/v2/images/$id"
  ids+=("$id")
done
log "images: ${ids[*]} (${sizes[*]} MiB; ${fmts[*]}); pool $SPEC"

# --- three hosts: own host_id, index and conversion dir; the same pool
for h in $(seq 1 $hosts); do
  mkdir -p "$WORK/h$h/conv"
  cat >"$WORK/h$h/cachemgr.yaml" <<EOF
host_id: mhsoak-h$h
index: $WORK/h$h/index.db
backend:
  type: rbd
  rbd:
    conf: $CEPH_CONF
    client: admin
    pool: $POOL
    namespace: $NS
    connect_timeout_s: 10
source:
  type: glance
  glance:
    endpoint: $endpoint
    timeout_s: 30
cache:
  max_count: $max_count
conversion:
  dir: $WORK/h$h/conv
log:
  level: info
  file: $WORK/h$h/cachemgr.log
EOF
done
cfg() { echo "$WORK/h$1/cachemgr.yaml"; }
L=$WORK/logs

# read_back VOLUME K: 0 when the volume's bytes are image K's raw bytes.
vol_md5() { rbd_cmd export --no-progress "$SPEC/$1" - 2>/dev/null | md5sum | cut -d' ' -f1; }

start=$(date +%s)
end=$((start + seconds))

# worker H W: creates volumes of random images until the end, reads each back, and keeps
# at most 2 of its volumes (older ones deleted with `cachemgr delete`), so clones of
# entries live across passes. Its volumes left at the end go to alive-H-W.
worker() {
  local h=$1 w=$2 i=0 k vol rc out got err=$L/err-$h-$w alive=()
  while (( $(date +%s) < end )); do
    i=$((i + 1))
    k=$((RANDOM % 4))
    vol=mh-h$h-w$w-$i
    out=$("$CACHEMGR_BIN" --config "$(cfg "$h")" create "${ids[k]}" "$vol" 2>"$err")
    rc=$?
    if known_librbd_abort "$rc" "$err"; then
      librbd_abort_seen "host $h: create $vol" "$err"
      continue
    fi
    if (( rc != 0 )); then
      echo "host $h: create $vol of image $k: exit $rc: $(err_line "$err")" >>"$L/fail"
      cat "$err" >>"$L/create-failures.err"
      continue
    fi
    # plan is the word after ': ' in "volume V from image I: PLAN, ..."
    echo "$h $vol $k $(sed -E 's/^[^:]*: ([a-z_]+).*/\1/' <<<"$out")" >>"$L/made-$h-$w"
    got=$(vol_md5 "$vol")
    if [[ $got != "${md5s[k]}" ]]; then
      echo "host $h: read back $vol of image $k: md5 $got, image ${md5s[k]}" >>"$L/fail"
      echo x >>"$L/readback-fail"
    fi
    echo x >>"$L/readback"
    alive+=("$vol")
    while (( ${#alive[@]} > 2 )); do
      "$CACHEMGR_BIN" --config "$(cfg "$h")" delete "${alive[0]}" >/dev/null 2>"$err"
      rc=$?
      if known_librbd_abort "$rc" "$err"; then
        librbd_abort_seen "host $h: delete ${alive[0]}" "$err"
        break  # the volume stays in alive: deleted after the next create
      elif (( rc != 0 )); then
        echo "host $h: delete ${alive[0]}: $(err_line "$err")" >>"$L/fail"
      else
        echo x >>"$L/deleted"
      fi
      alive=("${alive[@]:1}")
    done
  done
  printf '%s\n' "${alive[@]}" >"$L/alive-$h-$w"
}

# evictor H: a pass every 2-4 s; exit 5 (another host's pass holds the lock) is counted.
evictor() {
  local h=$1 rc err=$L/evict-$h.err
  sleep "$((RANDOM % 2)).$((RANDOM % 10))"
  while (( $(date +%s) < end )); do
    "$CACHEMGR_BIN" --config "$(cfg "$h")" evict >/dev/null 2>"$err"
    rc=$?
    known_librbd_abort "$rc" "$err" && { librbd_abort_seen "host $h: evict" "$err"; rc=0; }
    case $rc in
      0) echo x >>"$L/passes" ;;
      5) echo x >>"$L/busy" ;;
      *) echo "host $h: evict: exit $rc: $(err_line "$err")" >>"$L/fail" ;;
    esac
    sleep "$((2 + RANDOM % 2)).$((RANDOM % 10))"
  done
}

pids=()
for h in $(seq 1 $hosts); do
  for w in $(seq 1 "$workers"); do worker "$h" "$w" & pids+=($!); done
  evictor "$h" & pids+=($!)
done
on_exit "kill ${pids[*]}"
for p in "${pids[@]}"; do wait "$p"; done
drop_exit "kill ${pids[*]}"
log "loops done after $(( $(date +%s) - start ))s"

count() { cat "$@" 2>/dev/null | wc -l; }
made=$(count "$L"/made-*)
misses=$(cat "$L"/made-* 2>/dev/null | awk '$4 == "miss"' | wc -l)
fails=$(count "$L/fail")
passes=$(count "$L/passes")
busy=$(count "$L/busy")
reads=$(count "$L/readback")
bad_reads=$(count "$L/readback-fail")
deleted=$(count "$L/deleted")
detail="$hosts hosts x $workers workers, ${seconds}s: $made creates ($misses misses), $reads read back ($bad_reads wrong), $deleted deleted, $passes passes + $busy busy (exit 5)$(librbd_aborts)"
log "$detail"
case_name="multi-host soak: $hosts hosts x $workers workers create/delete, evict every 2-4 s, max_count $max_count, 4 Glance images"
if (( fails == 0 && made > 0 && bad_reads == 0 )); then
  record "$case_name" rbd "no create, delete or pass fails; every volume reads back its image" \
    "$detail; 0 failures" 0
else
  record "$case_name" rbd "no create, delete or pass fails; every volume reads back its image" \
    "$detail; $fails failures: $(head -n 3 "$L/fail" 2>/dev/null | tr '\n' ';')" 1
fi

# evict_until_done H: a pass on host H, retried while another pass holds the lock (and
# once after the known librbd abort, which run_tool notes in the log).
evict_until_done() {
  local rc i
  for i in $(seq 1 30); do
    run_tool "$L/final-evict.err" --config "$(cfg "$1")" evict >/dev/null
    rc=$?
    (( rc == 5 )) || break
    sleep 1
  done
  (( rc == 0 )) || log "final evict on host $1: exit $rc: $(err_line "$L/final-evict.err")"
  return "$rc"
}
entry_images() { rbd_cmd ls "$SPEC" 2>/dev/null | grep -E '^[0-9a-f]{40}$' | sort; }

# --- a pass right after the loops, their last volumes still there: entries with clones
# beyond the limit go to the trash, at most max_count stay.
efail=0 pass_note=""
evict_until_done 1 || { efail=1; pass_note="; the pass failed"; }
n_live=$(entry_images | grep -c .)
n_trash=$(rbd_cmd trash ls --all "$SPEC" 2>/dev/null | grep -c .)
n_vols=$(rbd_cmd ls "$SPEC" 2>/dev/null | grep -cvE '^[0-9a-f]{40}$')
record "multi-host soak: limits after a final pass, volumes still there" rbd \
  "<= $max_count entry images in the pool (the trash holds the evicted ones with clones)" \
  "$n_live entry images, $n_trash in the trash, $n_vols volumes$pass_note" \
  "$(( n_live > max_count || efail ))"

# final_delete H VOLUME ERRFILE: deletes VOLUME on host H, once more after the known
# librbd abort. The aborted run may have finished the delete before it died: the rerun's
# "not made by this cache" (exit 3) is then its answer, and the count of volumes left
# below is what shows the volume gone.
final_delete() {
  local rc=0
  "$CACHEMGR_BIN" --config "$(cfg "$1")" delete "$2" >/dev/null 2>"$3" || rc=$?
  known_librbd_abort "$rc" "$3" || return "$rc"
  librbd_abort_seen "host $1: final delete $2" "$3"
  rc=0
  "$CACHEMGR_BIN" --config "$(cfg "$1")" delete "$2" >/dev/null 2>"$3" || rc=$?
  (( rc == 0 || rc == 3 ))
}

# --- the end: every volume deleted (by the host that made it), then a final pass
# (each host deletes its own, every worker's at once)
for h in $(seq 1 $hosts); do
  for w in $(seq 1 "$workers"); do
    for vol in $(cat "$L/alive-$h-$w" 2>/dev/null); do
      final_delete "$h" "$vol" "$L/final-delete-$h-$w.err" ||
        echo "final delete $vol on host $h: $(err_line "$L/final-delete-$h-$w.err")" >>"$L/final-fail"
    done &
  done
done
wait
dfail=$(count "$L/final-fail")
(( dfail == 0 )) || log "$(cat "$L/final-fail")"
left_vols=$(rbd_cmd ls "$SPEC" 2>/dev/null | grep -cvE '^[0-9a-f]{40}$')
# The final pass, then one on every host so that each index is reconciled with the pool.
efail=0
for h in 1 $(seq 1 $hosts); do evict_until_done "$h" || efail=$((efail + 1)); done

entries=$(entry_images)
n_entries=$(grep -c . <<<"$entries")
trash=$(rbd_cmd trash ls --all "$SPEC" 2>/dev/null)
n_trash=$(grep -c . <<<"$trash")
ok=0
(( n_entries <= max_count && n_trash == 0 && left_vols == 0 && dfail == 0 && efail == 0 )) || ok=1
record "multi-host soak: limits after the volumes are deleted and a final pass" rbd \
  "<= $max_count entry images in the pool, none in the trash, no volume left" \
  "$n_entries entry images, $n_trash in the trash, $left_vols other images; $dfail deletes and $efail final passes failed" $ok

# --- every host's list agrees with the pool
disagree=()
for h in $(seq 1 $hosts); do
  json=$("$CACHEMGR_BIN" --config "$(cfg "$h")" --json list 2>"$L/list.err")
  listed=$(jq -r '.[] | select(.state == "ready" and (.pinned | not)) | .cache_name' <<<"$json" | sort)
  others=$(jq -r '.[] | select(.state != "ready" or .pinned) |
    "\(.cache_name):\(.state):pinned=\(.pinned)"' <<<"$json")
  if [[ $listed != "$entries" || -n $others ]]; then
    disagree+=("host $h lists [$(echo $listed)]${others:+ and [$(echo $others)]}")
  fi
done
record "multi-host soak: every host's list agrees with the pool" rbd \
  "each host lists exactly the pool's entry images, all ready, none pinned" \
  "pool [$(echo $entries | sed -E 's/([0-9a-f]{8})[0-9a-f]{32}/\1../g')]${disagree[*]:+; ${disagree[*]}}" \
  "$(( ${#disagree[@]} > 0 ))"

# --- Glance: each image served once per residency
# Fills: the miss events of the three indexes; residency ends: evict, stale, gone events.
events() {  # events KIND_SQL_LIST: "ts image_id" of those kinds across every host
  local h
  for h in $(seq 1 $hosts); do
    sqlite3 -readonly -cmd '.timeout 5000' "$WORK/h$h/index.db" \
      "SELECT ts, image_id FROM events WHERE kind IN ($1);" 2>/dev/null | tr '|' ' '
  done
}
fills_all=$(events "'miss'")
# A residency ends by an eviction, a stale or gone entry, or an eviction a dead process
# left half done that a pass finished ('gc': a run that died of the known librbd abort
# inside its create's eviction leaves one).
ends_all=$(events "'evict','stale','gone','gc'")
# GETs of the image's data, from the access log lines eventlet writes at the end of each
# request: "<date> <time> ... "GET /v2/images/ID/file HTTP/1.1" STATUS BYTES SECONDS".
gets_all=$(grep -F '/file HTTP/' "$glance_log" | grep -F '"GET /v2/images/' |
  sed -nE 's#^([0-9-]+ [0-9:.]+) .*"GET /v2/images/([0-9a-f-]+)/file HTTP/[0-9.]+" ([0-9]+) [0-9]+ ([0-9.]+)$#\1 \2 \3 \4#p')
glance_ok=0
glance_detail=()
for k in 0 1 2 3; do
  id=${ids[k]}
  fills=$(grep -c " $id\$" <<<"$fills_all")
  gets=$(grep -c " $id " <<<"$gets_all")
  why=""
  (( gets == fills )) || why+=" GETs != fills;"
  (( fills > 0 )) || why+=" never filled;"
  # No two downloads of one image at once: [end - seconds, end] intervals, in order.
  overlap=$(grep " $id " <<<"$gets_all" | while read -r d t _ _ secs; do
      e=$(date -d "$d $t" +%s.%N)
      awk -v e="$e" -v s="$secs" 'BEGIN { printf "%.3f %.3f\n", e - s, e }'
    done | sort -n | awk 'NR > 1 && $1 < prev { n++ } { prev = $2 } END { print n + 0 }')
  (( overlap == 0 )) || why+=" $overlap overlapping downloads;"
  # A residency ended before each refill: before the (i+1)-th fill of the image, at least
  # i evictions of it (unix seconds: an end in the same second as the fill counts).
  unended=$( { grep " $id\$" <<<"$fills_all" | sed 's/ .*/ fill/'
               grep " $id\$" <<<"$ends_all" | sed 's/ .*/ end/'; } |
    sort -k1,1n -k2,2 | awk '
      $2 == "end" { ends++ }
      $2 == "fill" { fill_ts[++n] = $1 }
      { ts[NR] = $1; kind[NR] = $2 }
      END {
        bad = 0
        for (i = 2; i <= n; i++) {
          e = 0
          for (j = 1; j <= NR; j++) if (kind[j] == "end" && ts[j] <= fill_ts[i]) e++
          if (e < i - 1) bad++
        }
        print bad
      }')
  (( unended == 0 )) || why+=" $unended refills with no eviction before them;"
  [[ -z $why ]] || glance_ok=1
  glance_detail+=("image $k: $gets GETs / $fills fills${why:+ (${why% ;})}")
  log "image $k ($id): $gets GETs, $fills fills, $(grep -c " $id\$" <<<"$ends_all") evictions${why:+:$why}"
done
record "multi-host soak: Glance served each image once per residency" rbd \
  "GETs of /v2/images/ID/file = fills by all hosts; no two at once; an eviction between fills" \
  "$(IFS=';'; echo "${glance_detail[*]}")" $glance_ok

ic_bad=""
for h in $(seq 1 $hosts); do
  ic=$(sqlite3 -readonly "$WORK/h$h/index.db" "PRAGMA integrity_check;" 2>/dev/null)
  [[ $ic == ok ]] || ic_bad+=" host $h: ${ic:-no answer}"
done
record "multi-host soak: index integrity of every host" rbd "PRAGMA integrity_check = ok" \
  "${ic_bad:-ok on all $hosts}" "$([[ -z $ic_bad ]]; echo $?)"
log "took $(( $(date +%s) - start ))s after the images were uploaded"

#!/usr/bin/env bash
# random-kill.sh BACKEND [KILLS]: kill -9 at random moments, not only at failpoints.
#
# KILLS times (20 by default), one of: a miss of a raw image, of a plain qcow2, of a
# compressed qcow2 (file source; download, conversion, import, snapshot, rename), or a
# hit (clone of a ready entry), is killed with SIGKILL after a random delay. Each kill
# is followed by one `evict` pass, then nothing may be left anywhere: no index row in
# creating/evicting, no backend object that is neither a ready entry nor a recorded
# volume (local `.tmp-*` files included), no extra snapshot or trash entry, no file in
# the conversion dir, no RBD lock object of an image that is not cached, no process
# (qemu-img) still working on the cache; and a create of the same image must work and
# read back the image. One row per kind of operation goes to the results table.
source "$(dirname "$0")/lib.sh"
backend=${1:?usage: random-kill.sh local|rbd [KILLS]}
kills=${2:-20}
rel_init "random-kill-$backend"
# max_count keeps the cache (and so each pass and each orphan check) small; 16 MiB images
# (8 MiB of data) keep each kill short, the delays span the operations at that size.
new_cache "$WORK/c" "$backend" 3
seed=${RANDOM_KILL_SEED:-$RANDOM}
RANDOM=$seed
log "seed $seed (RANDOM_KILL_SEED=$seed repeats this run)"

# make_compressed ID SIZE_MB DATA_MB: a compressed qcow2 (qemu-img convert -c).
make_compressed() {
  local id=$1 size_mb=$2 data_mb=$3 ref=$IMAGES/../ref/$1.raw
  head -c $((data_mb * 1024 * 1024)) /dev/urandom >"$ref"
  truncate -s $((size_mb * 1024 * 1024)) "$ref"
  qemu-img convert -q -c -f raw -O qcow2 "$ref" "$IMAGES/$id"
}

# Processes still working on this cache (their argv names a path under $WORK).
cache_processes() { pgrep -a -f -- "$WORK/c/" 2>/dev/null | grep -v "$CACHEMGR_BIN" || true; }

# RBD lock objects whose key is not the name of a ready entry.
stray_locks() {
  [[ $BACKEND == rbd ]] || return 0
  local ready obj key
  ready=" $(sql "SELECT cache_name FROM entries WHERE state='ready';" | tr '\n' ' ') "
  while IFS= read -r obj; do
    [[ $obj == cachemgr.lock.* ]] || continue
    key=${obj#cachemgr.lock.}
    [[ $ready == *" $key "* ]] || echo "lock object $obj"
  done < <(timeout 60 rados --conf "$CEPH_CONF" -p "$POOL" --all ls 2>/dev/null |
    awk '{print $NF}')
}

# A ready entry to hit: made once, remade when an eviction took it.
hit_id=$(new_uuid)
make_image "$hit_id" raw 16 8
cm prefill "$hit_id" >/dev/null || { record "random kills: setup" "$backend" \
  "prefill of the hit image works" "$(last_err)" 1; exit 1; }

declare -A total mid fails detail
kinds=(raw qcow2 compressed hit)
for k in "${kinds[@]}"; do total[$k]=0; mid[$k]=0; fails[$k]=0; detail[$k]=""; done

for (( i = 1; i <= kills; i++ )); do
  kind=${kinds[RANDOM % 4]}
  case $kind in
    raw) id=$(new_uuid); make_image "$id" raw 16 8; max_ms=500 ;;
    qcow2) id=$(new_uuid); make_image "$id" qcow2 16 8; max_ms=650 ;;
    compressed) id=$(new_uuid); make_compressed "$id" 16 8; max_ms=1200 ;;
    hit) id=$hit_id; max_ms=300
      cm prefill "$hit_id" >/dev/null ;;  # cached again if the limit evicted it
  esac
  delay_ms=$((RANDOM % max_ms))
  vol="rk$i"
  "$CACHEMGR_BIN" --config "$CFG" create "$id" "$vol" >/dev/null 2>"$WORK/kill.err" &
  pid=$!
  sleep "$(printf '0.%03d' "$delay_ms")"
  if kill -9 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null
    rc=$?
  else
    wait "$pid"
    rc=$?
  fi
  (( rc == 137 )) && mid[$kind]=$((mid[$kind] + 1))
  total[$kind]=$((total[$kind] + 1))
  obs=""
  # The create that was to be killed must not have crashed on its own first.
  if crash_report "$WORK/kill.err" "the create before the kill"; then
    obs+="the create crashed before the kill (exit $rc): $(err_line "$WORK/kill.err"); "
  fi
  sleep 0.2  # the kernel delivers the children's death signal
  procs=$(cache_processes)
  [[ -z $procs ]] || obs+="processes outlived the tool: ${procs//$'\n'/; }; "
  if ! cm evict >/dev/null; then obs+="pass failed: $(last_err); "; fi
  left=$( { orphans; stray_locks; } | head -n 6 | tr '\n' ';')
  [[ -z $left ]] || obs+="after one pass: $left "
  if [[ -n $left && $BACKEND == rbd ]]; then
    # What keeps a left image: its watchers and lock owners (for the log).
    for obj in $(grep -o 'backend object [^;]*' <<<"$left" | awk '{print $3}'); do
      obs+="[$obj: $(rbd_cmd status "$POOL/$obj" 2>&1 | tr -s '\n\t' '  ')"
      obs+=" $(rbd_cmd lock ls "$POOL/$obj" 2>&1 | tr -s '\n\t' '  ')] "
    done
  fi
  # A create of the same image works: nothing the kill left is in the way. (Its volume
  # is deleted again, so that the next pass may evict the entry.)
  if ! cm create "$id" "$vol-after" >/dev/null; then
    obs+="create after the pass failed: $(last_err); "
  elif (( i == kills )) && ! read_back "$vol-after" "$id"; then
    obs+="the new volume does not read back the image; "
  fi
  (( i == kills )) || cm delete "$vol-after" >/dev/null 2>&1
  if [[ -n $obs ]]; then
    fails[$kind]=$((fails[$kind] + 1))
    detail[$kind]+="kill $i after ${delay_ms} ms (exit $rc): $obs | "
    log "kill $i ($kind, ${delay_ms} ms): $obs"
    # Clean up what this kill left, so that the next kill is judged on its own.
    cm evict >/dev/null
    find "$CONV" -mindepth 1 -delete 2>/dev/null
    [[ $BACKEND == local ]] && find "$ROOT" -name '.tmp-*' -type f -delete 2>/dev/null
  fi
done

for k in "${kinds[@]}"; do
  (( total[$k] > 0 )) || continue
  what="miss of a $k image"
  [[ $k == compressed ]] && what="miss of a compressed qcow2 image"
  [[ $k == hit ]] && what="hit (clone of a ready entry)"
  ok=0
  (( fails[$k] == 0 )) || ok=1
  record "kill -9 at a random moment: $what (seed $seed)" "$backend" \
    "after one evict pass: nothing orphaned (backend, trash, conversion dir, locks, index, processes); create works" \
    "${total[$k]} kills (${mid[$k]} mid-operation); ${fails[$k]} left something: ${detail[$k]:-none}" $ok
done

#!/usr/bin/env bash
# multihost.sh BACKEND: several hosts (separate processes, each with its own host_id,
# index, lock dir and conversion dir) share one pool (RBD) or one root (local, as a
# `_base` root on an NFS export would be) and behave as one cache:
#   1. A evicts an entry, then B (whose index still says ready) creates from it: made, as a
#      refill; A fills it again, and B's next create is a clone of A's entry (adopted).
#   2. max_count holds for the pool: three hosts with max_count 2 fill four images; after
#      one pass the pool holds at most 2 unpinned entries and every volume reads back.
#   3. The LRU order is the pool's: an entry another host used last is kept, the one
#      nobody used goes.
#   4. One pass at a time per pool: while A's pass holds the pool's lock, B's exits 5;
#      A killed with SIGKILL, B's pass runs once the lock is free (RBD: its lease ran out).
#   5. A host killed with SIGKILL mid-fill: another host makes the image ready within the
#      lease plus one fill, and its pass leaves nothing of the dead fill in the pool.
source "$(dirname "$0")/lib.sh"
backend=${1:?usage: multihost.sh local|rbd}
rel_init "multihost-$backend"
new_cache "$WORK/shared" "$backend" 2
SHARED_IMAGES=$IMAGES
SHARED_ROOT=$ROOT

# host_config NAME MAX_COUNT [SHARE_S]: a config for host NAME on the shared pool/root
# (cache.share_use_interval_s SHARE_S, default 0: every hit tells the pool, as the LRU
# case orders uses seconds apart); sets CFG_<NAME> and IDX_<NAME>.
host_config() {
  local name=$1 max=$2 share=${3:-0} dir=$WORK/host-$1
  mkdir -p "$dir/conv"
  IDX=$dir/index.db
  CONV=$dir/conv
  ROOT=$SHARED_ROOT
  IMAGES=$SHARED_IMAGES
  write_config "$dir/cachemgr.yaml" "$max"
  echo "host_id: $name" >>"$dir/cachemgr.yaml"
  sed -i "s/^cache:$/cache:\n  share_use_interval_s: $share/" "$dir/cachemgr.yaml"
  printf -v "CFG_$name" '%s' "$dir/cachemgr.yaml"
  printf -v "IDX_$name" '%s' "$IDX"
}
# on HOST ARGS...: the tool as HOST; stderr to $WORK/last.err.
on() {
  local cfg="CFG_$1"
  shift
  run_tool "$WORK/last.err" --config "${!cfg}" "$@"
}
# entry_objects: the pool's (root's) cache entries in place (not the trash), one a line.
entry_objects() {
  if [[ $BACKEND == rbd ]]; then
    rbd_cmd ls "$POOL" 2>/dev/null | grep -E '^[0-9a-f]{40}$'
  else
    find "$SHARED_ROOT/_base" -maxdepth 1 -type f -regextype egrep -regex '.*/[0-9a-f]{40}(\..*)?' \
      -printf '%f\n' 2>/dev/null | cut -c1-40 | sort -u
  fi
}
staging_objects() {
  if [[ $BACKEND == rbd ]]; then
    rbd_cmd ls "$POOL" 2>/dev/null | grep -E '^staging-'
  else
    find "$SHARED_ROOT/_base" -maxdepth 1 -name 'staging-*' -not -name '*.json' -printf '%f\n' 2>/dev/null
  fi
}
entry_of() { printf '%s' "$1" | sha1sum | cut -c1-40; }
# shared_use ENTRY: the pool's record of the entry's last use ("<seconds> <host>").
shared_use() {
  if [[ $BACKEND == rbd ]]; then
    timeout 30 rados --conf "$CEPH_CONF" -p "$POOL" -N cachemgr-locks getomapval \
      cachemgr.table.uses "$1" /dev/stdout 2>/dev/null
  else
    cat "$SHARED_ROOT/.state/uses/$1" 2>/dev/null
  fi
}
IMAGES=$SHARED_IMAGES

for h in a b c; do host_config "$h" 2; done
img=(); for i in 1 2 3 4 5 6; do img+=("$(new_uuid)"); make_image "${img[-1]}" qcow2 16 4; done

# ---- 1. A evicts, B creates; A fills again, B adopts
on b create "${img[0]}" v1-b1 >/dev/null || record "setup: b creates" "$backend" "exit 0" "$(last_err)" 1
on a create "${img[0]}" v1-a1 >/dev/null || record "setup: a creates" "$backend" "exit 0" "$(last_err)" 1
on a create "${img[1]}" v1-a2 >/dev/null || record "setup: a creates" "$backend" "exit 0" "$(last_err)" 1
on a create "${img[2]}" v1-a3 >/dev/null || record "setup: a creates" "$backend" "exit 0" "$(last_err)" 1
# max_count 2 on the pool: image 0 (least recently used) went when image 2 was filled.
json=$(on b --json create "${img[0]}" v1-b2)
rc=$?
plan=$(jq -r '.plan // empty' <<<"$json" 2>/dev/null)
if (( rc == 0 )) && read_back v1-b2 "${img[0]}"; then
  record "A evicted the entry B's index still says ready; B creates" "$backend" \
    "exit 0, volume reads back (refill or adopt)" "exit 0, plan $plan, reads back" 0
else
  record "A evicted the entry B's index still says ready; B creates" "$backend" \
    "exit 0, volume reads back (refill or adopt)" "exit $rc, plan $plan; $(last_err)" 1
fi
# A evicts image 0 again and fills it again: a new object under the entry's name.
on a create "${img[1]}" v1-a4 >/dev/null
on a create "${img[3]}" v1-a5 >/dev/null
on a evict >/dev/null
on a create "${img[0]}" v1-a6 >/dev/null || record "setup: a refills" "$backend" "exit 0" "$(last_err)" 1
json=$(on b --json create "${img[0]}" v1-b3)
rc=$?
plan=$(jq -r '.plan // empty' <<<"$json" 2>/dev/null)
if (( rc == 0 )) && [[ $plan == clone ]] && read_back v1-b3 "${img[0]}"; then
  record "A evicted and filled the entry again; B (old row) creates" "$backend" \
    "exit 0, plan clone (A's entry adopted), reads back" "exit 0, plan $plan, reads back" 0
else
  record "A evicted and filled the entry again; B (old row) creates" "$backend" \
    "exit 0, plan clone (A's entry adopted), reads back" "exit $rc, plan $plan; $(last_err)" 1
fi

# ---- 2. max_count holds for the pool
for h in a b c; do on "$h" evict >/dev/null; done
on a create "${img[2]}" v2-a >/dev/null
on b create "${img[3]}" v2-b >/dev/null
on c create "${img[4]}" v2-c >/dev/null
on c create "${img[5]}" v2-c2 >/dev/null
on b evict >/dev/null
rc=$?
n=$(entry_objects | wc -l)
bad=""
read_back v2-a "${img[2]}" || bad+=" v2-a"
read_back v2-b "${img[3]}" || bad+=" v2-b"
read_back v2-c "${img[4]}" || bad+=" v2-c"
read_back v1-b1 "${img[0]}" || bad+=" v1-b1"
if (( rc == 0 && n <= 2 )) && [[ -z $bad ]]; then
  record "3 hosts, max_count 2 each, 4 images filled, one pass" "$backend" \
    "pool holds <= 2 entries; every volume reads back" "$n entries; all read back" 0
else
  record "3 hosts, max_count 2 each, 4 images filled, one pass" "$backend" \
    "pool holds <= 2 entries; every volume reads back" "pass exit $rc; $n entries; bad:$bad" 1
fi
# Every host's list agrees with the pool once it has run a pass.
for h in a c; do on "$h" evict >/dev/null; done
pool_set=$(entry_objects | sort | tr '\n' ' ')
agree=1
for h in a b c; do
  idx="IDX_$h"
  set_h=$(sqlite3 -readonly "${!idx}" "SELECT cache_name FROM entries WHERE state='ready' AND pinned=0 ORDER BY cache_name;" | tr '\n' ' ')
  [[ $set_h == "$pool_set" ]] || { agree=0; echo "host $h: $set_h; pool: $pool_set" >>"$WORK/agree.err"; }
done
if (( agree )); then
  record "every host's list after its pass" "$backend" "the pool's entries, on every host" \
    "all three agree ($(wc -w <<<"$pool_set") entries)" 0
else
  record "every host's list after its pass" "$backend" "the pool's entries, on every host" \
    "$(head -c 280 "$WORK/agree.err")" 1
fi

# ---- 3. the pool's LRU order
# Start from the two entries the pool holds now; B uses one of them (a hit), later than
# A's last use of either; A then fills a third image: the one B did not use goes.
mapfile -t held < <(entry_objects)
used="" unused=""
for i in "${img[@]}"; do
  e=$(entry_of "$i")
  [[ $e == "${held[0]:-}" ]] && unused=$i
  [[ $e == "${held[1]:-}" ]] && used=$i
done
fresh=""
for i in "${img[@]}"; do
  e=$(entry_of "$i")
  [[ $e != "${held[0]:-}" && $e != "${held[1]:-}" ]] && { fresh=$i; break; }
done
on a create "$unused" v3-a1 >/dev/null
on a create "$used" v3-a2 >/dev/null
sleep 2
on b create "$used" v3-b1 >/dev/null
sleep 1
on a create "$fresh" v3-a3 >/dev/null
rc=$?
now=$(entry_objects | tr '\n' ' ')
if (( rc == 0 )) && [[ $now == *"$(entry_of "$used")"* && $now != *"$(entry_of "$unused")"* ]]; then
  record "LRU across hosts: B used one entry last, A fills a third" "$backend" \
    "the entry B used stays, the other goes" "as expected" 0
else
  record "LRU across hosts: B used one entry last, A fills a third" "$backend" \
    "the entry B used stays, the other goes" "exit $rc; pool: $now; used $(entry_of "$used")" 1
fi

# ---- 4. one pass at a time per pool
CACHEMGR_FAILPOINT=pass_locked:sleep "$CACHEMGR_BIN" --config "$CFG_a" evict >/dev/null 2>&1 &
pass_pid=$!
on_exit "kill -9 $pass_pid"
sleep 2
on b evict >/dev/null
rc=$?
err=$(last_err)
if (( rc == 5 )) && [[ $err == *"another pass holds the lock"* ]]; then
  record "B's pass while A's holds the pool's lock" "$backend" "exit 5 naming the lock" \
    "exit 5: ${err:0:120}" 0
else
  record "B's pass while A's holds the pool's lock" "$backend" "exit 5 naming the lock" \
    "exit $rc: $err" 1
fi
kill -9 "$pass_pid" 2>/dev/null
wait "$pass_pid" 2>/dev/null
drop_exit "kill -9 $pass_pid"
t0=$(date +%s)
rc=5
while (( rc == 5 && $(date +%s) - t0 < 60 )); do
  on b evict >/dev/null
  rc=$?
  (( rc == 5 )) && sleep 2
done
waited=$(( $(date +%s) - t0 ))
if (( rc == 0 && waited <= 60 )); then
  record "A's pass killed (SIGKILL) holding the lock; B's pass" "$backend" \
    "runs once the lock is free (RBD: within its 30 s lease)" "exit 0 after ${waited} s" 0
else
  record "A's pass killed (SIGKILL) holding the lock; B's pass" "$backend" \
    "runs once the lock is free (RBD: within its 30 s lease)" "exit $rc after ${waited} s; $(last_err)" 1
fi

# ---- 5. a host killed mid-fill
big=$(new_uuid)
make_image "$big" raw 32 16
CACHEMGR_FAILPOINT=after_fetch:sleep "$CACHEMGR_BIN" --config "$CFG_a" create "$big" v5-a \
  >/dev/null 2>&1 &
fill_pid=$!
on_exit "kill -9 $fill_pid"
for _ in $(seq 1 100); do
  [[ -n $(staging_objects) ]] && break
  sleep 0.2
done
kill -9 "$fill_pid" 2>/dev/null
wait "$fill_pid" 2>/dev/null
drop_exit "kill -9 $fill_pid"
t0=$(date +%s)
json=$(on b --json create "$big" v5-b)
rc=$?
took=$(( $(date +%s) - t0 ))
plan=$(jq -r '.plan // empty' <<<"$json" 2>/dev/null)
on b evict >/dev/null
left=$(staging_objects | tr '\n' ' ')
if (( rc == 0 && took <= 90 )) && [[ -z $left ]] && read_back v5-b "$big"; then
  record "A killed (SIGKILL) mid-fill; B creates the image, then B's pass" "$backend" \
    "ready through B within the lease plus one fill; no staging object left" \
    "exit 0 (plan $plan) in ${took} s; nothing left" 0
else
  record "A killed (SIGKILL) mid-fill; B creates the image, then B's pass" "$backend" \
    "ready through B within the lease plus one fill; no staging object left" \
    "exit $rc (plan $plan) in ${took} s; left: $left; $(last_err)" 1
fi

# ---- 6. the hit path's cluster writes: one use record per interval, not one per hit
host_config d 2 60
six=$(new_uuid)
make_image "$six" raw 8 2
on d create "$six" v6-d1 >/dev/null || record "setup: d creates" "$backend" "exit 0" "$(last_err)" 1
first=$(shared_use "$(entry_of "$six")")
sleep 1.2
on d create "$six" v6-d2 >/dev/null
on d create "$six" v6-d3 >/dev/null
second=$(shared_use "$(entry_of "$six")")
if [[ -n $first && $first == "$second" && $first == *" d" ]]; then
  record "three creates within share_use_interval_s (60 s) on one host" "$backend" \
    "the pool's use record written once (by the first)" "'$first' unchanged" 0
else
  record "three creates within share_use_interval_s (60 s) on one host" "$backend" \
    "the pool's use record written once (by the first)" "first '$first', then '$second'" 1
fi

# ---- 7. clones and evictions racing across hosts (max_count 1, three images)
for h in e f g; do host_config "$h" 1; done
race=()
for i in 1 2 3; do race+=("$(new_uuid)"); make_image "${race[-1]}" raw 8 4; done
racer() {  # racer HOST: creates until the deadline, one line per create: "rc volume image"
  local h=$1 n=0 id rc cfg="CFG_$1"
  while (( $(date +%s) < deadline )); do
    id=${race[RANDOM % 3]}
    n=$((n + 1))
    run_logged "$WORK/race-$h.err" --config "${!cfg}" create "$id" "r-$h-$n" >/dev/null
    rc=$?
    if known_librbd_abort "$rc" "$WORK/race-$h.err.last"; then
      librbd_abort_seen "host $h: create r-$h-$n" "$WORK/race-$h.err.last"
      continue
    fi
    echo "$rc r-$h-$n $id"
  done >"$WORK/race-$h.out"
}
evictor() {
  local cfg="CFG_$1"
  while (( $(date +%s) < deadline )); do
    "$CACHEMGR_BIN" --config "${!cfg}" evict >/dev/null 2>&1
    sleep 0.3
  done
}
deadline=$(( $(date +%s) + 12 ))
racer e & racer f & racer g & evictor e & evictor f &
wait
made=$(cat "$WORK"/race-*.out | wc -l)
failed=$(awk '$1 != 0' "$WORK"/race-*.out | wc -l)
unreadable=0
while read -r rc vol id; do
  (( rc == 0 )) || continue
  read_back "$vol" "$id" || unreadable=$((unreadable + 1))
done < <(cat "$WORK"/race-*.out)
if (( made > 0 && failed == 0 && unreadable == 0 )); then
  record "3 hosts create while 2 run passes (max_count 1), 12 s" "$backend" \
    "no create fails; every volume reads back" "$made creates, 0 failed, all read back$(librbd_aborts)" 0
else
  record "3 hosts create while 2 run passes (max_count 1), 12 s" "$backend" \
    "no create fails; every volume reads back" \
    "$made creates, $failed failed ($(cat "$WORK"/race-*.err | grep -v '^$' | head -n 2 | tr '\n' ' ')), $unreadable unreadable" 1
fi

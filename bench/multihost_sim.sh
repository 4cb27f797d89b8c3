#!/usr/bin/env bash
# bench/multihost_sim.sh: many hosts sharing one RBD pool as one cache (docs/multi-host.md),
# simulated by processes, and what one create, one miss and one pass cost in cluster
# round trips.
#
#   bench/multihost_sim.sh CACHEMGR CEPH_CONF WORK_DIR [OUT_JSON]   (run.sh: scenario sim16)
#
# 1. Round trips (SIM_OPS=1): one host alone on a namespace of its own: the OSD's client
#    op counter (`ceph daemon osd.0 perf dump`, osd.op; one per request a client sends)
#    before and after each single command: a create that misses, a create that hits, a
#    pass with nothing to do, a delete, and a bare `rbd clone` of the same snapshot (the
#    floor). Each runs SIM_OPS_REPS (2) times; the least count is the figure (other
#    clients of the cluster only add). Monitor traffic (each process's connect) is not
#    an OSD op and is not counted.
# 2. The simulation: HOSTS (16) hosts, each with its own host_id, index and conversion dir,
#    one pool namespace, max_count SIM_MAX_COUNT (4), file source of SIM_IMAGES (8) small
#    random images (raw and qcow2 alternating, 2-9 MiB). Each host runs one loop of
#    `cachemgr --json create` of a random image (keeping its last 2 volumes, older ones
#    deleted with `cachemgr delete`) and an `evict` every SIM_EVICT_S..SIM_EVICT_S+2 s
#    (3), for SIM_SECONDS (60). Then the pool-wide state: keys and bytes of each omap
#    table object cachemgr.table.* in RADOS namespace <ns>.cachemgr-locks, and the lock
#    objects there.
# Everything made (namespaces, images, lock and table objects) is removed at the end.
#
# Prints one "name value [unit]" line per figure on stdout; OUT_JSON gets the series that
# bench/report.py shows as the sim16 rows. Exit 1 when a create or delete fails or a pass
# exits other than 0 or 5 (the commands that failed and their errors are in
# WORK_DIR/fail.txt, which is kept).
set -uo pipefail
[[ $# -ge 3 ]] || { echo "usage: $0 CACHEMGR CEPH_CONF WORK_DIR [OUT_JSON]" >&2; exit 2; }
cli=$(realpath "$1")
conf=$(realpath "$2")
work=$3
out_json=${4:-}
hosts=${HOSTS:-16}
seconds=${SIM_SECONDS:-60}
n_images=${SIM_IMAGES:-8}
max_count=${SIM_MAX_COUNT:-4}
evict_s=${SIM_EVICT_S:-3}
keep=2
do_ops=${SIM_OPS:-1}
ops_reps=${SIM_OPS_REPS:-2}
pool=${SIM_POOL:-volumes}
ns=${SIM_NS:-sim-$$}
py=/usr/bin/python3  # Debian's python: it has the rados and rbd modules
here=$(cd "$(dirname "$0")" && pwd)

rm -rf "$work"
mkdir -p "$work"/{img,logs}
work=$(cd "$work" && pwd)
L=$work/logs
t_start=$(date +%s)
say() { printf '[sim %4ds] %s\n' $(( $(date +%s) - t_start )) "$*" >&2; }
rbd_cmd() { timeout 60 rbd --conf "$conf" "$@"; }

# ---- cleanup: every namespace made here, its images, its lock and table objects
made_ns=()
drop_ns() {  # drop_ns NS
  timeout 300 "$py" "$here/purge.py" --conf "$conf" --pool "$pool" --namespace "$1" >/dev/null 2>&1 ||
    say "purge of $pool/$1 left images behind"
  rbd_cmd namespace remove "$pool/$1" >/dev/null 2>&1 || say "rbd namespace remove $pool/$1 failed"
  timeout 60 "$py" - "$conf" "$pool" "$1.cachemgr-locks" <<'PY' || say "lock objects of $1 left behind"
import sys, rados
c = rados.Rados(conffile=sys.argv[1], rados_id="admin"); c.connect()
io = c.open_ioctx(sys.argv[2]); io.set_namespace(sys.argv[3])
for o in list(io.list_objects()):
    io.remove_object(o.key)
PY
}
pids=()
cleanup() {
  local p n
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  for n in "${made_ns[@]}"; do drop_ns "$n"; done
  rm -rf "$work/img" "$work"/h*/conv
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- images: file source, named by id
ids=()
for k in $(seq 0 $((n_images - 1))); do
  id=sim-img-$k
  mb=$((2 + k % 8))
  if (( k % 2 )); then
    head -c $((mb << 20)) /dev/urandom >"$work/img/$id.raw"
    qemu-img convert -q -f raw -O qcow2 "$work/img/$id.raw" "$work/img/$id"
    rm -f "$work/img/$id.raw"
  else
    head -c $((mb << 20)) /dev/urandom >"$work/img/$id"
  fi
  ids+=("$id")
done

config() {  # config NAME NS: a host's config (own host_id, index, conversion dir)
  mkdir -p "$work/$1/conv"
  cat >"$work/$1/cachemgr.yaml" <<EOF
host_id: sim-$1
index: $work/$1/index.db
backend:
  type: rbd
  rbd:
    conf: $conf
    client: admin
    pool: $pool
    namespace: $2
    connect_timeout_s: 10
source:
  type: file
  file:
    dir: $work/img
cache:
  max_count: $max_count
conversion:
  dir: $work/$1/conv
log:
  level: warn
  file: $work/$1/cachemgr.log
EOF
  echo "$work/$1/cachemgr.yaml"
}
new_ns() {
  rbd_cmd namespace create "$pool/$1" || { say "rbd namespace create $pool/$1 failed"; exit 1; }
  made_ns+=("$1")
}
fail() { echo "$*" >>"$work/fail.txt"; }

# ---- 1. round trips of single commands, one host, a namespace of its own
# Counted on the OSD: its client op counter (osd.op of `ceph daemon osd.0 perf dump`, one
# per request a client sends to it) before and after each command. The engine turns
# librados logging off, so the client cannot count them itself. Other clients of the
# cluster add to the count: the idle count over 2 s is printed beside, and the least of
# the runs (the one with the least outside traffic) is the figure.
osd_ops() {  # osd_ops: the OSD's client op counter
  local v
  v=$(timeout 20 ceph --conf "$conf" daemon osd.0 perf dump osd op 2>/dev/null |
    sed -nE 's/^ *"op": ([0-9]+).*/\1/p')
  [[ -n $v ]] && echo "$v"
}
ops_of() {  # ops_of LABEL CMD...: OSD ops of one command, appended to $L/ops.txt
  local label=$1 a b rc
  shift
  a=$(osd_ops) || return 1
  "$@" >"$L/ops.out" 2>"$L/ops.err"
  rc=$?
  (( rc == 0 )) || fail "round trips, $label: $* -> exit $rc: $(grep -v '^\s*$' "$L/ops.err" | tail -n 1)"
  b=$(osd_ops) || return 1
  echo "$label $((b - a))" >>"$L/ops.txt"
}
if [[ $do_ops == 1 ]] && osd_ops >/dev/null; then
  ons=$ns-ops
  new_ns "$ons"
  ocfg=$(config ops "$ons")
  cm() { "$cli" --config "$ocfg" "$@"; }
  a=$(osd_ops); sleep 2; b=$(osd_ops)
  echo "idle_2s $((b - a))" >>"$L/ops.txt"
  # The first miss in an empty namespace also makes the lock and table objects: apart.
  ops_of first_miss cm create "${ids[0]}" ops-v0
  for r in $(seq 1 "$ops_reps"); do
    ops_of create_miss cm create "${ids[r]}" "ops-miss-$r"
  done
  for r in $(seq 1 "$ops_reps"); do
    ops_of create_hit cm create "${ids[1]}" "ops-hit-$r"
  done
  for r in $(seq 1 "$ops_reps"); do ops_of evict cm evict; done
  for r in $(seq 1 "$ops_reps"); do ops_of delete cm delete "ops-hit-$r"; done
  entry=$(cm --json list | "$py" -c 'import json, sys
print(next(e["cache_name"] for e in json.load(sys.stdin) if e["image_id"] == sys.argv[1]))' "${ids[1]}")
  snap=$(rbd_cmd snap ls "$pool/$ons/$entry" --format json | "$py" -c 'import json, sys
print(json.load(sys.stdin)[0]["name"])')
  for r in $(seq 1 "$ops_reps"); do
    ops_of rbd_clone rbd_cmd clone "$pool/$ons/$entry@$snap" "$pool/$ons/floor-$r"
  done
  say "OSD ops: $(awk '{a[$1] = a[$1] " " $2} END {for (k in a) printf "%s:%s; ", k, a[k]}' "$L/ops.txt")"
elif [[ $do_ops == 1 ]]; then
  say "no answer from 'ceph daemon osd.0 perf dump' (admin socket in $conf?): round trips not counted"
fi

# ---- 2. the simulation
new_ns "$ns"
for h in $(seq -w 1 "$hosts"); do config "h$h" "$ns" >/dev/null; done
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
start=$(date +%s)
end=$((start + seconds))

worker() {  # worker H: create/delete loop; one line per create in $L/create-H
  local h=$1 cfg=$work/h$1/cachemgr.yaml i=0 k vol rc out t0 t1 alive=()
  while (( $(date +%s) < end )); do
    i=$((i + 1))
    k=$((RANDOM % n_images))
    vol=sim-h$h-$i
    t0=$(now_ms)
    out=$("$cli" --config "$cfg" --json create "${ids[k]}" "$vol" 2>"$L/err-$h")
    rc=$?
    t1=$(now_ms)
    if (( rc != 0 )); then
      fail "host $h: $cli --config $cfg --json create ${ids[k]} $vol -> exit $rc: $(grep -v '^\s*$' "$L/err-$h" | tail -n 1)"
      echo "$k $rc $t0 $((t1 - t0)) -" >>"$L/create-$h"
      continue
    fi
    echo "$k $rc $t0 $((t1 - t0)) $(tr -d ' \n' <<<"$out")" >>"$L/create-$h"
    alive+=("$vol")
    while (( ${#alive[@]} > keep )); do
      if ! "$cli" --config "$cfg" delete "${alive[0]}" >/dev/null 2>"$L/err-$h"; then
        fail "host $h: $cli --config $cfg delete ${alive[0]} -> $(grep -v '^\s*$' "$L/err-$h" | tail -n 1)"
      fi
      alive=("${alive[@]:1}")
    done
  done
}
evictor() {  # evictor H: a pass every few seconds; "rc wall_ms" lines in $L/evict-H
  local h=$1 cfg=$work/h$1/cachemgr.yaml rc t0 t1
  sleep "$((RANDOM % evict_s)).$((RANDOM % 10))"
  while (( $(date +%s) < end )); do
    t0=$(now_ms)
    "$cli" --config "$cfg" evict >/dev/null 2>"$L/eerr-$h"
    rc=$?
    t1=$(now_ms)
    echo "$rc $((t1 - t0))" >>"$L/evict-$h"
    case $rc in
      0|5) ;;
      *) fail "host $h: $cli --config $cfg evict -> exit $rc: $(grep -v '^\s*$' "$L/eerr-$h" | tail -n 1)" ;;
    esac
    sleep "$((evict_s + RANDOM % 3)).$((RANDOM % 10))"
  done
}
say "$hosts hosts x (1 create/delete loop + a pass every ${evict_s}-$((evict_s + 2)) s), $n_images images, max_count $max_count, ${seconds}s, namespace $pool/$ns"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for h in $(seq -w 1 "$hosts"); do
  worker "$h" & pids+=($!)
  evictor "$h" & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
pids=()
wall=$(( $(date +%s) - start ))
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
say "loops done after ${wall}s (load $load_start -> $load_end)"

# ---- pool-wide state at the end (the last volumes of each host still there)
"$py" - "$conf" "$pool" "$ns" >"$L/state.json" <<'PY'
import json, sys, rados, rbd
c = rados.Rados(conffile=sys.argv[1], rados_id="admin"); c.connect()
io = c.open_ioctx(sys.argv[2])
io.set_namespace(sys.argv[3] + ".cachemgr-locks")
tables, locks, other = {}, 0, 0
for o in list(io.list_objects()):
    if o.key.startswith("cachemgr.table."):
        keys = nbytes = 0
        start = ""
        while True:
            with rados.ReadOpCtx() as op:
                it, _ = io.get_omap_vals(op, start, "", 1000)
                io.operate_read_op(op, o.key)
                page = list(it)
            for k, v in page:
                keys += 1
                nbytes += len(k.encode()) + len(v)
            if len(page) < 1000:
                break
            start = page[-1][0]
        tables[o.key[len("cachemgr.table."):]] = {"keys": keys, "bytes": nbytes}
    elif o.key.startswith("cachemgr.lock."):
        locks += 1
    else:
        other += 1
io.set_namespace(sys.argv[3])
names = rbd.RBD().list(io)
entries = sum(1 for n in names if len(n) == 40 and all(ch in "0123456789abcdef" for ch in n))
trash = len(list(rbd.RBD().trash_list(io)))
print(json.dumps({"tables": tables, "lock_objects": locks, "other_objects": other,
                  "entries": entries, "volumes": len(names) - entries, "trash": trash}))
PY

# evictions per image: the evict events of every host's index
for h in $(seq -w 1 "$hosts"); do
  sqlite3 -readonly -cmd '.timeout 5000' "$work/h$h/index.db" \
    "SELECT image_id FROM events WHERE kind = 'evict';" 2>/dev/null
done >"$L/evictions.txt"

cat "$L"/create-* >"$L/creates.txt" 2>/dev/null
cat "$L"/evict-* >"$L/passes.txt" 2>/dev/null
touch "$L/ops.txt" "$work/fail.txt"
"$py" - "$L" "$work/fail.txt" "$hosts" "$seconds" "$wall" "$n_images" "$max_count" \
  "$load_start" "$load_end" "${out_json:--}" "${ids[@]}" <<'PY'
import json, math, sys
L, failf, hosts, seconds, wall, n_images, max_count, load_start, load_end, out = sys.argv[1:11]
ids = sys.argv[11:]
hosts, seconds, wall, n_images, max_count = map(int, (hosts, seconds, wall, n_images, max_count))

def pct(v, p):
    if not v:
        return float("nan")
    v = sorted(v)
    r = p / 100.0 * (len(v) - 1)
    lo, hi = int(math.floor(r)), int(math.ceil(r))
    return v[lo] + (v[hi] - v[lo]) * (r - lo)

hit_ms, miss_ms, hit_wall, miss_wall, waits = [], [], [], [], []
failed, plans = 0, {}
misses = [0] * n_images
for line in open(L + "/creates.txt"):
    k, rc, _t0, wall_ms, doc = line.split(" ", 4)
    k, rc = int(k), int(rc)
    if rc != 0:
        failed += 1
        continue
    d = json.loads(doc)
    plans[d["plan"]] = plans.get(d["plan"], 0) + 1
    if d["plan"] == "miss":
        misses[k] += 1
        miss_ms.append(d["ms"]); miss_wall.append(int(wall_ms))
    else:
        hit_ms.append(d["ms"]); hit_wall.append(int(wall_ms))
        if d.get("wait_ms", 0) > 0:  # not ready in this host's index: under the image lock
            waits.append(d["wait_ms"])
ok = sum(plans.values())
passes = [l.split() for l in open(L + "/passes.txt")]
pass_ms = [int(w) for rc, w in passes if rc == "0"]
busy = sum(1 for rc, _ in passes if rc == "5")
pass_bad = sum(1 for rc, _ in passes if rc not in ("0", "5"))
ev = [l.strip() for l in open(L + "/evictions.txt") if l.strip()]
evictions = [ev.count(i) for i in ids]
refills_unexplained = sum(max(0, m - e - 1) for m, e in zip(misses, evictions))
state = json.load(open(L + "/state.json"))
ops = {}
for l in open(L + "/ops.txt"):
    name, n = l.split()
    ops.setdefault(name, []).append(int(n))
fails = [l.rstrip("\n") for l in open(failf) if l.strip()]

p = lambda s: print(s)  # noqa: E731
p("hosts %d" % hosts)
p("seconds %d (loops ran %d s)" % (seconds, wall))
p("loadavg %s -> %s" % (load_start, load_end))
p("creates %d ok, %d failed" % (ok, failed))
p("creates_per_s %.2f" % (ok / max(wall, 1)))
p("plans %s" % " ".join("%s=%d" % kv for kv in sorted(plans.items())))
p("create_hit_ms p50 %.0f p95 %.0f (n=%d; process wall p50 %.0f; %d under the image lock, "
  "lock wait p50 %.0f ms)" % (pct(hit_ms, 50), pct(hit_ms, 95), len(hit_ms), pct(hit_wall, 50),
                              len(waits), pct(waits, 50)))
p("create_miss_ms p50 %.0f p95 %.0f (n=%d; process wall p50 %.0f)" % (
    pct(miss_ms, 50), pct(miss_ms, 95), len(miss_ms), pct(miss_wall, 50)))
p("passes %d run, %d exit 5, %d other exits; pass wall p50 %.0f ms p95 %.0f ms" % (
    len(pass_ms), busy, pass_bad, pct(pass_ms, 50), pct(pass_ms, 95)))
p("misses/evictions per image %s (refills without an eviction before: %d)" % (
    " ".join("%d:%d/%d" % (k, m, e) for k, (m, e) in enumerate(zip(misses, evictions))),
    refills_unexplained))
for name, t in sorted(state["tables"].items()):
    p("table %s %d keys %d bytes" % (name, t["keys"], t["bytes"]))
p("lock_objects %d (other objects %d)" % (state["lock_objects"], state["other_objects"]))
p("pool_at_end %d entries, %d volumes, %d in the trash" % (
    state["entries"], state["volumes"], state["trash"]))
for name in ("create_hit", "create_miss", "first_miss", "evict", "delete", "rbd_clone", "idle_2s"):
    if name in ops:
        p("osd_ops %s min %d (runs %s)" % (name, min(ops[name]),
                                              ",".join(map(str, ops[name]))))
for f in fails[:5]:
    p("FAIL %s" % f)

if out != "-":
    extra = {"hosts": hosts, "seconds": seconds, "wall_s": wall, "images": n_images,
             "max_count": max_count, "creates": ok, "failed": failed, "plans": plans,
             "waited": len(waits), "wait_ms_p50": pct(waits, 50), "passes": len(pass_ms), "busy": busy, "pass_bad": pass_bad,
             "misses": misses, "evictions": evictions,
             "refills_unexplained": refills_unexplained, "state": state,
             "ops": {k: min(v) for k, v in ops.items()}, "ops_runs": ops,
             "loadavg": [load_start, load_end], "failures": fails[:20],
             "hit_wall_ms_p50": pct(hit_wall, 50), "miss_wall_ms_p50": pct(miss_wall, 50)}
    s = lambda name, v, unit="ms", ex=None: {"scenario": "sim16", "name": name,  # noqa: E731
                                              "unit": unit, "samples": v, "extra": ex or {}}
    doc = {"series": [s("run", [ok / max(wall, 1)], "creates/s", extra),
                      s("create hit", hit_ms), s("create miss", miss_ms),
                      s("pass", pass_ms)]}
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
sys.exit(1 if (failed or pass_bad or fails) else 0)
PY
rc=$?
if (( rc == 0 )); then
  rm -rf "$work/logs" "$work"/h* "$work/ops" "$work/fail.txt"
else
  say "failures: see $work/fail.txt and $L"
fi
exit "$rc"

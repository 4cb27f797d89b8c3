#!/usr/bin/env bash
# bench/run.sh: every benchmark scenario against its baseline, on a throwaway Ceph
# cluster and a real Glance API that this script starts and stops (by pid, also on
# failure). Prints the table of medians, p90s and ratios, writes
# bench/results/latest.json and draws bench/results/latest.png.
#
#   BUILD=build bench/run.sh            (what `make bench` runs)
# Environment:
#   BUILD           build dir holding bench/bench_* (default: build)
#   BENCH_RUN_DIR   scratch dir for the cluster, Glance, images (default: $BUILD/bench-run)
#   BENCH_RESULTS   where latest.json/png go (default: bench/results; bench/results/quick
#                   with BENCH_QUICK=1, which never writes bench/results/latest.*)
#   BENCH_ONLY      space-separated scenarios to run (default: all):
#                   hit burst hosts miss rss flight index local import digest sim16 instant
#   BENCH_REPS      repetitions of each single-flight and import run (default: 3)
#   BENCH_HOSTS_REPS runs of each side of the hosts scenario, alternating (default: 5)
#   BENCH_MISS_REPS repetitions of each miss, alternating which side goes first (default: 5)
#   BENCH_MISS_MIB  data of the dense miss images, MiB (default: 512; 256 with BENCH_QUICK)
#   BENCH_RSS_MIB   size of the dense images whose miss's peak RSS is measured (default: 4096)
#   BENCH_INSTANT_GIB sizes of the instant miss's images, GiB (default: 1,4; 1 with BENCH_QUICK)
#   BENCH_QUICK=1   fewer samples everywhere (a smoke run; its numbers are not the record)
#   HOSTS, SIM_SECONDS, SIM_IMAGES ...  the sim16 scenario's (bench/multihost_sim.sh)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${BUILD:-build}" 2>/dev/null && pwd) || { echo "bench: no build dir ${BUILD:-build}" >&2; exit 2; }
bin=$build/bench
run=${BENCH_RUN_DIR:-$build/bench-run}
results=${BENCH_RESULTS:-$repo/bench/results}
only=${BENCH_ONLY:-hit burst hosts miss rss flight index local import digest sim16 instant}
reps=${BENCH_REPS:-3}
miss_reps=${BENCH_MISS_REPS:-5}
miss_mib=${BENCH_MISS_MIB:-512}
rss_mib=${BENCH_RSS_MIB:-4096}
hosts_reps=${BENCH_HOSTS_REPS:-5}
quick=${BENCH_QUICK:-0}
py=/usr/bin/python3  # Debian's python: it has the rbd and rados modules

if [[ $quick == 1 ]]; then
  n_hit=30; n_tool=6; n_cinder=5; n_burst=100; n_local=50; n_index=20000; reps=${BENCH_REPS:-1}; miss_reps=${BENCH_MISS_REPS:-2}
  n_pass=20000; n_evict=100; n_passes=3
  miss_mib=${BENCH_MISS_MIB:-256}
  n_hosts=120
else
  n_hit=200; n_tool=20; n_cinder=15; n_burst=500; n_local=100; n_index=100000
  n_pass=100000; n_evict=${BENCH_INDEX_EVICT:-1000}; n_passes=2
  n_hosts=240
fi

started=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)  # how busy the machine was: ratios hold, absolutes move
rm -rf "$run"
mkdir -p "$run"/{out,img,logs,idx,work}
run=$(cd "$run" && pwd)
[[ $run != *" "* ]] || { echo "bench: BENCH_RUN_DIR must not contain spaces" >&2; exit 2; }
out=$run/out
ceph_dir=$run/ceph
glance_dir=$run/glance
conf=$ceph_dir/ceph.conf
failures=()

log() { printf '[bench %4ds] %s\n' $(( $(date +%s) - started )) "$*" >&2; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  log "stopping Glance and Ceph"
  "$repo/tests/cluster/glance-stop.sh" "$glance_dir" >/dev/null 2>&1 || true
  "$repo/tests/cluster/ceph-stop.sh" "$ceph_dir" >/dev/null 2>&1 || true
  rm -rf "$run/img" "$run/work" "$run/local" "$run/qemu"  # GiBs of images; out/ and logs/ stay
  exit "$rc"
}
trap cleanup EXIT
trap 'log "command failed at line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT TERM

want() { [[ " $only " == *" $1 "* ]]; }

# step NAME LIMIT_S CMD...: runs one measurement with a time limit; a failure is
# recorded (the goals of the scenarios it feeds show as FAILED, bench/step_scenarios.py)
# and the run goes on with the next one.
# Each step's wall time and the machine's busy CPU time meanwhile (every process: the
# cluster and Glance run here too) go to $run/steps.tsv (name, seconds, CPU-seconds, ok or
# FAILED), and from there to meta.json's "steps": where the run's time goes, and how many
# of the cores a step kept busy.
busy_ticks() {  # busy_ticks: jiffies the machine spent not idle (user..steal of /proc/stat)
  awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat
}
step() {
  local name=$1 limit=$2 t0 b0 rc=0
  shift 2
  t0=$(date +%s%N)
  b0=$(busy_ticks)
  timeout --kill-after=10 "$limit" "$@" >>"$run/logs/steps.log" 2>&1 || rc=$?
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  local cpu_ms=$(( ($(busy_ticks) - b0) * 1000 / $(getconf CLK_TCK) ))
  printf '%s\t%d.%03d\t%d.%03d\t%s\n' "$name" $(( ms / 1000 )) $(( ms % 1000 )) \
    $(( cpu_ms / 1000 )) $(( cpu_ms % 1000 )) \
    "$( (( rc == 0 )) && echo ok || echo FAILED)" >>"$run/steps.tsv"
  (( rc == 0 )) && return 0
  log "FAILED: $name (see $run/logs/steps.log)"
  tail -n 5 "$run/logs/steps.log" | sed 's/^/    /' >&2
  failures+=("$name")
  return 0
}

need=()
for sc in hit burst hosts miss rss flight local; do want $sc && need+=(bench_rbd_floor bench_engine); done
want local && need+=(bench_qemu_img)
want index && need+=(bench_index)
want import && need+=(import/bench_import)
{ want digest || want sim16 || want hit || want instant; } && need+=(../cachemgr/cli/cachemgr)
for prog in $(printf '%s\n' "${need[@]+"${need[@]}"}" | sort -u); do
  [[ -x $bin/$prog ]] || { echo "bench: $bin/$prog missing (make build)" >&2; exit 2; }
done
# Glance and its images serve every scenario but index, import and sim16 (file source);
# the instant miss's Glance side (through the relay) uploads its own.
glance=0
for sc in hit burst hosts miss rss flight local digest instant; do want $sc && glance=1; done

# ---------------------------------------------------------------- services
log "starting Ceph (memstore) and Glance in $run"
CEPH_MEMSTORE_BYTES=${CEPH_MEMSTORE_BYTES:-$((10 * 1024 * 1024 * 1024))} \
  "$repo/tests/cluster/ceph-start.sh" "$ceph_dir" >"$run/logs/ceph-start.log" 2>&1 \
  || { cat "$run/logs/ceph-start.log" >&2; exit 1; }
endpoint=""
if (( glance )); then
  "$repo/tests/cluster/glance-start.sh" "$glance_dir" "$ceph_dir" >"$run/logs/glance-start.log" 2>&1 \
    || { cat "$run/logs/glance-start.log" >&2; exit 1; }
  endpoint=$(cat "$glance_dir/endpoint")
fi
rbd_cmd() { rbd --conf "$conf" "$@"; }

# ---------------------------------------------------------------- images
# bench/make_image.py data: every 64 KiB cluster 30% random bytes and 70% log-like text,
# so deflate packs it about 2:1 as it does cloud images, and no cluster is all zero.
# sparse: 1 GiB virtual, the first 64 MiB data, then a hole; dense: $miss_mib MiB of data
# everywhere. qcow2c: `qemu-img convert -c` (zlib clusters, as cloud images ship).
gib=$((1024 * 1024 * 1024))
mib=$((1024 * 1024))
make_image() {  # make_image FILE SIZE DATA SEED
  $py "$repo/bench/make_image.py" --out "$1" --size "$2" --data "$3" --seed "$4"
}
upload() {  # upload NAME FORMAT FILE: prints the new image's id
  local id
  id=$(curl -fsS -X POST -H 'Content-Type: application/json' \
    -d "{\"name\": \"$1\", \"disk_format\": \"$2\", \"container_format\": \"bare\"}" \
    "$endpoint/v2/images" | $py -c 'import json, sys; print(json.load(sys.stdin)["id"])')
  curl -fsS -X PUT -H 'Content-Type: application/octet-stream' -T "$3" \
    "$endpoint/v2/images/$id/file" >/dev/null
  echo "$id"
}
declare -A image_id image_fmt
add_image() {  # add_image LABEL FORMAT FILE
  local t0=$(date +%s)
  image_id[$1]=$(upload "bench-$1" "$2" "$3")
  image_fmt[$1]=$2
  log "image $1 ($2, $(du -h --apparent-size "$3" | cut -f1) file, $(du -h "$3" | cut -f1) on disk) uploaded in $(( $(date +%s) - t0 ))s: ${image_id[$1]}"
}
drop_image() {  # drop_image LABEL: removes it from Glance (its store's disk)
  curl -fsS -X DELETE "$endpoint/v2/images/${image_id[$1]}" >/dev/null \
    || log "could not delete image $1 from Glance"
}

img=$run/img
images_t0=$(date +%s)
if (( glance )); then
  make_image "$img/raw-sparse.raw" $gib $((64 * mib)) 1
  add_image raw-sparse raw "$img/raw-sparse.raw"
fi
if want miss; then
  make_image "$img/raw-dense.raw" $((miss_mib * mib)) $((miss_mib * mib)) 2
  add_image raw-dense raw "$img/raw-dense.raw"
  qemu-img convert -f raw -O qcow2 "$img/raw-dense.raw" "$img/qcow2-dense.qcow2"
  add_image qcow2-dense qcow2 "$img/qcow2-dense.qcow2"
  rm -f "$img/qcow2-dense.qcow2"
  # -W -m 8: compressed on every core (the clusters' order in the file may differ).
  qemu-img convert -c -W -m 8 -f raw -O qcow2 "$img/raw-dense.raw" "$img/qcow2c-dense.qcow2"
  add_image qcow2c-dense qcow2 "$img/qcow2c-dense.qcow2"
  # raw-dense.raw and qcow2c-dense.qcow2 stay for the miss's single stages.
  qemu-img convert -c -W -m 8 -f raw -O qcow2 "$img/raw-sparse.raw" "$img/qcow2c-sparse.qcow2"
  add_image qcow2c-sparse qcow2 "$img/qcow2c-sparse.qcow2"
  rm -f "$img/qcow2c-sparse.qcow2"
fi
if want miss || want local || want flight || want hit || want burst || want hosts || want rss; then
  qemu-img convert -f raw -O qcow2 "$img/raw-sparse.raw" "$img/qcow2-sparse.qcow2"
  add_image qcow2-sparse qcow2 "$img/qcow2-sparse.qcow2"
fi
log "images made and uploaded in $(( $(date +%s) - images_t0 ))s"

# engine_rbd NS CMD ARGS...: argv of bench_engine on the RBD backend in namespace NS with
# an index of its own (a fresh namespace and index make a cold cache).
engine_rbd() {
  local ns=$1 cmd=$2
  shift 2
  echo "$bin/bench_engine" "$cmd" --backend rbd --conf "$conf" --pool volumes --namespace "$ns" \
    --endpoint "$endpoint" --index "$run/idx/$ns.db" --work "$run/work" \
    --log "$run/logs/engine.log" "$@"
}
purge() { $py "$repo/bench/purge.py" --conf "$conf" --pool volumes --namespace "$1" \
  >>"$run/logs/steps.log" 2>&1 || log "purge of namespace $1 left images behind"; }

# ---------------------------------------------------------------- hit
if want hit || want burst || want hosts; then
  # The floor's parent and Cinder's cache volume: plain images in the default namespace.
  rbd_cmd create --size 1G volumes/bench-parent
  rbd_cmd snap create volumes/bench-parent@snap >/dev/null 2>&1
  rbd_cmd snap protect volumes/bench-parent@snap
  # Cinder's cached image-volume is a clone of the volume its miss imported (depth 1).
  rbd_cmd create --size 1G volumes/cinder-vol
  rbd_cmd snap create volumes/cinder-vol@snap >/dev/null 2>&1
  rbd_cmd snap protect volumes/cinder-vol@snap
  rbd_cmd clone volumes/cinder-vol@snap volumes/cinder-src
fi
if want hit; then
  # Engine rows, each against the librbd floor: the source check at the default interval
  # (60 s: the warm-up stamps it, so no timed hit asks the source) and on every hit
  # (interval 0: each hit asks Glance), and a hit that grows its volume (1 -> 2 GiB)
  # against the floor's clone + open + resize + close. Rounds alternate the order.
  log "hit: engine (source every 60 s, every hit, with a resize) and the librbd floor, alternating"
  hit_args=(--image "${image_id[qcow2-sparse]}" --count $((n_hit / 2)) --scenario hit)
  floor_args=(--conf "$conf" --pool volumes --parent bench-parent --snap snap
              --count $((n_hit / 2)) --scenario hit)
  for round in 1 2; do
    order="engine floor every resize floor-resize"
    (( round == 2 )) && order="floor-resize resize every floor engine"
    for side in $order; do
      case $side in
        engine)
          step "hit engine" 300 $(engine_rbd hot hit) "${hit_args[@]}" --name engine \
                  --out "$out/hit-engine-$round.json" ;;
        every)
          step "hit engine source every hit" 300 $(engine_rbd hot hit) "${hit_args[@]}" \
                 --name "engine source every hit" --source-check-interval 0 \
                 --out "$out/hit-engine-every-$round.json" ;;
        resize)
          step "hit engine resize" 300 $(engine_rbd hot hit) "${hit_args[@]}" \
                  --name "engine resize" --size-bytes $((2 * gib)) \
                  --out "$out/hit-engine-resize-$round.json" ;;
        floor)
          step "hit floor" 300 "$bin/bench_rbd_floor" "${floor_args[@]}" --name floor \
                 --out "$out/hit-floor-$round.json" ;;
        floor-resize)
          step "hit floor resize" 300 "$bin/bench_rbd_floor" "${floor_args[@]}" \
                        --name "floor resize" --resize-bytes $((2 * gib)) \
                        --out "$out/hit-floor-resize-$round.json" ;;
      esac
    done
  done
  # Through the tool as operators call it: one `cachemgr create` process per volume
  # against one `rbd clone` process per volume, alternating (bench/cli_hit.py).
  log "hit: cachemgr create vs rbd clone, one process per volume, $n_tool each"
  step "hit tool" 300 $py "$repo/bench/cli_hit.py" --cli "$build/cachemgr/cli/cachemgr" \
    --conf "$conf" --pool volumes --namespace cli --endpoint "$endpoint" \
    --image "${image_id[qcow2-sparse]}" --parent bench-parent --snap snap \
    --work "$run/work/cli-hit" --count $n_tool --out "$out/hit-tool.json"
  step "hit cinder" 300 $py "$repo/bench/cinder_hit.py" --conf "$conf" --pool volumes \
    --source cinder-src --count $n_cinder --out "$out/hit-cinder.json"
fi

# ---------------------------------------------------------------- burst
if want burst; then
  for c in 1 8 32; do
    log "burst: $n_burst volumes at concurrency $c"
    step "burst engine c$c" 300 $(engine_rbd hot burst) --image "${image_id[qcow2-sparse]}" \
      --count $n_burst --concurrency $c --scenario burst --out "$out/burst-engine-c$c.json"
    step "burst floor c$c" 300 "$bin/bench_rbd_floor" --conf "$conf" --pool volumes \
      --parent bench-parent --snap snap --count $n_burst --concurrency $c --scenario burst \
      --name "floor c$c" --out "$out/burst-floor-c$c.json"
  done
fi
# The hot namespace is not purged: its clones hold no data, and removing ~2,000 of them
# one by one would cost minutes of the time budget.

# ---------------------------------------------------------------- hosts sharing a pool
# Three hosts (processes with their own host_id, index and conversion dir, one pool) x 8
# threads making volumes from one cached image, against the librbd floor at the same 24
# concurrent clones; runs alternate which side goes first, each side a few seconds.
# Namespace "hosts" keeps its clones (no data) like the hot one.
if want hosts; then
  log "hosts: 3 hosts x 8 threads vs the librbd floor at 24 clones, $hosts_reps runs each, $n_hosts volumes a run"
  for rep in $(seq 1 "$hosts_reps"); do
    sides="engine floor"
    (( rep % 2 == 0 )) && sides="floor engine"
    for side in $sides; do
      if [[ $side == engine ]]; then
        step "hosts engine 3x8 run $rep" 300 $(engine_rbd hosts hosts) \
          --image "${image_id[qcow2-sparse]}" --hosts 3 --concurrency 8 --count $n_hosts \
          --scenario hosts --out "$out/hosts-engine-$rep.json"
      else
        step "hosts floor c24 run $rep" 300 "$bin/bench_rbd_floor" --conf "$conf" --pool volumes \
          --parent bench-parent --snap snap --count $n_hosts --concurrency 24 --rate 1 \
          --scenario hosts --name "floor c24" --out "$out/hosts-floor-$rep.json"
      fi
    done
  done
fi

# ---------------------------------------------------------------- miss and memory
# Each repetition runs every image once on each side, odd repetitions the engine first,
# even ones Cinder's full miss first (download with its hash check, convert, import, the
# cache entry's clone), so neither side always gets the quieter cluster or a warm page
# cache. The dense images' misses also give their peak RSS.
if want miss; then
  miss_t0=$(date +%s)
  miss_labels="raw-sparse raw-dense qcow2-sparse qcow2-dense qcow2c-sparse qcow2c-dense"
  for rep in $(seq 1 "$miss_reps"); do
    sides="engine cinder"
    (( rep % 2 == 0 )) && sides="cinder engine"
    log "miss: repetition $rep of $miss_reps ($sides)"
    for label in $miss_labels; do
      for side in $sides; do
        if [[ $side == engine ]]; then
          rss_arg=()
          if want rss && [[ $label == *-dense ]]; then
            rss_arg=(--rss-label "${label%-dense} dense $((miss_mib))MiB")
          fi
          step "miss engine $label" 600 $(engine_rbd "m-$label-$rep" miss) \
            --image "${image_id[$label]}" --label "$label" "${rss_arg[@]}" \
            --out "$out/miss-engine-$label-$rep.json"
          purge "m-$label-$rep"
        else
          step "miss cinder $label" 600 $py "$repo/bench/cinder_miss.py" --endpoint "$endpoint" \
            --image-id "${image_id[$label]}" --format "${image_fmt[$label]}" --conf "$conf" \
            --pool volumes --workdir "$run/work" --reps 1 --label "$label" \
            --out "$out/miss-cinder-$label-$rep.json"
        fi
      done
      # The dense raw miss's single stages alone (bench/miss_stages.py): its pipeline's
      # baselines, in the same repetition.
      # The compressed qcow2's: qemu-img's parallel convert straight into RBD, against
      # which the engine's own qcow2 reader is measured.
      if [[ $label == raw-dense || $label == qcow2c-dense ]]; then
        stages=download,sha512,rbd-import file=$img/$label.raw
        [[ $label == qcow2c-dense ]] && stages=qemu-img file=$img/$label.qcow2
        step "miss stages $label" 600 $py "$repo/bench/miss_stages.py" --endpoint "$endpoint" \
          --image-id "${image_id[$label]}" --file "$file" --conf "$conf" --pool volumes \
          --label "$label" --stages "$stages" --out "$out/miss-stages-$label-$rep.json"
      fi
    done
  done
  for label in raw-dense qcow2-dense qcow2c-dense qcow2c-sparse; do drop_image $label; done
  rm -f "$img/raw-dense.raw" "$img/qcow2c-dense.qcow2"
  log "miss section took $(( $(date +%s) - miss_t0 ))s"
fi
if want rss; then
  # Dense images of $rss_mib MiB: the miss streams all of it through the aio window.
  # One image at a time in Glance's store, removed after its miss.
  rss_t0=$(date +%s)
  rss_gib=$((rss_mib / 1024))
  make_image "$img/rss-dense.raw" $((rss_mib * mib)) $((rss_mib * mib)) 4
  add_image rss-raw raw "$img/rss-dense.raw"
  log "memory: one miss of the ${rss_gib} GiB dense raw image"
  step "rss raw ${rss_gib}GiB" 900 $(engine_rbd rss-raw miss) --image "${image_id[rss-raw]}" \
    --label rss-raw --rss-label "raw dense ${rss_gib}GiB" --miss-series 0 --out "$out/rss-raw.json"
  purge rss-raw
  drop_image rss-raw
  qemu-img convert -f raw -O qcow2 "$img/rss-dense.raw" "$img/rss-dense.qcow2"
  rm -f "$img/rss-dense.raw"
  add_image rss-qcow2 qcow2 "$img/rss-dense.qcow2"
  rm -f "$img/rss-dense.qcow2"
  log "memory: one miss of the ${rss_gib} GiB dense qcow2 image"
  step "rss qcow2 ${rss_gib}GiB" 900 $(engine_rbd rss-qcow2 miss) --image "${image_id[rss-qcow2]}" \
    --label rss-qcow2 --rss-label "qcow2 dense ${rss_gib}GiB" --miss-series 0 --out "$out/rss-qcow2.json"
  purge rss-qcow2
  drop_image rss-qcow2
  log "rss section took $(( $(date +%s) - rss_t0 ))s"
fi

# ---------------------------------------------------------------- single flight
if want flight; then
  for rep in $(seq 1 "$reps"); do
    log "single flight (qcow2-sparse): 32 concurrent cold requests vs one miss + 32 clones ($rep of $reps)"
    step "single flight" 600 $(engine_rbd "sf-$rep" flight) \
      --image "${image_id[qcow2-sparse]}" --concurrency 32 --out "$out/flight-$rep.json"
    purge "sf-$rep"
    step "miss + 32 clones" 600 $(engine_rbd "ser-$rep" serial) \
      --image "${image_id[qcow2-sparse]}" --count 32 --out "$out/serial-$rep.json"
    purge "ser-$rep"
  done
fi

# ---------------------------------------------------------------- index
if want index; then
  log "index: $n_index entries"
  # Then the library's eviction pass on the local backend at n_pass entries: dry, idle,
  # and one evicting n_evict with pinned and busy entries first (bench/README.md).
  log "index: eviction pass at $n_pass entries, evicting $n_evict"
  step "index" 900 "$bin/bench_index" --dir "$run/work/index" --entries $n_index \
    --pass-entries $n_pass --evict $n_evict --passes $n_passes --out "$out/index.json"
fi

# ---------------------------------------------------------------- local backend
if want local; then
  log "local backend: hit and burst vs qemu-img create -b"
  local_args=(--backend local --root "$run/local" --endpoint "$endpoint"
              --index "$run/idx/local.db" --work "$run/work" --log "$run/logs/engine.log"
              --image "${image_id[qcow2-sparse]}")
  step "local hit engine" 300 "$bin/bench_engine" hit "${local_args[@]}" --count $n_local \
    --scenario local_hit --out "$out/local-hit-engine.json"
  step "local hit qemu-img" 300 "$bin/bench_qemu_img" --base "$img/raw-sparse.raw" \
    --dir "$run/qemu" --count $n_local --scenario local_hit --name qemu-img \
    --out "$out/local-hit-qemu.json"
  for c in 8; do  # the hit series above is the one-at-a-time case
    step "local burst engine c$c" 300 "$bin/bench_engine" burst "${local_args[@]}" \
      --count $n_burst --concurrency $c --scenario local_burst \
      --out "$out/local-burst-engine-c$c.json"
    step "local burst qemu-img c$c" 300 "$bin/bench_qemu_img" --base "$img/raw-sparse.raw" \
      --dir "$run/qemu" --count $n_burst --concurrency $c --scenario local_burst \
      --name "qemu-img c$c" --out "$out/local-burst-qemu-c$c.json"
  done
  rm -rf "$run/local" "$run/qemu"
fi

# ---------------------------------------------------------------- import (bench/import)
# bench_import (bench/import/) alternates the backend's writer and `rbd import` on one
# raw file, each a process of its own timed from its start, both at 16 writes in flight;
# its per-run lines are folded into the table here, on this run's cluster.
if want import; then
  log "import: Backend writer vs rbd import of one 1 GiB raw file, each its own process timed from start, queue depth 16 both (bench/import)"
  step "import" 600 "$bin/import/bench_import" --conf "$conf" --pool volumes \
    --file "$run/work/import.raw" --make-raw 1024 --runs "$reps"
  # A failed import leaves no run lines: the step is already FAILED, the fold writes none.
  { grep -E '^run [0-9]+ (writer|rbd-import) ' "$run/logs/steps.log" || true; } | $py -c '
import json, sys
ours, theirs = [], []
for line in sys.stdin:
    f = line.split()
    (ours if f[2] == "writer" else theirs).append(float(f[3]) * 1000.0)
series = [{"scenario": "import", "name": n, "unit": "ms", "samples": v, "extra": {}}
          for n, v in (("engine", ours), ("rbd import", theirs)) if v]
json.dump({"series": series}, open(sys.argv[1], "w"), indent=1)' "$out/import.json"
  rm -f "$run/work/import.raw"
fi

# ---------------------------------------------------------------- instant miss
# Time to the first volume of an uncached image: cachemgr's instant miss, its normal miss
# and Cinder's pipeline from the same file; the instant miss's background import against
# `rbd import` (bench/instant_miss.py). Each side a fresh namespace and index.
if want instant; then
  instant_gib=${BENCH_INSTANT_GIB:-$([[ $quick == 1 ]] && echo 1 || echo 1,4)}
  log "instant: first volume of ${instant_gib} GiB images, instant vs miss vs Cinder; import vs rbd import, $reps each"
  step "instant" 3600 $py "$repo/bench/instant_miss.py" --cli "$build/cachemgr/cli/cachemgr" \
    --conf "$conf" --pool volumes --work "$run/work/instant" --sizes-gib "$instant_gib" \
    --reps "$reps" --glance "$endpoint" --out "$out/instant.json"
  rm -rf "$run/work/instant"
fi

# ---------------------------------------------------------------- digest
# Hits and passes that cost a stat (bench/digest_bench.sh): a 4 GiB hit against a 16 MiB
# one, and `evict` / `prefill --all` over 1,000 cached images (200 with BENCH_QUICK)
# for the file source and Glance, with Glance's requests per pass.
if want digest; then
  log "digest: hits by image size, passes over many cached images"
  DIGEST_N=$([[ $quick == 1 ]] && echo 200 || echo 1000) GLANCE_ENDPOINT=$endpoint \
    step digest 1800 bash -c '"$0" "$1" "$2" >"$3"' "$repo/bench/digest_bench.sh" \
    "$build/cachemgr/cli/cachemgr" "$run/digest" "$out/digest.txt"
  [[ -f $out/digest.txt ]] && sed 's/^/    /' "$out/digest.txt" >&2
  rm -rf "$run/digest"
fi

# ---------------------------------------------------------------- many hosts on one pool
# bench/multihost_sim.sh: HOSTS (16) processes with their own host_id, index and
# conversion dir create, delete and evict on one namespace of "volumes" for SIM_SECONDS
# (60), file source of 8 small images, max_count 4; before that, the OSD ops of a single
# hit, miss, pass and delete on this quiet cluster. Its lines go to out/sim16.txt, its
# series to out/sim16.json.
if want sim16; then
  log "sim16: ${HOSTS:-16} hosts on one pool for ${SIM_SECONDS:-60}s, and the round trips of one create, miss and pass"
  step sim16 400 bash -c '"$0" "$1" "$2" "$3" "$4" >"$5"' "$repo/bench/multihost_sim.sh" \
    "$build/cachemgr/cli/cachemgr" "$conf" "$run/sim" "$out/sim16.json" "$out/sim16.txt"
  [[ -f $out/sim16.txt ]] && sed 's/^/    /' "$out/sim16.txt" >&2
fi

# ---------------------------------------------------------------- report
elapsed=$(( $(date +%s) - started ))
failed_json=$(printf '%s\n' "${failures[@]+"${failures[@]}"}" | $py -c \
  'import json, sys; print(json.dumps([l for l in sys.stdin.read().splitlines() if l]))')
steps_json=$($py -c 'import json, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines() if l] if len(sys.argv) > 1 else []
print(json.dumps([{"name": n, "s": float(t), "cpu_s": float(c), "ok": st == "ok"}
                  for n, t, c, st in rows]))' \
  $([[ -f $run/steps.tsv ]] && echo "$run/steps.tsv"))
cat >"$run/meta.json" <<EOF
{"date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "nproc": $(nproc),
 "cpu": "$(lscpu | sed -n 's/^Model name: *//p' | head -n1)",
 "kernel": "$(uname -r)", "ceph": "$(ceph --version | awk '{print $3}')",
 "commit": "$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)",
 "quick": $([[ $quick == 1 ]] && echo true || echo false), "scenarios": "$only",
 "reps": $reps, "miss_reps": $miss_reps, "elapsed_s": $elapsed, "failed": $failed_json,
 "loadavg_start": "$load_start", "loadavg_end": "$(cut -d' ' -f1-3 /proc/loadavg)",
 "steps": $steps_json}
EOF
# A quick run's figures are not the record: they never replace bench/results/latest.*.
if [[ $quick == 1 && $(realpath -m "$results") == "$(realpath -m "$repo/bench/results")" ]]; then
  results=$repo/bench/results/quick  # gitignored
fi
mkdir -p "$results"
# report.py exits 3 when a goal FAILED (a step feeding it failed), 2 on inconsistent results.
report_rc=0
$py "$repo/bench/report.py" --in "$out" --meta "$run/meta.json" \
  --json "$results/latest.json" --png "$results/latest.png" || report_rc=$?
log "done in ${elapsed}s (before the report); results in $results"
(( ${#failures[@]} )) && log "failed steps: ${failures[*]}"
(( report_rc == 0 )) || { log "report: exit $report_rc"; exit "$report_rc"; }
# A failed step that no goal reads (digest) still fails the run.
(( ${#failures[@]} == 0 )) || exit 1

#!/usr/bin/env bash
# bench/digest_bench.sh: what a hit and a pass with nothing to do cost, one process per
# command as operators run them (issue 14).
#   - a CLI hit on a cached 4 GiB image against one on a cached 16 MiB image (file
#     source, local backend): the kept digests make both a stat, so within 1.5x;
#   - `evict` and `prefill --all` over N cached images with nothing to do (N=1000), for
#     the file source and, when GLANCE_ENDPOINT is set, for Glance, with the Glance
#     requests of the pass printed beside it.
#
#   bench/digest_bench.sh CACHEMGR_BINARY WORK_DIR        (run.sh runs it as "digest")
# Environment: GLANCE_ENDPOINT (unset: the Glance rows are skipped), DIGEST_N (1000),
# DIGEST_HITS (5). Prints one "name value unit" line per figure on stdout.
set -euo pipefail
cli=$1
work=$2
n=${DIGEST_N:-1000}
hits=${DIGEST_HITS:-5}
rm -rf "$work"
mkdir -p "$work"/{img,root,conv}

config() {  # config SOURCE_YAML NAME
  cat >"$work/$2.yaml" <<YAML
index: $work/$2.db
backend:
  type: local
  local:
    root: $work/root/$2
source:
$1
conversion:
  dir: $work/conv
YAML
  mkdir -p "$work/root/$2"
  echo "$work/$2.yaml"
}
ms_of() {  # ms_of CMD...: wall-clock milliseconds of one run
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# ---- hits: 4 GiB against 16 MiB (the 4 GiB file is sparse, with data at both ends)
truncate -s 4G "$work/img/big"
head -c 16M /dev/urandom | dd of="$work/img/big" conv=notrunc status=none
head -c 16M /dev/urandom | dd of="$work/img/big" bs=1M seek=4080 conv=notrunc status=none
head -c 16M /dev/urandom >"$work/img/small"
cfg=$(config "  type: file
  file:
    dir: $work/img" hits)
"$cli" --config "$cfg" prefill big small >/dev/null
for id in big small; do
  for i in $(seq 1 "$hits"); do
    ms_of "$cli" --config "$cfg" create "$id" "vol-$id-$i"
  done | median >"$work/hit-$id"
done
big=$(cat "$work/hit-big") small=$(cat "$work/hit-small")
echo "hit_4g_ms $big ms"
echo "hit_16m_ms $small ms"
awk -v b="$big" -v s="$small" 'BEGIN {printf "hit_ratio %.2f x (limit 1.5)\n", (s > 0 ? b / s : 0)}'

# ---- passes over N cached images with nothing to do: file source
mkdir -p "$work/many"
for i in $(seq -w 1 "$n"); do head -c 64K /dev/urandom >"$work/many/img-$i"; done
cfg=$(config "  type: file
  file:
    dir: $work/many" many)
"$cli" --config "$cfg" prefill --all --concurrency 4 >/dev/null
echo "file_prefill_all_ms $(ms_of "$cli" --config "$cfg" prefill --all) ms ($n images, limit 1000)"
echo "file_evict_ms $(ms_of "$cli" --config "$cfg" evict) ms ($n images, limit 1000)"

# ---- the same against Glance
if [[ -n ${GLANCE_ENDPOINT:-} ]]; then
  head -c 64K /dev/urandom >"$work/g.raw"
  # Uploaded 8 at a time (untimed set-up: one by one it took minutes of the bench).
  upload_one() {
    local id
    id=$(curl -sf -X POST "$GLANCE_ENDPOINT/v2/images" -H 'Content-Type: application/json' \
      -d '{"name":"digest-bench","disk_format":"raw","container_format":"bare"}' |
      jq -r .id) && [[ -n $id && $id != null ]] &&
      curl -sf -X PUT "$GLANCE_ENDPOINT/v2/images/$id/file" \
        -H 'Content-Type: application/octet-stream' --data-binary @"$work/g.raw" >/dev/null
  }
  export -f upload_one
  export GLANCE_ENDPOINT work
  seq 1 "$n" | xargs -P 8 -I{} bash -c upload_one ||
    { echo "digest: an upload to Glance failed" >&2; exit 1; }
  cfg=$(config "  type: glance
  glance:
    endpoint: $GLANCE_ENDPOINT" glance)
  "$cli" --config "$cfg" prefill --all --filter . --concurrency 8 >/dev/null || true
  echo "glance_prefill_all_ms $(ms_of "$cli" --config "$cfg" prefill --all) ms ($n images, limit 1000)"
  t0=$(date +%s%N)
  reqs=$("$cli" --config "$cfg" --json evict | python3 -c 'import json,sys; print(json.load(sys.stdin)["source_requests"])')
  echo "glance_evict_ms $((($(date +%s%N) - t0) / 1000000)) ms ($n images, limit 1000)"
  echo "glance_requests_per_pass $reqs requests"
fi

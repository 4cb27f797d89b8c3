#!/usr/bin/env bash
# The main job end to end on the embedded default (local directory backend, a
# directory of image files as the source; no Ceph, no Glance):
#   make a qcow2 image with data in it, prefill it, make volumes from it, check that
#   each volume reads back exactly the image's content, then list, show, stats, evict.
# Uses the binaries in $BUILD (default: build). Exits non-zero on any failure.
# Also run by CTest as demo_local (tests/cli/CMakeLists.txt).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
BUILD=${BUILD:-build}
case "$BUILD" in /*) ;; *) BUILD="$here/../$BUILD" ;; esac
CACHEMGR=${CACHEMGR_BIN:-$BUILD/cachemgr/cli/cachemgr}
VOLUMES=${DEMO_VOLUMES:-4}

step() { printf '\n==== %s\n' "$*"; }
fail() { printf '\nDEMO FAILED: %s\n' "$*" >&2; exit 1; }
trap 'rc=$?; [ $rc = 0 ] || printf "\nDEMO FAILED (exit %s) at line %s\n" "$rc" "$LINENO" >&2' EXIT

[ -x "$CACHEMGR" ] || fail "no cachemgr binary at $CACHEMGR (run 'make build' or set BUILD)"
command -v qemu-img >/dev/null || fail "qemu-img not found (Debian package qemu-utils)"

mkdir -p "${TMPDIR:-/tmp}"
work=$(mktemp -d "${TMPDIR:-/tmp}/cachemgr-demo.XXXXXX")
[ -n "${DEMO_KEEP:-}" ] || trap 'rc=$?; rm -rf "$work"; [ $rc = 0 ] || printf "\nDEMO FAILED (exit %s)\n" "$rc" >&2' EXIT
mkdir -p "$work/images" "$work/cache"

step "1. a qcow2 test image with data in it"
image_id=$(cat /proc/sys/kernel/random/uuid)
# 64 MiB disk: 8 MiB of a recognisable pattern at the start, 4 MiB more at 40 MiB, the
# rest holes (qcow2 keeps only the written clusters).
raw="$work/pattern.raw"
truncate -s 64M "$raw"
head -c 8M < <(yes "cachemgr demo image $image_id") | dd of="$raw" conv=notrunc status=none
head -c 4M /dev/urandom | dd of="$raw" bs=1M seek=40 conv=notrunc status=none
qemu-img convert -f raw -O qcow2 "$raw" "$work/images/$image_id"
rm -f "$raw"
qemu-img info "$work/images/$image_id" | sed -n '1,5p'
echo "-- and a second, raw image (16 MiB) that no volume will use"
spare_id=$(cat /proc/sys/kernel/random/uuid)
head -c 16M < <(yes "spare image $spare_id") > "$work/images/$spare_id"

step "2. the config: local backend under $work/cache, file source $work/images"
cat > "$work/cachemgr.yaml" <<YAML
index: $work/index.db
backend:
  type: local
  local:
    root: $work/cache
source:
  type: file
  file:
    dir: $work/images
conversion:
  dir: $work/conversion
cache:
  max_count: 10
log:
  level: warn
YAML
cat "$work/cachemgr.yaml"
export CACHEMGR_CONFIG="$work/cachemgr.yaml"

step "3. doctor"
"$CACHEMGR" doctor

step "4. prefill both images (qcow2 converted to raw, raw streamed)"
"$CACHEMGR" prefill --concurrency 2 "$image_id" "$spare_id"
echo "-- again: the entry is fresh, so it is skipped"
out=$("$CACHEMGR" prefill "$image_id")
echo "$out"
grep -q "skipped" <<<"$out" || fail "second prefill did not skip the fresh entry"
# Last use is kept in whole seconds: the hits below come a second after the fills, so the
# pass of step 10 finds the spare image least recently used, not tied with the other.
sleep 1

step "5. create $VOLUMES volumes and check each one reads back the image"
for i in $(seq 1 "$VOLUMES"); do
  vol="vm-$i-disk"
  json=$("$CACHEMGR" --json create "$image_id" "$vol")
  plan=$(sed -n 's/.*"plan": "\([a-z_]*\)".*/\1/p' <<<"$json")
  ms=$(sed -n 's/.*"ms": \([0-9.]*\).*/\1/p' <<<"$json")
  path="$work/cache/volumes/$vol"
  [ -e "$path" ] || fail "volume $vol: no file at $path"
  if qemu-img compare -q "$work/images/$image_id" "$path"; then verdict="identical to the image"
  else fail "volume $vol: content differs from image $image_id"; fi
  printf '%-10s plan=%-6s %8.1f ms  %s\n' "$vol" "$plan" "$ms" "$verdict"
done
echo "-- a larger volume (--size 128M): the first 64 MiB are the image, the rest zeros"
"$CACHEMGR" create "$image_id" vm-big-disk --size 128M
qemu-img compare -q "$work/images/$image_id" "$work/cache/volumes/vm-big-disk" \
  || fail "vm-big-disk: content differs from the image"
size=$(qemu-img info --output=json "$work/cache/volumes/vm-big-disk" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')
[ "$size" = $((128 << 20)) ] || fail "vm-big-disk: virtual size $size, want $((128 << 20))"
echo "vm-big-disk: 128 MiB, reads back the image"

step "6. list"
"$CACHEMGR" list

step "7. show $image_id"
"$CACHEMGR" show "$image_id"

step "8. stats (and the Prometheus text for node_exporter)"
"$CACHEMGR" stats
"$CACHEMGR" stats --prometheus | grep -E '^cachemgr_(hits|misses)_total'

step "9. verify"
"$CACHEMGR" verify

step "10. evict (the cron/systemd pass) after lowering cache.max_count to 1"
sed -i 's/max_count: 10/max_count: 1/' "$work/cachemgr.yaml"
"$CACHEMGR" evict --dry-run
[ "$("$CACHEMGR" --json list | grep -c '"image_id"')" = 2 ] || fail "the dry run changed the cache"
"$CACHEMGR" evict
"$CACHEMGR" list
"$CACHEMGR" show "$spare_id" >/dev/null 2>&1 && fail "the unused image $spare_id is still cached"
"$CACHEMGR" show "$image_id" >/dev/null || fail "the image in use was evicted"
"$CACHEMGR" delete vm-1-disk
echo "-- volumes made from the image still read it after the pass"
qemu-img compare -q "$work/images/$image_id" "$work/cache/volumes/vm-2-disk" \
  || fail "vm-2-disk: content differs after evict"

step "verdict"
echo "DEMO OK: 2 images cached, $((VOLUMES + 1)) volumes made from one, each identical to it; the unused one evicted"

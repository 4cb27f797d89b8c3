#!/usr/bin/env bash
# bench/import/run.sh [BUILD_DIR] [RUNS]: import throughput of the RBD backend's writer
# against `rbd import`, on a cluster of its own (started in a temp dir, stopped by pid).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build}
runs=${2:-5}
bin=$build/bench/import/bench_import
[[ -x $bin ]] || { echo "build bench_import first ($bin missing)" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/cachemgr-bench-import.XXXXXX")
cleanup() {
  "$root/tests/cluster/ceph-stop.sh" "$work/ceph" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
# Memstore keeps images in RAM: room for two imports of the file at once.
CEPH_MEMSTORE_BYTES=$((8 * 1024 * 1024 * 1024)) "$root/tests/cluster/ceph-start.sh" "$work/ceph"
"$bin" --conf "$work/ceph/ceph.conf" --file "$work/mix.raw" --make-raw 1024 --runs "$runs"

#!/usr/bin/env bash
# Runs every test: CTest starts and stops the Ceph cluster and the Glance API itself
# (fixtures in tests/cluster/), so this is all `make test` needs.
set -uo pipefail
BUILD=${BUILD:-build}
cd "$(dirname "$0")/.."
start=$(date +%s)
ctest --test-dir "$BUILD" --output-on-failure --timeout 900
rc=$?
echo "tests: exit $rc after $(( $(date +%s) - start )) s"
exit $rc

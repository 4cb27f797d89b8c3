#!/usr/bin/env bash
# The Debian packages end to end: builds cachemgr and libcachemgr-dev from the current
# source tree (tools/build-debs.sh copies the tree; nothing is written into it), runs
# lintian (any error tag fails), unpacks both with dpkg -x into a temporary root, checks
# what they hold, runs examples/demo.sh with the unpacked /usr/bin/cachemgr, and builds
# tests/install/consumer against the unpacked libcachemgr-dev.
# The unpacked tool finds the unpacked libcachemgr through its RUNPATH
# ($ORIGIN/../lib/<multiarch>); LD_LIBRARY_PATH is not set, and ldd must show it.
#   deb_test.sh WORK_DIR
# Exit 77 (skipped) when the packaging tools are not installed (`make deb-deps`).
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:?usage: deb_test.sh WORK_DIR}

for tool in dpkg-buildpackage dh lintian help2man qemu-img; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool not installed (make deb-deps)"; exit 77; }
done

fail() { echo "FAIL: $*" >&2; exit 1; }
rm -rf "$work"
mkdir -p "$work/tmp"
work=$(cd "$work" && pwd)
out=$work/out
root=$work/root
export TMPDIR=$work/tmp

echo "==== build the packages"
# noopt (-O0): the packages are built as `make deb` builds them (same rules, same
# hardening flags but the fortify ones, which need optimisation) in about 40% less
# compile time; what this test checks does not depend on the optimisation level.
# Not niced: under ctest -j a niced compile beside the other tests got almost no CPU.
DEB_NICE=0 DEB_BUILD_OPTIONS="noopt ${DEB_BUILD_OPTIONS:-}" JOBS=${JOBS:-2} "$src/tools/build-debs.sh" "$out"
version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
deb_tool=$out/cachemgr_${version}_$arch.deb
deb_dev=$out/libcachemgr-dev_${version}_$arch.deb
changes=$out/cachemgr_${version}_$arch.changes
for f in "$deb_tool" "$deb_dev" "$changes"; do [ -f "$f" ] || fail "not built: $f"; done

echo "==== lintian"
lintian --display-info --no-tag-display-limit "$changes" 2>&1 | tee "$work/lintian.log" || true
errors=$(grep -c '^E: ' "$work/lintian.log" || true)
warnings=$(grep -c '^W: ' "$work/lintian.log" || true)
echo "lintian: $errors error(s), $warnings warning(s)"
[ "$errors" = 0 ] || fail "lintian reported errors (see above)"

echo "==== what the packages hold"
dpkg-deb --info "$deb_tool"
dpkg-deb --contents "$deb_tool"
dpkg-deb --contents "$deb_dev"
dpkg-deb --ctrl-tarfile "$deb_tool" | tar -xOf - ./conffiles > "$work/conffiles"
grep -qx /etc/cachemgr/cachemgr.yaml "$work/conffiles" \
  || fail "/etc/cachemgr/cachemgr.yaml is not a conffile: $(cat "$work/conffiles")"
dpkg-deb -f "$deb_dev" Depends | grep -q "cachemgr (= $version)" \
  || fail "libcachemgr-dev does not depend on cachemgr (= $version)"
dpkg-deb -f "$deb_tool" Depends | grep -q qemu-utils || fail "cachemgr does not depend on qemu-utils"

dpkg -x "$deb_tool" "$root"
dpkg -x "$deb_dev" "$root"
lib=$root/usr/lib/$multiarch
for f in usr/bin/cachemgr etc/cachemgr/cachemgr.yaml \
         lib/systemd/system/cachemgr-evict.service lib/systemd/system/cachemgr-evict.timer \
         usr/share/doc/cachemgr/examples/cachemgr-evict usr/share/doc/cachemgr/copyright \
         usr/share/man/man1/cachemgr.1.gz \
         usr/include/cachemgr/cache.h usr/include/cachemgr/config.h \
         usr/include/cachemgr/logging.h usr/include/cachemgr/export.h \
         usr/lib/$multiarch/cmake/cachemgr/cachemgrConfig.cmake \
         usr/lib/$multiarch/cmake/cachemgr/cachemgrConfigVersion.cmake \
         usr/lib/$multiarch/cmake/cachemgr/cachemgrTargets.cmake; do
  [ -f "$root/$f" ] || fail "missing in the unpacked packages: /$f"
done
[ -d "$root/var/lib/cachemgr" ] || fail "missing /var/lib/cachemgr"
# The index migrations are compiled into libcachemgr: nothing reads them at run time.
[ ! -e "$root/usr/share/cachemgr" ] \
  || fail "/usr/share/cachemgr is shipped: $(find "$root/usr/share/cachemgr")"
cmp "$src/examples/cachemgr.yaml" "$root/etc/cachemgr/cachemgr.yaml" \
  || fail "/etc/cachemgr/cachemgr.yaml is not examples/cachemgr.yaml"
ls "$lib"/libcachemgr.so.0* >/dev/null 2>&1 || fail "no libcachemgr.so.0 in $lib"
[ -L "$lib/libcachemgr.so" ] || fail "no libcachemgr.so link (libcachemgr-dev)"
dpkg-deb --contents "$deb_tool" | grep -q 'libcachemgr\.so$' \
  && fail "the unversioned libcachemgr.so link is in cachemgr, not in libcachemgr-dev"
zcat "$root/usr/share/man/man1/cachemgr.1.gz" | grep -q '^\.SH' || fail "cachemgr.1 has no sections"
zcat "$root/usr/share/man/man1/cachemgr.1.gz" | grep -q 'prefill' \
  || fail "cachemgr.1 does not list the subcommands"

echo "==== the unpacked tool loads the unpacked library (RUNPATH, no LD_LIBRARY_PATH)"
unset LD_LIBRARY_PATH
ldd "$root/usr/bin/cachemgr" | grep libcachemgr
resolved=$(ldd "$root/usr/bin/cachemgr" | sed -n 's/^[[:space:]]*libcachemgr\.so\.0 => \(.*\) (0x.*/\1/p')
[ -n "$resolved" ] && [ "$(realpath "$resolved")" = "$(realpath "$lib/libcachemgr.so.0")" ] \
  || fail "unpacked cachemgr does not resolve libcachemgr from $lib (ldd: '$resolved')"
v=$("$root/usr/bin/cachemgr" --version)
echo "$v"
[ "$v" = "cachemgr ${version%-*}" ] || fail "cachemgr --version says '$v'"

echo "==== examples/demo.sh with the unpacked cachemgr"
CACHEMGR_BIN=$root/usr/bin/cachemgr TMPDIR=$work/tmp "$src/examples/demo.sh"

echo "==== an outside CMake project against the unpacked libcachemgr-dev"
cmake -S "$src/tests/install/consumer" -B "$work/consumer" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$root/usr" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
found=$(sed -n 's/^cachemgr_DIR:PATH=//p' "$work/consumer/CMakeCache.txt")
[ "$found" = "$lib/cmake/cachemgr" ] || fail "cachemgr was found in '$found', not in $lib"
nice -n 10 cmake --build "$work/consumer"
"$work/consumer/consumer" | tee "$work/consumer.out"
grep -qx 'max_count=7' "$work/consumer.out" || fail "the consumer did not run"

rm -rf "$work"
echo "deb test passed: lintian $errors error(s), $warnings warning(s)"

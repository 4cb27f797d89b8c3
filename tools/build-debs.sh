#!/usr/bin/env bash
# Builds the Debian packages (cachemgr, libcachemgr-dev, and the source package) from
# this source tree, committed or not, into OUTDIR with dpkg-buildpackage and debhelper.
# Nothing is written into the tree or beside it: the tree is copied into a temporary
# directory, the orig tarball is made from the copy (without debian/), and the results
# are moved to OUTDIR.
#   tools/build-debs.sh OUTDIR
# Variables: JOBS (parallel compile jobs, default 2), CMAKE_CXX_COMPILER_LAUNCHER
# (e.g. ccache; used when set), DEB_BUILD_OPTIONS (added to), DEB_NICE (nice level of
# the build, default 10; the package test runs it at 0 beside other tests).
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: build-debs.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
case "$out/" in "$src"/build*/* | "$src"/_build*/*) ;;  # git-ignored build dirs are fine
  "$src"/*) echo "build-debs.sh: OUTDIR $out is inside the source tree" >&2; exit 2 ;; esac

version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)
upstream=${version%-*}
project=$(sed -n 's/^project(cachemgr VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
[ "$upstream" = "$project" ] || {
  echo "build-debs.sh: debian/changelog says $upstream, CMakeLists.txt says $project" >&2
  exit 2
}

mkdir -p "${TMPDIR:-/tmp}"
work=$(mktemp -d "${TMPDIR:-/tmp}/cachemgr-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
tree=$work/cachemgr-$upstream
mkdir -p "$tree"

# The files of the tree: git's list (tracked and new, not ignored; deleted ones left
# out) in a git checkout, else everything but build dirs.
if [ "$(git -C "$src" rev-parse --show-toplevel 2>/dev/null)" = "$src" ]; then
  (cd "$src" && git ls-files -z -c -o --exclude-standard |
     while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done) |
    tar -C "$src" --null -T - -cf - | tar -C "$tree" -xf -
else
  tar -C "$src" --exclude=./.git --exclude='./build*' --exclude='./_build*' \
      --exclude=./out --exclude=./.cache -cf - . | tar -C "$tree" -xf -
fi

echo "== orig tarball cachemgr_$upstream.orig.tar.xz"
tar -C "$work" --exclude="cachemgr-$upstream/debian" --sort=name --owner=0 --group=0 \
    --numeric-owner -cJf "$work/cachemgr_$upstream.orig.tar.xz" "cachemgr-$upstream"

echo "== dpkg-buildpackage $version"
export DEB_BUILD_OPTIONS="parallel=${JOBS:-2} ${DEB_BUILD_OPTIONS:-}"
# ccache: paths under the (new each time) copy are hashed relative to it, so a rebuild
# from another copy still hits the cache.
case "${CMAKE_CXX_COMPILER_LAUNCHER:-}" in
  *ccache*) export CCACHE_BASEDIR=$tree CCACHE_NOHASHDIR=1 ;;
esac
(cd "$tree" && nice -n "${DEB_NICE:-10}" dpkg-buildpackage -us -uc)

for f in "$work"/*; do [ -f "$f" ] && mv -f "$f" "$out/"; done
echo "== built into $out:"
ls -1 "$out"

#!/bin/sh
# Installs the built project into a temporary prefix, then configures, builds and runs
# an outside project that finds it with find_package(cachemgr) and links
# cachemgr::cachemgr.
# Usage: install_test.sh BUILD_DIR CONSUMER_SOURCE_DIR WORK_DIR [CMAKE [SANITIZE]]
# SANITIZE: the sanitizers the library was built with; the consumer links them too.
set -eu
build_dir=$1
consumer_src=$2
work=$3
cmake=${4:-cmake}
sanitize=${5:-}

rm -rf "$work"
mkdir -p "$work"
prefix=$work/prefix

echo "== install into $prefix"
"$cmake" --install "$build_dir" --prefix "$prefix"

# Only public headers are installed (with the generated export.h): a private one would
# leak the engine's internals.
for h in "$prefix"/include/cachemgr/*.h; do
  case $(basename "$h") in
    cache.h|config.h|error.h|options.h|logging.h|export.h) ;;
    *) echo "unexpected installed header: $h" >&2; exit 1 ;;
  esac
done
test -f "$prefix/include/cachemgr/cache.h"
test -f "$prefix/include/cachemgr/logging.h"
test -f "$prefix/include/cachemgr/export.h"
# Nothing the library does not read at run time: the schema migrations are compiled in.
if [ -e "$prefix/share/cachemgr" ]; then
  echo "unexpected install of $prefix/share/cachemgr (the migrations are compiled in):" >&2
  find "$prefix/share/cachemgr" >&2
  exit 1
fi

echo "== configure the consumer"
# The prefix is the only place to find cachemgr; the build tree's package registry is off.
"$cmake" -S "$consumer_src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
  ${sanitize:+"-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=$sanitize"}
found=$(sed -n 's/^cachemgr_DIR:PATH=//p' "$work/build/CMakeCache.txt")
case $found in
  "$prefix"/*) ;;
  *) echo "cachemgr was found in '$found', not in the prefix $prefix" >&2; exit 1 ;;
esac

echo "== build the consumer"
"$cmake" --build "$work/build"

echo "== run the consumer"
out=$("$work/build/consumer")
echo "$out"
echo "$out" | grep -qx 'max_count=7'
echo "$out" | grep -q 'error=config: consumer:1: cache.max_sise_gb: unknown key; did you mean max_size_gb?'
# It ran against the installed library, not the one in the build tree.
if command -v ldd >/dev/null 2>&1; then
  ldd "$work/build/consumer" | grep libcachemgr | grep -q "$prefix/" || {
    echo "consumer is not linked against $prefix:" >&2
    ldd "$work/build/consumer" >&2
    exit 1
  }
fi

echo "== the installed tool loads the installed library"
# (its RPATH is $ORIGIN/../lib, so the prefix can live anywhere)
if command -v ldd >/dev/null 2>&1 && ldd "$prefix/bin/cachemgr" | grep -q libcachemgr; then
  ldd "$prefix/bin/cachemgr" | grep libcachemgr | grep -q "$prefix/" || {
    echo "installed cachemgr does not resolve libcachemgr from $prefix:" >&2
    ldd "$prefix/bin/cachemgr" >&2
    exit 1
  }
fi
rc=0
"$prefix/bin/cachemgr" --help >/dev/null 2>&1 || rc=$?
if [ "$rc" -eq 127 ]; then
  echo "installed cachemgr cannot start (exit 127)" >&2
  exit 1
fi

# The Python module, when built: in lib/python3/dist-packages (where Debian's python3
# looks), importable from there, and loading the installed library.
module=$(ls "$prefix"/lib/python3/dist-packages/cachemgr*.so 2>/dev/null | head -n 1 || true)
if [ -n "$module" ] && [ -z "$sanitize" ]; then
  echo "== the installed Python module imports"
  PYTHONPATH="$prefix/lib/python3/dist-packages" /usr/bin/python3 -c \
    'import cachemgr, sys; assert cachemgr.__file__.startswith(sys.argv[1]), cachemgr.__file__' \
    "$prefix/"
  if command -v ldd >/dev/null 2>&1 && ldd "$module" | grep -q libcachemgr; then
    ldd "$module" | grep libcachemgr | grep -q "$prefix/" || {
      echo "installed module does not resolve libcachemgr from $prefix:" >&2
      ldd "$module" >&2
      exit 1
    }
  fi
fi

echo "== the build tree's package: the consumer again, with cachemgr_DIR=$build_dir"
"$cmake" -S "$consumer_src" -B "$work/build-tree" -DCMAKE_BUILD_TYPE=Release \
  -Dcachemgr_DIR="$build_dir" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
  ${sanitize:+"-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=$sanitize"}
"$cmake" --build "$work/build-tree"
out=$("$work/build-tree/consumer")
echo "$out" | grep -qx 'max_count=7'
if command -v ldd >/dev/null 2>&1 && ldd "$work/build-tree/consumer" | grep -q libcachemgr; then
  ldd "$work/build-tree/consumer" | grep libcachemgr | grep -q "$build_dir/" || {
    echo "build-tree consumer is not linked against $build_dir:" >&2
    ldd "$work/build-tree/consumer" >&2
    exit 1
  }
fi

rm -rf "$work"
echo "install test passed"

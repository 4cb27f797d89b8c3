#!/usr/bin/env bash
# Runs every test suite; this is all `make test` needs.
#
#   1. main:  every CTest test of $BUILD (CTest starts and stops Ceph and Glance itself
#             through the fixtures in tests/cluster/), PARALLEL tests at a time (most of
#             them wait on Ceph, Glance or sleeps; the few that must not overlap say so
#             with RUN_SERIAL or RESOURCE_LOCK).
#   2. asan:  a clang build in $BUILD-asan with ASan+UBSan (and -DCACHEMGR_FUZZ=ON, so
#             the same build also holds the libFuzzer targets) running the unit, policy,
#             engine and local-contract tests, plus any test labelled "asan".
#             Sanitizer suites leave out tests that need the ceph/glance fixtures
#             (the main suite runs those) and tests labelled "nosan" (a load whose code
#             the others already run).
#   3. tsan:  a clang build in $BUILD-tsan with TSan running the concurrency tests
#             (label "concurrency", or a name that says concurrency/single flight/race,
#             and engine_local_test, which holds the single-flight cases).
#   4. fuzz:  each libFuzzer target of $BUILD-asan for FUZZ_SECONDS over its seed corpus
#             in tests/fuzz/corpus/<target>/.
# Only the targets a suite runs are built in the sanitizer dirs, and they are built at
# nice 19 while the main suite runs, so the run fits well within 60 minutes on 2 cores. The last line is `summary: N passed, N failed` (tests
# across all suites); the exit status is non-zero if anything failed.
#
# Variables: BUILD (main build dir), JOBS, PARALLEL (tests the main suite runs at once,
# default 3; 1 runs them one by one), SAN_PARALLEL (tests a sanitizer suite runs at once,
# default 2: they are CPU-bound and each has its own temporary dirs), FUZZ_SECONDS (default 20),
# SUITES (default "main asan tsan fuzz": a subset runs only those).
set -uo pipefail
BUILD=${BUILD:-build}
JOBS=${JOBS:-$(nproc)}
PARALLEL=${PARALLEL:-3}
SAN_PARALLEL=${SAN_PARALLEL:-2}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
SUITES=${SUITES:-main asan tsan fuzz}
cd "$(dirname "$0")/.."
src=$(pwd)
BUILD=$(mkdir -p "$BUILD" && cd "$BUILD" && pwd)
ASAN_BUILD=${ASAN_BUILD:-$BUILD-asan}
TSAN_BUILD=${TSAN_BUILD:-$BUILD-tsan}
results_dir=$BUILD/tests/reliability
results_tsv=$results_dir/results.tsv
supp=$src/tests/reliability/sanitizers
# Sanitizer builds: -O1 with line tables only, what the reports need (function, file,
# line), at about 40% less compile time than RelWithDebInfo's -O2 -g on this code.
SAN_CFLAGS="-O1 -gline-tables-only -DNDEBUG"

start=$(date +%s)
total_passed=0
total_failed=0
suite_lines=()

wants() { [[ " $SUITES " == *" $1 "* ]]; }

# count SUITE PASSED FAILED NOTE
count() {
  total_passed=$((total_passed + $2))
  total_failed=$((total_failed + $3))
  suite_lines+=("$(printf '  %-6s %4d passed, %4d failed  %s' "$1" "$2" "$3" "$4")")
}

# ctest_suite NAME LOG CTEST_ARGS...: runs ctest, shows its output, counts its tests.
ctest_suite() {
  local name=$1 log=$2
  shift 2
  local t0 rc
  t0=$(date +%s)
  ctest "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  local line failed total
  line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1)
  if [[ -n $line ]]; then
    failed=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
    total=$(sed -E 's/.* failed out of ([0-9]+).*/\1/' <<<"$line")
    if (( rc != 0 && failed == 0 )); then failed=1; fi  # e.g. a timeout of ctest itself
    count "$name" $((total - failed)) "$failed" \
      "${build_note:-}ctest exit $rc, $(( $(date +%s) - t0 )) s"
  else
    count "$name" 0 1 "ctest found or ran no tests (exit $rc)"
  fi
}

# select_tests BUILD_DIR DIRS_REGEX LABELS_REGEX NAME_REGEX: names of the tests of
# BUILD_DIR defined under a matching source folder, carrying a matching label, or
# with a matching name; one per line as "name<TAB>executable". Tests that need the
# ceph or glance fixture are left out: the main suite runs them, and under a sanitizer
# they would start a second cluster and take most of the time budget (engine_rbd_test
# alone runs ~10 minutes uninstrumented).
select_tests() {
  ctest --test-dir "$1" --show-only=json-v1 2>/dev/null |
    /usr/bin/python3 -c '
import json, os, re, sys
build, dirs, labels, names = sys.argv[1:5]
doc = json.load(sys.stdin)
for t in doc.get("tests", []):
    props = {p["name"]: p["value"] for p in t.get("properties", [])}
    wd = os.path.relpath(props.get("WORKING_DIRECTORY", build), build)
    labs = props.get("LABELS", [])
    if {"ceph", "glance"} & set(props.get("FIXTURES_REQUIRED", [])):
        continue
    if "nosan" in labs:  # a load (thousands of fills) whose code other tests already run
        continue
    if ((dirs and re.fullmatch(dirs, wd)) or (names and re.search(names, t["name"]))
            or (labels and any(re.fullmatch(labels, l) for l in labs))):
        cmd = t.get("command") or [""]
        print(t["name"] + "\t" + cmd[0])
' "$1" "$2" "$3" "$4"
}

# sanitizer_build NAME DIR SANITIZE FUZZ DIRS_REGEX LABELS_REGEX NAME_REGEX [EXTRA_TARGETS]:
# configures DIR and builds what the suite runs (and EXTRA_TARGETS); sets `tests` (the
# suite's test names). Returns non-zero, having counted the failure, if nothing can run.
sanitizer_build() {
  local name=$1 dir=$2 sanitize=$3 fuzz=$4
  local log=$dir/run-all-$name.log
  mkdir -p "$dir"
  echo "==== $name: configure $dir (clang, -fsanitize=$sanitize)"
  if ! CC=clang CXX=clang++ cmake -S "$src" -B "$dir" -DCMAKE_BUILD_TYPE=None \
        -DCMAKE_C_FLAGS="$SAN_CFLAGS" -DCMAKE_CXX_FLAGS="$SAN_CFLAGS" \
        -DCACHEMGR_SANITIZE="$sanitize" -DCACHEMGR_FUZZ="$fuzz" \
        -DCACHEMGR_BUILD_BENCH=OFF -DCACHEMGR_BUILD_EXAMPLES=OFF -DCACHEMGR_UNITY_BUILD=ON \
        >"$log" 2>&1; then
    tail -n 30 "$log"
    count "$name" 0 1 "configure failed (see $log)"
    return 1
  fi
  local selected
  selected=$(select_tests "$dir" "$5" "$6" "$7")
  if [[ -z $selected ]]; then
    echo "$name: no tests matched (folders '$5', labels '$6', names '$7')"
    count "$name" 0 1 "no tests matched"
    return 1
  fi
  tests=()
  local targets=("${@:8}") t exe known
  known=$(cmake --build "$dir" --target help 2>/dev/null | sed -n 's/^\.\.\. \([^ ]*\).*/\1/p')
  while IFS=$'\t' read -r t exe; do
    tests+=("$t")
    # cachemgr_add_test names the executable after the test (CTest shows no command for
    # one not built yet); scripts need no build of their own but drive the cachemgr tool.
    if [[ -n $exe && $exe != "$dir"/* ]]; then
      [[ " ${targets[*]} " == *" cachemgr_cli "* ]] || targets+=(cachemgr_cli)
      continue
    fi
    grep -qx -- "$(basename "${exe:-$t}")" <<<"$known" && targets+=("$(basename "${exe:-$t}")")
  done <<<"$selected"
  echo "==== $name: building ${targets[*]}"
  # Keep going past a target that fails to build: the others still run, and a test whose
  # executable is missing fails in ctest ("Could not find executable").
  if ! cmake --build "$dir" -j "$JOBS" --target "${targets[@]}" -- -k >>"$log" 2>&1; then
    grep -E 'error:|Error [0-9]' "$log" | head -n 30
    count "$name" 0 1 "build of some targets failed (see $log)"
  fi
}

# sanitizer_suite NAME DIR SANITIZE FUZZ DIRS_REGEX LABELS_REGEX NAME_REGEX: builds (what
# the early build left to do) and runs the suite.
sanitizer_suite() {
  local name=$1 dir=$2 t0 tests
  t0=$(date +%s)
  sanitizer_build "$@" || return 1
  local regex build_note="configure+build $(( $(date +%s) - t0 )) s, "
  regex="^($(printf '%s|' "${tests[@]}" | sed -e 's/|$//' -e 's/[.+]/\\&/g'))\$"
  echo "==== $name: ctest -R '$regex'"
  ctest_suite "$name" "$dir/run-all-$name-ctest.log" --test-dir "$dir" -R "$regex" \
    --output-on-failure --timeout 900 -j "$SAN_PARALLEL"
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$supp/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:suppressions=$supp/ubsan.supp}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$supp/tsan.supp}

asan_dirs='tests/(unit|policy|engine|contract/local|contract/faulty|fuzz)(/.*)?'
tsan_labels='concurrency|tsan'
tsan_names='(concurren|single_?flight|race|parallel|threads|^engine_local_test$)'
fuzz_targets=()
for corpus in "$src"/tests/fuzz/corpus/*/; do
  fuzz_targets+=("fuzz_$(basename "$corpus")")
done

# The sanitizer builds compile while the main suite runs, at the lowest CPU priority:
# the main suite mostly waits on Ceph, Glance and sleeps, and what it does use the CPU
# for always goes first. Their suites then find the builds done. Their output goes to
# their logs; a failure is counted by the suite, which builds again.
early_pid=""
if wants main && { wants asan || wants tsan || wants fuzz; }; then
  (
    exec >"$BUILD/run-all-early-build.log" 2>&1
    renice -n 19 -p $BASHPID >/dev/null  # its children inherit it
    count() { :; }  # failures are counted by the suites, which build again
    if wants asan || wants fuzz; then
      extra=()
      wants fuzz && extra=("${fuzz_targets[@]}")
      sanitizer_build asan "$ASAN_BUILD" address,undefined ON "$asan_dirs" 'asan|unit|policy' '' \
        "${extra[@]}"
    fi
    if wants tsan; then
      sanitizer_build tsan "$TSAN_BUILD" thread OFF '' "$tsan_labels" "$tsan_names"
    fi
  ) &
  early_pid=$!
  kill_tree() { local c; for c in $(pgrep -P "$1"); do kill_tree "$c"; done; kill "$1" 2>/dev/null; }
  trap '[[ -n $early_pid ]] && kill_tree "$early_pid"' EXIT
  echo "==== sanitizer builds: started beside the main suite, at nice 19 (log: $BUILD/run-all-early-build.log)"
fi
# waits for the early builds (before a suite builds in the same folder)
early_done() {
  [[ -n $early_pid ]] || return 0
  local t0
  t0=$(date +%s)
  wait "$early_pid"
  echo "==== sanitizer builds: done ($(( $(date +%s) - t0 )) s waited after the main suite)"
  early_pid=""
}

# ---- 1. main
if wants main; then
  rm -f "$results_tsv"
  echo "==== main: ctest -j $PARALLEL on $BUILD"
  ctest_suite main "$BUILD/run-all-main.log" --test-dir "$BUILD" --output-on-failure \
    --timeout 900 -j "$PARALLEL"
fi

early_done

# ---- 2. ASan + UBSan (this build also holds the fuzz targets)
asan_ok=0
if wants asan || wants fuzz; then
  if wants asan; then
    sanitizer_suite asan "$ASAN_BUILD" address,undefined ON "$asan_dirs" 'asan|unit|policy' '' \
      && asan_ok=1
  else
    asan_ok=1
  fi
fi

# ---- 3. TSan
if wants tsan; then
  sanitizer_suite tsan "$TSAN_BUILD" thread OFF '' "$tsan_labels" "$tsan_names"
fi

# ---- 4. libFuzzer targets
if wants fuzz; then
  log=$ASAN_BUILD/run-all-fuzz.log
  mkdir -p "$ASAN_BUILD"
  if [[ ! -f $ASAN_BUILD/CMakeCache.txt ]] || ! grep -q 'CACHEMGR_FUZZ:BOOL=ON' "$ASAN_BUILD/CMakeCache.txt"; then
    CC=clang CXX=clang++ cmake -S "$src" -B "$ASAN_BUILD" -DCMAKE_BUILD_TYPE=None \
      -DCMAKE_C_FLAGS="$SAN_CFLAGS" -DCMAKE_CXX_FLAGS="$SAN_CFLAGS" \
      -DCACHEMGR_SANITIZE=address,undefined -DCACHEMGR_FUZZ=ON \
      -DCACHEMGR_BUILD_BENCH=OFF -DCACHEMGR_BUILD_EXAMPLES=OFF >"$log" 2>&1
  fi
  echo "==== fuzz: building ${fuzz_targets[*]}"
  if ! cmake --build "$ASAN_BUILD" -j "$JOBS" --target "${fuzz_targets[@]}" >>"$log" 2>&1; then
    grep -E 'error|Error' "$log" | head -n 30
    count fuzz 0 "${#fuzz_targets[@]}" "build failed (see $log)"
  else
    fp=0 ff=0
    for target in "${fuzz_targets[@]}"; do
      name=${target#fuzz_}
      work=$ASAN_BUILD/fuzz-run/$name
      rm -rf "$work"
      mkdir -p "$work/corpus" "$work/artifacts"
      flog=$work/fuzz.log
      echo "==== fuzz: $target for ${FUZZ_SECONDS}s over tests/fuzz/corpus/$name"
      # New inputs go to the scratch corpus (first dir), never into the source tree.
      "$ASAN_BUILD/tests/fuzz/$target" -max_total_time="$FUZZ_SECONDS" -timeout=10 \
        -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
        -artifact_prefix="$work/artifacts/" "$work/corpus" "$src/tests/fuzz/corpus/$name" \
        >"$flog" 2>&1
      frc=$?
      runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$flog" | grep -Eo '[0-9]+$')
      if (( frc == 0 )); then
        fp=$((fp + 1)); verdict=pass
        echo "fuzz: $target ok (${runs:-?} runs)"
      else
        ff=$((ff + 1)); verdict=FAIL
        echo "fuzz: $target FAILED (exit $frc); artifacts in $work/artifacts" >&2
        grep -E -A 30 'ERROR: |==[0-9]+==|uncaught|terminate' "$flog" | head -n 60 >&2
      fi
      if [[ -d $results_dir ]]; then
        printf '%s\t%s\t%s\t%s\t%s\n' \
          "fuzz: $name ($FUZZ_SECONDS s, ASan+UBSan, seed corpus $(ls "$src/tests/fuzz/corpus/$name" | wc -l) files)" \
          "-" "only cachemgr::Error escapes; no crash or sanitizer report" \
          "exit $frc after ${runs:-?} runs" "$verdict" >>"$results_tsv"
      fi
    done
    count fuzz "$fp" "$ff" "${FUZZ_SECONDS}s per target"
  fi
fi

# The results table the reliability tests wrote (and the fuzz rows above).
if [[ -f $results_tsv ]]; then
  "$src/tests/reliability/render-results.sh" "$results_tsv" "$results_dir/RESULTS.md" \
    && cp "$results_dir/RESULTS.md" "$src/tests/reliability/RESULTS.md" \
    && echo "results table: tests/reliability/RESULTS.md ($(($(wc -l <"$results_tsv"))) rows)"
fi

echo "==== suites"
printf '%s\n' "${suite_lines[@]}"
echo "tests: $(( $(date +%s) - start )) s in all"
echo "summary: $total_passed passed, $total_failed failed"
(( total_failed == 0 ))

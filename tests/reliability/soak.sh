#!/usr/bin/env bash
# soak.sh BACKEND [SECONDS]: a prefill loop, an eviction pass every second and two
# creators for SECONDS (default 60) against a cache with max_count 3 and five images.
# No create may fail, no volume may ever lose its parent (each is read back right after
# it is made and all of them again at the end, after many evictions), the limit holds
# at the end, and PRAGMA integrity_check says ok.
source "$(dirname "$0")/lib.sh"
backend=${1:?usage: soak.sh local|rbd [seconds]}
seconds=${2:-${SOAK_SECONDS:-60}}
rel_init "soak-$backend"
new_cache "$WORK/c" "$backend" 3
mkdir -p "$WORK/logs"
# Every process's info log in one file, kept with the work dir when a case fails.
sed -i "s|^  level: warn\$|  level: info\n  file: $WORK/logs/cachemgr.log|" "$CFG"

ids=()
for i in 1 2 3 4 5; do
  id=$(new_uuid)
  fmt=raw
  (( i == 2 )) && fmt=qcow2
  make_image "$id" "$fmt" 8 2
  ids+=("$id")
done
end=$(( $(date +%s) + seconds ))

# failed WHAT RC FILE: notes a failed run (WHAT, its exit status RC, its stderr in FILE) in
# logs/fail with its error line, and puts a crash report, if it printed one, in the log.
failed() {
  echo "$1: exit $2: $(err_line "$3" | cut -c1-200)" >>"$WORK/logs/fail"
  crash_report "$3" "$1" || true
}

creator() {  # creator N: makes volumes until the end; one line per create in made-N
  local n=$1 i=0 id vol rc
  while (( $(date +%s) < end )); do
    i=$((i + 1))
    id=${ids[RANDOM % ${#ids[@]}]}
    vol=soak-$n-$i
    run_logged "$WORK/logs/create-$n.err" --config "$CFG" create "$id" "$vol" >/dev/null
    rc=$?
    if known_librbd_abort "$rc" "$WORK/logs/create-$n.err.last"; then
      librbd_abort_seen "create $vol" "$WORK/logs/create-$n.err.last"
      continue
    fi
    if (( rc != 0 )); then
      failed "create $vol of $id" "$rc" "$WORK/logs/create-$n.err.last"
      continue
    fi
    echo "$vol $id" >>"$WORK/logs/made-$n"
    read_back "$vol" "$id" || echo "read back $vol of $id right after create failed" \
      >>"$WORK/logs/fail"
  done
}
prefiller() {
  local i=0 rc
  while (( $(date +%s) < end )); do
    i=$((i + 1))
    run_logged "$WORK/logs/prefill.err" --config "$CFG" prefill "${ids[i % ${#ids[@]}]}" \
      >/dev/null
    rc=$?
    known_librbd_abort "$rc" "$WORK/logs/prefill.err.last" &&
      { librbd_abort_seen prefill "$WORK/logs/prefill.err.last"; rc=0; }
    # busy (5) is a legitimate answer while a fill is running elsewhere
    (( rc == 0 || rc == 5 )) || failed prefill "$rc" "$WORK/logs/prefill.err.last"
    echo x >>"$WORK/logs/prefills"
  done
}
evictor() {
  local rc
  while (( $(date +%s) < end )); do
    run_logged "$WORK/logs/evict.err" --config "$CFG" evict >/dev/null
    rc=$?
    known_librbd_abort "$rc" "$WORK/logs/evict.err.last" &&
      { librbd_abort_seen evict "$WORK/logs/evict.err.last"; rc=0; }
    (( rc == 0 || rc == 5 )) || failed evict "$rc" "$WORK/logs/evict.err.last"
    echo x >>"$WORK/logs/passes"
    sleep 1
  done
}

pids=()
creator 1 & pids+=($!)
creator 2 & pids+=($!)
prefiller & pids+=($!)
evictor & pids+=($!)
on_exit "kill ${pids[*]}"
for p in "${pids[@]}"; do wait "$p"; done
drop_exit "kill ${pids[*]}"

made=$(cat "$WORK"/logs/made-* 2>/dev/null | wc -l)
fails=$(cat "$WORK/logs/fail" 2>/dev/null | wc -l)
passes=$(cat "$WORK/logs/passes" 2>/dev/null | wc -l)
prefills=$(cat "$WORK/logs/prefills" 2>/dev/null | wc -l)
detail="$made creates, $prefills prefills, $passes eviction passes in ${seconds}s$(librbd_aborts)"
if (( fails == 0 && made > 0 )); then
  record "soak: 2 creators + prefill loop + evict every 1 s, max_count 3" "$backend" \
    "no create, prefill or pass fails; each volume reads back when made" "$detail; 0 failures" 0
else
  record "soak: 2 creators + prefill loop + evict every 1 s, max_count 3" "$backend" \
    "no create, prefill or pass fails; each volume reads back when made" \
    "$detail; $fails failures: $(head -n 2 "$WORK/logs/fail" 2>/dev/null | tr '\n' ';') $(head -n 1 "$WORK/readback.err" 2>/dev/null | cut -c1-200)" 1
fi

# After the churn: every volume still reads its image.
lost=0
while read -r vol id; do
  read_back "$vol" "$id" || { lost=$((lost + 1)); echo "lost: $vol ($id)" >&2; }
done < <(cat "$WORK"/logs/made-* 2>/dev/null)
record "soak: every volume read back after the churn" "$backend" \
  "no volume lost its parent" "$lost of $made volumes lost their parent" "$lost"

cm evict >/dev/null
count=$(ready_count)
limit_ok=$(( ${count:-99} <= 3 ? 0 : 1 ))
left=$(orphans | grep -v '^trash ' | head -n 5 | tr '\n' ';')
[[ -z $left ]] || limit_ok=1
record "soak: limits after a final pass" "$backend" "<= 3 live entries; no orphans" \
  "$count live entries${left:+; orphans: $left}" $limit_ok
ic=$(sql "PRAGMA integrity_check;")
record "soak: index integrity" "$backend" "PRAGMA integrity_check = ok" "${ic:-no answer}" \
  "$([[ $ic == ok ]]; echo $?)"

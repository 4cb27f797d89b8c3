#!/usr/bin/env bash
# ceph-stop.sh DIR: stops the cluster ceph-start.sh made in DIR, by its pid files
# (TERM, then KILL after a few seconds), and removes its data.
set -uo pipefail

[[ $# -eq 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
dir=$1
[[ -d $dir ]] || exit 0

readonly kGraceS=${CEPH_STOP_GRACE_S:-5}
pids=()
for pidfile in "$dir"/run/*.pid; do
  [[ -s $pidfile ]] || continue
  pid=$(cat "$pidfile")
  # Only signal a process that still is the daemon this dir started: pids get reused.
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null \
      | grep -q -- "$dir/ceph.conf"; then
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  fi
done

deadline=$(( $(date +%s) + kGraceS ))
for pid in "${pids[@]}"; do
  while kill -0 "$pid" 2>/dev/null && (( $(date +%s) < deadline )); do
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
done

rm -rf "${dir:?}"/{mon,osd,run,log,crash,monmap,mon.keyring,keyring,ceph.conf}
rmdir "$dir" 2>/dev/null || true
echo "ceph-stop: stopped ${#pids[@]} daemon(s) in $dir"

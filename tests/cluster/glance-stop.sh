#!/usr/bin/env bash
# glance-stop.sh DIR: stops the glance-api glance-start.sh started in DIR, by its pid
# file (TERM to its process group, then KILL after a few seconds), and removes DIR.
set -uo pipefail

[[ $# -eq 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
dir=$1
[[ -d $dir ]] || exit 0
dir=$(cd "$dir" && pwd)

readonly kGraceS=${GLANCE_STOP_GRACE_S:-5}
pidfile=$dir/glance-api.pid
stopped=0
if [[ -s $pidfile ]]; then
  pid=$(cat "$pidfile")
  # Only signal a process that still is the API this dir started: pids get reused.
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null \
      | grep -q -- "$dir/glance-api.conf"; then
    # glance-start.sh ran it under setsid: its pid is the group id of it and its worker.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    deadline=$(( $(date +%s) + kGraceS ))
    while kill -0 -- "-$pid" 2>/dev/null && (( $(date +%s) < deadline )); do
      sleep 0.2
    done
    if kill -0 -- "-$pid" 2>/dev/null; then
      kill -KILL -- "-$pid" 2>/dev/null
      while kill -0 -- "-$pid" 2>/dev/null; do sleep 0.1; done
    fi
    stopped=1
  fi
fi

rm -rf "${dir:?}"/{images,staging,tasks,log,lock,image-cache,policy.d,glance.sqlite,glance-api.conf}
rm -f "$dir"/{glance-api-paste.ini,policy.yaml,endpoint,glance-api.pid}
rmdir "$dir" 2>/dev/null || true
echo "glance-stop: stopped $stopped glance-api in $dir"

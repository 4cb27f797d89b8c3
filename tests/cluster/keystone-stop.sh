#!/usr/bin/env bash
# keystone-stop.sh DIR: stops the keystone keystone-start.sh started in DIR, by its pid
# file (TERM to its process group, then KILL after a few seconds), and removes DIR.
set -uo pipefail

[[ $# -eq 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
dir=$1
[[ -d $dir ]] || exit 0
dir=$(cd "$dir" && pwd)

readonly kGraceS=${KEYSTONE_STOP_GRACE_S:-5}
pidfile=$dir/keystone.pid
stopped=0
if [[ -s $pidfile ]]; then
  pid=$(cat "$pidfile")
  # Only signal a process that still is the server this dir started: pids get reused.
  if kill -0 "$pid" 2>/dev/null && tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null \
      | grep -qx -- "OS_KEYSTONE_CONFIG_FILES=$dir/keystone.conf"; then
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

rm -rf "${dir:?}"/{log,fernet-keys,credential-keys}
rm -f "$dir"/{keystone.conf,keystone.sqlite,keystone.sqlite-wal,keystone.sqlite-shm,keystone.pid,auth_url,admin-password,credentials.env}
rmdir "$dir" 2>/dev/null || true
echo "keystone-stop: stopped $stopped keystone in $dir"

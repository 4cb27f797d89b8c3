#!/usr/bin/env bash
# ceph-start.sh DIR [--cephx]: a throwaway Ceph cluster for tests and benchmarks.
#
# One ceph-mon and one ceph-osd (memstore) on loopback, everything (data, run dir,
# admin sockets, logs, pid files) under DIR. Ports are picked at run time and are never
# the well-known 3300/6789, so a real cluster on the same host is never touched. No mgr:
# RBD does not need one. Pools "volumes" and "images" are created and rbd-initialized.
# Clients use DIR/ceph.conf with client "admin" (and DIR/keyring with --cephx).
#
# Idempotent: if the cluster in DIR already answers, it prints so and exits 0.
# Stop it with ceph-stop.sh DIR (by pid files).
set -euo pipefail

usage() { echo "usage: $0 DIR [--cephx]" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
dir=$1
shift
auth=none
for arg in "$@"; do
  case $arg in
    --cephx) auth=cephx ;;
    *) usage ;;
  esac
done

readonly kTimeoutS=${CEPH_START_TIMEOUT_S:-90}
readonly kMemstoreBytes=${CEPH_MEMSTORE_BYTES:-$((6 * 1024 * 1024 * 1024))}
start_s=$(date +%s.%N)
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf=$dir/ceph.conf

ceph_cmd() { timeout 20 ceph --conf "$conf" --connect-timeout 10 "$@"; }

alive() {  # alive PIDFILE: the process named in PIDFILE runs
  [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

if [[ -f $conf ]] && alive "$dir/run/mon.a.pid" && alive "$dir/run/osd.0.pid" \
   && ceph_cmd -s >/dev/null 2>&1; then
  echo "ceph-start: cluster in $dir already running"
  exit 0
fi
if [[ -e $dir/mon ]]; then
  # Leftovers of a crashed or half-started run: start from scratch.
  "$(dirname "$0")/ceph-stop.sh" "$dir" >/dev/null 2>&1 || true
  mkdir -p "$dir"
fi

fail() {
  echo "ceph-start: $*" >&2
  for log in "$dir"/log/*.log; do
    [[ -f $log ]] || continue
    echo "---- tail of $log" >&2
    tail -n 40 "$log" >&2
  done
  exit 1
}

# shellcheck source-path=SCRIPTDIR source=ports.sh
source "$(dirname "$0")/ports.sh"

mon_port=$(free_port 3300 6789)
# The OSD binds any free port of a window of its own, per run, below the ephemeral range
# (a busy port of it, e.g. another cluster's mon, is skipped).
osd_port_min=$(port_window 200)
osd_port_max=$(( osd_port_min + 200 ))
fsid=$(cat /proc/sys/kernel/random/uuid)

mkdir -p "$dir"/{run,log,mon/a,osd/0}

cat >"$conf" <<EOF
[global]
fsid = $fsid
mon_host = v2:127.0.0.1:$mon_port
mon_initial_members = a
public_addr = 127.0.0.1
ms_bind_msgr1 = false
ms_bind_ipv6 = false
ms_bind_port_min = $osd_port_min
ms_bind_port_max = $osd_port_max
auth_cluster_required = $auth
auth_service_required = $auth
auth_client_required = $auth
run_dir = $dir/run
admin_socket = $dir/run/\$cluster-\$name.asok
log_file = $dir/log/\$cluster-\$name.log
pid_file = $dir/run/\$name.pid
crash_dir = $dir/crash
exporter_sock_dir = $dir/run
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
osd_crush_chooseleaf_type = 0
rbd_default_clone_format = 2
mon_warn_on_insecure_global_id_reclaim_allowed = false

[mon]
mon_data = $dir/mon/\$id
mon_cluster_log_file = $dir/log/\$cluster.log
keyring = $dir/mon/\$id/keyring

[osd]
osd_data = $dir/osd/\$id
osd_objectstore = memstore
memstore_device_bytes = $kMemstoreBytes
osd_max_object_name_len = 256
osd_max_object_namespace_len = 64
keyring = $dir/osd/\$id/keyring
EOF

mon_keyring_args=()
if [[ $auth == cephx ]]; then
  cat >>"$conf" <<EOF

[client]
keyring = $dir/keyring
EOF
  ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$dir/keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
  ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/keyring" >/dev/null
  ceph-authtool --create-keyring "$dir/osd/0/keyring" --gen-key -n osd.0 >/dev/null
  mon_keyring_args=(--keyring "$dir/mon.keyring")
fi

monmaptool --create --fsid "$fsid" --add a "v2:127.0.0.1:$mon_port" "$dir/monmap" >/dev/null
ceph-mon --conf "$conf" --mkfs -i a --monmap "$dir/monmap" "${mon_keyring_args[@]}" \
  >"$dir/log/mkfs-mon.out" 2>&1 || fail "ceph-mon --mkfs failed: $(cat "$dir/log/mkfs-mon.out")"
ceph-mon --conf "$conf" -i a >>"$dir/log/daemon.out" 2>&1 || fail "ceph-mon did not start"

wait_for() {  # wait_for WHAT CMD...: retries CMD until it succeeds or the deadline passes
  local what=$1
  shift
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) - ${start_s%.*} > kTimeoutS )); then
      fail "$what not within ${kTimeoutS}s"
    fi
    sleep 0.5
  done
}

wait_for "monitor answering" ceph_cmd mon stat
osd_id=$(ceph_cmd osd create)
[[ $osd_id == 0 ]] || fail "expected osd id 0, got '$osd_id'"
if [[ $auth == cephx ]]; then
  ceph_cmd auth add osd.0 osd 'allow *' mon 'allow profile osd' -i "$dir/osd/0/keyring" \
    >/dev/null 2>&1 || fail "ceph auth add osd.0 failed"
fi
ceph-osd --conf "$conf" -i 0 --mkfs >"$dir/log/mkfs-osd.out" 2>&1 \
  || fail "ceph-osd --mkfs failed: $(cat "$dir/log/mkfs-osd.out")"
ceph-osd --conf "$conf" -i 0 >>"$dir/log/daemon.out" 2>&1 || fail "ceph-osd did not start"

osd_up() { ceph_cmd osd dump 2>/dev/null | grep -q '^osd\.0 up'; }
wait_for "osd.0 up" osd_up

for pool in volumes images; do
  ceph_cmd osd pool create "$pool" 8 8 >/dev/null 2>&1 || fail "pool create $pool failed"
  wait_for "rbd pool init $pool" timeout 30 rbd --conf "$conf" pool init "$pool"
done
wait_for "rbd ls" timeout 20 rbd --conf "$conf" ls volumes

end_s=$(date +%s.%N)
printf 'ceph-start: cluster up in %.1f s (dir=%s mon=127.0.0.1:%s auth=%s fsid=%s)\n' \
  "$(awk -v a="$start_s" -v b="$end_s" 'BEGIN{print b-a}')" "$dir" "$mon_port" "$auth" "$fsid"

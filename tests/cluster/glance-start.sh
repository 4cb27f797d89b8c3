#!/usr/bin/env bash
# glance-start.sh DIR CEPH_DIR: a throwaway Glance v2 API for tests and benchmarks.
#
# Debian's glance-api with no Keystone (the paste pipeline without authtoken), a SQLite
# database, and two stores: "fs" (files under DIR/images, the default) and "ceph" (RBD
# pool "images" of the cluster whose conf is CEPH_DIR/ceph.conf, client admin). It binds
# 127.0.0.1 on a port picked at run time (never 9292, so a system Glance is never
# touched), with one worker; config, database, logs and the pid file live in DIR.
# The base URL is written to DIR/endpoint once GET /versions answers.
#
# With KEYSTONE_DIR (a keystone-start.sh dir), the API is Keystone-protected instead:
# paste flavor "keystone", [keystone_authtoken] validating with that Keystone's admin, and
# the image service registered in its catalog (public and internal, RegionOne).
#
# Idempotent: if the API in DIR already answers, it prints so and exits 0.
# Stop it with glance-stop.sh DIR (by the pid file; the worker's process group too).
set -euo pipefail

usage() { echo "usage: $0 DIR CEPH_DIR [KEYSTONE_DIR]" >&2; exit 2; }
[[ $# -eq 2 || $# -eq 3 ]] || usage
dir=$1
ceph_dir=$2
keystone_dir=${3:-}

readonly kTimeoutS=${GLANCE_START_TIMEOUT_S:-90}
start_s=$(date +%s.%N)
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
ceph_dir=$(cd "$ceph_dir" 2>/dev/null && pwd) || { echo "glance-start: no $2" >&2; exit 1; }
conf=$dir/glance-api.conf
pidfile=$dir/glance-api.pid

alive() { [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
answers() { curl -fsS --max-time 3 "$1/versions" >/dev/null 2>&1; }

if alive && [[ -s $dir/endpoint ]] && answers "$(cat "$dir/endpoint")"; then
  echo "glance-start: glance-api in $dir already running at $(cat "$dir/endpoint")"
  exit 0
fi
if [[ -e $conf ]]; then
  # Leftovers of a crashed or half-started run: start from scratch.
  "$(dirname "$0")/glance-stop.sh" "$dir" >/dev/null 2>&1 || true
  mkdir -p "$dir"
fi

fail() {
  echo "glance-start: $*" >&2
  if [[ -f $dir/log/glance-api.log ]]; then
    echo "---- tail of $dir/log/glance-api.log" >&2
    tail -n 60 "$dir/log/glance-api.log" >&2
  fi
  if [[ -f $dir/log/glance-api.out ]]; then
    echo "---- tail of $dir/log/glance-api.out" >&2
    tail -n 30 "$dir/log/glance-api.out" >&2
  fi
  exit 1
}

[[ -f $ceph_dir/ceph.conf ]] || fail "no Ceph conf at $ceph_dir/ceph.conf (ceph fixture not up?)"

# shellcheck source-path=SCRIPTDIR source=ports.sh
source "$(dirname "$0")/ports.sh"

if [[ -n $keystone_dir ]]; then
  [[ -s $keystone_dir/auth_url && -s $keystone_dir/credentials.env ]] \
    || fail "no Keystone in $keystone_dir (keystone fixture not up?)"
  # shellcheck disable=SC1091
  source "$keystone_dir/credentials.env"
fi

port=$(free_port 9292)
endpoint=http://127.0.0.1:$port
mkdir -p "$dir"/{images,staging,tasks,log,lock}
rm -f "$dir/endpoint"

# The default pipeline ("flavor =" empty) has unauthenticated-context instead of
# authtoken: every request is an admin of an anonymous project.
sed -e "s#/etc/glance/healthcheck_disable#$dir/healthcheck_disable#" \
  /etc/glance/glance-api-paste.ini >"$dir/glance-api-paste.ini"
# Glance's default policy rules, not the package's policy.d: a rules file and an empty
# rules directory of our own. One rule differs: the store details (GET
# /v2/info/stores/detail, where cachemgr learns the pool of the rbd store) are "role:admin"
# by default, and the anonymous context of a Glance without Keystone has no roles; a
# deployment gives cachemgr's user the admin role or sets source.glance.direct_pools.
mkdir -p "$dir/policy.d"
echo '{"stores_info_detail": "@"}' >"$dir/policy.yaml"

cat >"$conf" <<EOF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $port
workers = 1
enabled_backends = fs:file, ceph:rbd
show_image_direct_url = True
show_multiple_locations = True
log_file = $dir/log/glance-api.log
use_stderr = False
debug = False
image_cache_dir = $dir/image-cache
node_staging_uri = file://$dir/staging
enabled_import_methods = []
public_endpoint = $endpoint

[database]
connection = sqlite:///$dir/glance.sqlite

[paste_deploy]
flavor = ${keystone_dir:+keystone}
config_file = $dir/glance-api-paste.ini

[glance_store]
default_backend = fs

[fs]
filesystem_store_datadir = $dir/images

[ceph]
rbd_store_pool = images
rbd_store_ceph_conf = $ceph_dir/ceph.conf
rbd_store_user = admin
rbd_store_chunk_size = 8

[os_glance_staging_store]
filesystem_store_datadir = $dir/staging

[os_glance_tasks_store]
filesystem_store_datadir = $dir/tasks

[oslo_concurrency]
lock_path = $dir/lock

[oslo_policy]
policy_file = $dir/policy.yaml
policy_dirs = $dir/policy.d
EOF

if [[ -n $keystone_dir ]]; then
  chmod 600 "$conf"
  cat >>"$conf" <<EOF

[keystone_authtoken]
www_authenticate_uri = $OS_AUTH_URL
auth_url = $OS_AUTH_URL
auth_type = password
username = $OS_USERNAME
password = $OS_PASSWORD
user_domain_name = $OS_USER_DOMAIN_NAME
project_name = $OS_PROJECT_NAME
project_domain_name = $OS_PROJECT_DOMAIN_NAME
region_name = $OS_REGION_NAME
EOF
fi

glance-manage --config-file "$conf" --log-file "$dir/log/glance-manage.log" db_sync \
  >"$dir/log/glance-manage.out" 2>&1 \
  || fail "glance-manage db_sync failed: $(tail -n 20 "$dir/log/glance-manage.out")"

# setsid: the API and the worker it forks share a process group of their own, so
# glance-stop.sh can signal them together without touching anything else.
launch() {
  setsid glance-api --config-file "$conf" >"$dir/log/glance-api.out" 2>&1 </dev/null &
  echo $! >"$pidfile"
  # The wait is counted from here: the manage steps before it take as long as a loaded
  # machine makes them (bounded by the caller, e.g. the CTest fixture's TIMEOUT).
  launched_s=$(date +%s)
}
launch
binds=1
until answers "$endpoint"; do
  if ! alive; then
    # Another fixture took the port between the pick and the bind: pick again.
    if (( binds < 3 )) && grep -q 'Could not bind' "$dir/log/glance-api.out"; then
      echo "glance-start: port $port taken before glance-api bound it; picking another" >&2
      port=$(free_port 9292)
      endpoint=http://127.0.0.1:$port
      sed -i -e "s#^bind_port = .*#bind_port = $port#" \
        -e "s#^public_endpoint = .*#public_endpoint = $endpoint#" "$conf"
      binds=$((binds + 1))
      launch
      continue
    fi
    fail "glance-api exited"
  fi
  if (( $(date +%s) - launched_s > kTimeoutS )); then
    fail "glance-api did not answer GET /versions within ${kTimeoutS}s"
  fi
  sleep 0.3
done

if [[ -n $keystone_dir ]]; then
  # The image service and its endpoints in the catalog (cachemgr may find Glance there),
  # registered once the port is final.
  token_headers=$(curl -fsS -D - -o /dev/null -H 'Content-Type: application/json' \
    -d '{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"'"$OS_USERNAME"'","domain":{"name":"'"$OS_USER_DOMAIN_NAME"'"},"password":"'"$OS_PASSWORD"'"}}},"scope":{"project":{"name":"'"$OS_PROJECT_NAME"'","domain":{"name":"'"$OS_PROJECT_DOMAIN_NAME"'"}}}}}' \
    "$OS_AUTH_URL/auth/tokens") || fail "Keystone refused the fixture's admin password"
  token=$(tr -d '\r' <<<"$token_headers" | awk -F': ' 'tolower($1)=="x-subject-token"{print $2}')
  service_id=$(curl -fsS -H "X-Auth-Token: $token" -H 'Content-Type: application/json' \
    -d '{"service":{"type":"image","name":"glance"}}' "$OS_AUTH_URL/services" | jq -r .service.id) \
    || fail "image service not registered"
  for iface in public internal; do
    curl -fsS -o /dev/null -H "X-Auth-Token: $token" -H 'Content-Type: application/json' \
      -d '{"endpoint":{"service_id":"'"$service_id"'","interface":"'$iface'","region_id":"RegionOne","url":"'"$endpoint"'"}}' \
      "$OS_AUTH_URL/endpoints" || fail "image endpoint ($iface) not registered"
  done
fi
echo "$endpoint" >"$dir/endpoint"

end_s=$(date +%s.%N)
printf 'glance-start: glance-api up in %.1f s (dir=%s endpoint=%s pid=%s)\n' \
  "$(awk -v a="$start_s" -v b="$end_s" 'BEGIN{print b-a}')" "$dir" "$endpoint" "$(cat "$pidfile")"

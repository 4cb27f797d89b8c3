#!/usr/bin/env bash
# keystone-start.sh DIR [TOKEN_EXPIRATION_S]: a throwaway Keystone v3 for tests.
#
# Debian's keystone on 127.0.0.1 (a port picked at run time, never 5000/35357), a SQLite
# database and fernet tokens, all under DIR; served by the package's own small WSGI
# server (keystone-wsgi-public), one process, started under setsid. Bootstrap makes
# the admin user (password in DIR/admin-password, mode 600), project "admin", region
# "RegionOne" and the identity endpoints (public and internal). Tokens live
# TOKEN_EXPIRATION_S seconds ([token] expiration; default 3600).
# An application credential of admin is made; DIR/credentials.env (mode 600) holds the
# OS_* variables of both (password and application credential). The auth URL
# (".../v3") is written to DIR/auth_url last, once all that is done.
#
# Idempotent: if the Keystone in DIR already answers, it prints so and exits 0.
# Stop it with keystone-stop.sh DIR (by the pid file).
set -euo pipefail

usage() { echo "usage: $0 DIR [TOKEN_EXPIRATION_S]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
dir=$1
expiration=${2:-3600}
[[ $expiration =~ ^[0-9]+$ ]] || usage

readonly kTimeoutS=${KEYSTONE_START_TIMEOUT_S:-90}
start_s=$(date +%s.%N)
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf=$dir/keystone.conf
pidfile=$dir/keystone.pid

alive() { [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
answers() { curl -fsS --max-time 3 "$1" >/dev/null 2>&1; }

if alive && [[ -s $dir/auth_url ]] && answers "$(cat "$dir/auth_url")"; then
  echo "keystone-start: keystone in $dir already running at $(cat "$dir/auth_url")"
  exit 0
fi
if [[ -e $conf ]]; then
  "$(dirname "$0")/keystone-stop.sh" "$dir" >/dev/null 2>&1 || true
  mkdir -p "$dir"
fi

fail() {
  echo "keystone-start: $*" >&2
  for f in "$dir/log/keystone.log" "$dir/log/keystone.out" "$dir/log/manage.out"; do
    [[ -f $f ]] && { echo "---- tail of $f" >&2; tail -n 40 "$f" >&2; }
  done
  exit 1
}

# shellcheck source-path=SCRIPTDIR source=ports.sh
source "$(dirname "$0")/ports.sh"

port=$(free_port 5000 35357)
auth_url=http://127.0.0.1:$port/v3
mkdir -p "$dir"/{log,fernet-keys,credential-keys}
chmod 700 "$dir"/{fernet-keys,credential-keys}
rm -f "$dir/auth_url"
umask 077
head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$dir/admin-password"

cat >"$conf" <<EOF
[DEFAULT]
log_file = $dir/log/keystone.log
use_stderr = False
debug = False

[database]
connection = sqlite:///$dir/keystone.sqlite

[token]
provider = fernet
expiration = $expiration

[fernet_tokens]
key_repository = $dir/fernet-keys

[credential]
key_repository = $dir/credential-keys

[identity]
# The fewest bcrypt rounds: each password auth costs ~ms, not seconds on a busy CI box.
password_hash_rounds = 4

[cache]
enabled = False
EOF

manage() {
  keystone-manage --config-file "$conf" "$@" >>"$dir/log/manage.out" 2>&1 \
    || fail "keystone-manage $1 failed"
}
user=$(id -un)
group=$(id -gn)
manage db_sync
# WAL: the server keeps reads open in pooled connections, which in the default rollback
# journal lock out every write ("database is locked" on POST /v3/services).
sqlite3 "$dir/keystone.sqlite" 'PRAGMA journal_mode=WAL;' >/dev/null || fail "sqlite3 WAL"
manage fernet_setup --keystone-user "$user" --keystone-group "$group"
manage credential_setup --keystone-user "$user" --keystone-group "$group"
manage bootstrap --bootstrap-password "$(cat "$dir/admin-password")" \
  --bootstrap-admin-url "http://127.0.0.1:$port/v3" \
  --bootstrap-public-url "http://127.0.0.1:$port/v3" \
  --bootstrap-internal-url "http://127.0.0.1:$port/v3" \
  --bootstrap-region-id RegionOne

OS_KEYSTONE_CONFIG_FILES=$conf setsid keystone-wsgi-public --host 127.0.0.1 --port "$port" \
  >"$dir/log/keystone.out" 2>&1 </dev/null &
echo $! >"$pidfile"
# The wait is counted from here: the manage steps before it take as long as a loaded
# machine makes them (bounded by the caller, e.g. the CTest fixture's TIMEOUT).
launched_s=$(date +%s)

until answers "$auth_url"; do
  alive || fail "keystone-wsgi-public exited"
  if (( $(date +%s) - launched_s > kTimeoutS )); then
    fail "keystone did not answer GET /v3 within ${kTimeoutS}s"
  fi
  sleep 0.3
done

# An application credential of the admin user (unrestricted: it may make no others), and
# the lot as shell assignments in DIR/credentials.env (mode 600) for the tests.
password=$(cat "$dir/admin-password")
scope='"scope":{"project":{"name":"admin","domain":{"id":"default"}}}'
identity='"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"id":"default"},"password":"'$password'"}}}'
headers=$(curl -fsS -D - -o "$dir/log/token.json" -H 'Content-Type: application/json' \
  -d "{\"auth\":{$identity,$scope}}" "$auth_url/auth/tokens") || fail "admin token refused"
token=$(tr -d '\r' <<<"$headers" | awk -F': ' 'tolower($1)=="x-subject-token"{print $2}')
user_id=$(jq -r .token.user.id "$dir/log/token.json")
project_id=$(jq -r .token.project.id "$dir/log/token.json")
rm -f "$dir/log/token.json"
curl -fsS -o "$dir/log/appcred.json" -H "X-Auth-Token: $token" -H 'Content-Type: application/json' \
  -d '{"application_credential":{"name":"cachemgr-test"}}' \
  "$auth_url/users/$user_id/application_credentials" || fail "application credential not made"
cat >"$dir/credentials.env" <<EOF
OS_AUTH_URL=$auth_url
OS_USERNAME=admin
OS_USER_DOMAIN_NAME=Default
OS_PROJECT_NAME=admin
OS_PROJECT_DOMAIN_NAME=Default
OS_PASSWORD=$password
OS_USER_ID=$user_id
OS_PROJECT_ID=$project_id
OS_APPLICATION_CREDENTIAL_ID=$(jq -r .application_credential.id "$dir/log/appcred.json")
OS_APPLICATION_CREDENTIAL_SECRET=$(jq -r .application_credential.secret "$dir/log/appcred.json")
OS_REGION_NAME=RegionOne
EOF
rm -f "$dir/log/appcred.json"
echo "$auth_url" >"$dir/auth_url"
chmod 644 "$dir/auth_url"

end_s=$(date +%s.%N)
printf 'keystone-start: keystone up in %.1f s (dir=%s auth_url=%s pid=%s)\n' \
  "$(awk -v a="$start_s" -v b="$end_s" 'BEGIN{print b-a}')" "$dir" "$auth_url" "$(cat "$pidfile")"

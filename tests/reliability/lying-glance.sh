#!/usr/bin/env bash
# lying-glance.sh BACKEND: the tool against a Glance that lies (tests/support/
# lying_glance.py on a free loopback port, stopped by pid at exit). For every lie the
# tool exits with the code CLI.md gives it (4 refused or corrupt, 3 not found, 1 failed),
# within a bounded time, without a crash, and a cached good image stays: nothing new on
# the backend, in the index or in the conversion dir, nothing evicted.
source "$(dirname "$0")/lib.sh"
backend=${1:?usage: lying-glance.sh local|rbd}
rel_init "lying-glance-$backend"
new_cache "$WORK/c" "$backend" 0

SCENARIO=$WORK/scenario.json
echo '{"images": {}}' >"$SCENARIO"
/usr/bin/python3 "$SRC_DIR/tests/support/lying_glance.py" "$SCENARIO" "$WORK/port" \
  >"$WORK/glance.out" 2>&1 &
glance_pid=$!
on_exit "kill $glance_pid; wait $glance_pid"
for _ in $(seq 1 100); do [[ -s $WORK/port ]] && break; sleep 0.1; done
[[ -s $WORK/port ]] || { log "lying_glance.py did not start"; exit 1; }
endpoint=http://127.0.0.1:$(cat "$WORK/port")

write_config "$CFG" 0 "  type: glance
  glance:
    endpoint: $endpoint
    timeout_s: 3
    retries: 1
    min_rate_kib_s: 1"
# max_size_gb: the good image and a 1 GiB claim do not fit together.
sed -i 's/^cache:$/cache:\n  max_size_gb: 1/' "$CFG"

# serve ID BYTES [EDIT]: a raw image of random bytes and its truthful record, edited by
# the Python statement EDIT on `img` (img["meta"] is the record).
serve() {
  local id=$1 bytes=$2 edit=${3:-pass}
  local file=$WORK/body-$id
  head -c "$bytes" /dev/urandom >"$file"
  /usr/bin/python3 - "$SCENARIO" "$id" "$file" "$edit" <<'EOF'
import hashlib, json, os, sys
path, image_id, body, edit = sys.argv[1:5]
data = open(body, "rb").read()
img = {"file": body, "meta": {
    "id": image_id, "status": "active", "disk_format": "raw", "container_format": "bare",
    "size": len(data), "virtual_size": len(data),
    "checksum": hashlib.md5(data).hexdigest(),
    "os_hash_algo": "sha512", "os_hash_value": hashlib.sha512(data).hexdigest(),
    "updated_at": "2026-01-01T00:00:00Z"}}
exec(edit)
s = json.load(open(path))
s.setdefault("images", {})[image_id] = img
json.dump(s, open(path + ".tmp", "w"))
os.rename(path + ".tmp", path)
EOF
}

snapshot() {
  {
    backend_images
    sql "SELECT 'row', image_id, state FROM entries; SELECT 'vol', name FROM volumes;"
    find "$CONV" -mindepth 1 -printf '%P\n' 2>/dev/null
  } | sort
}

good=$(new_uuid)
serve "$good" $((4 << 20))
if ! cm create "$good" vol-good >/dev/null; then
  record "setup: a truthful image" "$backend" "exit 0" "$(last_err)" 1
  exit 1
fi
before=$(snapshot)

# The cause of the last error, without the "volume failed image=... error=image ID: "
# prefix (the row names the lie; the id is random).
cause() {
  grep -vE '^\S+: (warning|info|debug|trace): ' "$WORK/last.err" | head -n 1 |
    sed -E 's/^.*error=image [0-9a-f-]{36}: //; s/[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}/ID/g' |
    cut -c1-160
}

# lie NAME EXPECTED_EXIT MAX_S EDIT [BYTES]: serves a fresh image (4 MiB) edited by EDIT,
# runs create.
lie() {
  local name=$1 expect=$2 max_s=$3 edit=$4 bytes=${5:-$((4 << 20))}
  local id
  id=$(new_uuid)
  serve "$id" "$bytes" "$edit"
  local t0=$SECONDS rc
  timeout 120 "$CACHEMGR_BIN" --config "$CFG" create "$id" "vol-$id" >/dev/null 2>"$WORK/last.err"
  rc=$?
  local took=$((SECONDS - t0)) after ok=0 why=""
  after=$(snapshot)
  [[ $rc == "$expect" ]] || { ok=1; why="exit $rc; "; }
  (( took <= max_s )) || { ok=1; why+="took ${took}s; "; }
  [[ $after == "$before" ]] || { ok=1; why+="left: $(diff <(echo "$before") <(echo "$after") | grep '^>' | head -3 | tr '\n' ' '); "; }
  grep -q "$id" "$WORK/last.err" || { ok=1; why+="error does not name the image; "; }
  record "lying Glance: $name" "$backend" "exit $expect within ${max_s}s; nothing made, nothing evicted" \
    "${why}exit $rc after ${took}s; $(cause)" $ok
}

lie 'size -1' 4 30 'img["meta"]["size"] = -1'
lie 'size 2^64-1' 4 30 'img["meta"]["size"] = 2**64 - 1'
lie 'size 4.5' 4 30 'img["meta"]["size"] = 4.5'
lie 'virtual_size -4096' 4 30 'img["meta"]["virtual_size"] = -4096'
lie 'claims 1023 MiB, sends 4 MiB' 4 60 'img["meta"]["size"] = img["meta"]["virtual_size"] = 1023 << 20'
lie 'claims 1023 MiB, no length, sends 4 MiB' 4 60 'img["meta"]["size"] = img["meta"]["virtual_size"] = 1023 << 20; img["length"] = "none"'
lie 'body 1 MiB longer than size, no length' 4 30 'img["extra"] = 1 << 20; img["length"] = "none"'
lie 'body longer than size, honest length' 4 30 'img["extra"] = 1 << 20'
lie 'body that never ends' 4 30 'img["endless"] = True'
lie 'no size, no digest, never ends (qcow2)' 4 30 'img["meta"] = {"id": img["meta"]["id"], "status": "active", "disk_format": "qcow2", "container_format": "bare"}; img["endless"] = True'
lie 'unknown os_hash_algo, no md5' 4 30 'img["meta"]["os_hash_algo"] = "whirlpool"; del img["meta"]["checksum"]'
lie 'sha1 os_hash only' 4 30 'img["meta"]["os_hash_algo"] = "sha1"; del img["meta"]["checksum"]'
lie 'md5 of other bytes' 4 30 'img["meta"]["checksum"] = "0" * 32; img["meta"]["os_hash_algo"] = "whirlpool"'
# 8 KiB at 100 bytes/s passes curl's low-speed limit; the deadline is 3 s + 8 KiB at 1 KiB/s.
lie 'trickle 100 bytes/s' 1 40 'img["trickle_bps"] = 100' 8192
lie 'active with no data (HTTP 204)' 3 30 'img["status"] = 204'

# Listings that never end: prefill --all stops with exit 1 after a bounded number of
# requests.
for mode in repeat loop elsewhere endless empty; do
  /usr/bin/python3 - "$SCENARIO" "$mode" <<'EOF'
import json, os, sys
s = json.load(open(sys.argv[1])); s["list"] = sys.argv[2]
json.dump(s, open(sys.argv[1] + ".tmp", "w")); os.rename(sys.argv[1] + ".tmp", sys.argv[1])
EOF
  n0=$(curl -s "$endpoint/_requests" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
  t0=$SECONDS
  timeout 120 "$CACHEMGR_BIN" --config "$CFG" prefill --all >/dev/null 2>"$WORK/last.err"
  rc=$?
  n1=$(curl -s "$endpoint/_requests" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
  reqs=$((n1 - n0 - 1))
  ok=0
  [[ $rc == 1 ]] && (( reqs <= 10001 )) && (( SECONDS - t0 <= 60 )) || ok=1
  record "lying Glance: prefill --all, next links $mode" "$backend" "exit 1 after a bounded listing" \
    "exit $rc after $reqs request(s), $((SECONDS - t0))s; $(cause | sed -E 's#127.0.0.1:[0-9]+#127.0.0.1:PORT#')" $ok
done

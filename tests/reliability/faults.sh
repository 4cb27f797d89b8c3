#!/usr/bin/env bash
# faults.sh CASE: faults in the middle of a fill.
#   osd-kill     RBD: a Ceph cluster of this test's own (ceph-start.sh in its work dir,
#                so no other test loses its OSD); the OSD is killed (SIGKILL) while a
#                1 GiB image is being imported. The create must fail within the op
#                timeout (+ 60 s for the bounded cleanups), counted from the kill, and
#                leave no ready entry.
#   source-drop  an image server that stops mid-download: it drops the connection
#                after half the bytes ("drop"), or stops sending ("stall"). The create
#                must fail within the source timeout and leave nothing behind.
#   conv-full    a full conversion dir (a 2 MiB tmpfs mounted on it when this runs as
#                root, and a qcow2 image whose raw size exceeds the free space of an
#                ordinary conversion dir): a clear error naming the dir, nothing left.
source "$(dirname "$0")/lib.sh"
case_name=${1:?usage: faults.sh osd-kill|source-drop|conv-full}
rel_init "faults-$case_name"

now_ms() { date +%s%3N; }

# wait_pid PID SECONDS: waits for PID at most SECONDS; prints its exit code or "timeout".
wait_pid() {
  local pid=$1 limit=$2 t0
  t0=$(date +%s)
  while kill -0 "$pid" 2>/dev/null; do
    if (( $(date +%s) - t0 > limit )); then
      kill -KILL "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
      echo timeout
      return
    fi
    sleep 0.1
  done
  wait "$pid"
  echo $?
}

osd_kill() {
  local cdir=$WORK/ceph
  CEPH_MEMSTORE_BYTES=$((3 * 1024 * 1024 * 1024)) "$SRC_DIR/tests/cluster/ceph-start.sh" \
    "$cdir" >"$WORK/ceph-start.log" 2>&1 || { cat "$WORK/ceph-start.log" >&2;
    record "OSD killed mid-import" rbd "cluster starts" "ceph-start.sh failed" 1; return; }
  on_exit "'$SRC_DIR/tests/cluster/ceph-stop.sh' '$cdir'"
  CEPH_CONF=$cdir/ceph.conf
  new_cache "$WORK/c" rbd 0
  # a short op timeout, so the fill notices the dead OSD quickly
  sed -i 's/^    connect_timeout_s: 10$/    connect_timeout_s: 10\n    op_timeout_s: 15/' "$CFG"
  local id
  id=$(new_uuid)
  make_image "$id" raw 1024 1024
  local t0 pid
  t0=$(now_ms)
  "$CACHEMGR_BIN" --config "$CFG" create "$id" vol-1 >/dev/null 2>"$WORK/create.err" &
  pid=$!
  # Kill once the import has begun: an image exists in the pool.
  local started=0 i
  for i in $(seq 1 300); do
    if [[ -n $(rbd_cmd ls "$POOL" 2>/dev/null) ]]; then started=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  sleep 0.5
  local osd_pid
  osd_pid=$(cat "$cdir/run/osd.0.pid")
  kill -KILL "$osd_pid"
  local killed_ms=$(( $(now_ms) - t0 ))
  local rc
  rc=$(wait_pid "$pid" 120)
  # Measured from the kill: the promise is about the fault; how long the create took to
  # reach the import (image fetch, a loaded machine) is not part of it.
  local took=$(( ($(now_ms) - t0 - killed_ms) / 1000 ))
  local ok=0 obs="OSD killed at ${killed_ms} ms; create: exit $rc ${took}s after the kill"
  if (( started == 0 )); then ok=1; obs+="; the import never began before the kill"; fi
  if [[ $rc == 0 || $rc == timeout ]]; then ok=1; fi
  if (( took > 15 + 60 )); then ok=1; obs+="; slower than op timeout + 60 s"; fi
  local ready
  ready=$(sql "SELECT count(*) FROM entries WHERE state='ready';")
  if [[ ${ready:-0} != 0 ]]; then ok=1; obs+="; $ready ready entries"; fi
  obs+="; $(err_line "$WORK/create.err")"
  record "OSD killed (SIGKILL) mid-import of 1 GiB" rbd \
    "error within the op timeout (15 s) + 60 s; no ready entry" "$obs" $ok
}

# A server that speaks enough of Glance v2 for one image and breaks its download.
serve() {  # serve MODE IMAGE_ID FILE PORT_FILE
  # its output goes to a file: the caller reads the pid from a command substitution
  /usr/bin/python3 - "$@" <<'PY' >>"$WORK/server.log" 2>&1 &
import hashlib, http.server, json, os, socket, sys, time
mode, image_id, path, port_file = sys.argv[1:5]
data = open(path, "rb").read()
meta = {"id": image_id, "status": "active", "disk_format": "raw", "container_format": "bare",
        "size": len(data), "virtual_size": len(data), "checksum": hashlib.md5(data).hexdigest(),
        "os_hash_algo": "sha512", "os_hash_value": hashlib.sha512(data).hexdigest(),
        "updated_at": "2024-01-01T00:00:00Z", "created_at": "2024-01-01T00:00:00Z",
        "name": "broken", "visibility": "shared", "protected": False, "tags": [],
        "self": "/v2/images/" + image_id, "file": "/v2/images/%s/file" % image_id}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def send_json(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        p = self.path.split("?")[0]
        if p in ("/", "/versions"):
            return self.send_json({"versions": [{"id": "v2.9", "status": "CURRENT"}]})
        if p == "/v2/images":
            return self.send_json({"images": [meta]})
        if p == "/v2/images/" + image_id:
            return self.send_json(meta)
        if p == "/v2/images/%s/file" % image_id:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            if mode == "stall":
                time.sleep(3600)
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()
class S(http.server.ThreadingHTTPServer):
    daemon_threads = True
srv = S(("127.0.0.1", 0), H)
with open(port_file + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
os.rename(port_file + ".tmp", port_file)
srv.serve_forever()
PY
  echo $!
}

source_drop() {
  local mode
  for backend in local; do
    for mode in drop stall; do
      new_cache "$WORK/c-$mode" "$backend" 0
      local id
      id=$(new_uuid)
      make_image "$id" raw 64 64
      local spid
      spid=$(serve "$mode" "$id" "$IMAGES/$id" "$WORK/port-$mode")
      on_exit "kill $spid"
      local i
      for i in $(seq 1 100); do [[ -s $WORK/port-$mode ]] && break; sleep 0.1; done
      local port
      port=$(cat "$WORK/port-$mode")
      write_config "$CFG" 0 "  type: glance
  glance:
    endpoint: http://127.0.0.1:$port
    timeout_s: 5
    retries: 1"
      local t0 rc took ok=0 obs
      t0=$(now_ms)
      timeout 300 "$CACHEMGR_BIN" --config "$CFG" create "$id" vol-1 >/dev/null \
        2>"$WORK/create-$mode.err"
      rc=$?
      took=$(( ($(now_ms) - t0) / 1000 ))
      obs="exit $rc after ${took}s"
      # retries: 1 and timeout_s: 5: two stalled attempts are ~10 s; allow slack
      if (( rc == 0 || rc == 124 )); then ok=1; fi
      if (( took > 60 )); then ok=1; obs+=" (over 60 s)"; fi
      local left
      left=$(orphans | head -n 5 | tr '\n' ';')
      local ready
      ready=$(sql "SELECT count(*) FROM entries WHERE state='ready';")
      if [[ ${ready:-0} != 0 ]]; then ok=1; obs+="; $ready ready entries"; fi
      if [[ -n $left ]]; then
        # an eviction pass may be what removes a crash's leftovers, but a failed fill
        # cleans up after itself
        ok=1
        obs+="; left behind: $left"
      fi
      obs+="; $(err_line "$WORK/create-$mode.err")"
      local what="image server drops the connection after half the bytes"
      [[ $mode == stall ]] && what="image server stops sending after half the bytes"
      record "$what (timeout_s 5, retries 1)" "$backend" \
        "error within 60 s; no ready entry, nothing left behind" "$obs" $ok
      kill "$spid" 2>/dev/null
      drop_exit "kill $spid"
    done
  done
}

conv_full() {
  local backend=local
  new_cache "$WORK/c" "$backend" 0
  local id rc ok obs
  # 1. a filesystem that really fills up during the conversion
  if mount -t tmpfs -o size=2m tmpfs "$CONV" 2>/dev/null; then
    on_exit "umount '$CONV'"
    id=$(new_uuid)
    make_image "$id" qcow2 32 16
    cm create "$id" vol-1 >/dev/null
    rc=$?
    ok=0
    obs="exit $rc: $(last_err)"
    (( rc == 1 )) || ok=1
    grep -qiE 'space|full|ENOSPC|no room' "$WORK/last.err" || { ok=1; obs+=" (no word of space)"; }
    [[ -z $(orphans) ]] || { ok=1; obs+="; left: $(orphans | head -n 3 | tr '\n' ';')"; }
    [[ $(ready_count) == 0 ]] || { ok=1; obs+="; a ready entry exists"; }
    record "conversion dir full (2 MiB tmpfs, 32 MiB qcow2)" "$backend" \
      "exit 1, error naming the lack of space; nothing left" "$obs" $ok
    umount "$CONV"
  else
    record "conversion dir full (2 MiB tmpfs)" "$backend" "tmpfs can be mounted" \
      "mount refused (not privileged)" skip
  fi
  # 2. the free-space check: a tiny image whose raw form cannot fit. A sparse vmdk goes
  # through qemu-img convert, which writes the raw file in the conversion dir first.
  local free_gb size_gb
  free_gb=$(df -P -BG "$CONV" | awk 'NR==2 {gsub("G","",$4); print $4}')
  size_gb=$(( free_gb + 10 ))
  if (( size_gb > 1000 )); then  # keep it under max_virtual_size_gb: the check to hit is space
    sed -i "s#^  dir: $CONV\$#  dir: $CONV\n  max_virtual_size_gb: $((size_gb + 100))#" "$CFG"
  fi
  id=$(new_uuid)
  qemu-img create -q -f vmdk "$IMAGES/$id" "${size_gb}G"
  cm create "$id" vol-2 >/dev/null
  rc=$?
  ok=0
  obs="exit $rc: $(last_err)"
  (( rc == 1 || rc == 4 )) || ok=1
  grep -qiE 'space|free|full' "$WORK/last.err" || { ok=1; obs+=" (no word of space)"; }
  [[ -z $(orphans) ]] || { ok=1; obs+="; left: $(orphans | head -n 3 | tr '\n' ';')"; }
  record "sparse vmdk of ${size_gb} GiB virtual, ${free_gb} GiB free in conversion dir" "$backend" \
    "refused before converting, error naming the free space; nothing left" "$obs" $ok

  # 3. a compressed qcow2 of the same size: the fill's own qcow2 reader streams it into the
  # backend with no raw file, so the conversion dir's free space is no condition for it.
  id=$(new_uuid)
  yes 'compressible text' | head -c 1048576 >"$WORK/c/ref/$id.raw"
  qemu-img convert -q -c -f raw -O qcow2 "$WORK/c/ref/$id.raw" "$IMAGES/$id"
  qemu-img resize -q -f qcow2 "$IMAGES/$id" "${size_gb}G"
  cm create "$id" vol-3 >/dev/null
  rc=$?
  ok=0
  obs="exit $rc"
  (( rc == 0 )) || { ok=1; obs+=": $(last_err)"; }
  local head_mib="$WORK/c/vol-3.head"
  if (( rc == 0 )); then
    qemu-img dd -f qcow2 -O raw bs=1M count=1 if="$(volume_spec vol-3)" of="$head_mib" 2>/dev/null
    cmp -s "$head_mib" "$WORK/c/ref/$id.raw" || { ok=1; obs+="; its first MiB differs"; }
  fi
  [[ -z $(orphans) ]] || { ok=1; obs+="; left: $(orphans | head -n 3 | tr '\n' ';')"; }
  record "compressed qcow2 of ${size_gb} GiB virtual, ${free_gb} GiB free in conversion dir" "$backend" \
    "made without a raw file (no space asked of the conversion dir); reads back; nothing left" \
    "$obs" $ok
}

case $case_name in
  osd-kill) osd_kill ;;
  source-drop) source_drop ;;
  conv-full) conv_full ;;
  *) echo "unknown case $case_name" >&2; exit 2 ;;
esac

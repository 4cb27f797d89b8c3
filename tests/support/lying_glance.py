#!/usr/bin/python3
"""A Glance v2 API that lies, for tests: lying_glance.py SCENARIO_JSON PORT_FILE.

Binds 127.0.0.1 on a free port, writes the port to PORT_FILE (once listening) and serves
until killed. SCENARIO_JSON is read again on every request, so a test may change what
is served between calls. It holds:

  {"images": {ID: {"meta": {...},          # sent verbatim for GET /v2/images/ID
                   "file": PATH,           # the body of GET /v2/images/ID/file
                   "extra": N,             # N more bytes after the file
                   "endless": true,        # the file again and again, never ending
                   "length": "none" | N,   # Content-Length: absent, or this lie
                   "trickle_bps": N,       # N bytes a second
                   "status": N,            # answer the file GET with this (e.g. 204)
                   "ranges": true,         # answer "Range: bytes=A-B" with 206 and those bytes
                   "range_file": PATH}},   # ... read from this file instead (a Glance that
                                           #     serves other bytes to Range reads)
   "list": "normal" | "repeat" | "loop" | "elsewhere" | "endless" | "empty",
   "stores": {...}}                        # GET /v2/info/stores/detail (404 if absent)

GET /_requests answers how many requests were served so far.
"""
import http.server
import json
import os
import socketserver
import sys
import threading
import time
import urllib.parse

SCENARIO, PORT_FILE = sys.argv[1], sys.argv[2]
counter = {"n": 0}
lock = threading.Lock()


def scenario():
    with open(SCENARIO) as f:
        return json.load(f)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def send_json(self, obj, status=200):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with lock:
            counter["n"] += 1
            n = counter["n"]
        url = urllib.parse.urlsplit(self.path)
        s = scenario()
        if url.path == "/_requests":
            return self.send_json({"requests": n - 1})
        if s.get("everything") == "404":  # a mis-addressed endpoint: nothing is found
            return self.send_json({"error": "not found"}, 404)
        if url.path == "/v2/images" and s.get("list") == "fail":
            return self.send_json({"error": "listing broke"}, 500)
        if url.path == "/v2/info/stores/detail":
            if "stores" not in s:
                return self.send_json({"error": "no such thing"}, 404)
            return self.send_json(s["stores"])
        if url.path == "/v2/images":
            return self.list_page(s, urllib.parse.parse_qs(url.query))
        parts = url.path.strip("/").split("/")
        if len(parts) >= 3 and parts[:2] == ["v2", "images"]:
            image = s.get("images", {}).get(parts[2])
            if image is None:
                return self.send_json({"error": "not found"}, 404)
            if len(parts) == 3:
                return self.send_json(image["meta"])
            if len(parts) == 4 and parts[3] == "file":
                return self.send_file(image)
        self.send_json({"error": "not found"}, 404)

    def list_page(self, s, query):
        mode = s.get("list", "normal")
        marker = query.get("marker", ["0"])[0]
        metas = [dict(i["meta"]) for i in s.get("images", {}).values()]
        page = {"images": metas[:1] if mode != "normal" else metas}
        if mode == "repeat":
            page["next"] = "/v2/images?marker=same&limit=200"
        elif mode == "loop":
            page["next"] = "/v2/images?marker=%s&limit=200" % ("b" if marker == "a" else "a")
        elif mode == "elsewhere":
            page["next"] = "http://203.0.113.9/v2/images?marker=x"
        elif mode == "endless":
            page["next"] = "/v2/images?marker=%d&limit=200" % (int(marker) + 1)
        elif mode == "empty":
            page = {"images": [], "next": "/v2/images?marker=%d" % (int(marker) + 1)}
        self.send_json(page)

    def send_file(self, image):
        if "status" in image:
            self.send_response(image["status"])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        rng = self.headers.get("Range")
        if image.get("ranges") and rng and rng.startswith("bytes="):
            return self.send_range(image, rng)
        with open(image["file"], "rb") as f:
            data = f.read()
        data += b"\x5a" * image.get("extra", 0)
        length = image.get("length", len(data))
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if length != "none" and not image.get("endless"):
            self.send_header("Content-Length", str(length))
        self.end_headers()
        bps = image.get("trickle_bps")
        try:
            while True:
                if bps:
                    for i in range(0, len(data), bps):
                        self.wfile.write(data[i:i + bps])
                        self.wfile.flush()
                        time.sleep(1)
                else:
                    self.wfile.write(data)
                if not image.get("endless"):
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass


    def send_range(self, image, rng):
        first, _, last = rng[len("bytes="):].partition("-")
        path = image.get("range_file", image["file"])
        size = os.path.getsize(path)
        first = int(first)
        last = min(int(last) if last else size - 1, size - 1)
        if first > last:  # past the end of what it has
            self.send_response(416)
            self.send_header("Content-Range", "bytes */%d" % size)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with open(path, "rb") as f:
            f.seek(first)
            data = f.read(last - first + 1)
        self.send_response(206)
        self.send_header("Content-Range", "bytes %d-%d/%d" % (first, last, size))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    server = Server(("127.0.0.1", 0), Handler)
    tmp = PORT_FILE + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(tmp, PORT_FILE)
    server.serve_forever()


if __name__ == "__main__":
    main()

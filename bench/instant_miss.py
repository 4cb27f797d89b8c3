#!/usr/bin/python3
"""Time to the first volume of an image nobody cached: the instant miss against the
normal miss and against Cinder's pipeline; and the instant miss's background import
against `rbd import`. All on the same cluster, the same files, in the same run.

For each size (GiB of random data: nothing sparse for anyone to skip), and each
repetition (sides in a rotating order, every side in a fresh RBD namespace with a fresh
index, so each is a real cold miss):
  instant   `cachemgr --json create --wait-import` with cache.instant_miss on: the time
            until its JSON document (plan instant) is on stdout is the first volume; the
            time from there to its exit is the import (copy, hash, commit)
  miss      `cachemgr --json create` with instant_miss off: fetch (hashing), import,
            snapshot, clone
  cinder    Cinder's pipeline from the same file (its download step left out, which only
            flatters it): `qemu-img info`, `qemu-img convert -O raw` to a second file,
            `rbd import`, snapshot, protect, clone
  rbd       `rbd import` of the file alone: the import's baseline
With --glance ENDPOINT (a Glance without auth, the image uploaded there once, untimed):
  relay     the instant miss of the Glance image through the relay (cache.instant_relay
            127.0.0.1): first volume, then the import, as `instant`
  glance    the normal miss of the same Glance image (download, hash, import, clone)
The files carry a sidecar with their md5, as Glance images carry a checksum.

usage: instant_miss.py --cli BIN --conf CEPH_CONF --work DIR --out FILE
                       [--sizes-gib 1,4] [--reps 3] [--reps-large 2] [--pool volumes]
                       [--glance ENDPOINT] [--glance-sizes-gib 1]
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.request

FEATURES = "layering,exclusive-lock,object-map,fast-diff,deep-flatten"
SIDES = ("instant", "miss", "cinder", "rbd")


def sh(argv):
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), p.returncode, p.stderr[-2000:]))
    return p.stdout


def random_image(path, gib):
    md5 = hashlib.md5()
    with open(path, "wb") as f:
        for _ in range(gib * 128):
            chunk = os.urandom(8 << 20)
            f.write(chunk)
            md5.update(chunk)
    with open(path + ".json", "w") as f:
        json.dump({"checksum": md5.hexdigest(), "disk_format": "raw"}, f)


class Bench:
    def __init__(self, a):
        self.a = a
        self.n = 0

    def namespace(self):
        self.n += 1
        ns = "instant-%d-%d" % (os.getpid(), self.n)
        sh(["rbd", "--conf", self.a.conf, "namespace", "create", "%s/%s" % (self.a.pool, ns)])
        return ns

    def drop(self, ns):
        """Removes everything in `ns` (untimed): clones first, then their parents."""
        rbd = ["rbd", "--conf", self.a.conf]
        where = lambda name: "%s/%s/%s" % (self.a.pool, ns, name)  # noqa: E731
        for _ in range(3):
            names = sh(rbd + ["--namespace", ns, "ls", self.a.pool]).split()
            if not names:
                break
            for name in names:
                info = json.loads(sh(rbd + ["info", "--format", "json", where(name)]))
                if "parent" in info:
                    subprocess.run(rbd + ["rm", "--no-progress", where(name)], capture_output=True)
            for name in sh(rbd + ["--namespace", ns, "ls", self.a.pool]).split():
                for snap in ("cachemgr-base", "snap"):
                    subprocess.run(rbd + ["snap", "unprotect", where(name) + "@" + snap],
                                   capture_output=True)
                subprocess.run(rbd + ["snap", "purge", "--no-progress", where(name)],
                               capture_output=True)
                subprocess.run(rbd + ["rm", "--no-progress", where(name)], capture_output=True)
        subprocess.run(rbd + ["trash", "purge", "%s/%s" % (self.a.pool, ns)], capture_output=True)

    def config(self, ns, instant, glance=False):
        d = os.path.join(self.a.work, ns)
        os.makedirs(os.path.join(d, "conversion"), exist_ok=True)
        path = os.path.join(d, "cachemgr.yaml")
        source = ("source:\n  type: glance\n  glance:\n    endpoint: %s\n" % self.a.glance
                  if glance else "source:\n  type: file\n  file:\n    dir: %s\n" % self.images)
        with open(path, "w") as f:
            f.write("index: %s/index.db\nbackend:\n  type: rbd\n  rbd:\n    conf: %s\n"
                    "    pool: %s\n    namespace: %s\n%scache:\n  instant_miss: %s\n"
                    "  instant_relay: 127.0.0.1\nconversion:\n  dir: %s/conversion\n"
                    "log:\n  level: warn\n  file: %s/cachemgr.log\n"
                    % (d, self.a.conf, self.a.pool, ns, source, "on" if instant else "off",
                       d, d))
        return path

    def upload(self, path):
        """The image into Glance (untimed); its id."""
        req = urllib.request.Request(
            self.a.glance + "/v2/images", method="POST",
            data=json.dumps({"name": "bench-instant", "disk_format": "raw",
                             "container_format": "bare"}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            image_id = json.load(r)["id"]
        with open(path, "rb") as f:
            req = urllib.request.Request(
                self.a.glance + "/v2/images/%s/file" % image_id, method="PUT", data=f,
                headers={"Content-Type": "application/octet-stream",
                         "Content-Length": str(os.path.getsize(path))})
            with urllib.request.urlopen(req, timeout=3600) as r:
                r.read()
        return image_id

    def instant(self, image_id, glance=False):
        ns = self.namespace()
        cfg = self.config(ns, True, glance)
        t0 = time.perf_counter()
        p = subprocess.Popen([self.a.cli, "--config", cfg, "--json", "create", "--wait-import",
                              image_id, "vol"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        doc = ""
        for line in p.stdout:
            doc += line
            if line.startswith("}"):
                break
        first = (time.perf_counter() - t0) * 1000.0
        rest, err = p.communicate()
        end = (time.perf_counter() - t0) * 1000.0
        if p.returncode != 0:
            raise RuntimeError("instant create failed (%d): %s" % (p.returncode, err[-2000:]))
        plan = json.loads(doc)["plan"]
        if plan != "instant":
            raise RuntimeError("instant create: plan %s" % plan)
        self.drop(ns)
        return first, end - first

    def miss(self, image_id, glance=False):
        ns = self.namespace()
        cfg = self.config(ns, False, glance)
        t0 = time.perf_counter()
        out = sh([self.a.cli, "--config", cfg, "--json", "create", image_id, "vol"])
        ms = (time.perf_counter() - t0) * 1000.0
        if json.loads(out)["plan"] != "miss":
            raise RuntimeError("miss create: plan %s" % json.loads(out)["plan"])
        self.drop(ns)
        return ms

    def cinder(self, image_id):
        ns = self.namespace()
        rbd = ["rbd", "--conf", self.a.conf]
        src = os.path.join(self.images, image_id)
        tmp = os.path.join(self.a.work, ns + ".raw")
        spec = "%s/%s/%s" % (self.a.pool, ns, image_id)
        t0 = time.perf_counter()
        sh(["qemu-img", "info", "--output=json", "-f", "raw", src])
        sh(["qemu-img", "convert", "-f", "raw", "-O", "raw", src, tmp])
        sh(rbd + ["import", "--no-progress", "--image-feature", FEATURES, tmp, spec])
        sh(rbd + ["snap", "create", "--no-progress", spec + "@snap"])
        sh(rbd + ["snap", "protect", spec + "@snap"])
        sh(rbd + ["--rbd-default-clone-format", "2", "clone", "--image-feature", FEATURES,
                  spec + "@snap", "%s/%s/vol" % (self.a.pool, ns)])
        ms = (time.perf_counter() - t0) * 1000.0
        os.unlink(tmp)
        self.drop(ns)
        return ms

    def rbd_import(self, image_id):
        ns = self.namespace()
        t0 = time.perf_counter()
        sh(["rbd", "--conf", self.a.conf, "import", "--no-progress", "--image-feature", FEATURES,
            os.path.join(self.images, image_id), "%s/%s/%s" % (self.a.pool, ns, image_id)])
        ms = (time.perf_counter() - t0) * 1000.0
        self.drop(ns)
        return ms


def main():
    ap = argparse.ArgumentParser()
    for k in ("cli", "conf", "work", "out"):
        ap.add_argument("--" + k, required=True)
    ap.add_argument("--pool", default="volumes")
    ap.add_argument("--sizes-gib", default="1,4")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--glance", default="")
    # The bench's time: sizes over 1 GiB run fewer repetitions, and their Glance sides
    # only when asked (the relay's path is the same at every size; 1 GiB shows it).
    ap.add_argument("--reps-large", type=int, default=2)
    ap.add_argument("--glance-sizes-gib", default="1")
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    b = Bench(a)
    b.images = os.path.join(a.work, "images")
    os.makedirs(b.images)
    series = []
    for gib in [int(x) for x in a.sizes_gib.split(",")]:
        image_id = "instant-%dg" % gib
        random_image(os.path.join(b.images, image_id), gib)
        glance = a.glance and str(gib) in a.glance_sizes_gib.split(",")
        sides = SIDES + (("relay", "glance") if glance else ())
        glance_id = b.upload(os.path.join(b.images, image_id)) if glance else ""
        reps = a.reps if gib <= 1 else min(a.reps, a.reps_large)
        got = {s: [] for s in ("instant", "import", "miss", "cinder", "rbd", "relay",
                               "relay_import", "glance")}
        for rep in range(reps):
            order = sides[rep % len(sides):] + sides[:rep % len(sides)]
            for side in order:
                if side == "relay":
                    first, imp = b.instant(glance_id, glance=True)
                    got["relay"].append(first)
                    got["relay_import"].append(imp)
                elif side == "glance":
                    got["glance"].append(b.miss(glance_id, glance=True))
                elif side == "instant":
                    first, imp = b.instant(image_id)
                    got["instant"].append(first)
                    got["import"].append(imp)
                elif side == "miss":
                    got["miss"].append(b.miss(image_id))
                elif side == "cinder":
                    got["cinder"].append(b.cinder(image_id))
                else:
                    got["rbd"].append(b.rbd_import(image_id))
        os.unlink(os.path.join(b.images, image_id))
        extra = {"gib": gib, "reps": reps, "bytes": gib << 30}
        for name, label in (("instant", "instant first volume"), ("miss", "miss first volume"),
                            ("cinder", "cinder first volume"), ("import", "instant import"),
                            ("rbd", "rbd import"),
                            ("relay", "glance instant first volume"),
                            ("relay_import", "glance instant import"),
                            ("glance", "glance miss first volume")):
            if got[name]:
                series.append({"scenario": "instant", "name": "%s %d GiB" % (label, gib),
                               "unit": "ms", "samples": got[name], "extra": extra})
    with open(a.out, "w") as f:
        json.dump({"series": series}, f, indent=1)


if __name__ == "__main__":
    main()

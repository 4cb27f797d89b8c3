#!/usr/bin/python3
"""Cinder's cache miss with the image-volume cache on, stage by stage, on the same
cluster and Glance as the engine.

What Cinder's create-volume flow does for an image not yet cached
(_create_from_image_cache_or_download): RBDDriver.copy_image_to_volume through
image_utils.fetch_to_raw, then the cache entry:

  download  GlanceImageService.download: python-glanceclient's images.data(), which
            checks the image's os_hash_value (sha512, Glance's default os_hash_algo) or
            its md5 checksum as the bytes pass, written to a file
  convert   `qemu-img info` of the file, then `qemu-img convert -O raw` to a second
            file (Cinder converts raw images too)
  import    `rbd import` of that file into the pool
  clone     the cache entry: create_cloned_volume of the new volume (bench/cinder_rbd.py:
            connect, open, snapshot, protect, clone, depth walk, disconnect)

The total is their sum. Each repetition removes what it made afterwards (not timed).
--download curl skips the hash check (curl, no digest): the pipeline's best case.

usage: cinder_miss.py --endpoint URL --image-id ID --format raw|qcow2 --conf C
                      --pool P --workdir DIR [--reps N] [--label L]
                      [--download glanceclient|curl] --out FILE
"""
import argparse
import json
import os
import subprocess
import sys
import time

import rados
import rbd
# Imported before any timing: Cinder's service has it loaded already.
from glanceclient import Client  # Debian's python3-glanceclient

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cinder_rbd  # noqa: E402
import purge  # noqa: E402

FEATURES = "layering,exclusive-lock,object-map,fast-diff,deep-flatten"
STAGES = ("download", "convert", "import", "clone")


def run(argv):
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), p.returncode,
                                                   p.stderr.decode(errors="replace")[-2000:]))
    return (time.perf_counter() - t0) * 1000.0


def glanceclient_download(endpoint, image_id, path):
    """Cinder's download: images.data() (hash checked while iterating) to a file."""
    t0 = time.perf_counter()
    # Glance here runs without Keystone: any token passes.
    client = Client("2", endpoint=endpoint, token="bench")
    body = client.images.data(image_id)  # do_checksum=True: os_hash_value, else md5
    with open(path, "wb") as f:
        for chunk in body:
            f.write(chunk)
    return (time.perf_counter() - t0) * 1000.0


def remove_volume_and_entry(conf, pool, volume, entry):
    """Removes the cache entry (a clone), the volume's clone snapshot, then the volume."""
    cluster = rados.Rados(conffile=conf, rados_id="admin")
    cluster.connect()
    try:
        with cluster.open_ioctx(pool) as ioctx:
            r = rbd.RBD()
            try:
                r.remove(ioctx, entry)
            except rbd.ImageNotFound:
                pass
            try:
                purge.remove_with_snapshots(r, ioctx, volume)
            except rbd.ImageNotFound:
                pass
    finally:
        cluster.shutdown()


def miss_once(a, fetched, converted, name):
    """One miss; returns {stage: ms} and the clone's steps under "clone_steps"."""
    t = {}
    if a.download == "curl":
        t["download"] = run(["curl", "-fsS", "--max-time", "600", "-o", fetched,
                             "%s/v2/images/%s/file" % (a.endpoint, a.image_id)])
    else:
        t["download"] = glanceclient_download(a.endpoint, a.image_id, fetched)
    t["convert"] = run(["qemu-img", "info", "--output=json", "-f", a.format, fetched])
    t["convert"] += run(["qemu-img", "convert", "-f", a.format, "-O", "raw", fetched,
                         converted])
    os.unlink(fetched)
    t["import"] = run(["rbd", "--conf", a.conf, "import", "--no-progress",
                       "--image-format", "2", "--image-feature", FEATURES,
                       converted, "%s/%s" % (a.pool, name)])
    os.unlink(converted)
    c = cinder_rbd.cloned_volume(a.conf, a.pool, name, "image-" + name)
    t["clone"] = c["total"]
    t["clone_steps"] = c
    return t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--image-id", required=True)
    p.add_argument("--format", required=True)
    p.add_argument("--conf", required=True)
    p.add_argument("--pool", default="volumes")
    p.add_argument("--workdir", required=True)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--label", default="")
    p.add_argument("--download", choices=("glanceclient", "curl"), default="glanceclient")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    if a.download == "glanceclient":
        # Untimed: the client's first use loads its modules and the image schema, which a
        # running Cinder service has done long before.
        Client("2", endpoint=a.endpoint, token="bench").images.get(a.image_id)
    fetched = os.path.join(a.workdir, "cinder-fetch.%d" % os.getpid())
    converted = os.path.join(a.workdir, "cinder-raw.%d" % os.getpid())
    runs = []
    try:
        for rep in range(a.reps):
            name = "cinder-miss-%d-%d" % (os.getpid(), rep)
            try:
                runs.append(miss_once(a, fetched, converted, name))
            finally:
                remove_volume_and_entry(a.conf, a.pool, name, "image-" + name)
    finally:
        for f in (fetched, converted):
            if os.path.exists(f):
                os.unlink(f)
    extra = {"label": a.label, "format": a.format, "download": a.download}
    for stage in STAGES:
        extra[stage + "_ms"] = [r[stage] for r in runs]
    for step in cinder_rbd.STEPS:
        extra["clone_" + step + "_ms"] = [r["clone_steps"][step] for r in runs]
    series = [{"scenario": "miss",
               "name": ("cinder " if a.download == "glanceclient" else "cinder-curl ") + a.label,
               "unit": "ms", "samples": [sum(r[s] for s in STAGES) for r in runs],
               "extra": extra}]
    with open(a.out, "w") as f:
        json.dump({"series": series}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Cinder's cache-hit sequence, through python3-rbd (the bindings Cinder's RBD driver uses).

For each volume, as cinder.volume.drivers.rbd.RBDDriver.create_cloned_volume does with
the cached image-volume as the source: open the source image, create a snapshot
"<dest>.clone_snap", protect it, close, then clone that snapshot into the new volume
with the same features. Cinder also opens a new RADOS connection per operation; this
baseline keeps one connection for the whole run, so it is the sequence's best case.

usage: cinder_hit.py --conf C --pool P --source IMG --count N [--concurrency K]
                     [--scenario hit] [--name cinder] --out FILE
"""
import argparse
import json
import os
import sys
import threading
import time

import rados
import rbd

FEATURES = (rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK
            | rbd.RBD_FEATURE_OBJECT_MAP | rbd.RBD_FEATURE_FAST_DIFF
            | rbd.RBD_FEATURE_DEEP_FLATTEN)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--conf", required=True)
    p.add_argument("--pool", default="volumes")
    p.add_argument("--source", required=True)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--scenario", default="hit")
    p.add_argument("--name", default="cinder")
    p.add_argument("--prefix", default="cinder-%d" % os.getpid())
    p.add_argument("--out", required=True)
    a = p.parse_args()

    cluster = rados.Rados(conffile=a.conf, rados_id="admin")
    cluster.connect()
    ioctx = cluster.open_ioctx(a.pool)
    latencies = [0.0] * a.count
    lock = threading.Lock()
    next_i = [0]
    errors = []

    def worker():
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= a.count:
                return
            dest = "%s-%d" % (a.prefix, i)
            snap = dest + ".clone_snap"
            t0 = time.perf_counter()
            try:
                with rbd.Image(ioctx, a.source) as src:
                    src.create_snap(snap)
                    src.protect_snap(snap)
                rbd.RBD().clone(ioctx, a.source, snap, ioctx, dest, features=FEATURES)
            except Exception as e:  # first error ends the run
                errors.append("%s: %s" % (dest, e))
                return
            latencies[i] = (time.perf_counter() - t0) * 1000.0

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total_ms = (time.perf_counter() - start) * 1000.0
    ioctx.close()
    cluster.shutdown()
    if errors:
        print("cinder_hit: " + errors[0], file=sys.stderr)
        return 1
    doc = {"series": [{
        "scenario": a.scenario, "name": a.name, "unit": "ms", "samples": latencies,
        "extra": {"concurrency": a.concurrency, "count": a.count, "total_ms": total_ms,
                  "volumes_per_s": a.count * 1000.0 / total_ms}}]}
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

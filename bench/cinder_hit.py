#!/usr/bin/python3
"""Cinder's cache hit, through python3-rbd (the bindings Cinder's RBD driver uses).

Each volume is one bench/cinder_rbd.py cloned_volume() of the cached image-volume, as
cinder.volume.drivers.rbd.RBDDriver.create_cloned_volume makes it: a new RADOS
connection per call, open, snapshot "<dest>.clone_snap", protect, clone, the clone-depth
walk, disconnect. Every step is timed apart; the series "cinder" holds the totals and one
series "cinder <step>" per step.

usage: cinder_hit.py --conf C --pool P --source IMG --count N [--concurrency K]
                     [--scenario hit] [--name cinder] --out FILE
"""
import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cinder_rbd  # noqa: E402


def series_of(scenario, name, timings, extra):
    """The total series and one per step, from a list of cloned_volume() results."""
    out = [{"scenario": scenario, "name": name, "unit": "ms",
            "samples": [t["total"] for t in timings], "extra": extra}]
    for step in cinder_rbd.STEPS:
        out.append({"scenario": scenario, "name": "%s %s" % (name, step), "unit": "ms",
                    "samples": [t[step] for t in timings], "extra": {}})
    return out


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

    timings = [None] * a.count
    lock = threading.Lock()
    next_i = [0]
    errors = []

    def worker():
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= a.count or errors:
                return
            dest = "%s-%d" % (a.prefix, i)
            try:
                timings[i] = cinder_rbd.cloned_volume(a.conf, a.pool, a.source, dest)
            except Exception as e:  # first error ends the run
                errors.append("%s: %s" % (dest, e))
                return

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total_ms = (time.perf_counter() - start) * 1000.0
    if errors:
        print("cinder_hit: " + errors[0], file=sys.stderr)
        return 1
    extra = {"concurrency": a.concurrency, "count": a.count, "total_ms": total_ms,
             "volumes_per_s": a.count * 1000.0 / total_ms,
             "source_depth": timings[0]["source_depth"]}
    with open(a.out, "w") as f:
        json.dump({"series": series_of(a.scenario, a.name, timings, extra)}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

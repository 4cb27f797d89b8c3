#!/usr/bin/env python3
"""bench/cli_hit.py: a hit through the tool as operators run it, one `cachemgr create`
process per volume, against `rbd clone` run the same way (one process per volume).

Each sample is one process, timed from its start to its exit (start-up, config, cluster
connection, index, clone, exit); the two sides alternate which goes first. The entry is
cached by one untimed create first; the source check keeps the library's default
interval (60 s), which the tool's index carries from process to process.

  cli_hit.py --cli build/cachemgr/cli/cachemgr --conf ceph.conf --pool volumes
             --namespace NS --endpoint URL --image ID --parent IMG --snap S
             --work DIR --count N --out FILE
"""
import argparse
import json
import os
import subprocess
import sys
import time

# The floor's and the engine's features (bench/rbd_floor.cpp), clone format 2.
FEATURES = "layering,exclusive-lock,object-map,fast-diff,deep-flatten"
LIMIT_S = 60  # per process


def timed(argv):
    t0 = time.monotonic()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=LIMIT_S)
    ms = (time.monotonic() - t0) * 1000.0
    if p.returncode != 0:
        raise RuntimeError("%s exited %d: %s" % (" ".join(argv[:4]), p.returncode,
                                                  p.stderr.strip()[-2000:]))
    return ms, p.stdout


def main():
    ap = argparse.ArgumentParser()
    for k in ("cli", "conf", "namespace", "endpoint", "image", "parent", "work", "out"):
        ap.add_argument("--" + k, required=True)
    ap.add_argument("--pool", default="volumes")
    ap.add_argument("--snap", default="snap")
    ap.add_argument("--count", type=int, default=20)
    a = ap.parse_args()

    os.makedirs(os.path.join(a.work, "conversion"), exist_ok=True)
    cfg = os.path.join(a.work, "cachemgr.yaml")
    with open(cfg, "w") as f:
        f.write("""index: {work}/index.db
backend:
  type: rbd
  rbd:
    conf: {conf}
    pool: {pool}
    namespace: {ns}
source:
  type: glance
  glance:
    endpoint: {endpoint}
conversion:
  dir: {work}/conversion
log:
  level: warn
  file: {work}/cachemgr.log
""".format(work=a.work, conf=a.conf, pool=a.pool, ns=a.namespace, endpoint=a.endpoint))

    def tool(vol):
        ms, out = timed([a.cli, "--config", cfg, "--json", "create", a.image, vol])
        plan = json.loads(out)["plan"]
        return ms, plan

    tag = "%d" % os.getpid()
    _, plan = tool("cli-%s-warm" % tag)  # the miss that caches the entry, untimed
    if plan != "miss":
        raise RuntimeError("warm-up create: plan %s, expected miss (namespace not fresh?)" % plan)
    ours, theirs = [], []
    for i in range(a.count):
        sides = ("tool", "rbd") if i % 2 == 0 else ("rbd", "tool")
        for side in sides:
            if side == "tool":
                ms, plan = tool("cli-%s-%d" % (tag, i))
                if plan != "clone":
                    raise RuntimeError("create %d: plan %s, expected clone" % (i, plan))
                ours.append(ms)
            else:
                ms, _ = timed(["rbd", "--conf", a.conf, "--rbd-default-clone-format", "2",
                               "clone", "--image-feature", FEATURES,
                               "%s/%s@%s" % (a.pool, a.parent, a.snap),
                               "%s/rbdcli-%s-%d" % (a.pool, tag, i)])
                theirs.append(ms)
    extra = {"count": a.count, "per": "process", "source_check_interval_s": 60}
    doc = {"series": [
        {"scenario": "hit", "name": "cachemgr create", "unit": "ms", "samples": ours,
         "extra": extra},
        {"scenario": "hit", "name": "rbd clone", "unit": "ms", "samples": theirs,
         "extra": extra}]}
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - the step's log carries the cause
        print("cli_hit: %s" % e, file=sys.stderr)
        sys.exit(1)

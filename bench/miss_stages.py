#!/usr/bin/python3
"""The single stages of a raw miss, each alone, as the baselines of the miss pipeline:
the miss should cost about its slowest stage, not their sum.

  download   `curl` of Glance's /v2/images/ID/file to /dev/null
  sha512     `openssl dgst -sha512` of the image file (the digest Glance's os_hash is)
  rbd import `rbd import` of the image file into the pool, 16 writes in flight (the
             engine's queue depth), removed after
  qemu-img   `qemu-img convert -W -m 16` of a qcow2 file straight into an RBD image
             (qemu's rbd driver, package qemu-block-extra): what the engine's own qcow2
             reader is measured against; skipped when qemu-img has no rbd driver

Each is a process of its own timed from its start to its exit. One run of each stage a
call (run.sh calls it once a repetition, beside the engine's and Cinder's misses).

usage: miss_stages.py --endpoint URL --image-id ID --file PATH --conf CEPH_CONF
                      --pool POOL --label LABEL --out FILE
                      [--stages download,sha512,rbd-import,qemu-img]
"""
import argparse
import json
import subprocess
import time
import uuid


def timed(argv):
    t0 = time.monotonic()
    p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ms = (time.monotonic() - t0) * 1000.0
    if p.returncode != 0:
        raise SystemExit("miss_stages: %s failed (%d): %s" % (" ".join(argv), p.returncode,
                                                              p.stderr[-2000:]))
    return ms


def main():
    p = argparse.ArgumentParser()
    for name in ("endpoint", "image-id", "file", "conf", "pool", "label", "out"):
        p.add_argument("--" + name, required=True)
    p.add_argument("--stages", default="download,sha512,rbd-import")
    a = p.parse_args()
    name = "stage-%s" % uuid.uuid4().hex[:12]
    stages = {
        "download": ["curl", "-sf", "-o", "/dev/null",
                     "%s/v2/images/%s/file" % (a.endpoint.rstrip("/"), a.image_id)],
        "sha512": ["openssl", "dgst", "-sha512", a.file],
        "rbd-import": ["rbd", "--conf", a.conf, "import", "--rbd-concurrent-management-ops",
                       "16", "--no-progress", a.file, "%s/%s" % (a.pool, name)],
        "qemu-img": ["qemu-img", "convert", "-f", "qcow2", "-O", "raw", "-W", "-m", "16", a.file,
                     "rbd:%s/%s:conf=%s" % (a.pool, name, a.conf)],
    }
    series = []
    try:
        for stage in a.stages.split(","):
            if stage == "qemu-img" and "rbd" not in subprocess.run(
                    ["qemu-img", "--help"], capture_output=True, text=True).stdout.split():
                print("miss_stages: qemu-img has no rbd driver (qemu-block-extra): skipped")
                continue
            series.append({"scenario": "miss_stage",
                           "name": "%s %s" % (stage.replace("-", " "), a.label),
                           "unit": "ms", "samples": [timed(stages[stage])], "extra": {}})
            subprocess.run(["rbd", "--conf", a.conf, "rm", "--no-progress",
                            "%s/%s" % (a.pool, name)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        subprocess.run(["rbd", "--conf", a.conf, "rm", "--no-progress", "%s/%s" % (a.pool, name)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(a.out, "w") as f:
        json.dump({"series": series}, f, indent=1)


if __name__ == "__main__":
    main()

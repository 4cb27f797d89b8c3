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

Each is a process of its own timed from its start to its exit, with the machine's busy
CPU-seconds meanwhile (extra cpu_s: Glance and the OSD run on the same cores, so a
stage's CPU is more than its client's). One run of each stage a call (run.sh calls it
once a repetition, beside the engine's and Cinder's misses).

usage: miss_stages.py --endpoint URL --image-id ID --file PATH --conf CEPH_CONF
                      --pool POOL --label LABEL --out FILE
                      [--stages download,sha512,rbd-import,qemu-img]
"""
import argparse
import json
import os
import subprocess
import time
import uuid


def busy_s():
    """CPU-seconds the machine has spent not idle (every process: Glance and the OSD run
    here too), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def timed(argv):
    """Wall milliseconds of one run, and the machine's busy CPU-seconds meanwhile."""
    t0, b0 = time.monotonic(), busy_s()
    p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ms, cpu = (time.monotonic() - t0) * 1000.0, busy_s() - b0
    if p.returncode != 0:
        raise SystemExit("miss_stages: %s failed (%d): %s" % (" ".join(argv), p.returncode,
                                                              p.stderr[-2000:]))
    return ms, cpu


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
            ms, cpu = timed(stages[stage])
            series.append({"scenario": "miss_stage",
                           "name": "%s %s" % (stage.replace("-", " "), a.label),
                           "unit": "ms", "samples": [ms], "extra": {"cpu_s": [cpu]}})
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

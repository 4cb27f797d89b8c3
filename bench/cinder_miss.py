#!/usr/bin/python3
"""Cinder's cache-miss pipeline, stage by stage, on the same cluster and Glance.

What cinder.volume.drivers.rbd.RBDDriver.copy_image_to_volume does through
image_utils.fetch_to_raw: download the image to a file, `qemu-img info` it, convert it
with `qemu-img convert -O raw` to a second file (Cinder converts raw images too), then
`rbd import` that file into the pool. Each repetition removes its imported image
afterwards (not timed).

--download glanceclient (the default) downloads as Cinder does: GlanceImageService.download
iterates python-glanceclient's images.data(), which verifies the image's os_hash (sha512)
or md5 as the bytes pass, and writes the chunks to the file. --download curl skips that
check (curl, no digest): the pipeline's best case, reported beside it.

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

FEATURES = "layering,exclusive-lock,object-map,fast-diff,deep-flatten"


def run(argv):
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), p.returncode,
                                                   p.stderr.decode(errors="replace")[-2000:]))
    return (time.perf_counter() - t0) * 1000.0


def glanceclient_download(endpoint, image_id, path):
    """Cinder's download: images.data() (checksum verified while iterating) to a file."""
    from glanceclient import Client  # Debian's python3-glanceclient
    t0 = time.perf_counter()
    # Glance here runs without Keystone: any token passes.
    client = Client("2", endpoint=endpoint, token="bench")
    body = client.images.data(image_id)
    with open(path, "wb") as f:
        for chunk in body:
            f.write(chunk)
    return (time.perf_counter() - t0) * 1000.0


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
    fetched = os.path.join(a.workdir, "cinder-fetch.%d" % os.getpid())
    converted = os.path.join(a.workdir, "cinder-raw.%d" % os.getpid())
    totals, downloads, converts, imports = [], [], [], []
    try:
        for rep in range(a.reps):
            name = "cinder-miss-%d-%d" % (os.getpid(), rep)
            if a.download == "curl":
                d = run(["curl", "-fsS", "--max-time", "600", "-o", fetched,
                         "%s/v2/images/%s/file" % (a.endpoint, a.image_id)])
            else:
                d = glanceclient_download(a.endpoint, a.image_id, fetched)
            c = run(["qemu-img", "info", "--output=json", "-f", a.format, fetched])
            c += run(["qemu-img", "convert", "-f", a.format, "-O", "raw", fetched, converted])
            i = run(["rbd", "--conf", a.conf, "import", "--no-progress",
                     "--image-format", "2", "--image-feature", FEATURES,
                     converted, "%s/%s" % (a.pool, name)])
            downloads.append(d)
            converts.append(c)
            imports.append(i)
            totals.append(d + c + i)
            for f in (fetched, converted):
                os.unlink(f)
            run(["rbd", "--conf", a.conf, "rm", "--no-progress", "%s/%s" % (a.pool, name)])
    finally:
        for f in (fetched, converted):
            if os.path.exists(f):
                os.unlink(f)
    scenario = "miss"
    series = [
        {"scenario": scenario,
         "name": ("cinder " if a.download == "glanceclient" else "cinder-curl ") + a.label,
         "unit": "ms", "samples": totals,
         "extra": {"label": a.label, "format": a.format, "download_ms": downloads,
                   "convert_ms": converts, "import_ms": imports}},
    ]
    with open(a.out, "w") as f:
        json.dump({"series": series}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

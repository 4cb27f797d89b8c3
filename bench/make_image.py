#!/usr/bin/python3
"""Writes a raw disk image whose data compresses about 2:1, as cloud images do.

Random data does not compress, so a compressed qcow2 of it is no smaller than a plain
one; zeros compress to nothing and are holes to every reader. Here every 64 KiB cluster
(qcow2's default, the unit qcow2 compresses) holds RANDOM_FRACTION random bytes and the
rest log-like text; no cluster is all zero, so the data is dense to every reader, and
deflate (qcow2's zlib) packs a cluster to about half. The clusters come from a pool of
POOL_CLUSTERS distinct ones, each written with its index in its first 8 bytes so no two
are equal; the pool keeps writing a GiB I/O-bound (a few seconds) rather than CPU-bound.

usage: make_image.py --out FILE --size BYTES [--data BYTES] [--seed N]
  --size  the file's size (virtual size of the raw image)
  --data  bytes of data from the start (default: all); the rest is a hole
"""
import argparse
import random
import sys

CLUSTER = 64 * 1024
RANDOM_FRACTION = 0.30
POOL_CLUSTERS = 256
WORDS = ("kernel systemd sshd cloud-init eth0 link up down accepted session opened "
         "closed for user root ubuntu debian started stopped reached target network "
         "mounted filesystem /var/lib/apt lists partial usr share doc copyright").split()


def text_block(rng, n):
    lines, size = [], 0
    while size < n:
        line = "%02d:%02d:%02d host-%03d %s[%d]: %s\n" % (
            rng.randrange(24), rng.randrange(60), rng.randrange(60), rng.randrange(16),
            rng.choice(WORDS), rng.randrange(1, 40000),
            " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 9))))
        lines.append(line)
        size += len(line)
    return "".join(lines).encode()[:n]


def cluster_pool(seed):
    rng = random.Random(seed)
    n_random = int(CLUSTER * RANDOM_FRACTION)
    return [rng.randbytes(n_random) + text_block(rng, CLUSTER - n_random)
            for _ in range(POOL_CLUSTERS)]


def write_image(path, size, data, seed):
    pool = cluster_pool(seed)
    data = min(data, size)
    with open(path, "wb") as f:
        buf = bytearray()
        for i in range(0, (data + CLUSTER - 1) // CLUSTER):
            c = bytearray(pool[(i * 7 + seed) % POOL_CLUSTERS])
            c[0:8] = i.to_bytes(8, "little")
            buf += c
            if len(buf) >= 64 * CLUSTER:
                f.write(buf)
                buf = bytearray()
        f.write(buf)
        f.truncate(data)
        f.truncate(size)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--data", type=int)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    write_image(a.out, a.size, a.size if a.data is None else a.data, a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())

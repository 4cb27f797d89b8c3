#!/usr/bin/python3
"""Removes every image (clones first), snapshot and trash entry of one RBD namespace, so
the memstore OSD gets the memory of a finished scenario back. Not timed.

usage: purge.py --conf C --pool P [--namespace NS]
"""
import argparse
import sys

import rados
import rbd


def remove_with_snapshots(r, io, name):
    """Unprotects and removes every snapshot of image `name`, then the image."""
    with rbd.Image(io, name) as img:
        for s in list(img.list_snaps()):
            if img.is_protected_snap(s["name"]):
                img.unprotect_snap(s["name"])
            img.remove_snap(s["name"])
    r.remove(io, name)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--conf", required=True)
    p.add_argument("--pool", default="volumes")
    p.add_argument("--namespace", default="")
    a = p.parse_args()
    cluster = rados.Rados(conffile=a.conf, rados_id="admin")
    cluster.connect()
    io = cluster.open_ioctx(a.pool)
    io.set_namespace(a.namespace)
    r = rbd.RBD()
    for _ in range(10):  # each round removes the leaves of the clone trees
        for t in list(r.trash_list(io)):
            try:
                r.trash_restore(io, t["id"], t["name"])
            except rbd.Error:
                pass
        names = r.list(io)
        if not names:
            break
        for name in names:
            try:
                remove_with_snapshots(r, io, name)
            except rbd.Error:
                pass  # still has children: a later round
    left = r.list(io)
    io.close()
    cluster.shutdown()
    if left:
        print("purge: %d images left in %s/%s" % (len(left), a.pool, a.namespace), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

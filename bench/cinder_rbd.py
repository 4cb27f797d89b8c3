#!/usr/bin/python3
"""Cinder's RBD clone of a volume, step by step, through python3-rbd.

What cinder.volume.drivers.rbd.RBDDriver.create_cloned_volume does with
rbd_max_clone_depth > 0 (the default is 5), both for a cache hit (source: the cached
image-volume) and for the cache entry Cinder makes after a miss (source: the volume it
just imported):

  connect   RADOSClient: a new rados.Rados, connect(), open_ioctx(pool) (Cinder connects
            per call, not once per process)
  open      rbd.Image(ioctx, source)
  snapshot  create_snap("<dest>.clone_snap")
  protect   protect_snap of it
  clone     RBD().clone(... features=...) of that snapshot into dest, then the source closes
  depth     _get_clone_depth: open the source read-only, parent_info(), close; again for
            its parent, and so on up the chain (each level one open)
  close     the ioctx closes and the cluster handle shuts down

A depth at or over max_depth would flatten the new volume (Cinder's rule); the caller
sees "flatten_needed" and no time is spent on it here (the bench's chains are short).
"""
import time

import rados
import rbd

FEATURES = (rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK
            | rbd.RBD_FEATURE_OBJECT_MAP | rbd.RBD_FEATURE_FAST_DIFF
            | rbd.RBD_FEATURE_DEEP_FLATTEN)
STEPS = ("connect", "open", "snapshot", "protect", "clone", "depth", "close")


def clone_depth(ioctx, name, depth=0):
    """The number of clones above NAME, one image open per level (Cinder's walk)."""
    while True:
        with rbd.Image(ioctx, name, read_only=True) as img:
            try:
                parent = img.parent_info()[1]
            except rbd.ImageNotFound:  # not a clone
                parent = None
        if not parent:
            return depth
        name, depth = parent, depth + 1


def cloned_volume(conf, pool, source, dest, features=FEATURES, max_depth=5,
                  clock=time.perf_counter):
    """Clones SOURCE into DEST as Cinder does; returns {step: ms, "total": ms, ...}."""
    t = {}
    t0 = last = clock()

    def mark(step):
        nonlocal last
        now = clock()
        t[step] = (now - last) * 1000.0
        last = now

    cluster = rados.Rados(conffile=conf, rados_id="admin")
    cluster.connect()
    try:
        ioctx = cluster.open_ioctx(pool)
        mark("connect")
        try:
            snap = dest + ".clone_snap"
            src = rbd.Image(ioctx, source)
            mark("open")
            try:
                src.create_snap(snap)
                mark("snapshot")
                src.protect_snap(snap)
                mark("protect")
                rbd.RBD().clone(ioctx, source, snap, ioctx, dest, features=features)
            finally:
                src.close()
            mark("clone")
            depth = clone_depth(ioctx, source)
            mark("depth")
        finally:
            ioctx.close()
    finally:
        cluster.shutdown()
    mark("close")
    t["total"] = (last - t0) * 1000.0
    t["source_depth"] = depth
    t["flatten_needed"] = depth + 1 > max_depth
    return t

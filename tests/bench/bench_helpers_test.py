#!/usr/bin/python3
"""Checks of the bench's helper scripts that need no cluster: make_image.py's data packs
about 2:1 under deflate with no all-zero cluster, and cinder_rbd.py times every step of
Cinder's clone, in Cinder's order, and walks the whole parent chain."""
import os
import sys
import tempfile
import types
import unittest
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
import make_image  # noqa: E402


class MakeImageTest(unittest.TestCase):
    def test_dense_data_packs_about_two_to_one(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "img.raw")
            size = 8 * 1024 * 1024
            make_image.write_image(path, size, size, 3)
            with open(path, "rb") as f:
                data = f.read()
        self.assertEqual(len(data), size)
        cl = make_image.CLUSTER
        clusters = [data[i:i + cl] for i in range(0, size, cl)]
        self.assertFalse([i for i, c in enumerate(clusters) if not c.strip(b"\0")])
        self.assertEqual(len(set(clusters)), len(clusters))  # no two clusters equal
        packed = sum(len(zlib.compress(c, 6)) for c in clusters)
        self.assertTrue(1.6 <= size / packed <= 2.5, size / packed)

    def test_sparse_tail_is_a_hole(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "img.raw")
            make_image.write_image(path, 4 * 1024 * 1024, 1024 * 1024 + 5, 1)
            st = os.stat(path)
            with open(path, "rb") as f:
                f.seek(1024 * 1024 + 5)
                tail = f.read()
        self.assertEqual(st.st_size, 4 * 1024 * 1024)
        self.assertEqual(tail.strip(b"\0"), b"")
        self.assertLess(st.st_blocks * 512, 3 * 1024 * 1024)


class FakeImage:
    def __init__(self, log, parents, name, read_only=False):
        self.log, self.parents, self.name = log, parents, name
        log.append("open " + name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.log.append("close " + self.name)

    def create_snap(self, snap):
        self.log.append("snapshot " + snap)

    def protect_snap(self, snap):
        self.log.append("protect " + snap)

    def parent_info(self):
        if self.name not in self.parents:
            raise FakeRbd.ImageNotFound()
        return ("pool", self.parents[self.name], "snap")


class FakeRbd(types.SimpleNamespace):
    class ImageNotFound(Exception):
        pass


class CinderRbdTest(unittest.TestCase):
    def test_steps_timed_in_cinder_order(self):
        import cinder_rbd
        log = []
        parents = {"entry": "vol", "vol": "base"}  # entry is 2 clones deep
        fake_rbd = FakeRbd(ImageNotFound=FakeRbd.ImageNotFound,
                           Image=lambda io, n, read_only=False: FakeImage(log, parents, n),
                           RBD=lambda: types.SimpleNamespace(
                               clone=lambda *a, **k: log.append("clone " + a[4])))

        class Cluster:
            def __init__(self, **kw):
                log.append("rados")

            def connect(self):
                log.append("connect")

            def open_ioctx(self, pool):
                return types.SimpleNamespace(close=lambda: log.append("ioctx close"))

            def shutdown(self):
                log.append("shutdown")

        ticks = iter(range(100))
        saved = cinder_rbd.rados, cinder_rbd.rbd
        cinder_rbd.rados, cinder_rbd.rbd = types.SimpleNamespace(Rados=Cluster), fake_rbd
        try:
            t = cinder_rbd.cloned_volume("c", "p", "entry", "new", max_depth=2,
                                         clock=lambda: next(ticks) / 1000.0)
        finally:
            cinder_rbd.rados, cinder_rbd.rbd = saved
        self.assertEqual(log, ["rados", "connect", "open entry", "snapshot new.clone_snap",
                               "protect new.clone_snap", "clone new", "close entry",
                               "open entry", "close entry", "open vol", "close vol",
                               "open base", "close base", "ioctx close", "shutdown"])
        for step in cinder_rbd.STEPS:
            self.assertEqual(t[step], 1.0, step)  # one clock tick each
        self.assertEqual(t["total"], float(len(cinder_rbd.STEPS)))
        self.assertEqual(t["source_depth"], 2)
        self.assertTrue(t["flatten_needed"])


if __name__ == "__main__":
    unittest.main()

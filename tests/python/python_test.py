#!/usr/bin/python3
"""Tests of the `cachemgr` Python module (python/cachemgr_module.cpp).

Runs Debian's /usr/bin/python3 with PYTHONPATH at the module's build dir, against a real
backend:
  --backend local  a directory under the test run dir
  --backend rbd    the ceph fixture's cluster (${CACHEMGR_TEST_RUN_DIR}/ceph/ceph.conf, pool
                   "volumes"), each test in its own RBD namespace
The source is a directory of image files named by id (the file source), made here.
Run by CTest (tests/python/CMakeLists.txt).
"""
import argparse
import faulthandler
import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
import unittest
import uuid

import cachemgr

RUN_DIR = os.environ.get("CACHEMGR_TEST_RUN_DIR", "/tmp/cachemgr-test-run")
BACKEND = "local"
MiB = 1 << 20
THREADS = 8
# A call that never returns (a GIL held while the engine waits) fails the test with every
# thread's stack instead of hanging until CTest's timeout.
WATCHDOG_S = int(os.environ.get("CACHEMGR_PY_WATCHDOG_S", "600"))


def pattern(size, seed):
    """Deterministic, non-zero, different per seed and per 64 KiB chunk."""
    block = hashlib.sha256(("seed-%d" % seed).encode()).digest() * 2048  # 64 KiB
    out = bytearray()
    for i in range(size // len(block)):
        out += i.to_bytes(8, "little") + block[8:]
    return bytes(out[:size])


class World:
    """The image directory all tests share (the file source)."""

    def __init__(self):
        self.root = os.path.join(RUN_DIR, "python-%s-%d" % (BACKEND, os.getpid()))
        shutil.rmtree(self.root, ignore_errors=True)
        self.images = os.path.join(self.root, "images")
        os.makedirs(self.images)
        self.raw = {}

    def add_raw(self, size=8 * MiB):
        image_id = str(uuid.uuid4())
        data = pattern(size, len(self.raw) + 1)
        with open(os.path.join(self.images, image_id), "wb") as f:
            f.write(data)
        self.raw[image_id] = data
        return image_id


WORLD = None


class Env:
    """One cache: its own index, local root (or RBD namespace) and config file."""

    counter = 0

    def __init__(self, name):
        Env.counter += 1
        self.name = "%s%d" % (name, Env.counter)
        self.dir = os.path.join(WORLD.root, self.name)
        os.makedirs(self.dir, exist_ok=True)
        self.local_root = os.path.join(self.dir, "cache")
        self.namespace = "py-%d-%s" % (os.getpid(), self.name)
        self.ceph_conf = os.path.join(RUN_DIR, "ceph", "ceph.conf")
        if BACKEND == "local":
            backend = "backend:\n  type: local\n  local:\n    root: %s\n" % self.local_root
        else:
            backend = ("backend:\n  type: rbd\n  rbd:\n    conf: %s\n    pool: volumes\n"
                       "    namespace: %s\n" % (self.ceph_conf, self.namespace))
        self.config = os.path.join(self.dir, "cachemgr.yaml")
        with open(self.config, "w") as f:
            f.write("index: %s\n%ssource:\n  type: file\n  file:\n    dir: %s\n"
                    "conversion:\n  dir: %s\n" % (os.path.join(self.dir, "index.db"), backend,
                                                 WORLD.images,
                                                 os.path.join(self.dir, "conversion")))

    def open(self, **kw):
        return cachemgr.Cache.open(self.config, **kw)

    def read_volume(self, name, length):
        """The first `length` bytes a guest would read from volume `name`."""
        if BACKEND == "local":
            path = os.path.join(self.local_root, "volumes", name)
            out = os.path.join(self.dir, name + ".raw")
            subprocess.run(["qemu-img", "convert", "-O", "raw", path, out], check=True)
            with open(out, "rb") as f:
                data = f.read(length)
            os.unlink(out)
            return data
        import rados, rbd  # noqa: E401 (Debian's python3-rbd)
        with rados.Rados(conffile=self.ceph_conf) as cluster:
            with cluster.open_ioctx("volumes") as io:
                io.set_namespace(self.namespace)
                with rbd.Image(io, name, read_only=True) as img:
                    return img.read(0, length)

    def volume_exists(self, name):
        if BACKEND == "local":
            return os.path.exists(os.path.join(self.local_root, "volumes", name))
        import rados, rbd  # noqa: E401
        with rados.Rados(conffile=self.ceph_conf) as cluster:
            with cluster.open_ioctx("volumes") as io:
                io.set_namespace(self.namespace)
                return name in rbd.RBD().list(io)


def run_threads(fn, n):
    """Runs fn(i) in n threads started together; returns the results, raises the first
    exception any raised."""
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def one(i):
        try:
            barrier.wait()
            results[i] = fn(i)
        except BaseException as e:  # noqa: B902 (re-raised below)
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


class PythonModuleTest(unittest.TestCase):
    def setUp(self):
        self.env = Env(self._testMethodName.replace("test_", "")[:16])
        self.cache = self.env.open()

    def tearDown(self):
        self.cache.close()

    def test_threads_make_volumes_from_one_image(self):
        image = WORLD.add_raw(8 * MiB)
        data = WORLD.raw[image]

        # Cold: the fill is single-flight, so exactly one of the concurrent creates is
        # the miss; the others wait for it and clone the entry it made.
        first = run_threads(
            lambda i: self.cache.create_volume(image, "vol-a%d" % i), THREADS)
        plans = sorted(r.plan for r in first)
        self.assertEqual(plans, ["clone"] * (THREADS - 1) + ["miss"], first)
        miss = [r for r in first if r.plan == "miss"][0]
        self.assertEqual(miss.bytes_downloaded, len(data))
        self.assertGreater(miss.fill_ms, 0)
        # Warm: every create is a clone, nothing downloaded.
        second = run_threads(
            lambda i: self.cache.create_volume(image, "vol-b%d" % i, size=0), THREADS)
        self.assertEqual({r.plan for r in second}, {"clone"})
        self.assertEqual({r.bytes_downloaded for r in second}, {0})

        made = first + second
        self.assertEqual(sorted(r.volume for r in made),
                         sorted(["vol-a%d" % i for i in range(THREADS)] +
                                ["vol-b%d" % i for i in range(THREADS)]))
        for r in made:
            self.assertEqual(r.image_id, image)
            self.assertEqual(r.size_bytes, len(data))
            self.assertGreaterEqual(r.depth, 1)
            self.assertGreater(r.elapsed_ms, 0)
            self.assertEqual(r.to_dict()["plan"], r.plan)
            self.assertIn("CreateVolumeResult(volume=", repr(r))
            self.assertEqual(self.env.read_volume(r.volume, len(data)), data, r.volume)

        entries = self.cache.list()
        self.assertEqual([e.image_id for e in entries], [image])
        self.assertEqual(entries[0].state, "ready")
        self.assertEqual(entries[0].backend, BACKEND)
        self.assertEqual(entries[0].virtual_size, len(data))
        self.assertEqual(entries[0].volumes, 2 * THREADS)
        self.assertEqual(self.cache.lookup(image).cache_name, entries[0].cache_name)
        self.assertIsNone(self.cache.lookup(str(uuid.uuid4())))
        vols = self.cache.volumes(image)
        self.assertEqual(len(vols), 2 * THREADS)
        self.assertEqual(sorted(v.plan for v in vols), sorted(r.plan for r in made))

        stats = self.cache.stats()
        self.assertEqual(stats["misses"], 1)
        self.assertEqual(stats["hits"], 2 * THREADS - 1)
        self.assertEqual(stats["entries"], 1)
        self.assertEqual(stats["volumes"], 2 * THREADS)
        self.assertEqual(stats["bytes_downloaded"], len(data))
        self.assertEqual(stats["by_plan"]["miss"]["count"], 1)
        self.assertEqual(stats["misses_by_reason"]["cold"]["count"], 1)
        self.assertEqual(stats["by_plan"]["clone"]["count"], 2 * THREADS - 1)

        report = self.cache.evict(dry_run=True)
        self.assertEqual(report.entries_before, 1)
        self.assertEqual(report.entries_after, 1)  # under every limit: nothing to evict
        self.assertFalse(any(a.done for a in report.actions), report.actions)
        self.assertGreater(report.bytes_before, 0)
        self.assertIsInstance(report.to_dict()["actions"], list)

        # Deletes from threads too.
        run_threads(lambda i: self.cache.delete_volume(made[i].volume), len(made))
        self.assertEqual(self.cache.volumes(), [])
        for r in made:
            self.assertFalse(self.env.volume_exists(r.volume), r.volume)
        self.assertEqual(self.cache.stats()["volumes"], 0)
        with self.assertRaises(cachemgr.NotFoundError):
            self.cache.delete_volume(made[0].volume)

    def test_unknown_image_raises_not_found(self):
        ghost = str(uuid.uuid4())
        with self.assertRaises(cachemgr.NotFoundError) as cm:
            self.cache.create_volume(ghost, "vol-ghost")
        e = cm.exception
        self.assertIsInstance(e, cachemgr.Error)
        self.assertIsInstance(e, LookupError)
        self.assertEqual(e.code, "not_found")
        self.assertEqual(e.exit_code, 3)
        self.assertIn(ghost, str(e))
        self.assertIs(cachemgr.ERROR_CLASSES["not_found"], cachemgr.NotFoundError)
        # The exception survives pickling (a multiprocessing worker can send it back).
        back = pickle.loads(pickle.dumps(e))
        self.assertIs(type(back), cachemgr.NotFoundError)
        self.assertEqual((str(back), back.code, back.exit_code), (str(e), "not_found", 3))
        with self.assertRaises(cachemgr.NotFoundError):
            self.cache.prefill(ghost)
        self.assertFalse(self.env.volume_exists("vol-ghost"))
        # Concurrent callers get it too, each in its own thread.
        errors = run_threads(lambda i: self._code_of(
            lambda: self.cache.create_volume(ghost, "vol-ghost%d" % i)), 4)
        self.assertEqual(errors, ["not_found"] * 4)
        self.assertEqual(self.cache.volumes(), [])

    @staticmethod
    def _code_of(fn):
        try:
            fn()
        except cachemgr.Error as e:
            return e.code
        return None

    def test_other_errors_carry_their_code(self):
        with self.assertRaises(cachemgr.InvalidArgumentError) as cm:
            self.cache.create_volume("../etc/passwd", "vol-x")
        self.assertEqual((cm.exception.code, cm.exception.exit_code), ("invalid_argument", 2))
        self.assertIsInstance(cm.exception, ValueError)
        image = WORLD.add_raw(1 * MiB)
        self.cache.create_volume(image, "vol-taken")
        with self.assertRaises(cachemgr.Error) as cm:
            self.cache.create_volume(image, "vol-taken")
        self.assertEqual(cm.exception.code, "already_exists")
        with self.assertRaises(cachemgr.ConfigError) as cm:
            cachemgr.Cache.open(os.path.join(self.env.dir, "missing.yaml"))
        self.assertEqual((cm.exception.code, cm.exception.exit_code), ("config", 2))
        with self.assertRaises(cachemgr.InvalidArgumentError):  # an argument, not the config
            self.env.open(log_level="chatty")
        self.cache.close()
        self.assertTrue(self.cache.closed)
        with self.assertRaises(cachemgr.InvalidArgumentError):
            self.cache.list()

    def test_prefill_progress_callback(self):
        image = WORLD.add_raw(24 * MiB)
        calls = []
        result = self.cache.prefill(image, progress=calls.append)
        self.assertEqual(result.outcome, "filled")
        self.assertEqual(result.image_id, image)
        self.assertEqual(result.virtual_size, 24 * MiB)
        self.assertEqual(result.bytes_downloaded, 24 * MiB)
        self.assertTrue(calls, "the progress callback was never called")
        by_stage = {}
        for p in calls:
            self.assertIsInstance(p, cachemgr.Progress)
            self.assertEqual(p.image_id, image)
            by_stage.setdefault(p.stage, []).append(p)
        self.assertIn("download", by_stage, calls)
        for stage, ps in by_stage.items():
            done = [p.done_bytes for p in ps]
            self.assertEqual(done, sorted(done), "%s: not increasing: %s" % (stage, done))
            for p in ps:
                if p.total_bytes:
                    self.assertLessEqual(p.done_bytes, p.total_bytes)
        download = by_stage["download"]
        self.assertGreater(len(download), 1, download)
        self.assertEqual(download[-1].done_bytes, 24 * MiB)
        # Cached and fresh: nothing to do, no progress.
        calls.clear()
        again = self.cache.prefill(image, progress=calls.append)
        self.assertEqual(again.outcome, "fresh")
        self.assertEqual(again.bytes_downloaded, 0)
        made = self.cache.create_volume(image, "vol-p", progress=calls.append)
        self.assertEqual(made.plan, "clone")

    def test_progress_callback_exception_aborts_the_call(self):
        image = WORLD.add_raw(8 * MiB)

        class Stop(Exception):
            pass

        seen = []

        def stop(p):
            seen.append(p)
            raise Stop("enough at %d" % p.done_bytes)

        with self.assertRaises(Stop):
            self.cache.create_volume(image, "vol-stopped", progress=stop)
        self.assertEqual(len(seen), 1)  # not called again once it raised
        self.assertFalse(self.env.volume_exists("vol-stopped"))
        self.assertEqual(self.cache.volumes(), [])
        self.assertIsNone(self.cache.lookup(image))
        with self.assertRaises(Stop):
            self.cache.prefill(image, progress=stop)
        # A callback that is not callable with a Progress fails the same way (TypeError).
        with self.assertRaises(TypeError):
            self.cache.prefill(image, progress=lambda: None)
        # Nothing half-made is left: the next call starts afresh.
        made = self.cache.create_volume(image, "vol-stopped")
        self.assertEqual(made.plan, "miss")
        self.assertEqual(self.env.read_volume("vol-stopped", 8 * MiB), WORLD.raw[image])

    def test_a_call_from_inside_a_progress_callback_is_refused(self):
        # create_volume of the same cold image from its own callback would wait for the
        # fill that runs the callback: refused at once, and the outer call aborts cleanly.
        image = WORLD.add_raw(4 * MiB)
        inner = []

        def reenter(p):
            try:
                self.cache.create_volume(image, "vol-inner")
            except cachemgr.InvalidArgumentError as e:
                inner.append(e)
                raise

        with self.assertRaises(cachemgr.InvalidArgumentError):
            self.cache.create_volume(image, "vol-outer", progress=reenter)
        self.assertEqual(len(inner), 1)
        self.assertEqual(inner[0].code, "invalid_argument")
        self.assertIn("inside a progress callback", str(inner[0]))
        self.assertEqual(self.cache.volumes(), [])
        self.assertEqual(self.cache.create_volume(image, "vol-outer").plan, "miss")
        # A bad log level names the argument.
        with self.assertRaises(cachemgr.InvalidArgumentError) as bad:
            cachemgr.Cache.open(self.env.config, log_level="loud")
        self.assertIn("log_level", str(bad.exception))

    def test_gil_released_while_the_engine_waits(self):
        # The leader's fill stops in its progress callback until the main thread says go;
        # meanwhile a second thread's create of the same image waits inside the engine for
        # that fill. Had that call kept the GIL, the main thread could never say go: the
        # watchdog would end the test. No timing is asserted.
        image = WORLD.add_raw(8 * MiB)
        in_fill, go = threading.Event(), threading.Event()
        results = {}

        def hold(p):
            in_fill.set()
            go.wait()

        def leader():
            results["leader"] = self.cache.create_volume(image, "vol-lead", progress=hold)

        def follower():
            results["follower"] = self.cache.create_volume(image, "vol-follow")

        a = threading.Thread(target=leader)
        a.start()
        self.assertTrue(in_fill.wait(120))
        b = threading.Thread(target=follower)
        b.start()
        # Let the follower get into the engine, counting meanwhile: this thread runs.
        count = 0
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            count += 1
            time.sleep(0.001)
        self.assertGreater(count, 0)
        self.assertTrue(b.is_alive(), "the follower did not wait for the fill")
        go.set()
        a.join()
        b.join()
        self.assertEqual(results["leader"].plan, "miss")
        self.assertEqual(results["follower"].plan, "clone")
        self.assertGreater(results["follower"].wait_ms, 0)

        # A long create in a worker while this thread keeps counting.
        big = WORLD.add_raw(48 * MiB)
        counts = []
        done = threading.Event()

        def worker():
            try:
                results["big"] = self.cache.create_volume(
                    big, "vol-big", progress=lambda p: counts.append(counter[0]))
            finally:
                done.set()

        counter = [0]
        t = threading.Thread(target=worker)
        t.start()
        while not done.is_set():
            counter[0] += 1
        t.join()
        self.assertEqual(results["big"].plan, "miss")
        self.assertGreater(counter[0], 0)
        self.assertGreater(counts[-1], counts[0], "no Python ran while the engine worked")

    def test_instant_miss_imports_on_an_engine_thread(self):
        """cache.instant_miss: RBD serves the miss at once and the engine's own thread
        finishes the import (wait_for_imports); the local backend makes a normal miss."""
        self.cache.close()
        with open(self.env.config, "a") as f:
            f.write("cache:\n  instant_miss: on\n")
        self.cache = self.env.open()
        image = WORLD.add_raw(32 * MiB)
        made = self.cache.create_volume(image, "vol-instant")
        self.assertEqual(made.plan, "instant" if BACKEND == "rbd" else "miss")
        done = self.cache.wait_for_imports()
        if BACKEND == "rbd":
            self.assertEqual([(r["image_id"], r["outcome"]) for r in done], [(image, "committed")])
            self.assertEqual(self.cache.stats()["imports_pending"], 0)
            self.assertEqual(self.cache.finish_import(image)["outcome"], "none")
        else:
            self.assertEqual(done, [])
        self.assertEqual(self.cache.bad_entries(), [])
        self.assertEqual(self.env.read_volume("vol-instant", 32 * MiB), WORLD.raw[image])
        self.assertEqual(self.cache.create_volume(image, "vol-instant2").plan, "clone")

    def test_context_manager_and_quiet_logging(self):
        image = WORLD.add_raw(1 * MiB)
        self.cache.close()
        # The default: warnings only on stderr; info when asked.
        script = ("import cachemgr, sys\n"
                  "with cachemgr.Cache.open(sys.argv[1], log_level=sys.argv[3] or None) as c:\n"
                  "    print(c.create_volume(sys.argv[2], 'vol-' + (sys.argv[3] or 'q')).plan)\n"
                  "    print(c.closed)\n"
                  "print(c.closed)\n")
        quiet = subprocess.run([sys.executable, "-c", script, self.env.config, image, ""],
                               capture_output=True, text=True, timeout=300)
        self.assertEqual(quiet.returncode, 0, quiet.stderr)
        self.assertEqual(quiet.stdout.split(), ["miss", "False", "True"])
        self.assertEqual(quiet.stderr, "")
        loud = subprocess.run([sys.executable, "-c", script, self.env.config, image, "info"],
                              capture_output=True, text=True, timeout=300)
        self.assertEqual(loud.returncode, 0, loud.stderr)
        self.assertEqual(loud.stdout.split(), ["clone", "False", "True"])
        self.assertIn("info", loud.stderr)


def main():
    global BACKEND, WORLD
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["local", "rbd"], default="local")
    args, rest = parser.parse_known_args()
    BACKEND = args.backend
    if BACKEND == "rbd" and not os.path.exists(os.path.join(RUN_DIR, "ceph", "ceph.conf")):
        sys.exit("no Ceph cluster at %s/ceph (the ceph fixture did not start)" % RUN_DIR)
    print("cachemgr module %s from %s" % (cachemgr.__version__, cachemgr.__file__))
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    WORLD = World()
    result = unittest.main(argv=[sys.argv[0], "-v"] + rest, exit=False).result
    faulthandler.cancel_dump_traceback_later()
    if result.wasSuccessful():
        shutil.rmtree(WORLD.root, ignore_errors=True)
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()

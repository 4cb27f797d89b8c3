"""The free-space floor through the `cachemgr` tool: its keys validated (exit 2 naming the
key), a miss that cannot make room refused (exit 1, the figures named), and the eviction
pass restoring the floor. The local root is a small loop-mounted ext4 filesystem, unmounted
and detached again by each test's cleanup, also when it fails; on RBD only the config cases
run (the engine tests cover the pool).

Imported by cli_test.py, whose Env, WORLD and run() it uses (through __main__).
"""
import json
import os
import subprocess
import unittest

import __main__ as cli

GiB = 1 << 30


class LoopRoot:
    """A 64 MiB ext4 (no reserved blocks, no journal) mounted at `mnt`."""

    def __init__(self, test, directory):
        self.image = os.path.join(directory, "fs.img")
        self.mnt = os.path.join(directory, "mnt")
        os.makedirs(self.mnt, exist_ok=True)
        subprocess.run(["truncate", "-s", str(64 * cli.MiB), self.image], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", self.image],
                       check=True)
        subprocess.run(["mount", "-o", "loop", self.image, self.mnt], check=True)
        test.addCleanup(self.unmount)

    def unmount(self):
        if subprocess.run(["umount", self.mnt]).returncode != 0:
            subprocess.run(["umount", "-l", self.mnt])
        devices = subprocess.run(["losetup", "-l", "-n", "-O", "NAME", "-j", self.image],
                                 capture_output=True, text=True).stdout.split()
        for dev in devices:
            subprocess.run(["losetup", "-d", dev])

    def avail(self):
        st = os.statvfs(self.mnt)
        return st.f_bavail * st.f_frsize


class CliFloorTest(unittest.TestCase):
    def test_floor_keys_are_validated(self):
        env = cli.Env("floorcfg")
        for line, key in [("min_free_percent: 100", "cache.min_free_percent"),
                          ("min_free_percent: -1", "cache.min_free_percent"),
                          ("min_free_gb: -0.5", "cache.min_free_gb"),
                          ("min_free_gb: lots", "cache.min_free_gb"),
                          ("on_no_room: wait", "cache.on_no_room")]:
            env.write_config(cache=line, path=env.config)
            rc, _, err = env.run("list")
            self.assertEqual(rc, cli.EXIT_USAGE, line + ": " + err)
            self.assertIn(key, err)
        env.write_config(cache="min_free_percent: 12.5;min_free_gb: 0.5;on_no_room: refuse",
                         path=env.config)
        rc, _, err = env.run("list")
        self.assertEqual(rc, cli.EXIT_OK, err)

    def floor_env(self, name):
        """A cache rooted on a fresh loop filesystem (no floor yet)."""
        if cli.BACKEND != "local":
            self.skipTest("the loop-mounted root is the local backend's")
        env = cli.Env(name)
        fs = LoopRoot(self, env.dir)
        env.local_root = os.path.join(fs.mnt, "cache")
        env.write_config(path=env.config)
        return env, fs

    def set_floor(self, env, floor, on_no_room="uncached"):
        env.write_config(cache="min_free_gb: %r;on_no_room: %s" % (floor / GiB, on_no_room),
                         path=env.config)

    def test_no_room_is_refused_naming_the_figures(self):
        env, fs = self.floor_env("floorrefuse")
        image = cli.WORLD.add_raw(size=8 * cli.MiB)
        floor = fs.avail() - 4 * cli.MiB
        self.set_floor(env, floor, "refuse")
        rc, _, err = env.run("create", image, "vol-refused")
        self.assertEqual(rc, cli.EXIT_FAILED, err)
        for word in ["no room", "floor", "cache.min_free_percent", "cache.on_no_room"]:
            self.assertIn(word, err)
        self.assertEqual(env.json("list"), [])
        self.assertGreaterEqual(fs.avail(), floor)

    def test_evict_restores_the_floor(self):
        env, fs = self.floor_env("floorpass")
        ids = [cli.WORLD.add_raw(size=8 * cli.MiB) for _ in range(3)]
        for image in ids:
            rc, _, err = env.run("prefill", image)
            self.assertEqual(rc, cli.EXIT_OK, err)
        # Something else takes 12 MiB of the filesystem; the floor is 4 MiB above what is
        # left, so the pass evicts the least recently used entry (8 MiB) and no more.
        os.makedirs(os.path.join(fs.mnt, "other"))
        with open(os.path.join(fs.mnt, "other", "filler"), "wb") as f:
            f.write(os.urandom(12 * cli.MiB))
            os.fsync(f.fileno())
        floor = fs.avail() + 4 * cli.MiB
        self.set_floor(env, floor)
        doc = env.json("evict")
        evicted = [a["image_id"] for a in doc["actions"] if a["kind"] == "evict" and a["done"]]
        self.assertEqual(evicted, [ids[0]])
        self.assertTrue(all("free-space floor" in a["reason"] for a in doc["actions"]
                            if a["kind"] == "evict"))
        self.assertEqual(sorted(e["image_id"] for e in env.json("list")), sorted(ids[1:]))
        self.assertGreaterEqual(fs.avail(), floor)

#!/usr/bin/python3
"""The `cachemgr` tool never harms what it did not make (on --backend local or rbd).

Objects made by someone else at a volume's name, objects whose names only look like the
cache's (40 hex digits, staging-<hex>-*), copies of the cache's own objects (metadata and
all, as `rbd cp` makes them) and objects made again under a volume's name are refused or
left alone, byte for byte. Concurrent creates of one name have exactly one winner.
Shares cli_test.py's World and Env; run by CTest like it.
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import unittest

import cli_test
from cli_test import EXIT_FAILED, EXIT_OK, MiB, Env, World

HEX40 = "0123456789abcdef0123456789abcdef01234567"


def ceph_conf():
    return os.path.join(cli_test.RUN_DIR, "ceph", "ceph.conf")


class Objects:
    """Makes and observes objects on the backend of `env`, as an operator would."""

    def __init__(self, env):
        self.env = env

    # --- local: files under the root ------------------------------------------------
    def _path(self, pool, name):
        return os.path.join(self.env.local_root, pool, name)

    def _sidecar(self, pool, name):
        return os.path.join(self.env.local_root, pool, ".meta", name + ".json")

    def _io(self):
        import rados  # noqa: E401 (Debian's python3-rados)
        cluster = rados.Rados(conffile=ceph_conf())
        cluster.connect()
        io = cluster.open_ioctx("volumes")
        io.set_namespace(self.env.namespace)
        return cluster, io

    def make(self, pool, name, seed, metadata=None, snaps=(), clone_to=None):
        data = cli_test.pattern(2 * MiB, seed)
        if cli_test.BACKEND == "local":
            os.makedirs(os.path.dirname(self._sidecar(pool, name)), exist_ok=True)
            with open(self._path(pool, name), "wb") as f:
                f.write(data)
            if metadata is not None:
                with open(self._sidecar(pool, name), "w") as f:
                    f.write('{"schema": 1, "format": "raw", "metadata": %s, "snapshots": [],'
                            ' "parent": null}' % __import__("json").dumps(metadata))
            return
        import rbd  # noqa: E401
        cluster, io = self._io()
        try:
            rbd.RBD().create(io, name, len(data))
            with rbd.Image(io, name) as img:
                img.write(data, 0)
                for k, v in (metadata or {}).items():
                    img.metadata_set(k, v)
                for s in snaps:
                    img.create_snap(s)
                    img.protect_snap(s)
            if clone_to:
                rbd.RBD().clone(io, name, snaps[0], io, clone_to)
        finally:
            io.close()
            cluster.shutdown()

    def copy(self, pool, src, dest):
        """A copy with its metadata, as `rbd cp` (or cp of the file and its sidecar)."""
        if cli_test.BACKEND == "local":
            shutil.copyfile(self._path(pool, src), self._path(pool, dest))
            shutil.copyfile(self._sidecar(pool, src), self._sidecar(pool, dest))
            return
        subprocess.run(["rbd", "--conf", ceph_conf(), "cp", "volumes/%s/%s" % (
            self.env.namespace, src), "volumes/%s/%s" % (self.env.namespace, dest)],
            check=True, capture_output=True)

    def remove(self, pool, name):
        if cli_test.BACKEND == "local":
            os.unlink(self._path(pool, name))
            return
        subprocess.run(["rbd", "--conf", ceph_conf(), "rm", "volumes/%s/%s" % (
            self.env.namespace, name)], check=True, capture_output=True)

    def observe(self, pool, name):
        """Everything a user would notice: bytes, metadata, snapshots, clones, identity."""
        if cli_test.BACKEND == "local":
            path = self._path(pool, name)
            if not os.path.exists(path):
                return None
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            side = None
            if os.path.exists(self._sidecar(pool, name)):
                with open(self._sidecar(pool, name)) as f:
                    side = f.read()
            st = os.stat(path)
            return (digest, side, st.st_ino, st.st_mtime_ns)
        import rbd  # noqa: E401
        cluster, io = self._io()
        try:
            try:
                img = rbd.Image(io, name, read_only=True)
            except rbd.ImageNotFound:
                return None
            with img:
                digest = hashlib.sha256(img.read(0, img.size())).hexdigest()
                meta = sorted(img.metadata_list())
                snaps = []
                for s in img.list_snaps():
                    img.set_snap(s["name"])
                    snaps.append((s["name"], sorted(c for c in img.list_children())))
                img.set_snap(None)
                return (digest, meta, snaps, img.id())
        finally:
            io.close()
            cluster.shutdown()

    def names(self, pool):
        if cli_test.BACKEND == "local":
            return sorted(n for n in os.listdir(os.path.join(self.env.local_root, pool))
                          if not n.startswith("."))
        import rbd  # noqa: E401
        cluster, io = self._io()
        try:
            return sorted(rbd.RBD().list(io))
        finally:
            io.close()
            cluster.shutdown()


def entry_pool():
    return "_base" if cli_test.BACKEND == "local" else "volumes"


class OwnershipTest(unittest.TestCase):
    def test_create_refuses_a_name_someone_else_holds_and_leaves_it_untouched(self):
        env = Env("foreign")
        objs = Objects(env)
        image = cli_test.WORLD.add_raw()
        self.assertEqual(env.run("prefill", image)[0], EXIT_OK)
        objs.make("volumes", "plain", 1)
        if cli_test.BACKEND == "local":
            objs.make("volumes", "with-sidecar", 2, metadata={"owner": "operator"})
            names = ["plain", "with-sidecar"]
        else:
            objs.make("volumes", "with-snaps", 2, metadata={"owner": "operator"},
                      snaps=["s1", "s2"])
            objs.make("volumes", "with-clone", 3, snaps=["base"], clone_to="its-clone")
            names = ["plain", "with-snaps", "with-clone", "its-clone"]
        for name in names:
            before = objs.observe("volumes", name)
            for img in (image, cli_test.WORLD.add_raw()):  # a hit and a miss
                rc, _, err = env.run("create", img, name)
                self.assertEqual(rc, EXIT_FAILED, err)
                self.assertIn("already exists", err)
                self.assertIn(name, err)
                self.assertEqual(objs.observe("volumes", name), before, name)
        self.assertEqual(env.json("evict")["failed"], 0)
        for name in names:
            self.assertIsNotNone(objs.observe("volumes", name))
        self.assertFalse([n for n in objs.names("volumes") if n.startswith("staging-")])

    def test_concurrent_creates_of_one_name_have_one_winner(self):
        env = Env("race")
        image = cli_test.WORLD.add_raw()
        self.assertEqual(env.run("prefill", image)[0], EXIT_OK)
        results = [None] * 3

        def create(i):
            results[i] = env.run("create", image, "contested")

        threads = [threading.Thread(target=create, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r[0] for r in results)
        self.assertEqual(codes, [EXIT_OK, EXIT_FAILED, EXIT_FAILED], results)
        shown = env.json("show", image)
        self.assertEqual([v["name"] for v in shown["volume_list"]], ["contested"])
        self.assertEqual(env.read_volume("contested", 4 * MiB), cli_test.WORLD.raw[image])
        self.assertEqual(env.json("evict")["failed"], 0)
        self.assertEqual(env.read_volume("contested", 4 * MiB), cli_test.WORLD.raw[image])

    def test_evict_leaves_alone_objects_that_only_look_like_the_caches(self):
        env = Env("lookalike")
        objs = Objects(env)
        image = cli_test.WORLD.add_raw()
        self.assertEqual(env.run("prefill", image)[0], EXIT_OK)
        entry = env.json("show", image)["cache_name"]
        pool = entry_pool()
        objs.make(pool, HEX40, 4)
        objs.make(pool, "staging-%s-theirs" % HEX40, 5)
        # Copies of the cache's own entry, its metadata copied along.
        objs.copy(pool, entry, "fedcba9876543210fedcba9876543210fedcba98")
        objs.copy(pool, entry, "staging-%s-copy" % ("f" * 40))
        names = [HEX40, "staging-%s-theirs" % HEX40,
                 "fedcba9876543210fedcba9876543210fedcba98", "staging-%s-copy" % ("f" * 40)]
        before = {n: objs.observe(pool, n) for n in names}
        report = env.json("evict")
        self.assertEqual(report["failed"], 0, report)
        left = {a["name"] for a in report["actions"] if a["kind"] == "left alone"}
        for n in names:
            self.assertEqual(objs.observe(pool, n), before[n], n)
            self.assertIn(n, left)
        self.assertEqual(len(env.json("list")), 1)
        self.assertEqual(env.json("stats")["left_alone"], len(names))
        rc, out, _ = env.run("stats", "--prometheus")
        self.assertIn("cachemgr_left_alone %d" % len(names), out)
        rc, out, _ = env.run("doctor")
        self.assertIn(HEX40, out)

    def test_every_command_passes_over_names_the_cache_cannot_make(self):
        # Names outside the cache's own alphabet ([A-Za-z0-9._-], at most 200, no leading
        # '-'), as another tool may leave them in a shared pool: listed by the backend,
        # never a failure of a pass, never touched.
        env = Env("oddnames")
        objs = Objects(env)
        image = cli_test.WORLD.add_raw()
        self.assertEqual(env.run("prefill", image)[0], EXIT_OK)
        pool = entry_pool()
        names = ["has space", "-leading-dash", "caf\u00e9", "x" * 230, "semi;colon",
                 # shaped like the cache's staging names, but not names it can make
                 "staging-%s-x y" % HEX40, "staging-%s-%s" % (HEX40, "y" * 200),
                 "staging-vol-a b"]
        for i, n in enumerate(names):
            objs.make(pool, n, 20 + i)
        links = {}
        foreign_files = []
        if cli_test.BACKEND == "local":
            # A name that would forge a row of the table and colour the terminal.
            names.append("row\nforged \x1b[31m")
            objs.make(pool, names[-1], 40)
            # A file in the table of last uses under a key the cache cannot write.
            uses = os.path.join(env.local_root, ".state", "uses")
            os.makedirs(uses, exist_ok=True)
            foreign_files.append(os.path.join(uses, "my notes"))
            with open(foreign_files[-1], "w") as f:
                f.write("notes\n")
            # Links under odd names: to an image of the pool, and to a file outside it.
            outside = os.path.join(env.dir, "outside.img")
            with open(outside, "wb") as f:
                f.write(cli_test.pattern(MiB, 7))
            links = {"link to it": objs._path(pool, "has space"), "link;out": outside}
            for n, target in links.items():
                os.symlink(target, objs._path(pool, n))
            # Links that loop: at the top of the root (one named to forge rows), and as
            # the sidecar of a foreign file.
            for n in ("zz", "q\x1b[31m\rok   forged-row\nok   forged-row\x07"):
                os.symlink(n, os.path.join(env.local_root, n))
            names.append("plainforeign")
            objs.make(pool, names[-1], 41)
            os.symlink("plainforeign.json", objs._sidecar(pool, "plainforeign"))
        else:
            # The same in the omap of the table of last uses.
            import rados  # noqa: E401
            cluster, io = objs._io()
            try:
                with rados.WriteOpCtx() as op:
                    io.set_omap(op, ("my notes",), (b"notes",))
                    io.operate_write_op(op, "cachemgr.table.uses")
            finally:
                io.close()
                cluster.shutdown()
        before = {n: objs.observe(pool, n) for n in names + list(links)}
        files_before = {p: open(p, "rb").read() for p in foreign_files}
        for args in (["evict", "--dry-run"], ["evict"], ["evict"]):
            rc, out, err = env.run("--json", *args)
            self.assertEqual(rc, EXIT_OK, (args, err))
            report = __import__("json").loads(out)
            self.assertEqual(report["failed"], 0, report)
        rc, out, err = env.run("evict", "--dry-run")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertNotIn("\x1b", out + err)
        self.assertFalse([line for line in out.splitlines() if line.startswith("forged")], out)
        for cmd in ("list", "stats", "verify", "doctor"):
            rc, _, err = env.run(cmd)
            # doctor may warn of what it found (exit 1); no command fails on a name
            self.assertIn(rc, (EXIT_OK, EXIT_FAILED) if cmd == "doctor" else (EXIT_OK,),
                          (cmd, err))
            self.assertNotIn("name", err, (cmd, err))
        for n in names + list(links):
            self.assertEqual(objs.observe(pool, n), before[n], n)
        for n, target in links.items():
            self.assertEqual(os.readlink(objs._path(pool, n)), target)
        for p, data in files_before.items():
            self.assertEqual(open(p, "rb").read(), data, p)
        if cli_test.BACKEND != "local":
            import rados  # noqa: E401
            cluster, io = objs._io()
            try:
                with rados.ReadOpCtx() as op:
                    it, _ = io.get_omap_vals_by_keys(op, ("my notes",))
                    io.operate_read_op(op, "cachemgr.table.uses")
                    self.assertEqual(dict(it), {"my notes": b"notes"})
            finally:
                io.close()
                cluster.shutdown()
        self.assertEqual(len(env.json("list")), 1)
        self.assertEqual(env.run("create", image, "vol")[0], EXIT_OK)
        if cli_test.BACKEND == "local":
            # A volume name held by a link that loops or leads nowhere: taken, and said so.
            vols = os.path.join(env.local_root, "volumes")
            os.symlink("loop", os.path.join(vols, "loop"))
            os.symlink(os.path.join(env.dir, "nowhere"), os.path.join(vols, "dangling"))
            for n in ("loop", "dangling"):
                rc, _, err = env.run("create", image, n)
                self.assertEqual(rc, EXIT_FAILED, err)
                self.assertIn("already exists", err)
                self.assertTrue(os.path.islink(os.path.join(vols, n)))
            self.assertFalse(os.path.exists(os.path.join(env.dir, "nowhere")))
            # doctor's details name what it found: one line each, escaped.
            deep = os.path.join(vols, *["d%d" % i for i in range(16)],
                                "x\x1b[31m\nok   forged-row", "y")
            os.makedirs(deep)
            rc, out, err = env.run("doctor")
            self.assertIn("deeper", out)
            self.assertNotIn("\x1b", out + err)
            self.assertFalse([line for line in out.splitlines() if "forged-row" in line
                              and not line.startswith("FAIL")], out)
            shutil.rmtree(os.path.join(vols, "d0"))

    def test_delete_refuses_an_object_made_again_under_the_name(self):
        env = Env("recreated")
        objs = Objects(env)
        image = cli_test.WORLD.add_raw()
        self.assertEqual(env.run("create", image, "vol")[0], EXIT_OK)
        objs.remove("volumes", "vol")
        objs.make("volumes", "vol", 9)
        before = objs.observe("volumes", "vol")
        rc, _, err = env.run("delete", "vol")
        self.assertEqual(rc, EXIT_FAILED, err)
        self.assertIn("vol", err)
        self.assertEqual(objs.observe("volumes", "vol"), before)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["local", "rbd"], default="local")
    args, rest = parser.parse_known_args()
    cli_test.BACKEND = args.backend
    if not cli_test.BIN or not os.access(cli_test.BIN, os.X_OK):
        sys.exit("CACHEMGR_BIN is not set to the cachemgr binary")
    cli_test.WORLD = World()
    ok = cli_test.run_unittests([sys.argv[0]] + rest)
    if ok:
        shutil.rmtree(cli_test.WORLD.root, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

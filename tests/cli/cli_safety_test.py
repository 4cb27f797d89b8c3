#!/usr/bin/python3
"""End-to-end tests of what the tool leaves behind and what it refuses to touch.

A kill -9 at any moment leaves no child process and no temporary that one eviction pass
does not remove; an index file that is empty is refused (4) until `rebuild-index`; a
config that is not a regular file, a missing config, a system folder or a folder that
is not the cache's are refused (2) before anything is created. Same harness as
cli_test.py (its World, Env and run), on the local backend or the ceph fixture's RBD.
Over 600 lines: one test per kill moment and per refused input, each a few lines.
"""
import argparse
import fcntl
import glob
import json
import os
import signal
import subprocess
import sys
import time
import unittest
import uuid

import cli_test as base
from cli_test import (EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_BUSY, MiB, Env, run)


def alive(pid):
    """Whether `pid` is a running (not zombie) process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(predicate, timeout=30.0, step=0.005):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None


def temporaries(root):
    """`.tmp-*` files anywhere under a local root."""
    found = []
    for dirpath, _, files in os.walk(root):
        found += [os.path.join(dirpath, f) for f in files if f.startswith(".tmp-")]
    return found


def strace_or_skip(test, why):
    """The strace binary, on the local backend where strace can trace; else skips `test`
    (`why`: what the test needs of the local backend)."""
    if base.BACKEND != "local":
        test.skipTest(why)
    import shutil
    strace = shutil.which("strace")
    if not strace or subprocess.run([strace, "-o", "/dev/null", "true"],
                                    capture_output=True).returncode != 0:
        test.skipTest("strace cannot trace here")
    return strace


def start(env, *args, stderr=subprocess.DEVNULL):
    e = dict(os.environ)
    e.pop("CACHEMGR_CONFIG", None)
    return subprocess.Popen([base.BIN, "--config", env.config] + list(args),
                            stdout=subprocess.DEVNULL, stderr=stderr, env=e)


class SafetyTest(unittest.TestCase):
    # --- children die with the tool ------------------------------------------------

    def test_kill_9_during_conversion_leaves_no_qemu_img(self):
        """A conversion child outlives nothing: kill -9 the tool, the child goes too."""
        world = base.WORLD
        pid_file = os.path.join(world.root, "fake-qemu-%s.pid" % uuid.uuid4().hex[:8])
        fake = os.path.join(world.root, "fake-qemu-img-%s" % uuid.uuid4().hex[:8])
        with open(fake, "w") as f:
            f.write("#!/bin/sh\n"
                    "case \"$1\" in convert|map) echo $$ > %s; exec sleep 600;; esac\n"
                    "exec qemu-img \"$@\"\n" % pid_file)
        os.chmod(fake, 0o755)
        env = Env("pdeath")
        with open(env.config) as f:
            text = f.read()
        with open(env.config, "w") as f:
            f.write(text.replace("conversion:\n", "conversion:\n  qemu_img: %s\n" % fake))
        qcow = world.add_qcow2(size=8 * MiB)
        tool = start(env, "create", qcow, "vol-pdeath")
        child = wait_for(lambda: os.path.exists(pid_file) and open(pid_file).read().strip())
        self.assertTrue(child, "the fake qemu-img was never started")
        child = int(child)
        self.assertTrue(alive(child))
        tool.send_signal(signal.SIGKILL)
        tool.wait()
        gone = wait_for(lambda: not alive(child), timeout=10)
        if not gone:
            os.kill(child, signal.SIGKILL)
        self.assertTrue(gone, "qemu-img (pid %d) outlived the killed tool" % child)

    # --- peers that go away ------------------------------------------------------------

    def test_a_reader_that_went_away_does_not_end_the_tool(self):
        """stdout a pipe with no reader: the tool fails to write, it is not killed."""
        r, w = os.pipe()
        os.close(r)
        try:
            # subprocess gives the child the default SIGPIPE action, as a shell would.
            proc = subprocess.run([base.BIN, "--help"], stdout=w, stderr=subprocess.PIPE,
                                  timeout=60)
        finally:
            os.close(w)
        self.assertNotEqual(proc.returncode, -signal.SIGPIPE, "the tool died of SIGPIPE")
        # ... and says that its output was lost, instead of reporting success.
        self.assertEqual(proc.returncode, EXIT_FAILED)
        self.assertIn(b"cannot write the output", proc.stderr)

    def test_the_tool_neither_opens_nor_probes_an_admin_socket_ceph_conf_names(self):
        """A ceph.conf admin_socket path without the pid is one path for every client of
        the name on the host: each new client probes the live one's socket (a prober that
        leaves mid-answer used to end its owner) and may unlink it. The tool opens none:
        it binds nothing at the path, never connects to the socket another client has
        there, and leaves it in place; and with the pid in the path it opens none either."""
        if base.BACKEND != "rbd":
            self.skipTest("Ceph's admin socket")
        import socket
        env = Env("asok")
        conf = os.path.join(env.dir, "ceph.conf")
        with open(os.path.join(base.RUN_DIR, "ceph", "ceph.conf")) as f:
            text = f.read()
        with open(env.config) as f:
            cfg = f.read()
        with open(env.config, "w") as f:
            f.write(cfg.replace(os.path.join(base.RUN_DIR, "ceph", "ceph.conf"), conf))
        image = base.WORLD.add_raw(size=64 * MiB, seed=777)
        for leaf in ("$cluster-$name.asok", "$cluster-$name.$pid.asok"):
            asok_dir = os.path.join(env.dir, "asok-%d" % len(leaf))
            os.makedirs(asok_dir)
            lines = [ln for ln in text.splitlines() if not ln.startswith("admin_socket")]
            lines.insert(lines.index("[global]") + 1,
                         "admin_socket = %s" % os.path.join(asok_dir, leaf))
            with open(conf, "w") as f:
                f.write("\n".join(lines) + "\n")
            # Another client's live socket at the shared path.
            other_path = os.path.join(asok_dir, "ceph-client.admin.asok")
            other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            other.bind(other_path)
            other.listen(8)
            other.setblocking(False)
            other_inode = os.stat(other_path).st_ino
            volume = "vol-asok-%d" % len(leaf)
            seen = set()
            try:
                for attempt in range(2):
                    with open(os.path.join(env.dir, "create.err"), "w+") as err:
                        tool = start(env, "create", image, volume, stderr=err)
                        deadline = time.monotonic() + 120
                        while tool.poll() is None and time.monotonic() < deadline:
                            seen.update(n for n in os.listdir(asok_dir)
                                        if n != "ceph-client.admin.asok")
                            time.sleep(0.005)
                        if tool.poll() is None:
                            tool.kill()
                        tool.wait()
                        err.seek(0)
                        text_err = err.read()
                    if attempt == 0 and base.known_librbd_abort(tool.returncode, text_err):
                        # The librbd 16 abort (docs/architecture.md, Known limit): once more.
                        sys.stderr.write("asok: the create died of the known librbd abort; "
                                         "running it once more\n" + text_err)
                        env.run("delete", volume)
                        continue
                    break
                self.assertEqual(tool.returncode, EXIT_OK,
                                 "create with admin_socket %s: %s" % (leaf, text_err))
                self.assertEqual(seen, set(), "the tool opened an admin socket")
                self.assertEqual(os.stat(other_path).st_ino, other_inode,
                                 "another client's admin socket was replaced")
                with self.assertRaises(BlockingIOError, msg="the tool probed another client's socket"):
                    other.accept()
            finally:
                other.close()
                env.run("delete", volume)

    # --- a create that died: running it again is all it takes ------------------------

    def test_a_create_whose_folder_cannot_be_made_durable_leaves_nothing(self):
        """The volume is linked at its name, then the folder's fsync fails (EIO, injected
        with strace): the create fails, and takes back the name and its sidecar, so that
        nothing is left that no record names (nor a name that nobody may remove)."""
        strace = strace_or_skip(self, "the local backend's folder")
        env = Env("durable")
        image = base.WORLD.add_raw(size=2 * MiB)
        rc, _, err = env.run("prefill", image)
        self.assertEqual(rc, EXIT_OK, err)
        volumes = os.path.join(env.local_root, "volumes")
        os.makedirs(volumes, exist_ok=True)
        e = dict(os.environ)
        e.pop("CACHEMGR_CONFIG", None)
        failed = subprocess.run(
            [strace, "-f", "-qq", "-o", "/dev/null", "-P", volumes, "-e", "trace=fsync",
             "-e", "inject=fsync:error=EIO", base.BIN, "--config", env.config,
             "create", image, "vol-eio"], capture_output=True, text=True, env=e, timeout=120)
        self.assertNotEqual(failed.returncode, EXIT_OK, failed.stdout)
        self.assertIn("fsync", failed.stderr)
        self.assertFalse(os.path.lexists(os.path.join(volumes, "vol-eio")))
        self.assertFalse(os.path.lexists(os.path.join(volumes, ".meta", "vol-eio.json")))
        self.assertEqual(temporaries(env.local_root), [])
        rc, out, err = env.run("--json", "evict")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertEqual([a for a in json.loads(out)["actions"] if a["kind"] == "gc"], [])
        rc, out, err = env.run("create", image, "vol-eio")
        self.assertEqual(rc, EXIT_OK, out + err)
        self.assertEqual(env.read_volume("vol-eio", 2 * MiB), base.WORLD.raw[image])

    def test_a_delete_on_one_host_leaves_the_volume_another_host_makes_under_the_name(self):
        """Two hosts (own index, one local root). Host A deletes its volume and is held
        (strace) right after unlinking the image, before its sidecar goes; host B creates
        the freed name then. B is refused (A still holds the name), or B's volume stays
        whole: never a volume left without its sidecar (read as raw, its mark gone)."""
        strace = strace_or_skip(self, "the local backend's sidecars")
        a = Env("deletea")
        b = Env("deleteb")
        b.local_root = a.local_root
        b.config = b.write_config(extra="host_id: host-b\n")
        image = base.WORLD.add_raw(size=2 * MiB)
        rc, out, err = a.run("create", image, "dv")
        self.assertEqual(rc, EXIT_OK, out + err)
        volumes = os.path.join(a.local_root, "volumes")
        e = dict(os.environ)
        e.pop("CACHEMGR_CONFIG", None)
        held = subprocess.Popen(
            [strace, "-f", "-qq", "-o", "/dev/null", "-P", os.path.join(volumes, "dv"),
             "-e", "trace=unlink", "-e", "inject=unlink:delay_exit=3000000:when=1",
             base.BIN, "--config", a.config, "delete", "dv"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
        deadline = time.time() + 60
        while os.path.lexists(os.path.join(volumes, "dv")) and time.time() < deadline:
            time.sleep(0.02)
        self.assertFalse(os.path.lexists(os.path.join(volumes, "dv")), "the delete never ran")
        rc_b, out_b, err_b = b.run("create", image, "dv")
        out_a, err_a = held.communicate(timeout=120)
        self.assertEqual(held.returncode, EXIT_OK, out_a + err_a)
        if rc_b == EXIT_OK:
            self.assertTrue(os.path.exists(os.path.join(volumes, ".meta", "dv.json")),
                            "host B's volume lost its sidecar to host A's delete")
            self.assertEqual(b.read_volume("dv", 2 * MiB), base.WORLD.raw[image])
            rc, out, err = b.run("delete", "dv")
            self.assertEqual(rc, EXIT_OK, out + err)
        else:
            self.assertIn("already exists", err_b)
            self.assertFalse(os.path.lexists(os.path.join(volumes, "dv")))
            rc, out, err = b.run("create", image, "dv")
            self.assertEqual(rc, EXIT_OK, out + err)
        self.assertEqual(temporaries(a.local_root), [])
        # The sidecar a remover locks is opened for writing: NFS emulates flock with a
        # byte-range lock, which it takes exclusive only on a file open for writing.
        if rc_b == EXIT_OK:  # deleted above: made again, to be deleted under strace
            rc, out, err = b.run("create", image, "dv")
            self.assertEqual(rc, EXIT_OK, out + err)
        trace = os.path.join(b.dir, "delete.trace")
        done = subprocess.run(
            [strace, "-f", "-qq", "-o", trace, "-e", "trace=openat,open",
             base.BIN, "--config", b.config, "delete", "dv"],
            capture_output=True, text=True, env=e, timeout=120)
        self.assertEqual(done.returncode, EXIT_OK, done.stdout + done.stderr)
        with open(trace) as f:
            opens = [line for line in f if '.meta/dv.json"' in line and "= -1" not in line]
        self.assertTrue(opens, "the delete never opened the sidecar")
        self.assertTrue(any("O_RDWR" in line for line in opens), opens)

    def test_a_create_that_died_anywhere_is_made_by_running_it_again(self):
        env = Env("again")
        image = base.WORLD.add_raw(size=2 * MiB)
        rc, _, err = env.run("prefill", image)
        self.assertEqual(rc, EXIT_OK, err)
        for point in ("volume_after_claim", "volume_after_clone", "volume_before_rename",
                      "volume_after_rename"):
            volume = "vol-" + point.replace("_", "-")
            rc, _, err = env.run("create", image, volume, env={"CACHEMGR_FAILPOINT": point},
                                 rerun_on_abort=False)
            self.assertLess(rc, 0, "the failpoint %s did not fire: %s" % (point, err))
            rc, out, err = env.run("create", image, volume)
            self.assertEqual(rc, EXIT_OK, "%s: %s" % (point, out + err))
            self.assertEqual(env.read_volume(volume, 2 * MiB), base.WORLD.raw[image])
            rc, out, err = env.run("delete", volume)
            self.assertEqual(rc, EXIT_OK, "%s: %s" % (point, out + err))
        rc, out, err = env.run("--json", "evict")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertEqual([a for a in json.loads(out)["actions"] if a["kind"] == "gc"], [],
                         "the creates run again left nothing for a pass to clear")
        # Run again three times at once, beside a pass: one clearer at a time, so exactly
        # one create makes the volume and nobody removes it after.
        import threading
        for round_ in range(3):
            volume = "vol-again-%d" % round_
            rc, _, err = env.run("create", image, volume,
                                 env={"CACHEMGR_FAILPOINT": "volume_after_rename"},
                                 rerun_on_abort=False)
            self.assertLess(rc, 0, err)
            results = []
            barrier = threading.Barrier(4)

            def one(args):
                barrier.wait()
                results.append((args[0], env.run(*args)))
            threads = [threading.Thread(target=one, args=(a,)) for a in
                       [("create", image, volume)] * 3 + [("evict",)]]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            made = [r for cmd, r in results if cmd == "create" and r[0] == EXIT_OK]
            self.assertEqual(len(made), 1, results)
            for cmd, (rc, out, err) in results:
                self.assertIn(rc, (EXIT_OK, EXIT_FAILED, EXIT_BUSY), (cmd, out, err))
            self.assertEqual(env.read_volume(volume, 2 * MiB), base.WORLD.raw[image],
                             "the volume the winning create made is whole")

    # --- temporaries of dead writers -----------------------------------------------

    def test_kill_9_mid_fill_then_one_pass_leaves_no_temporary(self):
        if base.BACKEND != "local":
            self.skipTest("local backend temporaries")
        env = Env("leftover")
        # A qcow2 is read into the backend through a writer (a raw file may be adopted
        # by a hard link, with no temporary at all).
        big = base.WORLD.add_qcow2(size=256 * MiB, seed=4242)
        caught = 0
        import_dir = os.path.join(env.local_root, "_base")
        for attempt in range(4):
            tool = start(env, "create", big, "vol-leftover-%d" % attempt)
            # Kill at the moment a temporary exists (a table's, the import's, a sidecar),
            # or later. A table's lives a few ms, less than a loaded machine may take
            # between seeing it and the kill: the first attempt waits for the import's,
            # which lives as long as the conversion writes it.
            if attempt == 0:
                wait_for(lambda: temporaries(import_dir), timeout=60, step=0.002)
            else:
                wait_for(lambda: temporaries(env.local_root), timeout=60, step=0.002)
                time.sleep(0.02 * attempt)
            tool.send_signal(signal.SIGKILL)
            tool.wait()
            left = temporaries(env.local_root)
            caught += len(left)
            if left:
                stats = env.json("stats")
                self.assertEqual(stats["leftovers"], len(left), left)
                rc, out, _ = env.run("doctor")
                self.assertEqual(rc, EXIT_FAILED, out)
                self.assertIn("FAIL leftovers", out)
                for path in left:
                    self.assertIn(os.path.basename(path), out)
            # One pass after every kill: one that left no temporary (killed before the
            # first, or between two) may still have left a half-made volume row.
            rc, out, err = env.run("evict")
            self.assertEqual(rc, EXIT_OK, err)
            self.assertEqual(temporaries(env.local_root), [], "one pass removes every .tmp-*")
            self.assertEqual(env.json("stats")["leftovers"], 0)
        self.assertGreater(caught, 0, "no kill landed while a temporary existed")
        rc, out, err = env.run("doctor")
        self.assertNotIn("FAIL leftovers", out)
        rc, _, err = env.run("create", big, "vol-after-kills")
        self.assertEqual(rc, EXIT_OK, err)

    def test_a_pass_never_removes_a_live_writers_temporary_nor_foreign_files(self):
        if base.BACKEND != "local":
            self.skipTest("local backend temporaries")
        env = Env("livetmp")
        rc, _, err = env.run("prefill", base.WORLD.add_raw(size=1 * MiB))
        self.assertEqual(rc, EXIT_OK, err)
        base_dir = os.path.join(env.local_root, "_base")
        live = os.path.join(base_dir, ".tmp-live-writer-abc123")
        dead = os.path.join(base_dir, ".tmp-dead-writer-def456")
        secret = os.path.join(env.dir, "not-the-caches")
        link = os.path.join(base_dir, ".tmp-link-ghi789")
        folder = os.path.join(base_dir, ".tmp-folder")
        for path in (live, dead, secret):
            with open(path, "wb") as f:
                f.write(b"x" * 4096)
        os.symlink(secret, link)
        os.mkdir(folder)
        holder = open(live, "rb")
        fcntl.flock(holder, fcntl.LOCK_EX)  # a writer at work holds its temporary's lock
        try:
            self.assertEqual(env.json("stats")["leftovers"], 1)
            rc, _, err = env.run("evict")
            self.assertEqual(rc, EXIT_OK, err)
            self.assertTrue(os.path.exists(live), "a live writer's temporary was removed")
            self.assertFalse(os.path.exists(dead), "a dead writer's temporary was kept")
            self.assertTrue(os.path.islink(link) and os.path.exists(secret))
            self.assertTrue(os.path.isdir(folder))
        finally:
            holder.close()
        rc, _, err = env.run("evict")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertFalse(os.path.exists(live), "the writer died: its temporary goes")

    def test_a_pass_removes_lone_sidecars_and_empty_trash_folders_and_nothing_else(self):
        """What a kill leaves between two steps of the local backend (a sidecar written
        before its image, or left after it; a trash folder whose image was never linked or
        was purged) goes in one pass; look-alikes of the user's and a locked sidecar stay."""
        if base.BACKEND != "local":
            self.skipTest("local backend leftovers")
        env = Env("lonesidecar")
        rc, _, err = env.run("prefill", base.WORLD.add_raw(size=1 * MiB))
        self.assertEqual(rc, EXIT_OK, err)
        root = env.local_root
        meta = os.path.join(root, "volumes", ".meta")
        os.makedirs(meta, exist_ok=True)
        sidecar = json.dumps({"schema": 1, "format": "raw", "metadata": {}, "snapshots": [],
                              "parent": None})
        lone = os.path.join(meta, "vol-killed.json")
        held = os.path.join(meta, "vol-on-its-way.json")
        not_ours = os.path.join(meta, "notes.json")
        for path, text in ((lone, sidecar), (held, sidecar), (not_ours, '["a user file"]')):
            with open(path, "w") as f:
                f.write(text)
        trash = os.path.join(root, ".trash")
        os.makedirs(trash, exist_ok=True)
        purged = os.path.join(trash, "a" * 40 + ".0123456789ab")
        os.mkdir(purged)
        with open(os.path.join(purged, "entry.json"), "w") as f:  # a record as the cache writes
            json.dump({"original": {"pool": "_base", "name": "a" * 40}, "format": "raw"}, f)
        # A folder named as the cache's whose record is not one: someone else's.
        foreign_record = os.path.join(trash, "b" * 40 + ".0123456789ab")
        os.mkdir(foreign_record)
        with open(os.path.join(foreign_record, "entry.json"), "w") as f:
            f.write("{}")
        users = os.path.join(trash, "users-folder")
        os.mkdir(users)
        with open(os.path.join(users, "keep.txt"), "w") as f:
            f.write("mine")
        user_tmp = os.path.join(root, "_base", ".tmp-x")
        with open(user_tmp, "w") as f:
            f.write("a user's file, not a temporary of the cache's")
        holder = open(held, "rb")
        fcntl.flock(holder, fcntl.LOCK_EX)  # a writer about to link its image
        try:
            self.assertEqual(env.json("stats")["leftovers"], 2)
            rc, _, err = env.run("evict")
            self.assertEqual(rc, EXIT_OK, err)
            self.assertFalse(os.path.exists(lone), "a lone sidecar outlived the pass")
            self.assertFalse(os.path.exists(purged), "an imageless trash folder outlived the pass")
            for path in (held, not_ours, users, user_tmp, foreign_record):
                self.assertTrue(os.path.exists(path), "the pass removed " + path)
        finally:
            holder.close()
        rc, _, err = env.run("evict")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertFalse(os.path.exists(held), "its writer died: the sidecar goes")

    def test_a_volume_removed_behind_its_row_does_not_hold_the_name(self):
        """A `delete` killed after the volume went but before its row: the name is free."""
        env = Env("stalerow")
        image = base.WORLD.add_raw(size=1 * MiB)
        rc, _, err = env.run("create", image, "vol-gone")
        self.assertEqual(rc, EXIT_OK, err)
        if base.BACKEND == "local":
            path = os.path.join(env.local_root, "volumes", "vol-gone")
            os.unlink(path)
            side = os.path.join(env.local_root, "volumes", ".meta", "vol-gone.json")
            if os.path.exists(side):
                os.unlink(side)
        else:
            subprocess.run(["rbd", "--conf", os.path.join(base.RUN_DIR, "ceph", "ceph.conf"),
                            "rm", "volumes/%s/vol-gone" % env.namespace],
                           check=True, capture_output=True)
        rc, _, err = env.run("create", image, "vol-gone")
        self.assertEqual(rc, EXIT_OK, err)

    def test_a_pass_never_takes_a_create_that_finished_meanwhile_for_a_half_made_one(self):
        """The pass lists a create's row while the create runs (identity recorded, not yet
        renamed); the create finishes and exits before the pass judges its owner. The
        volume and its row stay: its owner is gone, but its create was not half-made."""
        env = Env("finished")
        image = base.WORLD.add_raw(size=1 * MiB)
        rc, _, err = env.run("prefill", image)
        self.assertEqual(rc, EXIT_OK, err)
        go_create = os.path.join(env.dir, "go-create")
        go_pass = os.path.join(env.dir, "go-pass")
        e = dict(os.environ)
        e.pop("CACHEMGR_CONFIG", None)
        create = subprocess.Popen(
            [base.BIN, "--config", env.config, "create", image, "vol-done"],
            env=dict(e, CACHEMGR_FAILPOINT="volume_before_rename:wait:" + go_create),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            self.assertTrue(wait_for(lambda: os.path.exists(go_create + ".held")),
                            "the create did not reach volume_before_rename")
            evict = subprocess.Popen(
                [base.BIN, "--config", env.config, "evict"],
                env=dict(e, CACHEMGR_FAILPOINT="gc_volumes_listed:wait:" + go_pass),
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                self.assertTrue(wait_for(lambda: os.path.exists(go_pass + ".held")),
                                "the pass did not reach gc_volumes_listed")
                open(go_create, "w").close()
                _, create_err = create.communicate(timeout=120)
                self.assertEqual(create.returncode, EXIT_OK, create_err)
                open(go_pass, "w").close()
                _, evict_err = evict.communicate(timeout=120)
                self.assertEqual(evict.returncode, EXIT_OK, evict_err)
            finally:
                if evict.poll() is None:
                    evict.kill()
                    evict.wait()
        finally:
            if create.poll() is None:
                create.kill()
                create.wait()
        self.assertEqual(env.read_volume("vol-done", 1 * MiB), base.WORLD.raw[image][:1 * MiB])
        rc, _, err = env.run("delete", "vol-done")  # still the cache's: its row is there
        self.assertEqual(rc, EXIT_OK, err)

    # --- the index ---------------------------------------------------------------

    def test_an_empty_index_is_refused_until_rebuild_index(self):
        env = Env("emptyindex")
        image = base.WORLD.add_raw(size=2 * MiB)
        rc, _, err = env.run("prefill", image)
        self.assertEqual(rc, EXIT_OK, err)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(env.index + suffix):
                os.unlink(env.index + suffix)
        os.truncate(env.index, 0)
        for args in (["list"], ["create", image, "vol-on-empty"], ["evict"]):
            rc, out, err = env.run(*args)
            self.assertEqual(rc, EXIT_REFUSED, "%s: %s" % (args, err))
            self.assertIn("rebuild-index", err)
            self.assertEqual(os.path.getsize(env.index), 0, "the damaged file is left as is")
        rc, out, err = env.run("rebuild-index")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertIn("restored 1", out)
        self.assertEqual(len(glob.glob(env.index + ".damaged-*")), 1)
        self.assertEqual([e["image_id"] for e in env.json("list")], [image])

    # --- config: found, a regular file, bounded ------------------------------------

    def test_config_must_be_a_regular_file_of_bounded_size(self):
        env = Env("badconfig")
        fifo = os.path.join(env.dir, "fifo.yaml")
        os.mkfifo(fifo)
        huge = os.path.join(env.dir, "huge.yaml")
        with open(huge, "w") as f:
            f.write("# " + "x" * (2 * MiB) + "\n")
        for path in ("/dev/zero", fifo, env.dir, huge):
            t = time.monotonic()
            rc, _, err = run(["list"], config=path)
            self.assertEqual(rc, EXIT_USAGE, "%s: %s" % (path, err))
            self.assertIn(path, err)
            self.assertLess(time.monotonic() - t, 5, path)

    def test_no_config_names_every_place_it_looked(self):
        if os.path.exists("/etc/cachemgr/cachemgr.yaml"):
            self.skipTest("this host has /etc/cachemgr/cachemgr.yaml")
        rc, _, err = run(["list"])
        self.assertEqual(rc, EXIT_USAGE, err)
        for place in ("--config", "$CACHEMGR_CONFIG", "/etc/cachemgr/cachemgr.yaml"):
            self.assertIn(place, err)
        self.assertFalse(os.path.exists("/var/lib/cachemgr/index.db"))

    # --- roots: never a system folder, never someone else's folder -----------------

    def test_system_folders_are_refused_before_anything_is_made(self):
        env = Env("sysroot")
        for key, value in (("root", "/"), ("root", "/tmp/../etc"), ("root", "/usr"),
                           ("index", "/etc/cachemgr-index.db"), ("conv", "/tmp"),
                           ("conv", "/var")):
            text = open(env.config).read()
            if key == "root":
                if base.BACKEND != "local":
                    continue
                text = text.replace("root: %s" % env.local_root, "root: %s" % value)
                name = "backend.local.root"
            elif key == "index":
                text = text.replace("index: %s" % env.index, "index: %s" % value)
                name = "index"
            else:
                text = text.replace("  dir: %s" % os.path.join(env.dir, "conversion"),
                                    "  dir: %s" % value)
                name = "conversion.dir"
            path = os.path.join(env.dir, "sys-%s.yaml" % uuid.uuid4().hex[:6])
            with open(path, "w") as f:
                f.write(text)
            rc, _, err = run(["list"], config=path)
            self.assertEqual(rc, EXIT_USAGE, "%s=%s: %s" % (key, value, err))
            self.assertIn(name, err)
        self.assertFalse(os.path.exists(env.index), "nothing is made before the checks pass")
        self.assertFalse(os.path.exists("/etc/cachemgr-index.db"))
        self.assertFalse(os.path.exists("/_base"))

    def test_a_folder_that_is_not_the_caches_is_refused(self):
        if base.BACKEND != "local":
            self.skipTest("local root")
        env = Env("foreignroot")
        os.makedirs(env.local_root)
        mine = os.path.join(env.local_root, "operator-notes.txt")
        with open(mine, "w") as f:
            f.write("not the cache's\n")
        rc, _, err = env.run("list")
        self.assertEqual(rc, EXIT_USAGE, err)
        self.assertIn("backend.local.root", err)
        self.assertEqual(os.listdir(env.local_root), ["operator-notes.txt"])
        self.assertFalse(os.path.exists(env.index), "nothing is made before the checks pass")
        # An empty folder (or a new one) becomes the cache's and is marked.
        os.unlink(mine)
        rc, _, err = env.run("prefill", base.WORLD.add_raw(size=1 * MiB))
        self.assertEqual(rc, EXIT_OK, err)
        self.assertTrue(os.path.exists(os.path.join(env.local_root, ".cachemgr-root")))
        rc, _, err = env.run("list")
        self.assertEqual(rc, EXIT_OK, err)

    # --- RBD: a missing pool is a config error ---------------------------------------

    def test_missing_rbd_pool_is_a_config_error_naming_the_key(self):
        if base.BACKEND != "rbd":
            self.skipTest("rbd pool")
        env = Env("nopool")
        text = open(env.config).read().replace("pool: volumes", "pool: no-such-pool-%s" %
                                               uuid.uuid4().hex[:6])
        with open(env.config, "w") as f:
            f.write(text)
        rc, _, err = env.run("list")
        self.assertEqual(rc, EXIT_USAGE, err)
        self.assertIn("backend.rbd.pool", err)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["local", "rbd"], default="local")
    args, rest = parser.parse_known_args()
    base.BACKEND = args.backend
    if not base.BIN or not os.access(base.BIN, os.X_OK):
        sys.exit("CACHEMGR_BIN is not set to the cachemgr binary")
    if base.BACKEND == "rbd" and not os.path.exists(
            os.path.join(base.RUN_DIR, "ceph", "ceph.conf")):
        sys.exit("no Ceph cluster at %s/ceph (the ceph fixture did not start)" % base.RUN_DIR)
    base.WORLD = base.World()
    ok = base.run_unittests([sys.argv[0]] + rest)
    if ok:
        import shutil
        shutil.rmtree(base.WORLD.root, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

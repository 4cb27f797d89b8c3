#!/usr/bin/python3
"""End-to-end tests of the instant miss (cache.instant_miss, RBD).

A miss of a raw or plain qcow2 image of the image directory is served at once (plan
"instant"): the entry is an import of the image's file that a background process copies,
checks and commits. The volume must read the image byte for byte while the import runs
and after it; a second create during the import is a clone; bytes that are not the
image's mark the entry bad, name its volumes (stats, doctor, verify) and the next create
fills again; a kill during the import is finished by the next pass; what does not
qualify is a normal miss.

These tests start a cluster of their own (tests/cluster/ceph-start.sh, in their own
folder under the test run dir): the 4 GiB image would crowd the shared fixture's memstore
that other tests fill at the same time. Same harness as cli_test.py otherwise.
"""
import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import unittest

import cli_test as base
from cli_safety_test import wait_for
from cli_test import EXIT_BUSY, EXIT_OK, EXIT_REFUSED, MiB, Env

GiB = 1 << 30
HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER = os.path.join(HERE, "..", "cluster")
CEPH_DIR = None  # this file's cluster


def conf():
    return os.path.join(CEPH_DIR, "ceph.conf")


def random_file(path, size):
    """`size` random bytes (real data: nothing sparse for the import to skip); their md5."""
    md5 = hashlib.md5()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 8 * MiB))
            f.write(chunk)
            md5.update(chunk)
            left -= len(chunk)
    return md5.hexdigest()


def file_md5(path):
    md5 = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 * MiB), b""):
            md5.update(chunk)
    return md5.hexdigest()


class InstantEnv(Env):
    """An Env whose cache is on this file's cluster, with instant misses on."""

    def __init__(self, name, cache="", namespace=None, host_id=None):
        super().__init__(name, cache="instant_miss: on" + (";" + cache if cache else ""),
                         extra="host_id: %s\n" % host_id if host_id else "")
        with open(self.config) as f:
            text = f.read()
        if namespace:  # another host of the same pool
            text = text.replace("namespace: %s\n" % self.namespace, "namespace: %s\n" % namespace)
            self.namespace = namespace
        with open(self.config, "w") as f:
            f.write(text.replace(os.path.join(base.RUN_DIR, "ceph", "ceph.conf"), conf()))
        if not namespace:
            subprocess.run(["rbd", "--conf", conf(), "namespace", "create",
                            "volumes/" + self.namespace], check=True)

    def rbd(self, *args):
        return subprocess.run(["rbd", "--conf", conf(), "--namespace", self.namespace] +
                              list(args), capture_output=True, text=True)

    def volume_md5(self, volume):
        """md5 of every byte a guest reads from `volume` (through the import's source
        while it runs)."""
        p = subprocess.Popen(["rbd", "--conf", conf(), "export",
                              "volumes/%s/%s" % (self.namespace, volume), "-"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        md5 = hashlib.md5()
        for chunk in iter(lambda: p.stdout.read(8 * MiB), b""):
            md5.update(chunk)
        p.stdout.close()
        assert p.wait() == 0, "rbd export %s failed" % volume
        return md5.hexdigest()

    def pool_images(self):
        out = self.rbd("ls", "volumes").stdout.split()
        return sorted(out)

    def migrating(self, entry):
        return "Migration:" in self.rbd("status", "volumes/" + entry).stdout

    def stats(self):
        return self.json("stats")

    def wait_imports(self, timeout=600):
        return wait_for(lambda: self.stats()["imports_pending"] == 0, timeout=timeout, step=0.5)


def entry_name(image_id):
    return hashlib.sha1(image_id.encode()).hexdigest()


class InstantTest(unittest.TestCase):
    def add_file(self, size, qcow2=False, compressed=False, sidecar=None):
        world = base.WORLD
        image_id = "inst-%d-%d" % (os.getpid(), len(os.listdir(world.images)))
        path = os.path.join(world.images, image_id)
        if not qcow2:
            md5 = random_file(path, size)
        else:
            raw = path + ".raw"
            if compressed:  # data that compresses, so that the clusters are stored compressed
                with open(raw, "wb") as f:
                    f.write((b"cachemgr compressible " * (size // 44 + 1))[:size // 2])
            else:
                random_file(raw, size // 2)
            with open(raw, "ab") as f:
                f.truncate(size)  # the second half reads as zeros (unallocated clusters)
            argv = ["qemu-img", "convert", "-f", "raw", "-O", "qcow2"] + \
                (["-c"] if compressed else []) + [raw, path]
            subprocess.run(argv, check=True)
            md5 = file_md5(raw)  # of the disk's bytes, not of the qcow2 file
            os.unlink(raw)
        if sidecar is not None:
            with open(path + ".json", "w") as f:
                json.dump(sidecar, f)
        return image_id, path, md5

    # --- served at once, the same bytes throughout -------------------------------

    def test_a_4_gib_raw_image_is_served_at_once_and_reads_back_whole(self):
        env = InstantEnv("raw4g")
        image_id, path, md5 = self.add_file(4 * GiB)  # no sidecar: its own digests
        first = env.json("create", image_id, "vm-a")
        self.assertEqual(first["plan"], "instant")
        self.assertEqual(first["import"], "background")
        self.assertEqual(first["size_bytes"], 4 * GiB)
        entry = entry_name(image_id)
        # The create returned before the copy ended: the entry is still an import.
        self.assertTrue(env.migrating(entry), "the import had already ended")
        self.assertEqual(env.stats()["imports_pending"], 1)
        second = env.json("create", image_id, "vm-b")
        self.assertEqual(second["plan"], "clone")
        during = env.volume_md5("vm-a")
        self.assertEqual(during, md5, "the volume read other bytes during the import")
        self.assertTrue(env.wait_imports(), "the background import never ended")
        self.assertFalse(env.migrating(entry), "the import was not committed")
        os.unlink(path)  # after the commit, nothing reads the file any more
        self.assertEqual(env.volume_md5("vm-a"), md5)
        self.assertEqual(env.volume_md5("vm-b"), md5)
        stats = env.stats()
        self.assertEqual((stats["instant"], stats["bad_entries"], stats["misses"]), (1, 0, 1))
        for vol in ("vm-a", "vm-b"):
            self.assertEqual(env.run("delete", vol)[0], EXIT_OK)
        env.run("evict")

    def test_a_plain_qcow2_image_is_served_at_once(self):
        env = InstantEnv("qcow")
        image_id, path, md5 = self.add_file(256 * MiB, qcow2=True)
        made = env.json("create", image_id, "vm-q")
        self.assertEqual(made["plan"], "instant")
        self.assertEqual(made["size_bytes"], 256 * MiB)
        self.assertEqual(env.volume_md5("vm-q"), md5)
        self.assertTrue(env.wait_imports())
        self.assertFalse(env.migrating(entry_name(image_id)))
        self.assertEqual(env.json("create", image_id, "vm-q2")["plan"], "clone")
        os.unlink(path)
        self.assertEqual(env.volume_md5("vm-q"), md5)
        self.assertEqual(env.volume_md5("vm-q2"), md5)

    def test_what_does_not_qualify_is_a_normal_miss(self):
        env = InstantEnv("noqual")
        compressed, _, md5 = self.add_file(32 * MiB, qcow2=True, compressed=True)
        made = env.json("create", compressed, "vm-c")
        self.assertEqual(made["plan"], "miss")
        self.assertEqual(env.volume_md5("vm-c"), md5)
        self.assertEqual(env.stats()["imports_pending"], 0)

    def test_wait_import_runs_it_here(self):
        env = InstantEnv("wait")
        image_id, _, md5 = self.add_file(64 * MiB)
        rc, out, err = env.run("create", "--wait-import", image_id, "vm-w")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertIn("instant", out)
        self.assertIn("import committed", out)
        self.assertFalse(env.migrating(entry_name(image_id)))
        self.assertEqual(env.stats()["imports_pending"], 0)
        self.assertEqual(env.volume_md5("vm-w"), md5)

    # --- bytes that are not the image's --------------------------------------------

    def test_a_checksum_mismatch_marks_the_entry_bad_and_the_next_create_fills_again(self):
        env = InstantEnv("bad")
        image_id, path, md5 = self.add_file(64 * MiB, sidecar={"checksum": "0" * 32})
        rc, out, err = env.run("--json", "create", "--wait-import", image_id, "vm-bad",
                               rerun_on_abort=False)
        if base.known_librbd_abort(rc, err) and "entry marked bad and evicted" in err:
            # The librbd 16 abort (docs/architecture.md, Known limit) after the verdict was
            # made and logged: the volume it made stays, so a second run would only find its
            # name taken. What the rest checks was done.
            sys.stderr.write("cli_instant_test: the create died of the known librbd abort "
                             "after its verdict\n")
        else:
            self.assertEqual(rc, EXIT_REFUSED, err)
            self.assertEqual(json.loads(out)["plan"], "instant")  # the one document, then the end
        self.assertIn("vm-bad", err)
        # The entry is gone, and this version of the file is not served unchecked again:
        # the next create is a normal miss, which refuses the mismatch before any volume.
        rc, _, err = env.run("--json", "create", image_id, "vm-bad2")
        self.assertEqual(rc, EXIT_REFUSED, err)
        self.assertNotIn("vm-bad2", env.pool_images())
        stats = env.stats()
        self.assertEqual(stats["bad_volumes"], 1)
        self.assertEqual([b["volumes"] for b in stats["bad"]], [["vm-bad"]])
        rc, out, err = env.run("doctor")
        self.assertNotEqual(rc, EXIT_OK)
        self.assertIn("vm-bad", out + err)
        rc, out, err = env.run("verify", image_id)
        self.assertEqual(rc, EXIT_REFUSED)
        self.assertIn("vm-bad", out + err)
        # The source fixed: the next create fills again (checked first), and it is good.
        with open(path + ".json", "w") as f:
            json.dump({"checksum": md5}, f)
        made = env.json("create", image_id, "vm-good")
        self.assertEqual(made["plan"], "miss")
        self.assertEqual(env.volume_md5("vm-good"), md5)
        self.assertEqual(env.json("create", image_id, "vm-good2")["plan"], "clone")
        # Once the bad volumes are gone, the pass forgets the bad entry.
        self.assertEqual(env.run("delete", "vm-bad")[0], EXIT_OK)
        self.assertEqual(env.run("evict")[0], EXIT_OK)
        self.assertEqual(env.stats()["bad_entries"], 0)
        self.assertEqual(env.run("doctor")[0], EXIT_OK)

    def test_a_bad_verdict_of_another_host_stops_this_hosts_clones(self):
        a = InstantEnv("hosta")
        b = InstantEnv("hostb", namespace=a.namespace, host_id="host-b")
        image_id, _, _ = self.add_file(32 * MiB, sidecar={"checksum": "0" * 32})
        rc, _, err = a.run("create", image_id, "vm-a1",
                           env={"CACHEMGR_FAILPOINT": "after_ready"})
        self.assertLess(rc, 0, err)  # the entry is ready; nobody runs its import
        rc, _, err = b.run("finish-import", image_id)
        self.assertEqual(rc, EXIT_REFUSED, err)
        # Host a's index still says ready: its next create must not clone the bad entry.
        rc, out, err = a.run("--json", "create", image_id, "vm-a2")
        self.assertNotEqual(rc, EXIT_OK, out)
        self.assertNotIn("vm-a2", a.pool_images())
        self.assertEqual(a.run("evict")[0], EXIT_OK)
        self.assertNotIn(entry_name(image_id), a.pool_images())
        self.assertEqual(a.stats()["bad_entries"], 0)  # no volume left: the record is gone
        # ... but that version of the file is still checked before it is served.
        rc, out, err = a.run("--json", "create", image_id, "vm-a3")
        self.assertEqual(rc, EXIT_REFUSED, out + err)
        self.assertNotIn("vm-a3", a.pool_images())

    def test_an_import_another_host_finished_gives_this_host_its_digests(self):
        a = InstantEnv("gooda")
        b = InstantEnv("goodb", namespace=a.namespace, host_id="host-b")
        image_id, _, md5 = self.add_file(16 * MiB)  # its own digests, computed by the import
        rc, _, err = a.run("create", image_id, "vm-g", env={"CACHEMGR_FAILPOINT": "after_ready"})
        self.assertLess(rc, 0, err)
        rc, out, err = b.run("finish-import", image_id)
        self.assertEqual(rc, EXIT_OK, err)
        self.assertIn("committed", out)
        rc, out, err = a.run("verify", image_id)
        self.assertEqual(rc, EXIT_OK, out + err)
        self.assertEqual(a.json("show", image_id)["checksum"], md5)

    def test_bytes_read_through_another_path_than_the_file_checked_are_found(self):
        """librbd copies through the path; the verdict hashes a descriptor. The entry's own
        bytes are what counts: a directory swapped under the copy is found after it."""
        env = InstantEnv("swap")
        image_id, _, _ = self.add_file(16 * MiB)  # its own digests: only the copy is checked
        rc, _, err = env.run("create", image_id, "vm-s", env={"CACHEMGR_FAILPOINT": "after_ready"})
        self.assertLess(rc, 0, err)
        images = base.WORLD.images
        real, evil = images + ".real", images + ".evil"
        os.makedirs(evil)
        random_file(os.path.join(evil, image_id), 16 * MiB)
        os.rename(images, real)
        os.rename(evil, images)
        try:
            entry = "volumes/%s/%s" % (env.namespace, entry_name(image_id))
            subprocess.run(["rbd", "--conf", conf(), "migration", "execute", "--no-progress",
                            entry], check=True, capture_output=True)
        finally:
            os.rename(images, evil)
            os.rename(real, images)
        rc, _, err = env.run("finish-import", image_id)
        self.assertEqual(rc, EXIT_REFUSED, err)
        self.assertIn("other bytes", err)
        self.assertEqual(env.stats()["bad_entries"], 1)
        self.assertNotIn(entry_name(image_id), env.pool_images())
        # The next create does not serve that file unchecked again: a normal miss, right bytes.
        made = env.json("create", image_id, "vm-s2")
        self.assertEqual(made["plan"], "miss")
        self.assertEqual(env.volume_md5("vm-s2"), file_md5(os.path.join(images, image_id)))

    def test_qcow2_that_librbd_would_read_otherwise_is_a_normal_miss(self):
        env = InstantEnv("qcowodd")
        for how in ("zeroed", "snapshot"):
            image_id, path, _ = self.add_file(16 * MiB, qcow2=True)
            if how == "zeroed":  # zero flag on clusters that keep their data
                subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -z 0 4M", path],
                               check=True, capture_output=True)
            else:
                subprocess.run(["qemu-img", "snapshot", "-c", "old", path], check=True)
            raw = path + ".check.raw"
            subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", path, raw], check=True)
            want = file_md5(raw)
            os.unlink(raw)
            made = env.json("create", image_id, "vm-" + how)
            self.assertEqual(made["plan"], "miss", how)
            self.assertEqual(env.volume_md5("vm-" + how), want, how)

    def test_an_empty_image_is_refused_and_breaks_nothing(self):
        env = InstantEnv("empty")
        image_id = "inst-empty-%d" % os.getpid()
        open(os.path.join(base.WORLD.images, image_id), "w").close()
        rc, _, err = env.run("create", image_id, "vm-empty")
        self.assertEqual(rc, EXIT_REFUSED, err)
        self.assertIn("empty", err)
        self.assertEqual(env.run("evict")[0], EXIT_OK)
        self.assertEqual(env.pool_images(), [])

    def test_a_file_changed_during_the_import_marks_the_entry_bad(self):
        env = InstantEnv("changed")
        image_id, path, _ = self.add_file(512 * MiB)
        made = env.json("create", image_id, "vm-ch")
        self.assertEqual(made["plan"], "instant")
        with open(path, "r+b") as f:  # in place: same inode, other bytes
            f.seek(100 * MiB)
            f.write(b"\xff" * 4096)
        self.assertTrue(env.wait_imports())
        stats = env.stats()
        self.assertEqual(stats["bad_entries"], 1)
        self.assertEqual(stats["bad"][0]["volumes"], ["vm-ch"])
        self.assertIn("changed", stats["bad"][0]["reason"])

    def test_a_stale_entry_whose_import_runs_is_left_to_it_and_the_volume_made_uncached(self):
        env = InstantEnv("staleimport")
        image_id, path, old_md5 = self.add_file(64 * MiB)
        with open(path + ".json", "w") as f:  # the checksum known up front, as Glance's is
            json.dump({"checksum": old_md5}, f)
        go = os.path.join(base.WORLD.root, "staleimport-go")
        rc, out, err = env.run("--json", "create", image_id, "vm-old",
                               env={"CACHEMGR_FAILPOINT": "import_before_copy:wait:" + go})
        self.assertEqual(rc, EXIT_OK, err)
        made = json.loads(out)
        self.assertEqual(made["plan"], "instant")
        wait_for(lambda: os.path.exists(go + ".held"), timeout=60, step=0.05)
        # The image is replaced in the store while its import has not run yet.
        new_md5 = random_file(path + ".new", 64 * MiB)
        os.rename(path + ".new", path)
        with open(path + ".json", "w") as f:
            json.dump({"checksum": new_md5}, f)
        self.assertEqual(env.stats()["imports_pending"], 1)
        # The entry cannot be replaced while its import runs: the new volume is fetched
        # straight from the source, and nothing of the entry's is touched.
        made = env.json("create", image_id, "vm-new")
        self.assertEqual(made["plan"], "uncached")
        self.assertEqual(env.volume_md5("vm-new"), new_md5)
        self.assertTrue(env.migrating(entry_name(image_id)))
        rc, _, err = env.run("prefill", image_id)
        self.assertEqual(rc, EXIT_BUSY, err)
        self.assertIn("import", err)
        with open(go, "w"):
            pass
        self.assertTrue(env.wait_imports())
        # The import read another file than the one it was made of: the entry is bad, and
        # its volume is named.
        stats = env.stats()
        self.assertEqual(stats["bad_entries"], 1)
        self.assertEqual(stats["bad"][0]["volumes"], ["vm-old"])
        self.assertEqual(env.run("evict")[0], EXIT_OK)
        made = env.json("create", "--wait-import", image_id, "vm-next")
        self.assertIn(made["plan"], ("instant", "miss"))
        self.assertEqual(env.volume_md5("vm-next"), new_md5)
        self.assertEqual(env.volume_md5("vm-new"), new_md5)

    # --- kills ------------------------------------------------------------------------

    def test_a_kill_during_the_import_is_finished_by_the_next_pass(self):
        env = InstantEnv("kill")
        image_id, path, md5 = self.add_file(512 * MiB)
        made = env.json("create", image_id, "vm-k")
        pid = made["import_pid"]
        entry = entry_name(image_id)
        wait_for(lambda: "executing" in env.rbd("status", "volumes/" + entry).stdout, timeout=60,
                 step=0.05)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not os.path.exists("/proc/%d" % pid), timeout=10)
        self.assertTrue(env.migrating(entry))
        self.assertEqual(env.stats()["imports_pending"], 1)
        rc, out, err = env.run("evict")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertIn("import committed", out)
        self.assertFalse(env.migrating(entry))
        self.assertEqual(env.stats()["imports_pending"], 0)
        os.unlink(path)
        self.assertEqual(env.volume_md5("vm-k"), md5)

    def test_a_kill_before_the_entry_is_in_place_leaves_nothing_after_a_pass(self):
        env = InstantEnv("early")
        image_id, _, md5 = self.add_file(16 * MiB)
        for point in ("instant_after_prepare", "instant_after_record"):
            rc, _, err = env.run("create", image_id, "vm-e",
                                 env={"CACHEMGR_FAILPOINT": point})
            self.assertLess(rc, 0, "the failpoint %s did not fire: %s" % (point, err))
            self.assertEqual(env.run("evict")[0], EXIT_OK)
            self.assertEqual(env.pool_images(), [], "after %s: %s" % (point, env.pool_images()))
            self.assertEqual(env.stats()["imports_pending"], 0)
        made = env.json("create", "--wait-import", image_id, "vm-e")
        self.assertEqual(made["plan"], "instant")
        self.assertEqual(env.volume_md5("vm-e"), md5)

    def test_eviction_leaves_an_import_alone_until_it_is_committed(self):
        env = InstantEnv("limits", cache="max_count: 1")
        big, _, md5 = self.add_file(512 * MiB)
        small, _, _ = self.add_file(8 * MiB)
        made = env.json("create", big, "vm-big")
        self.assertEqual(made["plan"], "instant")
        # Over max_count while the first entry is still an import: it is not a victim.
        env.json("create", "--wait-import", small, "vm-small")
        self.assertIn(entry_name(big), env.pool_images())
        self.assertTrue(env.wait_imports())
        self.assertEqual(env.volume_md5("vm-big"), md5)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="rbd", choices=["rbd"])
    args, rest = parser.parse_known_args()
    base.BACKEND = args.backend
    if not base.BIN:
        sys.exit("CACHEMGR_BIN is not set")
    global CEPH_DIR
    CEPH_DIR = os.path.join(base.RUN_DIR, "ceph-instant-%d" % os.getpid())
    # Under ctest -j on 2 cores a start can take minutes (the fixture waits 300 s too).
    env = dict(os.environ, CEPH_MEMSTORE_BYTES=str(7 * GiB), CEPH_START_TIMEOUT_S="300")
    subprocess.run([os.path.join(CLUSTER, "ceph-start.sh"), CEPH_DIR], check=True, env=env)
    try:
        base.WORLD = base.World()
        ok = base.run_unittests([sys.argv[0]] + rest)
    finally:
        subprocess.run([os.path.join(CLUSTER, "ceph-stop.sh"), CEPH_DIR])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

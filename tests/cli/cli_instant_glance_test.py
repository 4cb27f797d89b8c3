#!/usr/bin/python3
"""End-to-end tests of the instant miss of Glance images (cache.instant_relay, RBD).

librbd cannot read Glance itself (no token, and Glance refuses HEAD), so the process that
runs the import relays the image: HEAD with its size, Range reads with the token added,
under a path with a random secret. The volume must read the image byte for byte while the
import runs (through the relay of the background process `create` handed its socket to)
and after the commit; the relay answers nothing but its own image's ranges; a Glance whose
bytes are not those its digests describe marks the entry bad; a kill during the import is
finished by the next pass on this host, which binds the recorded address again; what does
not qualify is a normal miss.

Runs against the ceph fixture (an RBD namespace per case), the Keystone-protected Glance
(glance_ks: every relayed read carries a token) and, for a lying Glance, tests/support/
lying_glance.py started here. Over 600 lines: the relay's own server and the lying
Glance are driven from here, one test per way a relayed import can go.
"""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "support"))
import openstack  # noqa: E402
from known_abort import run_unittests  # noqa: E402

BIN = os.environ.get("CACHEMGR_BIN", "")
RUN_DIR = os.environ.get("CACHEMGR_TEST_RUN_DIR", "/tmp/cachemgr-test-run")
CONF = os.path.join(RUN_DIR, "ceph", "ceph.conf")
MiB = 1 << 20
EXIT_OK, EXIT_REFUSED = 0, 4
ROOT = os.path.join(RUN_DIR, "cli-instant-glance-%d" % os.getpid())


def wait_for(pred, timeout=60, step=0.1):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def entry_name(image_id):
    return hashlib.sha1(image_id.encode()).hexdigest()


def random_bytes(size):
    return os.urandom(size)


def random_file(size, name="img"):
    """A file of `size` random bytes in a folder of its own under ROOT; its path."""
    path = os.path.join(tempfile.mkdtemp(dir=ROOT), name)
    with open(path, "wb") as f:
        f.write(random_bytes(size))
    return path


def file_md5(path):
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


class Env:
    """One cache on its own RBD namespace, reading `glance` (source.glance's keys)."""

    counter = 0

    def __init__(self, name, glance, cache=""):
        Env.counter += 1
        self.dir = os.path.join(ROOT, "%s%d" % (name, Env.counter))
        os.makedirs(self.dir)
        self.namespace = "ig-%d-%s%d" % (os.getpid(), name, Env.counter)
        subprocess.run(["rbd", "--conf", CONF, "namespace", "create",
                        "volumes/" + self.namespace], check=True)
        text = "".join("    %s: %s\n" % kv for kv in glance.items() if kv[0] != "auth")
        if "auth" in glance:
            text += "    auth:\n" + "".join("      %s: %s\n" % kv for kv in glance["auth"].items())
        self.config = os.path.join(self.dir, "cachemgr.yaml")
        with open(self.config, "w") as f:
            f.write("index: %s/index.db\nbackend:\n  type: rbd\n  rbd:\n    conf: %s\n"
                    "    pool: volumes\n    namespace: %s\nsource:\n  type: glance\n"
                    "  glance:\n%sconversion:\n  dir: %s/conv\ncache:\n  instant_miss: on\n"
                    "  instant_relay: 127.0.0.1\n%s"
                    % (self.dir, CONF, self.namespace, text, self.dir,
                       "".join("  %s\n" % line for line in cache.split(";") if line)))
        os.chmod(self.config, 0o600)

    def run(self, *args, env=None, timeout=600):
        e = {k: v for k, v in os.environ.items()
             if not k.startswith("OS_") and k != "CACHEMGR_FAILPOINT"}
        e.update(env or {})
        p = subprocess.run([BIN, "--config", self.config] + list(args), capture_output=True,
                           text=True, env=e, timeout=timeout)
        return p.returncode, p.stdout, p.stderr

    def json(self, *args, env=None):
        rc, out, err = self.run("--json", *args, env=env)
        assert rc == 0, "cachemgr %s: exit %d: %s" % (" ".join(args), rc, err)
        return json.loads(out)

    def rbd(self, *args):
        return subprocess.run(["rbd", "--conf", CONF, "--namespace", self.namespace] +
                              list(args), capture_output=True, text=True)

    def volume_md5(self, volume):
        p = subprocess.run(["rbd", "--conf", CONF, "export",
                            "volumes/%s/%s" % (self.namespace, volume), "-"],
                           capture_output=True, timeout=300)
        assert p.returncode == 0, "rbd export %s: %s" % (volume, p.stderr.decode()[-500:])
        return hashlib.md5(p.stdout).hexdigest()

    def migrating(self, entry):
        return "Migration:" in self.rbd("status", "volumes/" + entry).stdout

    def relay_url(self, image_id):
        """The URL librbd reads the import's source from (the migration's source spec)."""
        out = self.rbd("status", "volumes/" + entry_name(image_id)).stdout
        m = re.search(r"http://[0-9.]+:[0-9]+/[0-9a-f]{32}/" + re.escape(image_id), out)
        return m.group(0) if m else None

    def pool_images(self):
        return sorted(self.rbd("ls", "volumes").stdout.split())

    def stats(self):
        return self.json("stats")


def runner_pids(image_id):
    """The pids of the `finish-import IMAGE_ID` processes running now."""
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % p, "rb") as f:
                args = f.read().split(b"\0")
        except OSError:  # ended meanwhile
            continue
        if b"finish-import" in args and image_id.encode() in args:
            pids.append(int(p))
    return pids


def http(method, url, headers=None):
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def port_open(url):
    host, port = re.match(r"http://([0-9.]+):([0-9]+)/", url).groups()
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return True
    except OSError:
        return False


class LyingGlance:
    """tests/support/lying_glance.py on a port of its own, serving `images`."""

    def __init__(self, images):
        self.dir = tempfile.mkdtemp(dir=ROOT)
        self.scenario = os.path.join(self.dir, "scenario.json")
        with open(self.scenario, "w") as f:
            json.dump({"images": images}, f)
        port_file = os.path.join(self.dir, "port")
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "..", "support",
                                                                   "lying_glance.py"),
                                      self.scenario, port_file])
        assert wait_for(lambda: os.path.exists(port_file), timeout=30)
        with open(port_file) as f:
            self.endpoint = "http://127.0.0.1:%s" % f.read().strip()

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def lying_image(image_id, path, checksum, range_file=None, disk_format="raw"):
    size = os.path.getsize(path)
    meta = {"id": image_id, "status": "active", "disk_format": disk_format,
            "container_format": "bare", "size": size, "checksum": checksum,
            "updated_at": "2026-01-01T00:00:00Z"}
    image = {"meta": meta, "file": path, "ranges": True}
    if range_file:
        image["range_file"] = range_file
    return image


class InstantGlanceTest(unittest.TestCase):
    def keystone_glance(self):
        return {"endpoint": openstack.GLANCE, "auth": openstack.APP}

    def upload(self, size):
        data = random_bytes(size)
        return openstack.upload(data, name="instant-relay"), hashlib.md5(data).hexdigest()

    # --- served at once, through the relay, the same bytes throughout -----------------

    def test_a_glance_raw_image_is_served_at_once_and_reads_back_whole(self):
        env = Env("ks", self.keystone_glance())
        image_id, md5 = self.upload(48 * MiB)
        gate = os.path.join(env.dir, "go")
        first = env.json("create", image_id, "vm-a",
                         env={"CACHEMGR_FAILPOINT": "import_before_copy:wait:" + gate})
        self.assertEqual(first["plan"], "instant")
        self.assertEqual(first["import"], "background")
        self.assertEqual(first["size_bytes"], 48 * MiB)
        pid = first["import_pid"]
        # The background process holds before its copy: every byte below comes through the
        # relay it took over from `create`, with a token added on each Range read.
        self.assertTrue(wait_for(lambda: os.path.exists(gate + ".held"), timeout=60))
        entry = entry_name(image_id)
        self.assertTrue(env.migrating(entry))
        self.assertEqual(env.volume_md5("vm-a"), md5, "the volume read other bytes via the relay")
        second = env.json("create", image_id, "vm-b")
        self.assertEqual(second["plan"], "clone")
        self.assertNotIn("import", second, "a hit took over a relay its runner serves")
        self.assertEqual(env.volume_md5("vm-b"), md5)
        url = env.relay_url(image_id)
        self.assertIsNotNone(url, env.rbd("status", "volumes/" + entry).stdout)
        open(gate, "w").close()
        self.assertTrue(wait_for(lambda: not os.path.exists("/proc/%d" % pid), timeout=300),
                        "the import process never ended")
        self.assertFalse(env.migrating(entry), "the import was not committed")
        self.assertEqual(env.stats()["imports_pending"], 0)
        self.assertFalse(port_open(url), "the relay still listens after the import ended")
        for vol in ("vm-a", "vm-b"):
            self.assertEqual(env.volume_md5(vol), md5)
        self.assertEqual(env.json("create", image_id, "vm-c")["plan"], "clone")
        rc, out, err = env.run("verify", image_id)
        self.assertEqual(rc, EXIT_OK, out + err)
        openstack.assert_no_secret()

    def served_then_judged_bad(self, env, image_ids):
        """`create --wait-import` of each image: served at once (plan `instant`), then
        judged bad (exit 4, the volume named), and the entry gone."""
        for image_id in image_ids:
            rc, out, err = env.run("--json", "create", "--wait-import", image_id,
                                   "vm-" + image_id)
            self.assertEqual(rc, EXIT_REFUSED, image_id + ": " + out + err)
            self.assertEqual(json.loads(out)["plan"], "instant", image_id)
            self.assertIn("vm-" + image_id, err)
            self.assertNotIn(entry_name(image_id), env.pool_images(), image_id)

    def qcow2_of(self, data):
        """A plain qcow2 (qemu-img convert: its zero runs unallocated) of `data`; its path."""
        raw = random_file(0, "qcow-src")
        with open(raw, "wb") as f:
            f.write(data)
        qcow = raw + ".qcow2"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow], check=True)
        return qcow

    def test_a_glance_qcow2_image_is_served_at_once_and_reads_back_whole(self):
        env = Env("kq", self.keystone_glance())
        data = random_bytes(20 * MiB) + b"\0" * (8 * MiB) + random_bytes(4 * MiB)
        md5 = hashlib.md5(data).hexdigest()
        with open(self.qcow2_of(data), "rb") as f:
            image_id = openstack.upload(f.read(), name="instant-qcow2", disk_format="qcow2")
        gate = os.path.join(env.dir, "go")
        first = env.json("create", image_id, "vm-q1",
                         env={"CACHEMGR_FAILPOINT": "import_before_copy:wait:" + gate})
        self.assertEqual(first["plan"], "instant")
        self.assertEqual(first["size_bytes"], len(data), "the disk's size, not the file's")
        pid = first["import_pid"]
        self.assertTrue(wait_for(lambda: os.path.exists(gate + ".held"), timeout=60))
        entry = entry_name(image_id)
        self.assertTrue(env.migrating(entry))
        # librbd's qcow reader, through the relay, before a byte is copied.
        self.assertEqual(env.volume_md5("vm-q1"), md5, "the volume read other bytes via the relay")
        second = env.json("create", image_id, "vm-q2")
        self.assertEqual(second["plan"], "clone")
        open(gate, "w").close()
        self.assertTrue(wait_for(lambda: not os.path.exists("/proc/%d" % pid), timeout=300),
                        "the import process never ended")
        self.assertFalse(env.migrating(entry), "the import was not committed")
        self.assertEqual(env.stats()["imports_pending"], 0)
        self.assertEqual(env.stats()["bad_volumes"], 0)
        for vol in ("vm-q1", "vm-q2"):
            self.assertEqual(env.volume_md5(vol), md5)
        rc, out, err = env.run("verify", image_id)
        self.assertEqual(rc, EXIT_OK, out + err)
        # The tables and the whole file were checked in working dirs of conversion.dir,
        # gone with the runs that made them.
        conv = os.path.join(env.dir, "conv")
        self.assertEqual(os.listdir(conv) if os.path.isdir(conv) else [], [])
        openstack.assert_no_secret()

    def test_a_glance_qcow2_not_its_checksum_or_not_plain_is_never_served_as_good(self):
        qcow = self.qcow2_of(random_bytes(6 * MiB) + b"\0" * (2 * MiB))
        other = self.qcow2_of(random_bytes(6 * MiB) + b"\0" * (2 * MiB))
        # Compressible bytes (qemu stores a cluster that does not shrink uncompressed).
        words = b"".join(b"cluster %08d\n" % i for i in range(4 * MiB // 17 + 1))[:4 * MiB]
        packed = self.qcow2_of(words) + ".packed"
        subprocess.run(["qemu-img", "convert", "-c", "-f", "qcow2", "-O", "qcow2",
                        packed[:-len(".packed")], packed], check=True)
        backed = qcow + ".backed"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", qcow,
                        backed], check=True)
        # Two disks of one md5 (the published collision pair of Wang et al., then the same
        # bytes): the entry is tied to the file checked by a digest that has no such pair.
        col_a = bytes.fromhex(
            "d131dd02c5e6eec4693d9a0698aff95c2fcab58712467eab4004583eb8fb7f8955ad340609f4b302"
            "83e488832571415a085125e8f7cdc99fd91dbdf280373c5bd8823e3156348f5bae6dacd436c919c6"
            "dd53e2b487da03fd02396306d248cda0e99f33420f577ee8ce54b67080a80d1ec69821bcb6a88393"
            "96f9652b6ff72a70")
        col_b = bytes.fromhex(
            "d131dd02c5e6eec4693d9a0698aff95c2fcab50712467eab4004583eb8fb7f8955ad340609f4b302"
            "83e4888325f1415a085125e8f7cdc99fd91dbd7280373c5bd8823e3156348f5bae6dacd436c919c6"
            "dd53e23487da03fd02396306d248cda0e99f33420f577ee8ce54b67080280d1ec69821bcb6a88393"
            "96f965ab6ff72a70")
        self.assertEqual(hashlib.md5(col_a).digest(), hashlib.md5(col_b).digest())
        tail = random_bytes(4 * MiB - 128)
        served, told = self.qcow2_of(col_a + tail), self.qcow2_of(col_b + tail)
        with open(told, "rb") as f:
            told_sha512 = hashlib.sha512(f.read()).hexdigest()
        collide = lying_image("q-collide", told, file_md5(told), range_file=served,
                              disk_format="qcow2")
        collide["meta"].update({"os_hash_algo": "sha512", "os_hash_value": told_sha512})
        cases = {
            # a digest that is not the file's
            "q-lie-sum": lying_image("q-lie-sum", qcow, "0" * 32, disk_format="qcow2"),
            "q-collide": collide,
            # the right digest, another qcow2 (same tables, other data) served to librbd
            "q-lie-range": lying_image("q-lie-range", qcow, file_md5(qcow), range_file=other,
                                       disk_format="qcow2"),
        }
        others = {
            "q-packed": lying_image("q-packed", packed, file_md5(packed), disk_format="qcow2"),
            "q-backed": lying_image("q-backed", backed, file_md5(backed), disk_format="qcow2"),
        }
        glance = LyingGlance(dict(cases, **others))
        try:
            env = Env("qlie", {"endpoint": glance.endpoint, "retries": 0})
            self.served_then_judged_bad(env, cases)
            self.assertEqual(sorted(v for b in env.stats()["bad"] for v in b["volumes"]),
                             ["vm-q-collide", "vm-q-lie-range", "vm-q-lie-sum"])
            # Compressed clusters: a normal miss, whole and right.
            made = env.json("create", "q-packed", "vm-packed")
            self.assertEqual(made["plan"], "miss")
            self.assertEqual(env.volume_md5("vm-packed"), hashlib.md5(words).hexdigest())
            # A backing file: refused before anything is made, as a fill refuses it.
            rc, out, err = env.run("create", "q-backed", "vm-backed")
            self.assertEqual(rc, EXIT_REFUSED, out + err)
            self.assertIn("backing", out + err)
            self.assertNotIn("vm-backed", env.pool_images())
            self.assertNotIn(entry_name("q-backed"), env.pool_images())
            self.assertEqual(env.stats()["imports_pending"], 0)
        finally:
            glance.stop()

    def test_a_glance_qcow2_that_cannot_be_served_or_judged_is_a_normal_miss_or_bad(self):
        data = random_bytes(6 * MiB) + b"\0" * (2 * MiB)
        md5 = hashlib.md5(data).hexdigest()
        qcow = self.qcow2_of(data)
        # The whole file longer than Glance declares: the import's check can never match;
        # judged bad at once, never left pending (the entry could not be evicted).
        junk = qcow + ".junk"
        with open(qcow, "rb") as f, open(junk, "wb") as out:
            out.write(f.read() + random_bytes(4096))
        long_file = lying_image("q-long", junk, file_md5(junk), disk_format="qcow2")
        long_file["meta"]["size"] = os.path.getsize(qcow)
        # An os_hash of an algorithm the tool does not compute: never judged, so not served.
        sha3 = lying_image("q-sha3", qcow, file_md5(qcow), disk_format="qcow2")
        sha3["meta"].update({"os_hash_algo": "sha3_512", "os_hash_value": "ab" * 64})
        # A disk that is not whole 512-byte sectors: librbd refuses to prepare it.
        odd = qcow + ".odd"
        shutil.copy(qcow, odd)
        with open(odd, "r+b") as f:
            f.seek(24)
            f.write((8 * MiB - 100).to_bytes(8, "big"))
        # A persistent bitmap: its directory is not among the tables fetched.
        marked = qcow + ".bitmap"
        shutil.copy(qcow, marked)
        subprocess.run(["qemu-img", "bitmap", "--add", marked, "b0"], check=True)
        images = {
            "q-long": long_file,
            "q-sha3": sha3,
            "q-odd": lying_image("q-odd", odd, file_md5(odd), disk_format="qcow2"),
            "q-bitmap": lying_image("q-bitmap", marked, file_md5(marked), disk_format="qcow2"),
        }
        glance = LyingGlance(images)
        try:
            env = Env("qjudge", {"endpoint": glance.endpoint, "retries": 0})
            rc, out, err = env.run("--json", "create", "--wait-import", "q-long", "vm-long")
            self.assertEqual(rc, EXIT_REFUSED, out + err)
            self.assertEqual(json.loads(out)["plan"], "instant")
            stats = env.stats()
            self.assertEqual(stats["imports_pending"], 0, "an import that can never be judged")
            self.assertEqual([b["volumes"] for b in stats["bad"]], [["vm-long"]])
            self.assertNotIn(entry_name("q-long"), env.pool_images())
            for image_id in ("q-odd", "q-sha3", "q-bitmap"):
                rc, out, err = env.run("--json", "create", image_id, "vm-" + image_id)
                if image_id == "q-sha3" and rc != EXIT_OK:  # the normal miss's own verdict
                    self.assertNotIn("vm-" + image_id, env.pool_images())
                    continue
                self.assertEqual(rc, EXIT_OK, image_id + ": " + out + err)
                self.assertEqual(json.loads(out)["plan"], "miss", image_id)
                if image_id == "q-bitmap":
                    self.assertEqual(env.volume_md5("vm-" + image_id), md5)
            self.assertEqual(env.stats()["imports_pending"], 0)
        finally:
            glance.stop()

    def test_the_relay_serves_its_own_image_and_nothing_else(self):
        env = Env("only", self.keystone_glance())
        image_id, _ = self.upload(4 * MiB)
        gate = os.path.join(env.dir, "go")
        made = env.json("create", image_id, "vm-o",
                        env={"CACHEMGR_FAILPOINT": "import_before_copy:wait:" + gate})
        self.assertEqual(made["plan"], "instant")
        self.assertTrue(wait_for(lambda: os.path.exists(gate + ".held"), timeout=60))
        try:
            url = env.relay_url(image_id)
            self.assertIsNotNone(url)
            base, secret = url.rsplit("/", 2)[0], url.rsplit("/", 2)[1]
            status, headers, _ = http("HEAD", url)
            self.assertEqual((status, headers.get("Content-Length")), (200, str(4 * MiB)))
            status, headers, body = http("GET", url, {"Range": "bytes=10-19"})
            self.assertEqual((status, len(body), headers.get("Content-Range")),
                             (206, 10, "bytes 10-19/%d" % (4 * MiB)))
            status, headers, _ = http("GET", url, {"Range": "bytes=%d-" % (4 * MiB)})
            self.assertEqual(status, 416)
            # Another secret, another image, no secret, another method: nothing is lent.
            other, _ = self.upload(1 * MiB)
            for probe in (base + "/" + "0" * 32 + "/" + image_id,
                          base + "/" + secret + "/" + other,
                          base + "/" + image_id, base + "/", base + "/v2/images/" + image_id):
                status, _, body = http("GET", probe, {"Range": "bytes=0-9"})
                self.assertEqual(status, 404, probe)
                self.assertNotIn(b"\x00" * 10, body)
            self.assertEqual(http("POST", url)[0], 405)
            self.assertEqual(http("GET", url)[0], 416)  # Range reads only
        finally:
            open(gate, "w").close()
        pid = made["import_pid"]
        self.assertTrue(wait_for(lambda: not os.path.exists("/proc/%d" % pid), timeout=300))
        self.assertFalse(env.migrating(entry_name(image_id)))

    def test_wait_import_runs_it_here(self):
        env = Env("wait", self.keystone_glance())
        image_id, md5 = self.upload(16 * MiB)
        rc, out, err = env.run("create", "--wait-import", image_id, "vm-w")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertIn("instant", out)
        self.assertIn("import committed", out)
        self.assertFalse(env.migrating(entry_name(image_id)))
        self.assertEqual(env.volume_md5("vm-w"), md5)

    # --- a Glance whose bytes are not its digests' ------------------------------------

    def test_bytes_other_than_glance_claims_mark_the_entry_bad(self):
        path = random_file(8 * MiB)
        true_md5 = file_md5(path)
        other = random_file(8 * MiB, "other")
        cases = {
            # a digest that is not the bytes'
            "lie-sum": lying_image("lie-sum", path, "0" * 32),
            # the right digest, other bytes served to Range reads
            "lie-range": lying_image("lie-range", path, true_md5, range_file=other),
        }
        glance = LyingGlance(cases)
        try:
            env = Env("lie", {"endpoint": glance.endpoint, "retries": 0})
            self.served_then_judged_bad(env, cases)
            stats = env.stats()
            self.assertEqual(stats["bad_volumes"], 2)
            self.assertEqual(sorted(v for b in stats["bad"] for v in b["volumes"]),
                             ["vm-lie-range", "vm-lie-sum"])
            rc, out, err = env.run("doctor")
            self.assertNotEqual(rc, EXIT_OK)
            self.assertIn("vm-lie-sum", out + err)
            # The same image version is not served unchecked again: a normal miss, which
            # refuses the mismatch before any volume is made.
            rc, out, err = env.run("--json", "create", "lie-sum", "vm-again")
            self.assertEqual(rc, EXIT_REFUSED, out + err)
            self.assertNotIn("vm-again", env.pool_images())
        finally:
            glance.stop()

    def test_glance_losing_the_image_mid_import_is_a_bad_entry_that_goes_with_its_volumes(self):
        path = random_file(8 * MiB)
        image = lying_image("gone-tail", path, file_md5(path))
        image["meta"]["size"] = 9 * MiB  # declares a MiB it never serves
        glance = LyingGlance({"gone-tail": image})
        try:
            env = Env("gone", {"endpoint": glance.endpoint, "retries": 0})
            rc, out, err = env.run("--json", "create", "--wait-import", "gone-tail", "vm-g")
            self.assertEqual(rc, EXIT_REFUSED, out + err)
            self.assertEqual(json.loads(out)["plan"], "instant")
            self.assertIn("cannot serve byte", err)
            self.assertIn("vm-g", err)
            stats = env.stats()
            self.assertEqual([b["volumes"] for b in stats["bad"]], [["vm-g"]])
            # Never copied whole: nothing to commit, and it cannot go under its volume.
            self.assertIn(entry_name("gone-tail"), env.pool_images())
            rc, out, err = env.run("create", "gone-tail", "vm-g2")
            self.assertNotEqual(rc, EXIT_OK, out + err)
            self.assertNotIn("vm-g2", env.pool_images())
            # The volume deleted (its relay served again for it), the pass removes the entry.
            rc, out, err = env.run("delete", "vm-g")
            self.assertEqual(rc, EXIT_OK, out + err)
            rc, out, err = env.run("evict")
            self.assertEqual(rc, EXIT_OK, out + err)
            self.assertEqual(env.pool_images(), [])
            self.assertEqual(env.stats()["imports_pending"], 0)
        finally:
            glance.stop()

    def test_a_glance_that_ignores_range_is_a_normal_miss(self):
        path = random_file(4 * MiB)
        image = lying_image("no-range", path, file_md5(path))
        image["ranges"] = False  # answers a Range read with the whole file (200)
        glance = LyingGlance({"no-range": image})
        try:
            env = Env("norange", {"endpoint": glance.endpoint, "retries": 0})
            made = env.json("create", "no-range", "vm-nr")
            self.assertEqual(made["plan"], "miss")
            self.assertEqual(env.volume_md5("vm-nr"), file_md5(path))
        finally:
            glance.stop()

    def test_what_does_not_qualify_is_a_normal_miss(self):
        raw = random_file(4 * MiB, "raw")
        md5 = file_md5(raw)
        qcow = raw + ".qcow2"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow], check=True)
        qcow_md5 = file_md5(qcow)
        # Compressible bytes (qemu stores a cluster that does not shrink uncompressed).
        words = b"".join(b"cluster %08d\n" % i for i in range(4 * MiB // 17 + 1))[:4 * MiB]
        plain = random_file(0, "words")
        with open(plain, "wb") as f:
            f.write(words)
        packed = plain + ".packed"
        subprocess.run(["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", plain, packed],
                       check=True)
        images = {
            # compressed clusters: librbd reads plain ones only
            "nq-qcow2": lying_image("nq-qcow2", packed, file_md5(packed), disk_format="qcow2"),
            "nq-nosum": lying_image("nq-nosum", raw, ""),
            # says raw, is a qcow2: refused by the header check, as a fill refuses it
            "nq-liar": lying_image("nq-liar", qcow, qcow_md5),
        }
        glance = LyingGlance(images)
        try:
            env = Env("nq", {"endpoint": glance.endpoint, "retries": 0})
            made = env.json("create", "nq-qcow2", "vm-q")
            self.assertEqual(made["plan"], "miss")
            self.assertEqual(env.volume_md5("vm-q"), hashlib.md5(words).hexdigest())
            # No digest to check the import against: not served unchecked (refused here,
            # as source.allow_unverified is off).
            rc, out, err = env.run("--json", "create", "nq-nosum", "vm-n")
            self.assertEqual(rc, EXIT_REFUSED, out + err)
            self.assertNotIn("vm-n", env.pool_images())
            self.assertEqual(env.stats()["imports_pending"], 0)
            rc, out, err = env.run("create", "nq-liar", "vm-l")
            self.assertEqual(rc, EXIT_REFUSED, out + err)
            self.assertNotIn("vm-l", env.pool_images())
            # No relay address: every Glance image is a normal miss.
            plain = Env("norelay", {"endpoint": glance.endpoint, "retries": 0})
            with open(plain.config) as f:
                text = f.read().replace("  instant_relay: 127.0.0.1\n", "")
            with open(plain.config, "w") as f:
                f.write(text)
            images["nq-raw"] = lying_image("nq-raw", raw, md5)
            with open(glance.scenario, "w") as f:
                json.dump({"images": images}, f)
            self.assertEqual(plain.json("create", "nq-raw", "vm-r")["plan"], "miss")
            # An address that is not this host's: a normal miss too, nothing left behind.
            far = Env("far", {"endpoint": glance.endpoint, "retries": 0})
            with open(far.config) as f:
                text = f.read().replace("instant_relay: 127.0.0.1", "instant_relay: 192.0.2.1")
            with open(far.config, "w") as f:
                f.write(text)
            self.assertEqual(far.json("create", "nq-raw", "vm-f")["plan"], "miss")
        finally:
            glance.stop()

    def test_a_bad_relay_address_in_the_config_is_named(self):
        env = Env("badcfg", self.keystone_glance())
        for bad in ("localhost", "0.0.0.0", "127.0.0.1:99999", "127.0.0.1:8080", "[::1",
                    "[::1]:0", "::1", "fd00::2", "224.0.0.1", "255.255.255.255", "10.1.2"):
            with open(env.config) as f:
                text = re.sub(r"instant_relay: .*", "instant_relay: '%s'" % bad, f.read())
            with open(env.config, "w") as f:
                f.write(text)
            rc, out, err = env.run("list")
            self.assertNotEqual(rc, EXIT_OK, bad)
            self.assertIn("cache.instant_relay", err, bad)

    # --- kills --------------------------------------------------------------------------

    def instant_miss_with_dead_runner(self, env, image_id, volume):
        """An instant miss whose runner is killed before its copy; returns the relay's URL."""
        gate = os.path.join(env.dir, "never")
        made = env.json("create", image_id, volume,
                        env={"CACHEMGR_FAILPOINT": "import_before_copy:wait:" + gate})
        pid = made["import_pid"]
        self.assertTrue(wait_for(lambda: os.path.exists(gate + ".held"), timeout=60))
        url = env.relay_url(image_id)
        os.kill(pid, signal.SIGKILL)
        self.assertTrue(wait_for(lambda: not os.path.exists("/proc/%d" % pid), timeout=10))
        self.assertFalse(port_open(url), "a killed import's relay still answers")
        return url

    def test_a_kill_during_the_import_is_finished_by_the_next_pass(self):
        env = Env("kill", self.keystone_glance())
        image_id, md5 = self.upload(32 * MiB)
        self.instant_miss_with_dead_runner(env, image_id, "vm-k")
        # Nothing opens the entry now (an open reads the import's source): the pass must
        # serve the relay again before it touches it.
        self.assertEqual(env.stats()["imports_pending"], 1)
        # The pass binds the recorded address again, serves it while it copies, commits.
        rc, out, err = env.run("evict")
        self.assertEqual(rc, EXIT_OK, out + err)
        self.assertIn("import committed", out)
        self.assertFalse(env.migrating(entry_name(image_id)))
        self.assertEqual(env.stats()["imports_pending"], 0)
        self.assertEqual(env.volume_md5("vm-k"), md5)

    def test_a_hit_before_any_pass_serves_a_dead_runners_relay_and_runs_the_import(self):
        env = Env("hitkill", self.keystone_glance())
        image_id, md5 = self.upload(24 * MiB)
        url = self.instant_miss_with_dead_runner(env, image_id, "vm-h")
        # No pass yet: the hit opens the entry, which reads through the dead relay. It serves
        # the relay itself, and hands it to a runner of the import, as a miss does. This
        # hit fails after serving it (a size below the image's): the relay goes to a runner
        # all the same (held before its copy), and nothing of the volume is left.
        before = env.pool_images()
        gate2 = os.path.join(env.dir, "go")
        rc, out, err = env.run("create", image_id, "vm-small", "--size", "1M",
                               env={"CACHEMGR_FAILPOINT": "import_before_copy:wait:" + gate2})
        self.assertNotEqual(rc, EXIT_OK, out + err)
        self.assertIn("smaller than", err)
        self.assertTrue(wait_for(lambda: os.path.exists(gate2 + ".held"), timeout=60),
                        "a failed hit that served the relay started no runner")
        self.assertTrue(port_open(url), "the relay the hit served is not up")
        self.assertEqual(env.pool_images(), before, "the failed hit left something")
        # A hit now finds the relay served: a clone, and no second runner.
        hit = env.json("create", image_id, "vm-i")
        self.assertEqual(hit["plan"], "clone")
        self.assertNotIn("import", hit, "a second runner was started")
        for vol in ("vm-h", "vm-i"):
            self.assertEqual(env.volume_md5(vol), md5, vol)
        # Killed again: a hit that succeeds serves it and starts the runner itself.
        runners = runner_pids(image_id)
        self.assertEqual(len(runners), 1, runners)
        os.kill(runners[0], signal.SIGKILL)
        self.assertTrue(wait_for(lambda: not os.path.exists("/proc/%d" % runners[0]), timeout=10))
        self.assertFalse(port_open(url))
        hit = env.json("create", image_id, "vm-j")
        self.assertEqual(hit["plan"], "clone")
        self.assertEqual(hit["import"], "background")
        runner = hit["import_pid"]
        # Read once it ended: `rbd export` opens read-only, which registers no watch, so the
        # runner's drain after its commit does not wait for it (a VM's open does).
        self.assertTrue(wait_for(lambda: not os.path.exists("/proc/%d" % runner), timeout=300),
                        "the runner the hit started never ended")
        self.assertFalse(env.migrating(entry_name(image_id)), "the import was not committed")
        self.assertEqual(env.stats()["imports_pending"], 0)
        self.assertFalse(port_open(url), "the relay still listens after the import ended")
        for vol in ("vm-h", "vm-i", "vm-j"):
            self.assertEqual(env.volume_md5(vol), md5, vol)
        openstack.assert_no_secret()

    def test_a_resuming_pass_keeps_serving_open_volumes_without_holding_other_passes(self):
        env = Env("drain", self.keystone_glance())
        image_id, md5 = self.upload(16 * MiB)
        never = os.path.join(env.dir, "never")
        made = env.json("create", image_id, "vm-d",
                        env={"CACHEMGR_FAILPOINT": "import_before_copy:wait:" + never})
        self.assertTrue(wait_for(lambda: os.path.exists(never + ".held"), timeout=60))
        os.kill(made["import_pid"], signal.SIGKILL)
        # The pass resumes it: held before its copy, the relay it serves lets a VM open the
        # volume (a watcher, as a running VM is).
        gate = os.path.join(env.dir, "go")
        first = subprocess.Popen([BIN, "--config", env.config, "evict"],
                                 env=dict(os.environ, CACHEMGR_FAILPOINT="import_before_copy:wait:" + gate),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            if not wait_for(lambda: os.path.exists(gate + ".held") or first.poll() is not None,
                            timeout=120) or not os.path.exists(gate + ".held"):
                # Its own words say why (an abort among them is run again by known_abort).
                if first.poll() is None:
                    first.kill()
                out, err = first.communicate(timeout=60)
                self.fail("the pass never reached its copy (exit %s): %s" % (first.returncode,
                                                                            out + err))
            # `rbd watch` holds the watch until its stdin ends: a pipe kept open.
            vm = subprocess.Popen(["rbd", "--conf", CONF, "watch",
                                   "volumes/%s/vm-d" % env.namespace], stdin=subprocess.PIPE,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(3)
                self.assertIsNone(vm.poll(), "the volume could not be opened through the relay")
                open(gate, "w").close()
                self.assertTrue(wait_for(lambda: not env.migrating(entry_name(image_id)),
                                         timeout=300), "the resumed import was not committed")
                # Committed, still serving the open volume: the pass's locks are let go.
                time.sleep(2)
                self.assertIsNone(first.poll(), "the pass stopped serving an open volume")
                rc, out, err = env.run("evict")
                self.assertEqual(rc, EXIT_OK, "another pass waited for the drain: " + out + err)
            finally:
                vm.kill()
                vm.wait()
            out, err = first.communicate(timeout=120)
            self.assertEqual(first.returncode, EXIT_OK, out + err)
            self.assertIn("import committed", out)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
        self.assertEqual(env.volume_md5("vm-d"), md5)

    def test_a_kill_before_the_entry_is_in_place_leaves_nothing_after_a_pass(self):
        env = Env("early", self.keystone_glance())
        image_id, md5 = self.upload(4 * MiB)
        for point in ("instant_after_prepare", "instant_after_record", "after_fetch"):
            rc, _, err = env.run("create", image_id, "vm-e", env={"CACHEMGR_FAILPOINT": point})
            self.assertLess(rc, 0, "the failpoint %s did not fire: %s" % (point, err))
            rc, out, err = env.run("evict")
            self.assertEqual(rc, EXIT_OK, out + err)
            self.assertEqual(env.pool_images(), [], "after %s: %s" % (point, env.pool_images()))
            self.assertEqual(env.stats()["imports_pending"], 0)
        made = env.json("create", "--wait-import", image_id, "vm-e")
        self.assertEqual(made["plan"], "instant")
        self.assertEqual(env.volume_md5("vm-e"), md5)

    def test_a_kill_after_the_rename_is_finished_by_the_next_pass(self):
        """The entry is in place under its name, its row not ready yet: every step of the
        pass that opens it needs the relay, which the pass serves first."""
        env = Env("late", self.keystone_glance())
        for n, point in enumerate(("after_rename", "before_ready")):
            image_id, md5 = self.upload(4 * MiB)  # a miss each time
            rc, _, err = env.run("create", image_id, "vm-l%d" % n,
                                 env={"CACHEMGR_FAILPOINT": point})
            self.assertLess(rc, 0, "the failpoint %s did not fire: %s" % (point, err))
            rc, out, err = env.run("evict")
            self.assertEqual(rc, EXIT_OK, point + ": " + out + err)
            rc, out, err = env.run("evict")
            self.assertEqual(rc, EXIT_OK, point + ": " + out + err)
            self.assertEqual(env.stats()["imports_pending"], 0, point)
            made = env.json("create", image_id, "vm-after%d" % n)
            self.assertIn(made["plan"], ("clone", "instant", "miss"), point)
            self.assertEqual(env.volume_md5("vm-after%d" % n), md5, point)
            rc, out, err = env.run("doctor")
            self.assertEqual(rc, EXIT_OK, point + ": " + out + err)


def main():
    if not BIN:
        sys.exit("CACHEMGR_BIN is not set")
    os.makedirs(ROOT, exist_ok=True)
    try:
        ok = run_unittests(sys.argv)
    finally:
        shutil.rmtree(ROOT, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

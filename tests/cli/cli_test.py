#!/usr/bin/python3
"""End-to-end tests of the `cachemgr` tool: every subcommand, its output and its exit code.

Runs the real binary ($CACHEMGR_BIN) against a real backend:
  --backend local  a directory under the test run dir
  --backend rbd    the ceph fixture's cluster (${CACHEMGR_TEST_RUN_DIR}/ceph/ceph.conf, pool
                   "volumes"), each test in its own RBD namespace so that passes never see
                   another test's images.
The source is a directory of image files (the file source) made here with qemu-img.
Run by CTest (tests/cli/CMakeLists.txt) with Debian's /usr/bin/python3 (python3-rbd).
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import unittest
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from known_abort import known_librbd_abort, run_unittests  # noqa: E402,F401 (suites use both)

BIN = os.environ.get("CACHEMGR_BIN", "")
RUN_DIR = os.environ.get("CACHEMGR_TEST_RUN_DIR", "/tmp/cachemgr-test-run")
BACKEND = "local"
MiB = 1 << 20

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_BUSY = 0, 1, 2, 3, 4, 5


def pattern(size, seed):
    """Deterministic, non-zero, different per seed and per 64 KiB chunk."""
    block = hashlib.sha256(("seed-%d" % seed).encode()).digest() * 2048  # 64 KiB
    out = bytearray()
    for i in range(size // len(block)):
        out += i.to_bytes(8, "little") + block[8:]
    return bytes(out[:size])


def run(args, config=None, stdin=None, env=None, rerun_on_abort=True):
    """Runs the tool once; a run that died of the known librbd abort runs once more, unless
    `rerun_on_abort` is false (a caller whose command is not the same twice: it judges the
    aborted run itself)."""
    e = dict(os.environ)
    e.pop("CACHEMGR_CONFIG", None)
    if env:
        e.update(env)
    argv = [BIN] + (["--config", config] if config else []) + list(args)
    p = run_bounded(argv, stdin, e)
    if rerun_on_abort and known_librbd_abort(p.returncode, p.stderr):
        sys.stderr.write("cli_test: %s died of the known librbd abort (docs/architecture.md,"
                         " Known limit); running it once more\n%s" % (" ".join(args), p.stderr))
        p = run_bounded(argv, stdin, e)
    return p.returncode, p.stdout, p.stderr


TIMEOUT_S = int(os.environ.get("CACHEMGR_TEST_CMD_TIMEOUT_S", "600"))


def run_bounded(argv, stdin, env):
    """Runs one command of the tool. One that does not end within TIMEOUT_S is a hang: the
    stacks of all its threads are written to stderr (gdb, when installed) before it is
    killed, so the failure names where it waited."""
    with subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None else None,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env) as proc:
        try:
            out, err = proc.communicate(stdin, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            stacks = dump_stacks(proc.pid)
            proc.kill()
            out, err = proc.communicate()
            sys.stderr.write("cli_test: %s hung for %d s; its threads:\n%s\nits stderr:\n%s\n"
                             % (" ".join(argv), TIMEOUT_S, stacks, err))
            raise
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def dump_stacks(pid):
    gdb = shutil.which("gdb")
    if not gdb:
        return "(gdb is not installed: no stacks)"
    try:
        return subprocess.run([gdb, "-p", str(pid), "-batch", "-nx", "-ex", "set pagination off",
                               "-ex", "thread apply all bt"], capture_output=True, text=True,
                              timeout=120).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return "(gdb failed: %s)" % e


class World:
    """Images shared by all tests: a file-source directory of raw and qcow2 images."""

    def __init__(self):
        self.root = os.path.join(RUN_DIR, "cli-%s-%d" % (BACKEND, os.getpid()))
        shutil.rmtree(self.root, ignore_errors=True)
        self.images = os.path.join(self.root, "images")
        os.makedirs(self.images)
        self.raw = {}  # image id -> raw bytes of its disk

    def add_raw(self, image_id=None, size=4 * MiB, seed=None, directory=None):
        image_id = image_id or str(uuid.uuid4())
        data = pattern(size, seed if seed is not None else len(self.raw) + 1)
        with open(os.path.join(directory or self.images, image_id), "wb") as f:
            f.write(data)
        self.raw[image_id] = data
        return image_id

    def add_qcow2(self, size=8 * MiB, seed=None):
        image_id = str(uuid.uuid4())
        data = pattern(size // 2, seed if seed is not None else len(self.raw) + 100)
        data += b"\0" * (size - len(data))
        tmp = os.path.join(self.root, image_id + ".raw")
        with open(tmp, "wb") as f:
            f.write(data)
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", tmp,
                        os.path.join(self.images, image_id)], check=True)
        os.unlink(tmp)
        self.raw[image_id] = data
        return image_id


WORLD = None


class Env:
    """One cache: its own index, local root (or RBD namespace), config file."""

    counter = 0

    def __init__(self, name, images=None, cache="", extra=""):
        Env.counter += 1
        self.name = "%s%d" % (name, Env.counter)
        self.dir = os.path.join(WORLD.root, self.name)
        os.makedirs(self.dir, exist_ok=True)
        self.index = os.path.join(self.dir, "index.db")
        self.local_root = os.path.join(self.dir, "cache")
        self.namespace = "cli-%d-%s" % (os.getpid(), self.name)
        self.images = images or WORLD.images
        self.config = self.write_config(cache=cache, extra=extra)

    def write_config(self, cache="", extra="", path=None):
        if BACKEND == "local":
            backend = "backend:\n  type: local\n  local:\n    root: %s\n" % self.local_root
        else:
            backend = ("backend:\n  type: rbd\n  rbd:\n    conf: %s\n    pool: volumes\n"
                       "    namespace: %s\n" % (os.path.join(RUN_DIR, "ceph", "ceph.conf"),
                                                  self.namespace))
        text = ("index: %s\n%ssource:\n  type: file\n  file:\n    dir: %s\n"
                "conversion:\n  dir: %s\n" % (self.index, backend, self.images,
                                             os.path.join(self.dir, "conversion")))
        if cache:
            text += "cache:\n" + "".join("  %s\n" % line for line in cache.split(";"))
        text += extra
        path = path or os.path.join(self.dir, "cachemgr.yaml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def run(self, *args, **kw):
        return run(list(args), config=self.config, **kw)

    def json(self, *args):
        rc, out, err = self.run("--json", *args)
        assert rc == 0, "cachemgr %s: exit %d: %s" % (" ".join(args), rc, err)
        return json.loads(out)

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
        with rados.Rados(conffile=os.path.join(RUN_DIR, "ceph", "ceph.conf")) as cluster:
            with cluster.open_ioctx("volumes") as io:
                io.set_namespace(self.namespace)
                with rbd.Image(io, name, read_only=True) as img:
                    return img.read(0, length)

    def volume_size(self, name):
        if BACKEND == "local":
            info = subprocess.run(["qemu-img", "info", "--output=json",
                                   os.path.join(self.local_root, "volumes", name)],
                                  check=True, capture_output=True, text=True).stdout
            return json.loads(info)["virtual-size"]
        import rados, rbd  # noqa: E401
        with rados.Rados(conffile=os.path.join(RUN_DIR, "ceph", "ceph.conf")) as cluster:
            with cluster.open_ioctx("volumes") as io:
                io.set_namespace(self.namespace)
                with rbd.Image(io, name, read_only=True) as img:
                    return img.size()

    def damage_entry(self, image_id):
        """Makes the cached entry of `image_id` differ from what was cached."""
        entry = self.json("show", image_id)
        if BACKEND == "local":
            # The base may be a hard link of the source file: break the link first so
            # that only the cache's copy is damaged.
            path = os.path.join(self.local_root, "_base", entry["cache_name"])
            with open(path, "rb") as f:
                data = bytearray(f.read())
            data[0:16] = b"DAMAGED-BY-TEST!"
            os.unlink(path)
            with open(path, "wb") as f:
                f.write(data)
            return
        # An RBD snapshot cannot be written: take away the protected snapshot instead.
        import rados, rbd  # noqa: E401
        with rados.Rados(conffile=os.path.join(RUN_DIR, "ceph", "ceph.conf")) as cluster:
            with cluster.open_ioctx("volumes") as io:
                io.set_namespace(self.namespace)
                with rbd.Image(io, entry["cache_name"]) as img:
                    for snap in list(img.list_snaps()):
                        if img.is_protected_snap(snap["name"]):
                            img.unprotect_snap(snap["name"])
                        img.remove_snap(snap["name"])


class CliTest(unittest.TestCase):
    # --- usage and config errors: exit 2 -------------------------------------------

    def test_help_documents_commands_config_and_exit_codes(self):
        rc, out, _ = run(["--help"])
        self.assertEqual(rc, EXIT_OK)
        for word in ["create", "delete", "prefill", "evict", "list", "show", "stats", "verify",
                     "rebuild-index", "doctor", "CACHEMGR_CONFIG", "/etc/cachemgr/cachemgr.yaml",
                     "Exit codes", "5  busy"]:
            self.assertIn(word, out)
        rc, out, _ = run(["prefill", "--help"])
        self.assertEqual(rc, EXIT_OK)
        self.assertIn("--concurrency", out)

    def test_usage_errors_exit_2(self):
        env = Env("usage")
        cases = [
            [],                                     # no subcommand
            ["frobnicate"],                         # unknown subcommand
            ["create", "only-an-image"],            # missing VOLUME
            ["show"],                               # missing IMAGE_ID
            ["prefill", "--concurrency", "many"],   # not a number
            ["evict", "--flatten-pinned-max", "-1"],    # below the range
            ["evict", "--flatten-pinned-max", "many"],  # not a number
            ["--log-level", "loud", "list"],        # not a level
        ]
        for args in cases:
            rc, _, err = env.run(*args)
            self.assertEqual(rc, EXIT_USAGE, "%s: %s" % (args, err))
            self.assertTrue(err.strip(), args)
        rc, _, err = env.run("create", "img", "vol", "--size", "12Q")
        self.assertEqual(rc, EXIT_USAGE)
        self.assertIn("size '12Q'", err)
        rc, _, err = env.run("evict", "--flatten-older-than", "3x")
        self.assertEqual(rc, EXIT_USAGE)
        self.assertIn("duration '3x'", err)
        rc, _, err = env.run("prefill")
        self.assertEqual(rc, EXIT_USAGE)
        self.assertIn("no images given", err)
        rc, _, err = env.run("prefill", "--concurrency", "0", "x")
        self.assertEqual(rc, EXIT_USAGE)
        rc, _, err = env.run("create", "../../etc/passwd", "vol")
        self.assertEqual(rc, EXIT_USAGE, err)
        self.assertIn("image id", err)

    def test_config_errors_exit_2_naming_the_key(self):
        env = Env("config")
        rc, _, err = run(["list"], config=os.path.join(env.dir, "missing.yaml"))
        self.assertEqual(rc, EXIT_USAGE)
        self.assertIn("missing.yaml", err)
        # The default path comes from $CACHEMGR_CONFIG.
        rc, _, err = run(["list"], env={"CACHEMGR_CONFIG": os.path.join(env.dir, "nope.yaml")})
        self.assertEqual(rc, EXIT_USAGE)
        self.assertIn("nope.yaml", err)
        bad = env.write_config(cache="max_size_gb: -1", path=os.path.join(env.dir, "neg.yaml"))
        rc, _, err = run(["list"], config=bad)
        self.assertEqual(rc, EXIT_USAGE)
        self.assertIn("cache.max_size_gb", err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        typo = env.write_config(cache="max_cont: 3", path=os.path.join(env.dir, "typo.yaml"))
        rc, _, err = run(["evict"], config=typo)
        self.assertEqual(rc, EXIT_USAGE)
        self.assertIn("max_cont", err)
        rc, out, err = run(["doctor"], config=typo)
        self.assertEqual(rc, EXIT_USAGE)
        self.assertIn("FAIL config", out)
        rc, out, err = run(["--json", "list"], config=typo)
        self.assertEqual(rc, EXIT_USAGE)
        self.assertEqual(json.loads(out)["error"]["code"], "config")

    # --- not found (3) and refused (4) ---------------------------------------------

    def test_unknown_image_exit_3(self):
        env = Env("notfound")
        ghost = str(uuid.uuid4())
        rc, _, err = env.run("create", ghost, "vol-ghost")
        self.assertEqual(rc, EXIT_NOT_FOUND, err)
        self.assertIn(ghost, err)
        rc, _, err = env.run("show", ghost)
        self.assertEqual(rc, EXIT_NOT_FOUND)
        self.assertIn(ghost, err)
        rc, _, err = env.run("prefill", ghost)
        self.assertEqual(rc, EXIT_NOT_FOUND)
        self.assertIn(ghost, err)
        rc, _, err = env.run("verify", ghost)
        self.assertEqual(rc, EXIT_NOT_FOUND)
        rc, _, err = env.run("delete", "no-such-volume")
        self.assertEqual(rc, EXIT_NOT_FOUND, err)
        self.assertIn("no-such-volume", err)

    def test_refused_image_exit_4(self):
        env = Env("refused")
        # A qcow2 whose backing file points at a host file: never let in.
        hostile = str(uuid.uuid4())
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F",
                        "raw", os.path.join(WORLD.images, hostile), "1M"], check=True)
        rc, _, err = env.run("create", hostile, "vol-hostile")
        self.assertEqual(rc, EXIT_REFUSED, err)
        self.assertIn(hostile, err)
        # A raw image whose source checksum does not match its bytes.
        liar = WORLD.add_raw(size=1 * MiB)
        with open(os.path.join(WORLD.images, liar + ".json"), "w") as f:
            json.dump({"disk_format": "raw", "checksum": "0" * 32}, f)
        rc, out, err = env.run("prefill", liar)
        self.assertEqual(rc, EXIT_REFUSED, err)
        self.assertIn(liar, err)
        rc, _, _ = env.run("show", liar)
        self.assertEqual(rc, EXIT_NOT_FOUND, "a refused image must not be cached")

    # --- the main job: create, list, show, stats, delete ---------------------------

    def test_create_list_show_stats_delete(self):
        env = Env("main")
        qcow = WORLD.add_qcow2()
        raw = WORLD.add_raw()
        rc, out, err = env.run("prefill", qcow)
        self.assertEqual(rc, EXIT_OK, err)

        made = env.json("create", qcow, "vm-1")
        for key in ["volume", "image_id", "plan", "ms"]:
            self.assertIn(key, made)
        self.assertEqual((made["volume"], made["image_id"]), ("vm-1", qcow))
        self.assertIn(made["plan"], ["clone", "copy", "flatten_clone"])  # prefilled: a hit
        made = env.json("create", raw, "vm-2")
        self.assertEqual(made["plan"], "miss")
        rc, out, err = env.run("create", qcow, "vm-3", "--size", "16M")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertIn("vm-3", out)
        for vol, image in [("vm-1", qcow), ("vm-2", raw), ("vm-3", qcow)]:
            data = WORLD.raw[image]
            self.assertEqual(env.read_volume(vol, len(data)), data, "volume %s" % vol)
        self.assertEqual(env.volume_size("vm-3"), 16 * MiB)
        rc, _, err = env.run("create", qcow, "vm-1")
        self.assertNotEqual(rc, EXIT_OK, "a taken volume name must fail")
        rc, _, err = env.run("create", qcow, "vm-small", "--size", "1M")
        self.assertEqual(rc, EXIT_USAGE, "smaller than the image: " + err)

        rc, out, err = env.run("list")
        self.assertEqual(rc, EXIT_OK, err)
        header = out.splitlines()[0]
        for col in ["IMAGE", "STATE", "SIZE", "ALLOCATED", "DEPTH", "HITS", "LAST USED",
                    "VOLUMES", "PINNED"]:
            self.assertIn(col, header)
        self.assertIn(qcow, out)
        self.assertIn(raw, out)
        entries = {e["image_id"]: e for e in env.json("list")}
        self.assertEqual(set(entries), {qcow, raw})
        self.assertEqual(entries[qcow]["volumes"], 2)
        self.assertEqual(entries[qcow]["hits"], 2)
        self.assertEqual(entries[qcow]["virtual_size"], len(WORLD.raw[qcow]))

        rc, out, err = env.run("show", qcow)
        self.assertEqual(rc, EXIT_OK, err)
        self.assertIn("vm-1", out)
        self.assertIn("vm-3", out)
        self.assertNotIn("vm-2", out)
        shown = env.json("show", qcow)
        self.assertEqual(sorted(v["name"] for v in shown["volume_list"]), ["vm-1", "vm-3"])

        rc, out, err = env.run("stats")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertIn("hits", out)
        stats = env.json("stats")
        self.assertEqual(stats["entries"], 2)
        self.assertEqual(stats["volumes"], 3)
        self.assertGreaterEqual(stats["hits"], 2)
        self.assertGreaterEqual(stats["misses"], 2)
        rc, prom, err = env.run("stats", "--prometheus")
        self.assertEqual(rc, EXIT_OK, err)
        self.check_prometheus(prom, stats)
        out_file = os.path.join(env.dir, "cachemgr.prom")
        rc, _, err = env.run("stats", "--prometheus", "--output", out_file)
        self.assertEqual(rc, EXIT_OK, err)
        with open(out_file) as f:
            self.assertIn("cachemgr_entries 2", f.read())

        rc, out, err = env.run("delete", "vm-1")
        self.assertEqual(rc, EXIT_OK, err)
        shown = env.json("show", qcow)
        self.assertEqual([v["name"] for v in shown["volume_list"]], ["vm-3"])

    def test_stats_what_if(self):
        # max_count 1: a, b, a, a misses a (cold), b (cold), a (b came between), hits a.
        env = Env("whatif", cache="max_count: 1")
        a, b = WORLD.add_raw(size=MiB), WORLD.add_raw(size=MiB)
        for i, image in enumerate([a, b, a, a]):
            rc, _, err = env.run("create", image, "wi-%d" % i)
            self.assertEqual(rc, EXIT_OK, err)
        r = env.json("stats", "--what-if", "--target-hit-ratio", "0.5")
        self.assertEqual((r["accesses"], r["cold"], r["measured_hits"]), (4, 2, 1))
        self.assertEqual([s["factor"] for s in r["sizes"]], [0.5, 1, 2, 4])
        self.assertEqual([s["max_count"] for s in r["sizes"]], [1, 1, 2, 4])
        self.assertAlmostEqual(r["sizes"][1]["hit_ratio_by_count"], 0.25)  # as measured
        self.assertAlmostEqual(r["sizes"][2]["hit_ratio_by_count"], 0.5)  # a stays at 2
        self.assertEqual(r["target"]["max_count"], 2)
        rc, out, err = env.run("stats", "--what-if")
        self.assertEqual(rc, EXIT_OK, err)
        self.assertIn("1x (today)", out)
        self.assertIn("no size reaches it", out)  # 0.9 with half the accesses cold
        rc, _, err = env.run("stats", "--what-if", "--target-hit-ratio", "1.5")
        self.assertEqual(rc, EXIT_USAGE, err)

    def test_quiet_by_default_one_line_errors_and_the_log_file(self):
        log_file = os.path.join(WORLD.root, "quiet-%s.log" % BACKEND)
        env = Env("quiet", extra="log:\n  level: info\n  file: %s\n" % log_file)
        image = WORLD.add_raw()
        rc, _, err = env.run("create", image, "vm-q")
        self.assertEqual((rc, err), (EXIT_OK, ""), "stderr carries warnings and errors only")
        for cmd in (["list"], ["stats"], ["doctor"], ["evict", "--dry-run"], ["verify"]):
            rc, _, err = env.run(*cmd)
            self.assertEqual(err, "", "%s wrote to stderr: %s" % (cmd, err))
        rc, _, err = env.run("-v", "list")
        self.assertIn("info:", err)
        with open(log_file) as f:
            self.assertIn("volume made", f.read(), "log.file keeps the config's level")
        # An error: one line on stderr, and the same line in log.file.
        rc, _, err = env.run("create", "no-such-image-q", "vm-q2")
        self.assertEqual(rc, EXIT_NOT_FOUND)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        with open(log_file) as f:
            self.assertIn("cachemgr create failed (exit 3)", f.read())
        # --json and --prometheus are two formats: refused, one JSON document.
        rc, out, err = env.run("--json", "stats", "--prometheus")
        self.assertEqual(rc, EXIT_USAGE, err)
        self.assertEqual(json.loads(out)["error"]["code"], "invalid_argument")
        # A message with bytes that are not UTF-8 is still one JSON document.
        p = subprocess.run([BIN, "--json", "-c", os.fsencode(env.dir) + b"/no\xff.yaml", "list"],
                           capture_output=True, timeout=60)
        self.assertEqual(p.returncode, EXIT_USAGE, p.stderr)
        self.assertIn("error", json.loads(p.stdout.decode()))
        # A log file this user cannot write: a warning, and the command still works.
        # (A regular file where its folder should be: refused even to root.)
        blocked = os.path.join(env.dir, "blocked")
        with open(blocked, "w") as f:
            f.write("not a folder\n")
        bad = env.write_config(extra="log:\n  file: %s/x.log\n" % blocked,
                               path=os.path.join(env.dir, "bad-log.yaml"))
        rc, out, err = run(["list"], config=bad)
        self.assertEqual(rc, EXIT_OK, err)
        self.assertIn("logging to stderr only", err)

    def check_prometheus(self, text, stats):
        families, samples = {}, {}
        for line in text.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                kind, name = line.split()[1:3]
                families.setdefault(name, set()).add(kind)
                if kind == "TYPE":
                    self.assertIn(line.split()[3], ["counter", "gauge"])
                continue
            m = re.fullmatch(r'(cachemgr_[a-z_]+)(\{[a-z_]+="[a-z_]+"\})? ([0-9.]+)', line)
            self.assertIsNotNone(m, "not a sample line: %r" % line)
            self.assertEqual(families.get(m.group(1)), {"HELP", "TYPE"},
                             "HELP and TYPE come before " + m.group(1))
            samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        # The ecosystem's own linter (Debian's prometheus package) accepts every family.
        lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                              text=True)
        self.assertEqual((lint.returncode, lint.stdout + lint.stderr), (0, ""))
        self.assertIn('cachemgr_volume_creates_total{plan="miss"}', text)
        self.assertEqual(samples["cachemgr_hits_total"], stats["hits"])
        self.assertEqual(samples["cachemgr_misses_total"], stats["misses"])
        self.assertEqual(samples["cachemgr_entries"], 2)


from cli_untrusted_test import UntrustedFilesTest  # noqa: E402,F401 (run with these)
from cli_upkeep_test import CliUpkeepTest  # noqa: E402,F401
from cli_floor_test import CliFloorTest  # noqa: E402,F401
from cli_known_abort_test import KnownAbortTest  # noqa: E402,F401


def main():
    global BACKEND, WORLD
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["local", "rbd"], default="local")
    args, rest = parser.parse_known_args()
    BACKEND = args.backend
    if not BIN or not os.access(BIN, os.X_OK):
        sys.exit("CACHEMGR_BIN is not set to the cachemgr binary")
    if BACKEND == "rbd" and not os.path.exists(os.path.join(RUN_DIR, "ceph", "ceph.conf")):
        sys.exit("no Ceph cluster at %s/ceph (the ceph fixture did not start)" % RUN_DIR)
    WORLD = World()
    ok = run_unittests([sys.argv[0]] + rest)
    if ok:
        shutil.rmtree(WORLD.root, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

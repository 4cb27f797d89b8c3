"""The `cachemgr` tool's upkeep commands end to end: verify, rebuild-index, doctor, the
eviction pass (dry run, busy, two at once) and prefill.

Imported by cli_test.py, whose Env, WORLD and run() it uses (through __main__, the
running cli_test.py), so it runs on the backend cli_test.py was given.
"""
import fcntl
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import unittest
import uuid

import __main__ as cli


class CliUpkeepTest(unittest.TestCase):
    # --- verify (4 on a mismatch), rebuild-index, doctor ---------------------------

    def test_verify_finds_a_damaged_entry(self):
        env = cli.Env("verify")
        good, bad = cli.WORLD.add_raw(), cli.WORLD.add_raw()
        rc, _, err = env.run("prefill", good, bad)
        self.assertEqual(rc, cli.EXIT_OK, err)
        rc, out, err = env.run("verify")
        self.assertEqual(rc, cli.EXIT_OK, err)
        self.assertIn("2 checked, 0 mismatched", out)
        env.damage_entry(bad)
        rc, out, err = env.run("verify")
        self.assertEqual(rc, cli.EXIT_REFUSED, out + err)
        self.assertIn("MISMATCH " + bad, out)
        self.assertIn("ok       " + good, out)
        self.assertIn(bad, err)
        rc, out, err = env.run("verify", good)
        self.assertEqual(rc, cli.EXIT_OK, err)
        doc = json.loads(env.run("--json", "verify")[1])
        self.assertEqual(doc["mismatched"], 1)

    def test_rebuild_index_restores_entries(self):
        env = cli.Env("rebuild")
        ids = [cli.WORLD.add_raw(size=2 * cli.MiB) for _ in range(2)]
        rc, _, err = env.run("prefill", *ids)
        self.assertEqual(rc, cli.EXIT_OK, err)
        for suffix in ["", "-wal", "-shm"]:
            if os.path.exists(env.index + suffix):
                os.unlink(env.index + suffix)
        self.assertEqual(env.json("list"), [])
        rc, out, err = env.run("rebuild-index")
        self.assertEqual(rc, cli.EXIT_OK, err)
        self.assertIn("restored 2", out)
        self.assertEqual(sorted(e["image_id"] for e in env.json("list")), sorted(ids))
        rc, out, err = env.run("create", ids[0], "after-rebuild")
        self.assertEqual(rc, cli.EXIT_OK, err)
        self.assertNotIn("miss", out, "a restored entry is a hit")

    def test_doctor(self):
        env = cli.Env("doctor")
        rc, out, err = env.run("doctor")
        self.assertEqual(rc, cli.EXIT_OK, out + err)
        self.assertIn("qemu-img", out)
        self.assertNotIn("FAIL", out)
        broken = cli.Env("doctor", images=os.path.join(cli.WORLD.root, "no-such-dir"))
        rc, out, err = broken.run("doctor")
        self.assertEqual(rc, cli.EXIT_FAILED, out + err)
        self.assertIn("FAIL", out)
        self.assertIn("fix:", out)
        doc = json.loads(broken.run("--json", "doctor")[1])
        self.assertGreaterEqual(doc["failed"], 1)

    def test_doctor_after_another_host_replaced_a_stale_entry_with_clones(self):
        if cli.BACKEND != "local":
            self.skipTest("two hosts on one local root")
        images = os.path.join(cli.WORLD.root, "doctor-hosts-images")
        os.makedirs(images, exist_ok=True)
        a = cli.Env("doctorA", images=images, extra="host_id: host-a\n")
        b = cli.Env("doctorB", images=images, extra="host_id: host-b\n")
        with open(b.config) as f:
            text = f.read()
        with open(b.config, "w") as f:
            f.write(text.replace(b.local_root, a.local_root))
        image = cli.WORLD.add_raw(size=1 * cli.MiB, directory=images, seed=501)
        self.assertEqual(b.run("create", image, "vol-b")[0], cli.EXIT_OK)
        cli.WORLD.add_raw(image_id=image, size=1 * cli.MiB, directory=images, seed=502)
        rc, _, err = a.run("create", image, "vol-a")  # stale: replaced, vol-b keeps the old
        self.assertEqual(rc, cli.EXIT_OK, err)
        cli.WORLD.add_raw(image_id=image, size=1 * cli.MiB, directory=images, seed=503)
        self.assertEqual(a.run("evict")[0], cli.EXIT_OK)
        # What doctor asks of each host (run evict) clears what it names, for good.
        self.assertEqual(b.run("evict")[0], cli.EXIT_OK)
        for env in (a, b, a):
            rc, out, err = env.run("doctor")
            self.assertEqual(rc, cli.EXIT_OK, out + err)
            self.assertNotIn("FAIL", out)
        # (b shares a's root: its volumes are read there)
        self.assertEqual(a.read_volume("vol-b", 1 * cli.MiB), cli.pattern(1 * cli.MiB, 501))
        self.assertEqual(a.read_volume("vol-a", 1 * cli.MiB), cli.pattern(1 * cli.MiB, 502))

    # --- evict: dry run, the pass, busy (5), two passes at once ---------------------

    def evict_setup(self, name, count=5, keep=2):
        env = cli.Env(name)
        ids = [cli.WORLD.add_raw(size=1 * cli.MiB) for _ in range(count)]
        rc, _, err = env.run("prefill", "--concurrency", "2", *ids)
        self.assertEqual(rc, cli.EXIT_OK, err)
        # Lower the limit afterwards, as an operator would, so the pass has work to do.
        env.write_config(cache="max_count: %d" % keep, path=env.config)
        return env, ids

    def test_evict_prunes_events_to_their_bounds(self):
        env = cli.Env("events", cache="events_max_rows: 1000;events_max_age_days: 30")
        image = cli.WORLD.add_raw(size=1 * cli.MiB)
        rc, _, err = env.run("create", image, "vol-events")
        self.assertEqual(rc, cli.EXIT_OK, err)
        # Two months of hits written straight into the index: 500 too old, 3000 recent.
        now = int(time.time())
        rows = [(now - 60 * 86400, image)] * 500 + [(now - i, image) for i in range(3000)]
        with sqlite3.connect(env.index) as db:
            db.executemany("INSERT INTO events (ts, kind, image_id) VALUES (?, 'hit', ?)", rows)
        self.assertEqual(env.json("stats")["hits"], 3500)
        rc, _, err = env.run("evict")
        self.assertEqual(rc, cli.EXIT_OK, err)
        db = sqlite3.connect(env.index)
        count, oldest = db.execute("SELECT count(*), min(ts) FROM events").fetchone()
        db.close()
        self.assertEqual(count, 1000, "the newest events_max_rows are kept")
        self.assertGreater(oldest, now - 30 * 86400, "none older than events_max_age_days")
        # stats counts every event ever recorded: its figures are counters (Prometheus reads
        # them so), and a prune lowers none of them.
        self.assertEqual(env.json("stats")["hits"], 3500)
        rc, prom, err = env.run("stats", "--prometheus")
        self.assertEqual(rc, cli.EXIT_OK, err)
        self.assertRegex(prom, r"(?m)^cachemgr_hits_total 3500$")

    def test_stats_say_why_each_miss_happened(self):
        env = cli.Env("reasons", cache="max_count: 1")
        first, second = (cli.WORLD.add_raw(size=1 * cli.MiB) for _ in range(2))
        for image, volume in [(first, "r1"), (second, "r2"), (first, "r3")]:
            rc, _, err = env.run("create", image, volume)  # the second evicts the first
            self.assertEqual(rc, cli.EXIT_OK, err)
        stats = env.json("stats")
        reasons = stats["misses_by_reason"]
        self.assertEqual(sorted(reasons), ["capacity", "cold", "lost", "stale", "too_big"])
        self.assertEqual(reasons["cold"], {"count": 2, "bytes_downloaded": 2 * cli.MiB})
        self.assertEqual(reasons["capacity"], {"count": 1, "bytes_downloaded": 1 * cli.MiB})
        self.assertEqual(sum(r["count"] for r in reasons.values()), stats["misses"])
        rc, prom, err = env.run("stats", "--prometheus")
        self.assertEqual(rc, cli.EXIT_OK, err)
        self.assertRegex(prom, r'(?m)^cachemgr_misses_by_reason_total\{reason="cold"\} 2$')
        self.assertRegex(prom, r'(?m)^cachemgr_misses_by_reason_total\{reason="capacity"\} 1$')
        self.assertRegex(prom, r'(?m)^cachemgr_miss_bytes_total\{reason="capacity"\} %d$'
                         % cli.MiB)
        self.assertRegex(prom, r'(?m)^cachemgr_misses_by_reason_total\{reason="lost"\} 0$')
        lint = subprocess.run(["promtool", "check", "metrics"], input=prom, capture_output=True,
                              text=True)
        self.assertEqual((lint.returncode, lint.stdout + lint.stderr), (0, ""))
        rc, out, err = env.run("stats")
        self.assertEqual(rc, cli.EXIT_OK, err)
        self.assertRegex(out, r"(?m)^capacity +1 +1\.00 MiB *$")

    def test_evict_dry_run_then_pass(self):
        env, ids = self.evict_setup("evict")
        rc, out, err = env.run("evict", "--dry-run")
        self.assertEqual(rc, cli.EXIT_OK, err)
        self.assertIn("dry run", out)
        self.assertEqual(out.count("would do"), 3, out)
        self.assertEqual(len(env.json("list")), 5, "a dry run changes nothing")
        doc = env.json("evict")
        evicted = [a for a in doc["actions"] if a["kind"] == "evict" and a["done"]]
        self.assertEqual(len(evicted), 3, doc)
        self.assertEqual((doc["entries_before"], doc["entries_after"]), (5, 2))
        left = {e["image_id"] for e in env.json("list")}
        self.assertEqual(len(left), 2)
        self.assertTrue(left <= set(ids))
        self.assertFalse(left & {a["image_id"] for a in evicted})
        rc, out, err = env.run("evict")
        self.assertEqual(rc, cli.EXIT_OK, err)
        self.assertIn("nothing to do", out)

    def test_evict_busy_exit_5(self):
        env, _ = self.evict_setup("busy", count=3, keep=1)
        lock_dir = os.path.join(env.dir, "locks")
        os.makedirs(lock_dir, exist_ok=True)
        with open(os.path.join(lock_dir, "eviction-pass.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # as a running pass holds it
            rc, out, err = env.run("evict")
            self.assertEqual(rc, cli.EXIT_BUSY, out + err)
            self.assertTrue(err.strip())
            self.assertEqual(len(env.json("list")), 3, "a busy pass does nothing")
        rc, out, err = env.run("evict")
        self.assertEqual(rc, cli.EXIT_OK, err)
        self.assertEqual(len(env.json("list")), 1)

    def test_two_passes_at_once_do_the_work_once(self):
        for round_ in range(3):
            env, _ = self.evict_setup("twopass", count=6, keep=2)
            argv = [cli.BIN, "--config", env.config, "--json", "evict"]
            barrier = threading.Barrier(2)
            results = [None, None]
            aborted = []

            def one(i):
                barrier.wait()
                p = subprocess.run(argv, capture_output=True, text=True, timeout=600)
                if cli.known_librbd_abort(p.returncode, p.stderr):
                    # The librbd 16 abort (docs/architecture.md, Known limit): what that run
                    # did is not in its output, so the work is judged by the pool below.
                    sys.stderr.write("two passes: a pass died of the known librbd abort; "
                                     "running it once more\n%s" % p.stderr)
                    aborted.append(i)
                    p = subprocess.run(argv, capture_output=True, text=True, timeout=600)
                results[i] = p

            threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            done = 0
            codes = []
            for p in results:
                codes.append(p.returncode)
                self.assertIn(p.returncode, [cli.EXIT_OK, cli.EXIT_BUSY], p.stderr)
                if p.returncode == cli.EXIT_OK:
                    doc = json.loads(p.stdout)
                    done += sum(1 for a in doc["actions"] if a["kind"] == "evict" and a["done"])
                else:
                    self.assertIn("error", json.loads(p.stdout))
            if aborted:
                # An aborted pass's lock may hold until its lease runs out (30 s): a pass run
                # then finishes the work, and the pool ends as two clean passes leave it.
                self.assertLessEqual(done, 4, codes)
                deadline = time.time() + 90
                while True:
                    rc, _, err = env.run("evict")
                    if rc == cli.EXIT_OK or time.time() > deadline:
                        break
                    self.assertEqual(rc, cli.EXIT_BUSY, err)
                    time.sleep(2)
                self.assertEqual(rc, cli.EXIT_OK, err)
            else:
                self.assertEqual(done, 4,
                                 "4 entries over the limit, evicted once in all: %s" % codes)
            self.assertEqual(len(env.json("list")), 2)
            print("two passes, round %d: exit codes %s, evictions %d" % (round_, codes, done))

    # --- prefill: 20 images, 4 at a time; inputs; failures --------------------------

    def test_prefill_20_images_concurrency_4(self):
        images = os.path.join(cli.WORLD.root, "images20")
        os.makedirs(images, exist_ok=True)
        ids = [cli.WORLD.add_raw("img20-%02d-%s" % (i, uuid.uuid4().hex[:8]), size=2 * cli.MiB,
                             directory=images) for i in range(20)]
        env = cli.Env("prefill20", images=images)
        rc, out, err = env.run("prefill", "--concurrency", "4", *ids)
        self.assertEqual(rc, cli.EXIT_OK, err)
        lines = out.splitlines()
        for image_id in ids:
            # One progress line as it finished, and one row in the summary table.
            self.assertTrue(any(re.match(r"\[\d+/20\] %s: filled" % image_id, l) for l in lines),
                            image_id)
            self.assertTrue(any(re.match(r"%s\s+filled\s" % image_id, l) for l in lines),
                            image_id)
        self.assertRegex(out, r"total: 20 images: 20 filled, .* 0 skipped \(fresh\), 0 failed")
        self.assertIn("(concurrency 4)", out)
        self.assertEqual(len(env.json("list")), 20)

        # Again: every entry is fresh, so every image is skipped.
        doc = env.json("prefill", "--concurrency", "4", *ids)
        self.assertEqual([r["image_id"] for r in doc["results"]], ids)
        self.assertTrue(all(r["outcome"] == "skipped" for r in doc["results"]))
        self.assertEqual(doc["totals"]["images"], 20)
        self.assertEqual(doc["totals"]["skipped"], 20)
        self.assertEqual(doc["totals"]["failed"], 0)

        # --all with a filter, and --from-file - (stdin).
        doc = env.json("prefill", "--all", "--filter", "^img20-0[0-4]-")
        self.assertEqual(sorted(r["image_id"] for r in doc["results"]), sorted(ids[:5]))
        rc, out, err = env.run("--json", "prefill", "--from-file", "-",
                               stdin="# three of them\n%s\n\n%s\n%s\n" % tuple(ids[5:8]))
        self.assertEqual(rc, cli.EXIT_OK, err)
        self.assertEqual([r["image_id"] for r in json.loads(out)["results"]], ids[5:8])

    def test_prefill_failure_names_each_image(self):
        env = cli.Env("prefillfail")
        good = cli.WORLD.add_raw(size=1 * cli.MiB)
        ghosts = [str(uuid.uuid4()) for _ in range(2)]
        rc, out, err = env.run("prefill", "--retries", "1", "--retry-base-ms", "10", good, *ghosts)
        self.assertEqual(rc, cli.EXIT_NOT_FOUND, out + err)  # all failures share "not found"
        for g in ghosts:
            self.assertIn("image %s failed" % g, err)
        self.assertIn("2 of 3 images failed", err)
        self.assertRegex(out, r"total: 3 images: 1 filled, .* 2 failed")
        hostile = str(uuid.uuid4())
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F",
                        "raw", os.path.join(cli.WORLD.images, hostile), "1M"], check=True)
        rc, out, err = env.run("prefill", good, ghosts[0], hostile)
        self.assertEqual(rc, cli.EXIT_FAILED, "mixed causes: exit 1; " + err)
        self.assertIn(hostile, err)

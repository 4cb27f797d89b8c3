"""The `cachemgr` tool against untrusted files: symlinks and truncated images in the image
store, a dead fill's working dir in conversion.dir, and hostile --filter patterns.

Imported by cli_test.py, whose Env, WORLD and run() it uses (through __main__, the
running cli_test.py), so it runs on the backend cli_test.py was given.
"""
import hashlib
import json
import os
import shutil
import stat
import subprocess
import time
import unittest
import uuid

import __main__ as cli

MiB = 1 << 20


class UntrustedFilesTest(unittest.TestCase):
    def test_symlink_in_image_store_exit_4_target_untouched(self):
        env = cli.Env("symlink")
        secret = os.path.join(env.dir, "secret")
        with open(secret, "wb") as f:
            f.write(b"S" * MiB)
        os.chmod(secret, 0o600)
        link = str(uuid.uuid4())
        os.symlink(secret, os.path.join(cli.WORLD.images, link))
        rc, _, err = env.run("create", link, "vol-link")
        self.assertEqual(rc, cli.EXIT_REFUSED, err)
        self.assertIn(os.path.join(cli.WORLD.images, link), err)
        self.assertIn("symlink", err)
        self.assertEqual(os.stat(secret).st_mode & 0o7777, 0o600)
        rc, _, _ = env.run("show", link)
        self.assertEqual(rc, cli.EXIT_NOT_FOUND, "a refused image must not be cached")
        os.unlink(os.path.join(cli.WORLD.images, link))

    def test_truncated_image_without_checksum_exit_4(self):
        env = cli.Env("truncated")
        for fmt, disk_format in [("qcow2", "qcow2"), ("vmdk", "vmdk"), ("vdi", "vdi")]:
            whole = cli.WORLD.add_qcow2(size=8 * MiB)
            cut = str(uuid.uuid4())
            path = os.path.join(cli.WORLD.images, cut)
            subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", fmt,
                            os.path.join(cli.WORLD.images, whole), path], check=True)
            os.truncate(path, os.path.getsize(path) * 2 // 3)
            with open(path + ".json", "w") as f:
                json.dump({"disk_format": disk_format}, f)  # and no checksum
            rc, _, err = env.run("create", cut, "vol-" + cut)
            self.assertEqual(rc, cli.EXIT_REFUSED, fmt + ": " + err)
            self.assertIn(cut, err)
            rc, _, _ = env.run("show", cut)
            self.assertEqual(rc, cli.EXIT_NOT_FOUND, fmt + ": a refused image must not be cached")

    def test_formats_qemu_reads_but_the_cache_does_not_are_never_raw(self):
        images = self.private_images("otherformats")
        env = cli.Env("otherformats", images=images)
        image = str(uuid.uuid4())
        subprocess.run(["qemu-img", "create", "-q", "-f", "parallels",
                        os.path.join(images, image), "4M"], check=True)
        rc, _, err = env.run("create", image, "vol-parallels")
        self.assertEqual(rc, cli.EXIT_REFUSED, err)
        self.assertIn("parallels", err)
        rc, _, _ = env.run("show", image)
        self.assertEqual(rc, cli.EXIT_NOT_FOUND, "a refused image must not be cached")
        # Told by their footers, whatever the sidecar claims: a DMG and a fixed VHD.
        dmg = str(uuid.uuid4())
        data = bytearray(os.urandom(1 * MiB))
        data[-512:-508] = b"koly"
        with open(os.path.join(images, dmg), "wb") as f:
            f.write(data)
        vhd = str(uuid.uuid4())
        subprocess.run(["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed",
                        os.path.join(images, vhd), "4M"], check=True)
        for image, says in ((dmg, "dmg"), (vhd, "vpc")):
            with open(os.path.join(images, image + ".json"), "w") as f:
                json.dump({"disk_format": "raw"}, f)
            rc, _, err = env.run("create", image, "vol-footer")
            self.assertEqual(rc, cli.EXIT_REFUSED, err)
            self.assertIn(says, err)
            rc, _, _ = env.run("show", image)
            self.assertEqual(rc, cli.EXIT_NOT_FOUND, "a refused image must not be cached")

    def test_links_planted_among_the_locks_lead_nowhere_and_stop_no_pass(self):
        if cli.BACKEND != "local":
            self.skipTest("the local root's lock folder")
        env = cli.Env("locklinks", cache="min_free_percent: 1")
        self.assertEqual(env.run("create", cli.WORLD.add_raw(size=64 * 1024), "vol-l1")[0],
                         cli.EXIT_OK)
        precious = os.path.join(env.dir, "precious")
        os.makedirs(precious)
        for name in ("notes", "0123abcd.42.0123abcd"):
            with open(os.path.join(precious, name), "w") as f:
                f.write("mine")
        locks = os.path.join(env.local_root, ".locks")
        floor = os.path.join(locks, "floor")
        subprocess.run(["rm", "-rf", floor], check=True)
        os.symlink(precious, floor)
        os.symlink(os.path.join(precious, "notes"), os.path.join(locks, "a" * 40 + ".lock"))
        rc, _, err = env.run("create", cli.WORLD.add_raw(size=64 * 1024), "vol-l2")
        self.assertNotEqual(rc, cli.EXIT_OK)
        self.assertIn(floor, err)
        self.assertIn("symlink", err)
        self.assertEqual(sorted(os.listdir(precious)), ["0123abcd.42.0123abcd", "notes"])
        os.unlink(floor)
        rc, _, err = env.run("evict")
        self.assertEqual(rc, cli.EXIT_OK, err)
        self.assertEqual(sorted(os.listdir(precious)), ["0123abcd.42.0123abcd", "notes"])
        self.assertTrue(os.path.islink(os.path.join(locks, "a" * 40 + ".lock")))
        # Nor does a pass leave a lock file of its own for that key on this host.
        for _ in range(2):
            self.assertEqual(env.run("evict")[0], cli.EXIT_OK)
            self.assertNotIn("a" * 40 + ".lock", os.listdir(os.path.join(env.dir, "locks")))

    def test_files_that_only_look_like_lock_files_stay(self):
        if cli.BACKEND != "local":
            self.skipTest("the local root's lock folder")
        env = cli.Env("lookalikelocks")
        self.assertEqual(env.run("create", cli.WORLD.add_raw(size=64 * 1024), "vol-k1")[0],
                         cli.EXIT_OK)
        locks = os.path.join(env.local_root, ".locks")
        precious = os.path.join(env.dir, "precious-notes")
        with open(precious, "w") as f:
            f.write("mine")
        # Named as the lock of an image no longer cached, yet none is a file a lock makes.
        with open(os.path.join(locks, "b" * 40 + ".lock"), "w") as f:
            f.write("someone's notes")
        os.mkfifo(os.path.join(locks, "c" * 40 + ".lock"))
        os.mkfifo(os.path.join(locks, "c" * 40 + ".use.lock"))
        os.link(precious, os.path.join(locks, "d" * 40 + ".lock"))
        # Blank ones are the cache's own leftovers (an image lock and a use lock), and go.
        open(os.path.join(locks, "e" * 40 + ".lock"), "w").close()
        open(os.path.join(locks, "f" * 40 + ".use.lock"), "w").close()
        rc, _, err = env.run("evict")
        self.assertEqual(rc, cli.EXIT_OK, err)
        left = set(os.listdir(locks))
        for name in ("b" * 40 + ".lock", "c" * 40 + ".lock", "c" * 40 + ".use.lock",
                     "d" * 40 + ".lock"):
            self.assertIn(name, left, "a file the cache did not make was removed")
        self.assertNotIn("e" * 40 + ".lock", left, "the cache's own blank lock file stays")
        self.assertNotIn("f" * 40 + ".use.lock", left, "the cache's own blank use lock stays")
        with open(os.path.join(locks, "b" * 40 + ".lock")) as f:
            self.assertEqual(f.read(), "someone's notes")
        with open(precious) as f:
            self.assertEqual(f.read(), "mine")
        self.assertEqual(os.stat(precious).st_nlink, 2)

    def test_a_file_of_someone_elses_at_a_metadata_name_is_named_and_left(self):
        if cli.BACKEND != "local":
            self.skipTest("the local root's metadata files")
        env = cli.Env("foreignmeta")
        image = cli.WORLD.add_raw(size=64 * 1024)
        self.assertEqual(env.run("create", image, "vol-m0")[0], cli.EXIT_OK)
        theirs = os.path.join(env.local_root, "volumes", ".meta", "vol-m1.json")
        with open(theirs, "w") as f:
            f.write('{"mine": true}')
        rc, _, err = env.run("create", image, "vol-m1")
        self.assertNotEqual(rc, cli.EXIT_OK)
        self.assertIn(theirs, err, "the error must name the file in the way")
        self.assertIn("vol-m1", err)
        with open(theirs) as f:
            self.assertEqual(f.read(), '{"mine": true}')
        self.assertEqual(sorted(n for n in os.listdir(os.path.join(env.local_root, "volumes"))
                                if not n.startswith(".")), ["vol-m0"])
        # At an entry's metadata name: the miss fails naming it, nothing is cached, and the
        # file stays.
        fresh = cli.WORLD.add_raw(size=64 * 1024)
        entry = hashlib.sha1(fresh.encode()).hexdigest()
        theirs = os.path.join(env.local_root, "_base", ".meta", entry + ".json")
        with open(theirs, "w") as f:
            f.write('{"mine": true}')
        rc, _, err = env.run("create", fresh, "vol-m2")
        self.assertNotEqual(rc, cli.EXIT_OK)
        self.assertIn(theirs, err)
        with open(theirs) as f:
            self.assertEqual(f.read(), '{"mine": true}')
        self.assertFalse(os.path.exists(os.path.join(env.local_root, "volumes", "vol-m2")))
        self.assertEqual(env.run("show", fresh)[0], cli.EXIT_NOT_FOUND)
        os.unlink(theirs)
        self.assertEqual(env.run("create", fresh, "vol-m2")[0], cli.EXIT_OK)

    def test_a_lock_folder_that_is_a_link_stops_every_command_and_is_named(self):
        env = cli.Env("locklinkdir")
        image = cli.WORLD.add_raw(size=64 * 1024)
        self.assertEqual(env.run("create", image, "vol-d1")[0], cli.EXIT_OK)
        self.assertEqual(env.run("delete", "vol-d1")[0], cli.EXIT_OK)
        # The host's own lock folder, beside the index: made a link to someone's folder
        # holding files that read exactly like blank lock files of images not cached.
        theirs = os.path.join(env.dir, "their-locks")
        os.makedirs(theirs)
        names = ["1" * 40 + ".lock", "2" * 40 + ".use.lock", "eviction-pass.lock"]
        for name in names:
            open(os.path.join(theirs, name), "w").close()
        locks = os.path.join(env.dir, "locks")
        subprocess.run(["rm", "-rf", locks], check=True)
        os.symlink(theirs, locks)
        targets = [theirs]
        if cli.BACKEND == "local":
            # A lock named for an entry key in the root's lock folder: a pass would take
            # (and make, then remove) the host's lock file of that key through the link.
            key = "3" * 40 + ".lock"
            open(os.path.join(env.local_root, ".locks", key), "w").close()
            open(os.path.join(theirs, key), "w").close()
        before = sorted(os.listdir(theirs))
        for args in (["evict"], ["create", image, "vol-d2"], ["prefill", image], ["list"]):
            rc, _, err = env.run(*args)
            self.assertNotIn(rc, (cli.EXIT_OK, cli.EXIT_BUSY), (args, err))
            self.assertIn(locks, err, args)
            self.assertIn("not a real folder", err, args)
            self.assertEqual(sorted(os.listdir(theirs)), before,
                             "%s made or removed a file through a linked lock folder" % args)
        rc, out, _ = env.run("--json", "doctor")
        self.assertNotEqual(rc, cli.EXIT_OK)
        failed = [c for c in json.loads(out)["checks"] if not c["ok"]]
        self.assertTrue(any(locks in c["detail"] for c in failed), failed)
        if cli.BACKEND == "local":
            # A link to the backend's own lock folder: a lock taken on both sides would wait
            # on itself. Refused at once, named.
            os.unlink(locks)
            os.symlink(os.path.join(env.local_root, ".locks"), locks)
            rc, _, err = env.run("create", cli.WORLD.add_raw(size=64 * 1024), "vol-d3")
            self.assertNotIn(rc, (cli.EXIT_OK, cli.EXIT_BUSY), err)
            self.assertIn(locks, err)
        # Made a real folder again, the cache works.
        os.unlink(locks)
        rc, _, err = env.run("create", image, "vol-d4")
        self.assertEqual(rc, cli.EXIT_OK, err)

    def test_a_foreign_file_at_an_image_lock_name_stops_no_pass(self):
        if cli.BACKEND != "local":
            self.skipTest("the local root's lock folder")
        env = cli.Env("foreignlockname", cache="max_count: 1")
        first, second = cli.WORLD.add_raw(size=64 * 1024), cli.WORLD.add_raw(size=64 * 1024)
        self.assertEqual(env.run("create", first, "vol-f1")[0], cli.EXIT_OK)
        self.assertEqual(env.run("delete", "vol-f1")[0], cli.EXIT_OK)
        key = [e["cache_name"] for e in env.json("list") if e["image_id"] == first][0]
        lock = os.path.join(env.local_root, ".locks", key + ".lock")
        os.unlink(lock)
        os.makedirs(os.path.join(lock, "theirs"))
        # The create over max_count and the pass after it pass over the first image (its
        # lock cannot be taken), name the folder, and do the rest of their work.
        rc, _, err = env.run("create", second, "vol-f2")
        self.assertEqual(rc, cli.EXIT_OK, err)
        rc, out, err = env.run("evict")
        self.assertEqual(rc, cli.EXIT_OK, out + err)
        self.assertIn(lock, err)
        self.assertIn(first, [e["image_id"] for e in env.json("list")])
        self.assertEqual(os.listdir(lock), ["theirs"])
        # The pass's report says why the entry was passed over: its lock, by name, not a
        # holder that does not exist.
        over = [a for a in env.json("evict")["actions"] if a["name"] == key]
        self.assertEqual(len(over), 1, over)
        self.assertIn("lock cannot be taken", over[0]["reason"])
        self.assertIn(lock, over[0]["reason"])
        self.assertNotIn("busy", over[0]["reason"])
        rc, out, _ = env.run("--json", "doctor")
        self.assertNotEqual(rc, cli.EXIT_OK)
        check = [c for c in json.loads(out)["checks"] if c["name"] == "locks"][0]
        self.assertFalse(check["ok"])
        self.assertIn(lock, check["detail"])
        # A FIFO there can be locked: the entry goes, the FIFO stays, and doctor names it.
        subprocess.run(["rm", "-rf", lock], check=True)
        os.mkfifo(lock)
        rc, out, err = env.run("evict")
        self.assertEqual(rc, cli.EXIT_OK, out + err)
        self.assertNotIn(first, [e["image_id"] for e in env.json("list")])
        self.assertTrue(stat.S_ISFIFO(os.lstat(lock).st_mode), "the FIFO stays")
        rc, out, _ = env.run("--json", "doctor")
        check = [c for c in json.loads(out)["checks"] if c["name"] == "locks"][0]
        self.assertIn(lock, check["detail"])
        os.unlink(lock)
        rc, out, _ = env.run("doctor")
        self.assertEqual(rc, cli.EXIT_OK, out)

    def test_doctor_reads_every_shared_table(self):
        if cli.BACKEND != "local":
            self.skipTest("the local root's table folders")
        env = cli.Env("doctortables")
        self.assertEqual(env.run("create", cli.WORLD.add_raw(size=64 * 1024), "vol-t1")[0],
                         cli.EXIT_OK)
        doc = env.json("doctor")
        tables = [c for c in doc["checks"] if c["name"] == "shared tables"]
        self.assertEqual(len(tables), 1, doc)
        self.assertTrue(tables[0]["ok"], tables[0])
        # A table folder that is a link (here: the fills, which a create reads) fails the
        # check, named, and the folder it leads to is not written.
        state = os.path.join(env.local_root, ".state")
        elsewhere = os.path.join(env.dir, "elsewhere-fills")
        os.makedirs(elsewhere)
        subprocess.run(["rm", "-rf", os.path.join(state, "fills")], check=True)
        os.symlink(elsewhere, os.path.join(state, "fills"))
        rc, out, err = env.run("--json", "doctor")
        self.assertNotEqual(rc, cli.EXIT_OK)
        check = [c for c in json.loads(out)["checks"] if c["name"] == "shared tables"][0]
        self.assertFalse(check["ok"])
        self.assertIn(os.path.join(state, "fills"), check["detail"])
        self.assertIn("symlink", check["detail"])
        self.assertEqual(os.listdir(elsewhere), [])
        # The hosts table, which the host-id check reads too: every other check still runs.
        hosts = os.path.join(state, "hosts")
        subprocess.run(["rm", "-rf", hosts], check=True)
        os.symlink(elsewhere, hosts)
        rc, out, err = env.run("--json", "doctor")
        self.assertNotEqual(rc, cli.EXIT_OK)
        checks = {c["name"]: c for c in json.loads(out)["checks"]}
        self.assertIn(hosts, checks["shared tables"]["detail"])
        for name in ("config", "index", "backend", "leftovers", "entries"):
            self.assertIn(name, checks, "doctor stopped before its %s check" % name)
        self.assertEqual(os.listdir(elsewhere), [])

    def test_sidecar_with_unknown_hash_algorithm_exit_4(self):
        env = cli.Env("sidecaralgo")
        image = cli.WORLD.add_raw(size=1 * MiB)
        with open(os.path.join(cli.WORLD.images, image + ".json"), "w") as f:
            json.dump({"disk_format": "raw", "os_hash_algo": "blake9", "os_hash_value": "00"}, f)
        rc, _, err = env.run("create", image, "vol-algo")
        self.assertEqual(rc, cli.EXIT_REFUSED, err)
        self.assertIn("blake9", err)
        self.assertIn(image + ".json", err)
        os.unlink(os.path.join(cli.WORLD.images, image + ".json"))

    def private_images(self, name):
        images = os.path.join(cli.WORLD.root, name + "-images")
        os.makedirs(images, exist_ok=True)
        return images

    def test_an_image_other_than_its_claimed_size_exit_4(self):
        images = self.private_images("claimed")
        env = cli.Env("claimed", images=images)
        raw = cli.WORLD.add_raw(size=1 * MiB, directory=images)
        qcow = cli.WORLD.add_qcow2(size=8 * MiB)
        os.rename(os.path.join(cli.WORLD.images, qcow), os.path.join(images, qcow))
        # Cut short (the claim is larger), longer than claimed, a qcow2 whose header says
        # another size, and claims that are no byte count.
        for image, claim, says in [(raw, 4 * MiB, "cut short"), (raw, MiB // 2, "not the image"),
                                   (qcow, 1 * MiB, "not the image"), (raw, -4096, "whole number"),
                                   (raw, "1048576", "whole number")]:
            with open(os.path.join(images, image + ".json"), "w") as f:
                json.dump({"virtual_size": claim}, f)
            rc, _, err = env.run("create", image, "vol-claimed")
            self.assertEqual(rc, cli.EXIT_REFUSED, "%r: %s" % (claim, err))
            self.assertIn(image, err)
            self.assertIn(says, err)
            rc, _, _ = env.run("show", image)
            self.assertEqual(rc, cli.EXIT_NOT_FOUND, "%r: a refused image must not be cached" % claim)
            rc, out, err = env.run("evict", "--dry-run")
            self.assertEqual(rc, cli.EXIT_OK, err)
        # The true claim: made.
        with open(os.path.join(images, raw + ".json"), "w") as f:
            json.dump({"virtual_size": MiB}, f)
        self.assertEqual(env.json("create", raw, "vol-claimed")["volume"], "vol-claimed")

    def test_a_malformed_sidecar_refuses_its_image_only(self):
        images = self.private_images("badsidecar")
        env = cli.Env("badsidecar", images=images)
        bad = cli.WORLD.add_raw(size=64 * 1024, directory=images)
        good = cli.WORLD.add_raw(size=64 * 1024, directory=images)
        for text in ["{bad", "[1, 2]"]:
            with open(os.path.join(images, bad + ".json"), "w") as f:
                f.write(text)
            rc, _, err = env.run("create", bad, "vol-bad")
            self.assertEqual(rc, cli.EXIT_REFUSED, err)
            self.assertIn(bad + ".json", err)
            # One uploader's bad sidecar stops no one else's prefill, and is counted as
            # the failure it is (exit 4, its reason named), not passed over.
            rc, out, err = env.run("--json", "prefill", "--all")
            self.assertEqual(rc, cli.EXIT_REFUSED, err)
            results = {r["image_id"]: r for r in json.loads(out)["results"]}
            self.assertEqual(sorted(results), sorted([good, bad]))
            self.assertNotIn("error", results[good])
            self.assertEqual(results[bad]["error"]["code"], "refused")
            self.assertIn(bad + ".json", results[bad]["error"]["message"])
            self.assertEqual(env.run("show", good)[0], cli.EXIT_OK)
            self.assertEqual(env.run("show", bad)[0], cli.EXIT_NOT_FOUND)
        # A sidecar is the description of an image, never an image itself.
        rc, _, err = env.run("create", good + ".json", "vol-sidecar")
        self.assertEqual(rc, cli.EXIT_NOT_FOUND, err)
        self.assertIn("sidecar", err)

    def test_an_unreadable_image_fails_alone_in_prefill_all(self):
        if cli.BACKEND != "local" or os.geteuid() != 0 or not shutil.which("setpriv"):
            self.skipTest("runs the tool as nobody, on the local backend, from root")
        images = self.private_images("unreadable")
        env = cli.Env("unreadable", images=images)
        good = [cli.WORLD.add_raw(size=64 * 1024, directory=images) for _ in range(3)]
        bad = cli.WORLD.add_raw(size=64 * 1024, directory=images)
        subprocess.run(["chown", "-R", "nobody:nogroup", images, env.dir], check=True)
        os.chown(os.path.join(images, bad), 0, 0)
        os.chmod(os.path.join(images, bad), 0o600)
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            cli.BIN, "--config", env.config, "--json", "prefill", "--all"],
                           capture_output=True, text=True, timeout=300)
        if p.returncode == cli.EXIT_FAILED and "Permission denied" in p.stderr and \
                os.path.basename(env.dir) in p.stderr and not p.stdout.strip():
            self.skipTest("this run dir is not reachable by nobody: " + p.stderr)
        self.assertEqual(p.returncode, cli.EXIT_FAILED, p.stdout + p.stderr)
        results = {r["image_id"]: r for r in json.loads(p.stdout)["results"]}
        self.assertEqual(sorted(results), sorted(good + [bad]))
        for image in good:
            self.assertNotIn("error", results[image])
        self.assertIn(bad, results[bad]["error"]["message"])
        self.assertIn("Permission denied", results[bad]["error"]["message"])

    def test_prefill_all_whose_failures_are_all_refusals_exits_4(self):
        images = self.private_images("allrefused")
        env = cli.Env("allrefused", images=images)
        corrupt = cli.WORLD.add_raw(size=64 * 1024, directory=images)
        with open(os.path.join(images, corrupt + ".json"), "w") as f:
            json.dump({"virtual_size": 5}, f)  # not the file's size: corrupt
        os.mkfifo(os.path.join(images, str(uuid.uuid4())))  # refused
        good = cli.WORLD.add_raw(size=64 * 1024, directory=images)
        rc, out, err = env.run("--json", "prefill", "--all")
        self.assertEqual(rc, cli.EXIT_REFUSED, out + err)
        codes = sorted(r["error"]["code"] for r in json.loads(out)["results"] if "error" in r)
        self.assertEqual(codes, ["corrupt", "refused"])
        self.assertEqual(env.run("show", good)[0], cli.EXIT_OK)

    def test_dead_fill_work_dir_counted_listed_and_swept(self):
        env = cli.Env("deadfill")
        conv = os.path.join(env.dir, "conversion")
        dead = os.path.join(conv, "cachemgr-fill.k9dead")
        os.makedirs(dead)
        with open(os.path.join(dead, "fill.lock"), "w") as f:
            # The mark a fill writes in its lock file; no process holds its flock: the fill
            # is gone.
            f.write("cachemgr fill working directory\n")
        with open(os.path.join(dead, "image.download"), "wb") as f:
            f.write(b"x" * MiB)
        # Look-alikes that are not ours to remove: a symlink and an unrelated directory.
        target = os.path.join(env.dir, "target")
        os.makedirs(target)
        os.symlink(target, os.path.join(conv, "cachemgr-fill.linked"))
        os.makedirs(os.path.join(conv, "keep-me"))

        self.assertEqual(env.json("stats")["dead_work_dirs"], 1)
        rc, out, err = env.run("doctor")
        self.assertEqual(rc, cli.EXIT_FAILED, out + err)
        self.assertIn(dead, out)
        rc, out, err = env.run("evict")
        self.assertEqual(rc, cli.EXIT_OK, out + err)
        self.assertFalse(os.path.exists(dead))
        self.assertTrue(os.path.isdir(target))
        self.assertTrue(os.path.islink(os.path.join(conv, "cachemgr-fill.linked")))
        self.assertTrue(os.path.isdir(os.path.join(conv, "keep-me")))
        self.assertEqual(env.json("stats")["dead_work_dirs"], 0)

    def test_prefill_filter_is_bounded_and_checked(self):
        images = os.path.join(cli.WORLD.root, "filter-images")
        os.makedirs(images, exist_ok=True)
        ids = ["a" * 40 + "-x", "a" * 30 + "-y"]
        for image_id in ids:
            cli.WORLD.add_raw(image_id=image_id, size=64 * 1024, directory=images)
        env = cli.Env("filter", images=images)
        # Exponential in a backtracking engine (std::regex: minutes, or a crash); linear
        # in RE2.
        started = time.monotonic()
        rc, out, err = env.run("--json", "prefill", "--all", "--filter", "^(a|a)*$")
        self.assertEqual(rc, cli.EXIT_OK, err)
        self.assertEqual(json.loads(out)["results"], [])
        rc, out, err = env.run("--json", "prefill", "--all", "--filter", "^(a|aa)+-x$")
        self.assertEqual(rc, cli.EXIT_OK, err)
        self.assertEqual([r["image_id"] for r in json.loads(out)["results"]], ids[:1])
        self.assertLess(time.monotonic() - started, 20)
        rc, _, err = env.run("prefill", "--all", "--filter", "(unclosed")
        self.assertEqual(rc, cli.EXIT_USAGE, err)
        self.assertIn("(unclosed", err)
        self.assertIn("--filter", err)

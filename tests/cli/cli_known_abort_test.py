"""What the tool prints when a library's thread ends it with an uncaught exception, and
which of those aborts the test helpers run again: only the librbd 16 abort of
docs/architecture.md ("Known limit"), never another.

A library preloaded into the tool (tests/support/preload/throw_on_thread.cpp) throws on
a thread of a chosen name once the tool's crash report is installed; the tool holds at a
failpoint meanwhile, so the throw always lands while it runs. Run by cli_test.py.
"""
import os
import subprocess
import unittest

import __main__ as cli  # cli_test.py, which runs these (its Env, WORLD and run())

THROW_LIB = os.environ.get("CACHEMGR_TEST_THROW_LIB", "")


def thrower(name, what="system_error", once=None):
    env = {"LD_PRELOAD": THROW_LIB, "THROW_ON_THREAD_NAME": name,
           "THROW_ON_THREAD_WHAT": what, "THROW_ON_THREAD_HOLD": "pass_locked:sleep"}
    if once:
        env["THROW_ON_THREAD_ONCE"] = once
    return env


@unittest.skipUnless(THROW_LIB and os.path.exists(THROW_LIB),
                     "CACHEMGR_TEST_THROW_LIB is not set (CTest sets it)")
class KnownAbortTest(unittest.TestCase):
    def raw(self, env, extra):
        e = dict(os.environ)
        e.pop("CACHEMGR_CONFIG", None)
        e.update(extra)
        return subprocess.run([cli.BIN, "--config", env.config, "evict"], capture_output=True,
                              text=True, env=e, timeout=120)

    def test_an_exception_on_a_librados_thread_is_named_and_known(self):
        env = cli.Env("abort")
        p = self.raw(env, thrower("io_context_pool"))
        self.assertEqual(p.returncode, -6, p.stderr)
        self.assertIn('cachemgr: fatal signal ABRT on thread "io_context_pool" (an exception'
                      ' escaped a librados thread', p.stderr)
        self.assertIn("run the command again", p.stderr)
        self.assertTrue(cli.known_librbd_abort(p.returncode, p.stderr), p.stderr)

    def test_other_aborts_are_bugs_and_not_rerun(self):
        env = cli.Env("abort")
        # The same exception on a thread of any other name: the tool's own, say.
        p = self.raw(env, thrower("fill-worker"))
        self.assertEqual(p.returncode, -6, p.stderr)
        self.assertIn('fatal signal ABRT on thread "fill-worker" (a bug', p.stderr)
        self.assertFalse(cli.known_librbd_abort(p.returncode, p.stderr), p.stderr)
        # Another exception on a librados thread.
        p = self.raw(env, thrower("io_context_pool", what="runtime_error"))
        self.assertEqual(p.returncode, -6, p.stderr)
        self.assertFalse(cli.known_librbd_abort(p.returncode, p.stderr), p.stderr)
        # and the tool's report does not call it the known defect
        self.assertIn('fatal signal ABRT on thread "io_context_pool" (a bug', p.stderr)
        self.assertNotIn("known defect", p.stderr)

    def test_the_known_abort_is_run_once_more_and_twice_fails(self):
        env = cli.Env("abort")
        marker = os.path.join(env.dir, "thrown-once")
        rc, _, err = cli.run(["evict"], config=env.config,
                             env=thrower("io_context_pool", once=marker))
        self.assertTrue(os.path.exists(marker), "the first run did not throw")
        self.assertEqual(rc, cli.EXIT_OK, err)  # the rerun, which did not throw
        rc, _, err = cli.run(["evict"], config=env.config, env=thrower("io_context_pool"))
        self.assertEqual(rc, -6, err)  # the same abort twice in a row: a failure

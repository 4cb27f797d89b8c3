#!/usr/bin/python3
"""known_abort.run_unittests on small suites made here: a test whose failure shows the
known librbd abort runs once more, and nothing else does. No cluster; run by CTest
(tests/CMakeLists.txt, support_known_abort)."""
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))

REPORT = ("terminate called after throwing an instance of 'std::system_error'\n"
          "  what():  Invalid argument\n"
          'cachemgr: fatal signal ABRT on thread "io_context_pool" (...)\n')

SUITE = textwrap.dedent('''
    import os, sys, unittest
    sys.path.insert(0, {here!r})
    from known_abort import run_unittests
    COUNT = {count!r}
    REPORT = {report!r}

    def attempt(name):
        path = COUNT + "." + name
        n = int(open(path).read()) if os.path.exists(path) else 0
        open(path, "w").write(str(n + 1))
        return n

    class T(unittest.TestCase):
        def test_a(self):
            n = attempt("a")
            plan = {plan_a!r}
            if n < len(plan) and plan[n] == "abort":
                self.fail("exit -6: " + REPORT)
            if n < len(plan) and plan[n] == "other":
                self.fail("exit 1: the volume read back wrong")
            if n < len(plan) and plan[n] == "error":
                raise RuntimeError(REPORT.replace("Invalid argument", "Bad address"))

        def test_c(self):
            n = attempt("c")
            plan = {plan_c!r}
            if n < len(plan) and plan[n] == "skip":
                self.skipTest("skipped the second time")
            with self.subTest(part=1):
                if n < len(plan) and plan[n] == "sub-abort":
                    self.fail("exit -6: " + REPORT)

        def test_b(self):
            n = attempt("b")
            plan = {plan_b!r}
            if n < len(plan) and plan[n] == "other":
                self.fail("exit 1: the volume read back wrong")

    sys.exit(0 if run_unittests([sys.argv[0]]) else 1)
''')


class RunUnittestsTest(unittest.TestCase):
    def suite(self, plan_a, plan_b=(), plan_c=()):
        tmp = tempfile.TemporaryDirectory(prefix="known-abort-")
        self.addCleanup(tmp.cleanup)
        d = tmp.name
        count = os.path.join(d, "count")
        path = os.path.join(d, "suite.py")
        with open(path, "w") as f:
            f.write(SUITE.format(here=HERE, count=count, report=REPORT, plan_a=list(plan_a),
                                 plan_b=list(plan_b), plan_c=list(plan_c)))
        p = subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=60)

        def runs(name):
            c = count + "." + name
            if not os.path.exists(c):
                return 0
            with open(c) as f:
                return int(f.read())
        self.runs_c = runs("c")
        return p, runs("a"), runs("b")

    def test_the_known_abort_once_runs_the_test_again_and_passes(self):
        p, a, b = self.suite(["abort"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual((a, b), (2, 1), "only the aborted test runs again")
        self.assertIn("running it once more", p.stderr)

    def test_the_known_abort_twice_fails(self):
        p, a, _ = self.suite(["abort", "abort"])
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(a, 2)

    def test_another_failure_is_not_run_again(self):
        p, a, _ = self.suite(["other"])
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(a, 1)
        self.assertNotIn("once more", p.stderr)

    def test_another_abort_is_not_run_again(self):
        p, a, _ = self.suite(["error"])
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(a, 1)

    def test_the_known_abort_beside_another_failure_fails_without_a_rerun(self):
        p, a, b = self.suite(["abort"], ["other"])
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual((a, b), (1, 1))
        self.assertNotIn("once more", p.stderr)

    def test_a_subtest_on_the_known_abort_runs_its_whole_test_again(self):
        p, _, _ = self.suite([], plan_c=["sub-abort"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.runs_c, 2)

    def test_a_test_that_skips_itself_when_run_again_did_not_pass(self):
        p, _, _ = self.suite([], plan_c=["sub-abort", "skip"])
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(self.runs_c, 2)

    def test_a_clean_suite_runs_once(self):
        p, a, b = self.suite([])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual((a, b), (1, 1))


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])

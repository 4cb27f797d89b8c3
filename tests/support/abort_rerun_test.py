#!/usr/bin/python3
"""librbd-abort-rerun.sh on small test programs made here: a run that failed of the known
librbd abort (in the test's process or in a child it started, ended or hung after it)
runs once more, and nothing else does. No cluster; run by CTest (tests/CMakeLists.txt,
support_abort_rerun)."""
import os
import shlex
import subprocess
import tempfile
import textwrap
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
WRAPPER = os.path.join(HERE, "librbd-abort-rerun.sh")

ABORT = ('terminate on thread "io_context_pool"\n'
         "terminate called after throwing an instance of 'std::system_error'\n"
         "  what():  Invalid argument\n")

# A test program: its Nth run (counted in a file) does what PLAN[N] says.
PROGRAM = textwrap.dedent('''\
    #!/usr/bin/env bash
    count={count}
    n=$(cat "$count" 2>/dev/null || echo 0)
    echo $((n + 1)) > "$count"
    plan=({plan})
    step=${{plan[$n]:-pass}}
    abort() {{ printf '%s' "$1" >&2; }}
    case $step in
      pass) exit 0 ;;
      fail) echo "CHECK failed: the volume read back wrong"; exit 1 ;;
      abort) abort {abort}; exit 134 ;;
      other_thread) abort {other}; exit 134 ;;
      other_error) abort {error}; exit 134 ;;
      child_abort) ( abort {abort}; exit 134 ); echo "CHECK failed: child exit 134"; exit 1 ;;
      hang) ( abort {abort}; exit 134 ); sleep 300 & echo $! > {count}.sleeper; wait ;;
      hang_no_abort) sleep 4; exit 0 ;;
    esac
    ''')


def state(pid):
    """A process's state letter (Z: dead, not yet reaped), or "gone"."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


class AbortRerun(unittest.TestCase):
    def run_plan(self, *plan, hang_s=2):
        d = tempfile.mkdtemp(prefix="abort-rerun-")
        count = os.path.join(d, "count")
        prog = os.path.join(d, "t")
        with open(prog, "w") as f:
            f.write(PROGRAM.format(
                count=count, plan=" ".join(plan), abort=shlex.quote(ABORT),
                other=shlex.quote(ABORT.replace("io_context_pool", "cachemgr-fill")),
                error=shlex.quote(ABORT.replace("Invalid argument", "Bad address"))))
        os.chmod(prog, 0o755)
        env = dict(os.environ, RERUN_HANG_S=str(hang_s))
        r = subprocess.run([WRAPPER, prog], capture_output=True, text=True, env=env,
                           timeout=60)
        with open(count) as f:
            runs = int(f.read())
        self.dir = d
        return r.returncode, runs, r.stdout + r.stderr

    def test_a_pass_runs_once(self):
        self.assertEqual(self.run_plan("pass")[:2], (0, 1))

    def test_a_failure_without_the_abort_is_not_run_again(self):
        self.assertEqual(self.run_plan("fail", "pass")[:2], (1, 1))

    def test_the_abort_in_the_test_process_runs_it_once_more(self):
        rc, runs, out = self.run_plan("abort", "pass")
        self.assertEqual((rc, runs), (0, 2), out)
        self.assertIn("running it once more", out)

    def test_the_same_abort_twice_fails(self):
        self.assertEqual(self.run_plan("abort", "abort", "pass")[:2], (134, 2))

    def test_an_abort_on_another_thread_or_of_another_error_is_not_run_again(self):
        self.assertEqual(self.run_plan("other_thread", "pass")[:2], (134, 1))
        self.assertEqual(self.run_plan("other_error", "pass")[:2], (134, 1))

    def test_a_child_that_died_of_the_abort_runs_the_test_once_more(self):
        rc, runs, out = self.run_plan("child_abort", "pass")
        self.assertEqual((rc, runs), (0, 2), out)

    def test_a_test_hung_after_the_abort_is_ended_with_its_children_and_run_again(self):
        start = time.monotonic()
        rc, runs, out = self.run_plan("hang", "pass", hang_s=2)
        self.assertEqual((rc, runs), (0, 2), out)
        self.assertLess(time.monotonic() - start, 30)
        self.assertIn("still running 2 s after the known librbd abort", out)
        with open(os.path.join(self.dir, "count.sleeper")) as f:
            sleeper = int(f.read())
        time.sleep(0.2)
        self.assertIn(state(sleeper), ("gone", "Z"), "a child of the hung run lives on")

    def test_a_hang_twice_fails(self):
        rc, runs, _ = self.run_plan("hang", "hang", hang_s=1)
        self.assertEqual((rc, runs), (134, 2))

    def test_a_slow_test_without_the_abort_is_left_to_finish(self):
        self.assertEqual(self.run_plan("hang_no_abort", hang_s=1)[:2], (0, 1))


if __name__ == "__main__":
    unittest.main()

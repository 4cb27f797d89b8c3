"""The librbd 16 abort for the Python suites (docs/architecture.md, Known limit).

librbd 16 sometimes ends a process with std::terminate on a std::system_error "Invalid
argument" that escaped a handler on a librados `io_context_pool` thread. The tool's crash
report names that thread. A command run through `cli_test.run` is run once more on it;
a test that starts the tool itself (two passes at once, a create held at a failpoint) and
fails on it shows the report in its failure, since those tests put the tool's stderr in
their messages. `run_unittests` runs such a test once more, and only such a test: any
other failure, or the same abort twice, fails the suite as it is.
"""

import sys
import unittest

CRASH_REPORT = 'cachemgr: fatal signal ABRT on thread "io_context_pool"'
TERMINATE = "terminate called after throwing an instance of 'std::system_error'"
WHAT = "what():  Invalid argument"


def is_known_abort_text(text):
    """Whether a run's stderr (or a failure report quoting it) shows the known abort."""
    return CRASH_REPORT in text and TERMINATE in text and WHAT in text


def known_librbd_abort(returncode, stderr):
    """Whether a run of the tool died of the known abort: SIGABRT, and its report."""
    return returncode in (134, -6) and is_known_abort_text(stderr)


def run_unittests(argv, verbosity=2):
    """Runs the calling module's tests as unittest.main does, then runs once more each
    test whose failure report shows the known abort, when every other test passed.
    Returns whether the suite passed."""
    prog = unittest.main(argv=argv, exit=False, verbosity=verbosity)
    result = prog.result
    failed = result.failures + result.errors
    known = [test for test, report in failed if is_known_abort_text(report)]
    if not known or len(known) != len(failed) or result.unexpectedSuccesses:
        return result.wasSuccessful()
    # Only whole test methods run again: a failed subTest runs its whole test; a class or
    # module fixture's failure (not a test of its own) is never run again.
    cases = {}
    for test in known:
        case = getattr(test, "test_case", test)
        if not isinstance(case, unittest.TestCase) or not hasattr(case, "_testMethodName"):
            return False
        cases[case.id()] = case
    sys.stderr.write("known_abort: %s failed on the known librbd abort (docs/architecture.md,"
                     " Known limit); running %s once more\n"
                     % (", ".join(cases), "it" if len(cases) == 1 else "them"))
    suite = unittest.TestSuite(type(case)(case._testMethodName) for case in cases.values())
    again = unittest.TextTestRunner(verbosity=verbosity).run(suite)
    # A test that skips itself the second time did not pass.
    return again.wasSuccessful() and not again.skipped

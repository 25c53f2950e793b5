#!/usr/bin/env python3
"""
Runs after every integration test of a ctest run (the cleanup of the ctest fixture
"sb_processes"): fails if any process started by those tests is still alive. Such processes
are known by SB_TEST_SUITE=<build tree> in their environment (tests/integration/harness.py
sets it on every child), never by their name: other test runs share this machine.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402


def main():
    suite = os.environ.get("SB_TEST_SUITE_CHECK")
    if not suite:
        print("SB_TEST_SUITE_CHECK is not set (the build tree of the ctest run)", file=sys.stderr)
        return 2
    # Children killed by the kernel when their test died may take a moment to go.
    deadline = time.monotonic() + 10.0
    while True:
        left = H.marked_processes(H.SUITE_MARKER, suite)
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    if left:
        print("%d process(es) started by the test suite are still running:" % len(left))
        for pid, cmd in left:
            print("  pid %d: %s" % (pid, cmd[:300]))
        return 1
    print("no process of the test suite is left running")
    return 0


if __name__ == "__main__":
    sys.exit(main())

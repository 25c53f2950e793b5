#!/usr/bin/env python3
"""
A test run that goes wrong on purpose, driven by test_cleanup.py (not a test of its own).

    leak_victim.py MODE

starts a redis-server and a gateway (the real binary) the way the tests do, prints
"READY" on stdout, waits for a line on stdin, and then, by MODE:

    assert      a test assertion fails (the class cleanups run as usual)
    nocleanup   the processes were started without any cleanup, and a test fails
    setup       setUpClass raises after starting redis-server (no test runs)
    hang        nothing: it blocks until a signal (SIGTERM, SIGINT, SIGKILL) ends it

Whatever the mode, nothing it started may survive it: test_cleanup.py checks that.
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

MODE = sys.argv[1] if len(sys.argv) > 1 else "assert"


def ready_then_wait():
    print("READY", flush=True)
    sys.stdin.readline()


class Victim(H.GatewayTestCase):
    PREFIX = "victim:"

    @classmethod
    def setUpClass(cls):
        if MODE == "setup":
            H.RedisServer().start()  # never cleaned up by the test itself
            ready_then_wait()
            raise RuntimeError("deliberate failure in setUpClass")
        if MODE == "nocleanup":
            redis = H.RedisServer().start()
            H.Gateway(redis).start()
            return
        super().setUpClass()

    def setUp(self):
        pass

    def test_goes_wrong(self):
        ready_then_wait()
        if MODE == "hang":
            while True:
                sys.stdin.readline()
        self.fail("deliberate failure (%s)" % MODE)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]], verbosity=2)

"""
No process left behind: a test run that fails (an assertion, setUpClass, no cleanup at all)
or is stopped (SIGTERM as from ctest, SIGINT as from Ctrl-C, SIGKILL as from ctest's timeout,
or the death of the ctest that runs it) leaves none of the redis-servers and gateways it
started running. The run is
leak_victim.py, with a unique SB_TEST_SUITE marker: its children are found through
/proc/<pid>/environ, never by their name (other runs share this machine).
"""

import os
import select
import signal
import subprocess
import sys
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

VICTIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "leak_victim.py")
RUNNER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


class CleanupTest(unittest.TestCase):
    def run_victim(self, mode, stop=None, expect_servers=("redis-server", "switchboard"),
                   via_runner=False):
        marker = "victim-%s-%s" % (mode, uuid.uuid4().hex[:12])
        env = dict(os.environ, **{H.SUITE_MARKER: marker})
        argv = [sys.executable, VICTIM, mode]
        if via_runner:
            # a stand-in for ctest: it runs the victim and is then stopped itself
            argv = [sys.executable, "-c", RUNNER] + argv
        p = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        self.addCleanup(self.kill_marked, marker)
        try:
            # READY: everything is started
            deadline = time.monotonic() + 60
            line = b""
            while not line.startswith(b"READY"):
                left = deadline - time.monotonic()
                self.assertGreater(left, 0, "the victim never got ready")
                if not select.select([p.stdout], [], [], left)[0]:
                    continue
                line = p.stdout.readline()
                if not line:
                    self.fail("the victim exited before it was ready: %s"
                              % p.stderr.read().decode("utf-8", "replace")[-3000:])
            running = [cmd for pid, cmd in H.marked_processes(H.SUITE_MARKER, marker)
                       if pid != p.pid]
            for name in expect_servers:
                self.assertTrue(any(name in cmd for cmd in running),
                                "%s of the victim is not running: %r" % (name, running))
            if stop is None:
                p.stdin.write(b"go\n")
                p.stdin.flush()
            else:
                p.send_signal(stop)
            try:
                _, err = p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                self.fail("the victim did not end")
        finally:
            p.stdin.close()
        # the kernel (parent-death signal) or the victim's handlers end its children: wait
        # for that to have happened, with a deadline
        H.wait_until(lambda: not H.marked_processes(H.SUITE_MARKER, marker), 15,
                     "no process of the victim (%s)" % mode)
        self.assertEqual(H.marked_processes(H.SUITE_MARKER, marker), [])
        return p.returncode, err.decode("utf-8", "replace")

    @staticmethod
    def kill_marked(marker):
        """Should the check fail, the victim's processes still go (found by their marker)."""
        for pid, _ in H.marked_processes(H.SUITE_MARKER, marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def test_failed_assertion(self):
        rc, err = self.run_victim("assert")
        self.assertNotEqual(rc, 0)
        self.assertIn("deliberate failure (assert)", err)

    def test_failure_without_any_cleanup(self):
        rc, err = self.run_victim("nocleanup")
        self.assertNotEqual(rc, 0)
        self.assertIn("deliberate failure (nocleanup)", err)

    def test_failure_in_setupclass(self):
        rc, err = self.run_victim("setup", expect_servers=("redis-server",))
        self.assertNotEqual(rc, 0)
        self.assertIn("deliberate failure in setUpClass", err)

    def test_sigterm(self):
        rc, _ = self.run_victim("hang", stop=signal.SIGTERM)
        self.assertEqual(rc, -signal.SIGTERM)

    def test_ctrl_c(self):
        rc, _ = self.run_victim("hang", stop=signal.SIGINT)
        self.assertEqual(rc, -signal.SIGINT)

    def test_runner_dies(self):
        """ctest stopped by Ctrl-C (or killed) does not stop its tests itself: a test's
        Python ends when its parent does, and its children with it."""
        rc, _ = self.run_victim("hang", stop=signal.SIGKILL, via_runner=True)
        self.assertEqual(rc, -signal.SIGKILL)

    def test_sigkill(self):
        """The victim cannot clean up: the kernel ends its children (parent-death signal)."""
        rc, _ = self.run_victim("hang", stop=signal.SIGKILL)
        self.assertEqual(rc, -signal.SIGKILL)


if __name__ == "__main__":
    unittest.main(verbosity=2)

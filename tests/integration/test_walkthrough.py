"""
The README walkthrough, run as written: the shell block between the walkthrough markers of
README.md is executed by bash (with -e and pipefail) from a directory that looks like a
checkout (build/switchboard is the binary under test), against a running gateway, a real
redis-server and the fake Telegram Bot API that knows the README's example token. The
event it simulates must reach the assistant's stream, and the script must print it.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

SOURCE_DIR = os.environ.get("SB_SOURCE_DIR") or os.path.join(os.path.dirname(__file__), "..", "..")
MARK_START = re.compile(r"^<!-- walkthrough\b.*-->\s*$", re.M)
MARK_END = re.compile(r"^<!-- /walkthrough -->\s*$", re.M)


def walkthrough_script():
    with open(os.path.join(SOURCE_DIR, "README.md"), encoding="utf-8") as f:
        text = f.read()
    start, end = MARK_START.search(text), MARK_END.search(text)
    assert start and end and start.end() < end.start(), "README.md has no walkthrough markers"
    section = text[start.end():end.start()]
    blocks = re.findall(r"^```(?:sh|bash)\n(.*?)^```\s*$", section, re.M | re.S)
    assert blocks, "no shell block between the walkthrough markers"
    return "\n".join(blocks)


class WalkthroughTest(unittest.TestCase):
    def setUp(self):
        self.script = walkthrough_script()
        m = re.search(r"BOT_TOKEN=\$\{BOT_TOKEN:-([^}]+)\}", self.script)
        self.assertTrue(m, "the walkthrough names no example BOT_TOKEN")
        self.token = m.group(1)
        self.dir = tempfile.mkdtemp(prefix="sb-walkthrough-")
        self.addCleanup(lambda: shutil.rmtree(self.dir, ignore_errors=True))
        os.makedirs(os.path.join(self.dir, "build"))
        os.symlink(H._binary(), os.path.join(self.dir, "build", "switchboard"))
        self.redis = H.RedisServer().start()
        self.addCleanup(self.redis.cleanup)
        self.telegram = H.FakeTelegram().start()
        self.addCleanup(self.telegram.stop)
        self.telegram.add_bot(self.token, username="walkthrough_bot")
        # the gateway as scripts/run.sh runs it: default prefix, data/ in the checkout
        self.gw = H.Gateway(self.redis, self.telegram, None,
                            data_dir=os.path.join(self.dir, "data"))
        self.addCleanup(self.gw.cleanup)
        self.gw.start()

    def test_readme_walkthrough_runs_as_written(self):
        env = self.gw.env()
        env.pop("SWITCHBOARD_DATA_DIR")  # the default data_dir, relative to the checkout
        env["GW"] = "http://127.0.0.1:%d" % self.gw.port
        p = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", self.script], cwd=self.dir,
                           env=env, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
        out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, "walkthrough failed:\nstdout:\n%s\nstderr:\n%s"
                         % (out, err))
        self.assertIn("Hello from the walkthrough", out, out)
        # the connection was registered with the fake Telegram, and the event is stored
        self.assertTrue(self.telegram.setwebhook_calls(self.token))
        streams = [k for k in self.redis.command("KEYS", "sb:in:*")]
        self.assertEqual(len(streams), 1, streams)
        entries = self.redis.command("XRANGE", streams[0], "-", "+")
        self.assertEqual(len(entries), 1)
        self.assertIn(b"Hello from the walkthrough", entries[0][1][1])
        self.assertTrue(os.path.isfile(os.path.join(self.dir, "data", "master.key")))
        with open(self.gw.stderr_path, encoding="utf-8", errors="replace") as f:
            self.assertFalse(any(m in f.read() for m in H.SANITIZER_MARKERS))


if __name__ == "__main__":
    unittest.main(verbosity=2)

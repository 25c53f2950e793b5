"""
The operator's first hour on the command line: `switchboard simulate` delivers a
provider-shaped, signed message per channel through the gateway's own webhook path into the
assistant's stream; `--version` and switchboard_build_info name the same version; usage
errors are one line naming the problem and exit 2.
"""

import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from test_inbound import Env  # noqa: E402

SOURCE_DIR = os.environ.get("SB_SOURCE_DIR") or os.path.join(os.path.dirname(__file__), "..", "..")


def cmake_version():
    with open(os.path.join(SOURCE_DIR, "CMakeLists.txt"), encoding="utf-8") as f:
        return re.search(r"project\(switchboard VERSION ([0-9.]+)", f.read()).group(1)


class SimulateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = Env(prefix="sim:")
        e = cls.env
        cls.asst = e.assistant("simulated")
        cls.conns = {}
        for ch, ext in (("whatsapp", "109988776655443"), ("messenger", "102938475610293"),
                        ("instagram", "17841400987654321")):
            cid = e.meta_connection(ch, "app-secret-sim-%s-0123456789" % ch,
                                    "token-sim-%s-0123456789" % ch)
            e.bind(cls.asst, cid, ext)
            cls.conns[ch] = cid
        cid, _secret = e.telegram_connection("7123456789")
        e.bind(cls.asst, cid, "7123456789")
        cls.conns["telegram"] = cid

    @classmethod
    def tearDownClass(cls):
        cls.env.stop()

    def simulate(self, *args):
        return self.env.gw.run_cli("simulate", *args)

    def events(self):
        return self.env.stream("in:{%s}" % self.asst)

    def test_one_text_event_per_channel(self):
        for ch, cid in self.conns.items():
            before = len(self.events())
            text = "simulated text on %s" % ch
            p = self.simulate(cid, "--text", text)
            self.assertEqual(p.returncode, 0, p.stderr.decode() + p.stdout.decode())
            self.assertIn(b": 200", p.stdout)
            evs = self.events()
            self.assertEqual(len(evs), before + 1, ch)
            ev = evs[-1]
            self.assertEqual(ev["kind"], "message")
            self.assertEqual(ev["channel"], ch)
            self.assertEqual(ev["connection_id"], cid)
            self.assertEqual(ev["message"]["type"], "text")
            self.assertEqual(ev["message"]["text"], text)

    def test_media_per_channel(self):
        for ch, cid in self.conns.items():
            for media in ("image", "document"):
                before = len(self.events())
                p = self.simulate(cid, "--media", media, "--from", "4242", "--text", "caption")
                self.assertEqual(p.returncode, 0, p.stderr.decode() + p.stdout.decode())
                evs = self.events()
                self.assertEqual(len(evs), before + 1, (ch, media))
                msg = evs[-1]["message"]
                self.assertEqual(msg["type"], media, (ch, evs[-1]))
                self.assertEqual(evs[-1]["contact"]["external_id"], "4242")

    def test_every_simulated_message_is_new(self):
        cid = self.conns["telegram"]
        before = len(self.events())
        for _ in range(3):
            self.assertEqual(self.simulate(cid, "--text", "again").returncode, 0)
        self.assertEqual(len(self.events()), before + 3)

    def test_errors(self):
        p = self.simulate("cn_doesnotexist")
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"no connection", p.stderr)
        p = self.simulate(self.conns["telegram"], "--url", "http://127.0.0.1:%d" % H.free_port())
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"is the gateway running", p.stderr)
        p = self.simulate(self.conns["telegram"], "--media", "hologram")
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"--media must be", p.stderr)


class CommandLineTest(unittest.TestCase):
    def run_bin(self, *args):
        return subprocess.run([H._binary()] + list(args), capture_output=True, timeout=20,
                              env=H._sanitizer_env({k: v for k, v in os.environ.items()
                                                    if not k.startswith("SWITCHBOARD_")}),
                              stdin=subprocess.DEVNULL)

    def test_version(self):
        p = self.run_bin("--version")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.decode().strip(), "switchboard " + cmake_version())

    def test_usage_errors_are_short(self):
        cases = [
            (("--frobnicate",), "unknown option \"--frobnicate\""),
            (("frobnicate",), "unknown command \"frobnicate\""),
            (("keys",), "keys needs a subcommand"),
            (("keys", "create"), "keys create needs --org ORG"),
            (("keys", "create", "--org"), "--org needs"),
            (("keys", "revoke"), "keys revoke needs the KEY"),
            (("keys", "frobnicate"), "unknown subcommand \"frobnicate\""),
            (("master-key",), "master-key needs a subcommand"),
            (("master-key", "rotate", "--wait", "soon"), "--wait must be seconds"),
            (("simulate",), "simulate needs a CONNECTION"),
            (("simulate", "cn_x", "--text"), "--text needs a value"),
            (("--config",), "--config needs a file"),
        ]
        for args, needle in cases:
            p = self.run_bin(*args)
            self.assertEqual(p.returncode, 2, args)
            err = p.stderr.decode()
            lines = err.strip().splitlines()
            self.assertLessEqual(len(lines), 2, (args, err))
            self.assertIn(needle, lines[0], args)
            self.assertIn("--help", lines[-1], args)
            self.assertEqual(p.stdout, b"", args)


class BuildInfoTest(H.GatewayTestCase):
    PREFIX = "sim_bi:"

    def test_build_info_metric(self):
        samples = H.parse_prometheus(self.gw.http("GET", "/metrics").body.decode())
        self.assertEqual(H.metric_sum(samples, "switchboard_build_info",
                                      version=cmake_version()), 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)

"""
A gateway an operator cannot break by accident: one process per port, the master key
checked against the store that it sealed (and refused, touching nothing, when it is another
one), `switchboard master-key rotate` under webhook and outbound load, /readyz 503 while
scripts fail, and the management API's client address behind trusted proxies.
"""

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from test_inbound import ascii_bytes, sign  # noqa: E402
from test_outbound import OutEnv, TG_CHAT  # noqa: E402


def fingerprint(hex_key):
    return hashlib.sha256(b"switchboard-master-key:" + bytes.fromhex(hex_key)).hexdigest()


def key_lines(path):
    with open(path, encoding="ascii") as f:
        return f.read().split()


def wait_exit(gw, timeout=20.0):
    """Waits for a gateway that must stop by itself; returns its exit status."""
    try:
        return gw.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        gw.kill()
        raise AssertionError("switchboard kept running; stderr:\n" + gw.stderr_text()[-3000:])


class SafetyTest(H.GatewayTestCase):
    PREFIX = "sf:"

    def store_dump(self, prefix):
        """Every key of 'prefix' with its value, apart from the gateways' heartbeats."""
        dump = self.redis.dump_all_values(prefix + "*")
        return {k: v for k, v in dump.items() if b"{master-key}:node:" not in
                (k if isinstance(k, bytes) else k.encode())}

    def test_second_gateway_on_a_served_port_is_refused(self):
        second = H.Gateway(self.redis, self.telegram, self.graph, prefix=self.PREFIX,
                           port=self.gw.port, data_dir=self.gw.data_dir,
                           extra_env=self.DEFAULT_ENV)
        self.addCleanup(second.cleanup)
        second.start(wait_ready=False)
        self.assertNotEqual(wait_exit(second), 0)
        second.assert_no_sanitizer_report()
        self.assertIn("already served by another switchboard process", second.stderr_text())
        self.assertIn(str(self.gw.port), second.stderr_text())
        # it wrote nothing: no heartbeat of its own next to the first one's
        self.assertEqual(len(self.redis.command("KEYS", self.PREFIX + "{master-key}:node:*")), 1)
        # the first one still serves, alone
        self.assertEqual(self.gw.http("GET", "/readyz").status, 200)

    def test_port_held_by_another_program_is_refused(self):
        s = socket.socket()
        self.addCleanup(s.close)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # would share, if asked
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        port = s.getsockname()[1]
        gw = H.Gateway(self.redis, self.telegram, self.graph, prefix="sf_port:", port=port,
                       extra_env=self.DEFAULT_ENV)
        self.addCleanup(gw.cleanup)
        gw.start(wait_ready=False)
        self.assertNotEqual(wait_exit(gw), 0)
        self.assertIn("port %d is already in use" % port, gw.stderr_text())

    def test_workers_of_one_process_share_the_port(self):
        gw = self.make_gateway(prefix="sf_share:", extra_env=dict(self.DEFAULT_ENV,
                                                                 SWITCHBOARD_WORKERS="3"))
        for _ in range(20):
            self.assertEqual(gw.http("GET", "/healthz").status, 200)
        gw.stop()

    def test_log_names_the_absolute_key_file(self):
        path = os.path.join(os.path.abspath(self.gw.data_dir), "master.key")
        fp = fingerprint(key_lines(path)[0])
        msgs = [l.get("msg", "") for l in self.gw.json_logs()]
        self.assertTrue(any(m.startswith("master key: " + path) and fp[:16] in m for m in msgs),
                        msgs[:10])

    def test_another_master_key_is_refused_and_touches_nothing(self):
        conn = self.create_telegram("6100000001:SAFETY-other-key-%d-abcdef" % os.getpid())
        path = os.path.join(self.gw.data_dir, "master.key")
        store_fp = fingerprint(key_lines(path)[0])
        before = self.store_dump(self.PREFIX)
        self.assertTrue(any(b"connection:{" in k and k.endswith(b":" + conn["id"].encode())
                            for k in before))

        d = tempfile.mkdtemp(prefix="sb-otherkey-")
        self.addCleanup(lambda: shutil.rmtree(d, ignore_errors=True))
        other = os.urandom(32).hex()
        keyfile = os.path.join(d, "master.key")
        with open(keyfile, "w") as f:
            f.write(other + "\n")
        os.chmod(keyfile, 0o600)
        gw = H.Gateway(self.redis, self.telegram, self.graph, prefix=self.PREFIX, data_dir=d,
                       extra_env=self.DEFAULT_ENV)
        self.addCleanup(gw.cleanup)
        gw.start(wait_ready=False)
        self.assertNotEqual(wait_exit(gw), 0)
        gw.assert_no_sanitizer_report()
        err = gw.stderr_text()
        for needle in (fingerprint(other)[:16], store_fp[:16], keyfile, "refusing"):
            self.assertIn(needle, err)
        self.assertFalse(H._port_open(gw.port), "the refused gateway listened")
        with open(keyfile) as f:
            self.assertEqual(f.read(), other + "\n")
        # keys refuses the same way
        p = gw.run_cli("keys", "create", "--org", self.org)
        self.assertNotEqual(p.returncode, 0)
        self.assertEqual(p.stdout, b"")
        self.assertIn(fingerprint(other)[:16].encode(), p.stderr)
        self.assertEqual(self.store_dump(self.PREFIX), before, "the refused key changed the store")

    def test_missing_key_file_is_not_created_for_a_sealed_store(self):
        # e.g. a relative data_dir started from another directory
        self.create_telegram("6100000002:SAFETY-missing-%d-abcdefgh" % os.getpid())
        before = self.store_dump(self.PREFIX)
        gw = H.Gateway(self.redis, self.telegram, self.graph, prefix=self.PREFIX,
                       extra_env=dict(self.DEFAULT_ENV, SWITCHBOARD_DATA_DIR="data"))
        self.addCleanup(gw.cleanup)
        gw.start(wait_ready=False)
        self.assertNotEqual(wait_exit(gw), 0)
        expected = os.path.join(gw.log_dir, "data", "master.key")
        self.assertIn(expected, gw.stderr_text())
        self.assertIn("does not exist", gw.stderr_text())
        self.assertFalse(os.path.exists(expected), "a new master key was created")
        self.assertEqual(self.store_dump(self.PREFIX), before)

    def test_store_records_the_key_fingerprint(self):
        path = os.path.join(self.gw.data_dir, "master.key")
        current = self.redis.command("HGET", self.PREFIX + "{master-key}", "current")
        self.assertEqual(current.decode(), fingerprint(key_lines(path)[0]))
        # the running gateway announces the keys it holds
        beat = self.redis.command("KEYS", self.PREFIX + "{master-key}:node:*")
        H.wait_until(lambda: self.redis.command("KEYS", self.PREFIX + "{master-key}:node:*"),
                     5, "heartbeat")
        beat = self.redis.command("KEYS", self.PREFIX + "{master-key}:node:*")
        self.assertEqual(self.redis.command("GET", beat[0]).decode(), current.decode())

    def test_master_key_show(self):
        p = self.gw.run_cli("master-key", "show")
        self.assertEqual(p.returncode, 0, p.stderr)
        path = os.path.join(self.gw.data_dir, "master.key")
        out = p.stdout.decode()
        self.assertIn(fingerprint(key_lines(path)[0])[:16], out)
        self.assertIn(path, out)


class ReadyzScriptsTest(H.GatewayTestCase):
    PREFIX = "sf_ready:"

    def test_readyz_503_while_scripts_fail(self):
        self.assertEqual(self.gw.http("GET", "/readyz").status, 200)
        self.redis.command("ACL", "SETUSER", "default", "-evalsha", "-eval")
        try:
            H.wait_until(lambda: self.gw.http("GET", "/readyz").status == 503, 10,
                         "/readyz 503 while EVALSHA and EVAL are refused")
            # still so a while later: the probe keeps failing
            self.assertEqual(self.gw.http("GET", "/readyz").status, 503)
            self.assertEqual(self.gw.http("GET", "/healthz").status, 200)
        finally:
            self.redis.command("ACL", "SETUSER", "default", "+@all")
        H.wait_until(lambda: self.gw.http("GET", "/readyz").status == 200, 10,
                     "/readyz 200 once scripts answer again")
        self.assertTrue(any("script call failed" in l.get("msg", "")
                            for l in self.gw.json_logs()))

    def test_readyz_503_while_the_outbound_consumer_cannot_join_its_group(self):
        r = H.RedisServer().start()
        self.addCleanup(r.cleanup)
        r.command("ACL", "SETUSER", "default", "-xgroup")
        gw = H.Gateway(r, self.telegram, self.graph, prefix="sf_nogroup:",
                       extra_env=self.DEFAULT_ENV)
        self.addCleanup(gw.cleanup)
        gw.start(wait_ready=False)
        H.wait_until(lambda: gw.http("GET", "/healthz").status == 200, 20, "/healthz 200")
        # scripts answer, but sb:out is not consumed: not ready, and it stays so
        H.wait_until(lambda: r.command("KEYS", "sf_nogroup:{master-key}:node:*"), 5,
                     "the gateway announces its key")
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            self.assertEqual(gw.http("GET", "/readyz").status, 503)
        self.assertEqual(r.command("XINFO", "GROUPS", "sf_nogroup:out")
                         if r.command("EXISTS", "sf_nogroup:out") else [], [])
        gw.stop()

class TrustedProxiesTest(H.GatewayTestCase):
    PREFIX = "sf_tp:"
    LIMIT = 5

    def limited_gateway(self, prefix, trusted):
        gw = self.make_gateway(prefix=prefix, extra_env={
            "SWITCHBOARD_API_RATE_LIMIT_PER_MINUTE": str(self.LIMIT),
            "SWITCHBOARD_TRUSTED_PROXIES": trusted})
        return gw, gw.keys_create(self.org)

    def get(self, gw, key, **headers):
        return gw.http("GET", "/orgs/c/assistants", key=key, headers=headers).status

    def test_two_clients_behind_the_proxy_have_separate_limits(self):
        gw, key = self.limited_gateway("sf_tp1:", "10.9.0.0/16, 127.0.0.1, ::1")
        a = {"X-Forwarded-For": "203.0.113.1"}
        b = {"X-Forwarded-For": "198.51.100.2, 10.9.1.1"}  # through a second proxy
        for _ in range(self.LIMIT):
            self.assertEqual(self.get(gw, key, **a), 200)
        self.assertEqual(self.get(gw, key, **a), 429)
        for _ in range(self.LIMIT):
            self.assertEqual(self.get(gw, key, **b), 200)
        self.assertEqual(self.get(gw, key, **b), 429)
        # Forwarded: for= when there is no X-Forwarded-For
        self.assertEqual(self.get(gw, key, Forwarded='for="[2001:db8::7]:443";proto=https'),
                         200)
        self.assertTrue(self.redis.command("EXISTS", "sf_tp1:ratelimit:{2001:db8::7}"))
        self.assertTrue(self.redis.command("EXISTS", "sf_tp1:ratelimit:{203.0.113.1}"))
        # the proxy's own requests (no header) have a window of their own
        self.assertEqual(self.get(gw, key), 200)
        gw.stop()

    def test_forged_forwarded_for_from_an_untrusted_peer_changes_nothing(self):
        gw, key = self.limited_gateway("sf_tp2:", "10.0.0.0/8")  # not 127.0.0.1
        for i in range(self.LIMIT):
            self.assertEqual(self.get(gw, key, **{"X-Forwarded-For": "203.0.113.%d" % i}), 200)
        self.assertEqual(self.get(gw, key, **{"X-Forwarded-For": "203.0.113.99"}), 429)
        self.assertEqual(self.get(gw, key, Forwarded="for=192.0.2.1"), 429)
        keys = self.redis.command("KEYS", "sf_tp2:ratelimit:*")
        self.assertEqual(keys, [b"sf_tp2:ratelimit:{127.0.0.1}"])
        gw.stop()

    def test_bad_trusted_proxies_stop_the_process(self):
        gw = H.Gateway(self.redis, None, None, prefix="sf_tp3:",
                       extra_env={"SWITCHBOARD_TRUSTED_PROXIES": "10.0.0.0/8, proxy.local"})
        self.addCleanup(gw.cleanup)
        gw.start(wait_ready=False)
        self.assertEqual(wait_exit(gw), 2)
        self.assertIn('trusted_proxies: "proxy.local" is not an address', gw.stderr_text())


class RotationTest(unittest.TestCase):
    """`master-key rotate` while webhooks and outbound commands keep flowing."""

    def setUp(self):
        self.env = OutEnv()
        self.addCleanup(self.env.stop)

    def test_rotate_under_load(self):
        e = self.env
        gw = e.gw
        keyfile = os.path.join(gw.data_dir, "master.key")
        old = key_lines(keyfile)[0]
        tg_token = "7123456789:TEST-fixture-token"
        wa = H.load_fixture("whatsapp", "text")
        wa_secret = "app-secret-out-whatsapp-0123456789"
        stop = threading.Event()
        results = {"tg": [], "wa": [], "sent": []}
        errors = []

        def tg_load():
            n = 0
            fx = H.load_fixture("telegram", "text_private")
            while not stop.is_set():
                n += 1
                body = json.loads(json.dumps(fx["body"]))
                body["update_id"] = 900000000 + n
                body["message"]["message_id"] = 500000 + n
                body["message"]["text"] = "rotation tg %d" % n
                r = gw.http("POST", "/webhooks/telegram/" + e.conns["telegram"],
                            body=json.dumps(body).encode(), record=False,
                            headers={"X-Telegram-Bot-Api-Secret-Token": e.tg_secret})
                results["tg"].append(r.status)

        def wa_load():
            n = 0
            while not stop.is_set():
                n += 1
                body = json.loads(json.dumps(wa["body"]))
                msg = body["entry"][0]["changes"][0]["value"]["messages"][0]
                msg["id"] = "wamid.ROTATION-%d" % n
                msg["text"]["body"] = "rotation wa %d" % n
                data = ascii_bytes(body)
                r = gw.http("POST", "/webhooks/whatsapp/" + e.conns["whatsapp"], body=data,
                            record=False, headers={"X-Hub-Signature-256": sign(wa_secret, data)})
                results["wa"].append(r.status)

        def out_load():
            n = 0
            while not stop.is_set():
                n += 1
                ch = ("telegram", "whatsapp", "messenger", "instagram")[n % 4]
                cid = "rot-%d" % n
                e.xadd({"id": cid, "conversation_id": e.convs[ch], "type": "text",
                        "text": "rotation out %d" % n})
                results["sent"].append(cid)
                time.sleep(0.01)

        threads = [threading.Thread(target=f) for f in (tg_load, wa_load, out_load)]
        for t in threads:
            t.start()
        try:
            H.wait_until(lambda: len(results["tg"]) > 20 and len(results["wa"]) > 20, 20,
                         "load running")
            p = gw.run_cli("master-key", "rotate", timeout=60)
            H.wait_until(lambda: len(results["tg"]) > 60, 20, "more load after the rotation")
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        self.assertEqual(p.returncode, 0, p.stderr.decode() + p.stdout.decode())
        self.assertIn(b"master key rotated", p.stdout)
        resealed = re.search(rb"(\d+) credential\(s\) re-sealed", p.stdout)
        self.assertTrue(resealed and int(resealed.group(1)) >= len(e.conns), p.stdout)

        # the file holds the new key first and the old one second; the store agrees
        lines = key_lines(keyfile)
        self.assertEqual(len(lines), 2)
        self.assertEqual(lines[1], old)
        new_fp = fingerprint(lines[0])
        rec = e.r.command("HGETALL", e.prefix + "{master-key}")
        rec = dict(zip(rec[::2], rec[1::2]))
        self.assertEqual(rec[b"current"].decode(), new_fp)
        self.assertEqual(rec[b"previous"].decode(), fingerprint(old))
        self.assertNotIn(b"next", rec)

        # nothing lost: every webhook was answered 200 and every event is in the stream
        self.assertEqual(set(results["tg"]), {200}, results["tg"])
        self.assertEqual(set(results["wa"]), {200})
        texts = [ev.get("message", {}).get("text") for ev in e.stream("in:{%s}" % e.asst)]
        for i in range(1, len(results["tg"]) + 1):
            self.assertIn("rotation tg %d" % i, texts)
        for i in range(1, len(results["wa"]) + 1):
            self.assertIn("rotation wa %d" % i, texts)
        # every outbound command sent exactly once
        for cid in results["sent"]:
            H.wait_until(lambda: e.r.command("HGET", "%scmd:{org_in}:%s" % (e.prefix, cid),
                                             "done") == b"sent", 30, "command %s sent" % cid)

        # every connection is sealed with the new key and still decrypts
        for ch, cid in e.conns.items():
            sealed = e.r.command("HGET", "%sconnection:{org_in}:%s" % (e.prefix, cid), "secrets")
            self.assertTrue(sealed.startswith(new_fp[:16].encode() + b":"), (ch, sealed[:20]))
            r = gw.http("POST", "/orgs/c/connections/%s/test" % cid, key=e.key)
            self.assertEqual(r.status, 200, (ch, r))
        # and after a restart, which reads the new file
        gw.stop()
        gw.start()
        fx = H.load_fixture("telegram", "text_private")
        body = json.loads(json.dumps(fx["body"]))
        body["update_id"] = 990000001
        body["message"]["message_id"] = 990001
        r = gw.http("POST", "/webhooks/telegram/" + e.conns["telegram"],
                    body=json.dumps(body).encode(),
                    headers={"X-Telegram-Bot-Api-Secret-Token": e.tg_secret})
        self.assertEqual(r.status, 200, r)
        self.assertTrue(any("master key file reloaded" in l.get("msg", "")
                            for l in gw.json_logs()))
        # a gateway still holding only the old key is now refused
        d = tempfile.mkdtemp(prefix="sb-oldkey-")
        self.addCleanup(lambda: shutil.rmtree(d, ignore_errors=True))
        with open(os.path.join(d, "master.key"), "w") as f:
            f.write(old + "\n")
        stale = H.Gateway(e.redis, e.tg, e.graph, data_dir=d)
        self.addCleanup(stale.cleanup)
        stale.start(wait_ready=False)
        self.assertNotEqual(wait_exit(stale), 0)
        self.assertIn("rotated away from", stale.stderr_text())


class RotationAcrossHostsTest(unittest.TestCase):
    """A gateway whose key file is elsewhere (another host) holds rotate until it has the key."""

    def setUp(self):
        self.env = OutEnv(prefix="sfr:")
        self.addCleanup(self.env.stop)

    def test_rotate_waits_for_every_gateway_and_resumes(self):
        e = self.env
        keyfile = os.path.join(e.gw.data_dir, "master.key")
        old = key_lines(keyfile)[0]
        other_dir = tempfile.mkdtemp(prefix="sb-otherhost-")
        self.addCleanup(lambda: shutil.rmtree(other_dir, ignore_errors=True))
        shutil.copy(keyfile, os.path.join(other_dir, "master.key"))
        other = H.Gateway(e.redis, e.tg, e.graph, prefix="sfr:", data_dir=other_dir,
                          extra_env={"SWITCHBOARD_NODE_ID": "other-host"}).start()
        self.addCleanup(other.cleanup)

        p = e.gw.run_cli("master-key", "rotate", "--wait", "2")
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn(b"waiting for gateway other-host", p.stderr)
        self.assertIn(keyfile.encode(), p.stderr)
        rec = e.r.command("HGETALL", "sfr:{master-key}")
        rec = dict(zip(rec[::2], rec[1::2]))
        self.assertEqual(rec[b"current"].decode(), fingerprint(old))  # not switched yet
        new = key_lines(keyfile)[0]
        self.assertEqual(rec[b"next"].decode(), fingerprint(new))
        for cid in e.conns.values():  # nothing re-sealed yet: both gateways open everything
            self.assertEqual(other.http("POST", "/orgs/c/connections/%s/test" % cid,
                                        key=e.key).status, 200)

        shutil.copy(keyfile, os.path.join(other_dir, "master.key.new"))
        os.rename(os.path.join(other_dir, "master.key.new"), os.path.join(other_dir, "master.key"))
        p = e.gw.run_cli("master-key", "rotate", "--wait", "20")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn(b"resuming the rotation to key " + fingerprint(new)[:16].encode(), p.stdout)
        self.assertEqual(key_lines(keyfile), [new, old])
        for gw in (e.gw, other):
            for cid in e.conns.values():
                self.assertEqual(gw.http("POST", "/orgs/c/connections/%s/test" % cid,
                                         key=e.key).status, 200)
        other.stop()


if __name__ == "__main__":
    H.main()

"""
Operations (contract section 1): /healthz, /readyz, /metrics, Redis restarts under a running
server, SIGTERM, --help, the configuration file and its environment overrides, the master
key file, the keys subcommands.
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402


def metrics(gw):
    r = gw.http("GET", "/metrics", record=False)
    assert r.status == 200, r
    return H.parse_prometheus(r.body.decode("utf-8"))


class OpsTest(H.GatewayTestCase):
    PREFIX = "to_ops:"

    def test_healthz_and_readyz(self):
        r = self.gw.http("GET", "/healthz")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body.strip(), b"ok")
        r = self.gw.http("GET", "/readyz")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body.strip(), b"ready")
        # no key needed, not rate limited as /orgs/ routes are
        for _ in range(3):
            self.assertEqual(self.gw.http("GET", "/healthz").status, 200)

    def test_metrics(self):
        fx = H.load_fixture("telegram", "text_private")
        tok = "%s:OPS-metrics-token-%s" % (fx["binding_external_id"], os.getpid())
        self.telegram.add_bot(tok)
        for _ in range(3):
            self.assertEqual(self.gw.http("GET", "/healthz").status, 200)
        self.assertStatus(self.api("GET", "/orgs/c/assistants", key=None), 401)
        self.assertStatus(self.api("GET", "/orgs/c/assistants"), 200)
        self.assertStatus(self.api("GET", "/orgs/c/assistants/as_nope"), 404)
        c = self.create_telegram(tok)
        self.addCleanup(lambda: self.api("DELETE", "/orgs/c/connections/" + c["id"]))

        r = self.gw.http("GET", "/metrics")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.headers.get("content-type", "").startswith("text/plain"), r.headers)
        text = r.body.decode("utf-8")
        samples = H.parse_prometheus(text)
        names = {n for n, _, _ in samples}
        for n in ("switchboard_http_requests_total", "switchboard_http_request_duration_seconds_bucket",
                  "switchboard_redis_reconnects_total", "switchboard_provider_calls_total"):
            self.assertIn(n, names)
        self.assertRegex(text, r"(?m)^# TYPE switchboard_http_requests_total counter$")
        self.assertRegex(text, r"(?m)^# TYPE switchboard_http_request_duration_seconds histogram$")

        req = "switchboard_http_requests_total"
        self.assertGreaterEqual(H.metric_sum(samples, req, route="/healthz", status="200"), 3)
        self.assertGreaterEqual(H.metric_sum(samples, req, route="/orgs/c/assistants", status="401"), 1)
        self.assertGreaterEqual(H.metric_sum(samples, req, route="/orgs/c/assistants", status="200"), 1)
        self.assertGreaterEqual(H.metric_sum(samples, req, route="/orgs/c/assistants/{id}", status="404"), 1)
        self.assertGreaterEqual(H.metric_sum(samples, req, route="/orgs/c/connections", status="201"), 1)
        # route labels are templates, never concrete ids (bounded label set)
        for n, labels, _ in samples:
            if n == req:
                self.assertIn("route", labels)
                self.assertIn("status", labels)
                self.assertNotIn("as_nope", labels["route"])
                self.assertNotIn(c["id"], labels["route"])
        self.assertGreaterEqual(
            H.metric_sum(samples, "switchboard_provider_calls_total", provider="telegram"), 2)

        # histogram: buckets with le, cumulative, +Inf equals _count
        buckets = {}
        for n, labels, v in samples:
            if n == "switchboard_http_request_duration_seconds_bucket":
                self.assertIn("le", labels)
                key = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
                le = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
                buckets.setdefault(key, []).append((le, v))
        self.assertTrue(buckets)
        counts = {tuple(sorted(l.items())): v for n, l, v in samples
                  if n == "switchboard_http_request_duration_seconds_count"}
        for key, bs in buckets.items():
            bs.sort()
            self.assertEqual(bs[-1][0], float("inf"), "no +Inf bucket for %r" % (key,))
            vals = [v for _, v in bs]
            self.assertEqual(vals, sorted(vals), "buckets not cumulative for %r" % (key,))
            if key in counts:
                self.assertEqual(bs[-1][1], counts[key])

        # counters move
        before = H.metric_sum(samples, req, route="/healthz", status="200")
        for _ in range(2):
            self.gw.http("GET", "/healthz")
        after = H.metric_sum(metrics(self.gw), req, route="/healthz", status="200")
        self.assertGreaterEqual(after - before, 2)

    def test_keys_create_prints_one_line(self):
        k1 = self.gw.keys_create(self.org)
        k2 = self.gw.keys_create(self.org)
        for k in (k1, k2):
            self.assertNotRegex(k, r"\s")
            self.assertGreaterEqual(len(k), 20)
            self.assertStatus(self.api("GET", "/orgs/c/assistants", key=k), 200)
        self.assertNotEqual(k1, k2)
        for args in (("keys", "create"), ("keys",), ("keys", "frobnicate"),
                     ("keys", "create", "--org")):
            p = self.gw.run_cli(*args)
            self.assertNotEqual(p.returncode, 0, "switchboard %s" % " ".join(args))
            self.assertEqual(p.stdout.strip(), b"", "nothing on stdout on error")

    def test_help(self):
        p = subprocess.run([self.gw.binary, "--help"], capture_output=True, timeout=20,
                           env=H._sanitizer_env(dict(os.environ)), stdin=subprocess.DEVNULL)
        self.assertEqual(p.returncode, 0, p.stderr)
        text = (p.stdout + p.stderr).decode("utf-8", "replace")
        for needle in ("keys create", "keys revoke", "--config") + H.CONTRACT_ENV_VARS:
            self.assertIn(needle, text, "--help does not mention %s" % needle)

    def test_master_key_file_is_0600(self):
        files = [os.path.join(self.gw.data_dir, f) for f in os.listdir(self.gw.data_dir)]
        regular = [f for f in files if stat.S_ISREG(os.lstat(f).st_mode)]
        self.assertTrue(regular, "no master key file in the data directory")
        for f in regular:
            self.assertEqual(stat.S_IMODE(os.lstat(f).st_mode), 0o600, f)

    def test_master_key_file_option_and_restart_keeps_credentials(self):
        d = tempfile.mkdtemp(prefix="sb-mk-")
        self.addCleanup(lambda: shutil.rmtree(d, ignore_errors=True))
        keyfile = os.path.join(d, "custom.key")
        env = dict(self.DEFAULT_ENV, SWITCHBOARD_MASTER_KEY_FILE=keyfile)
        gw = self.make_gateway(extra_env=env, prefix="to_mk:")
        self.assertTrue(os.path.isfile(keyfile), "SWITCHBOARD_MASTER_KEY_FILE not created")
        self.assertEqual(stat.S_IMODE(os.stat(keyfile).st_mode), 0o600)
        with open(keyfile, "rb") as f:
            key_bytes = f.read()
        key = gw.keys_create(self.org)
        tok = "6000000001:MK-restart-%d-abcdefghijkl" % os.getpid()
        self.telegram.add_bot(tok, username="mk_bot")
        r = gw.http("POST", "/orgs/c/connections", key=key,
                    body={"provider": "telegram", "credentials": {"bot_token": tok}})
        self.assertEqual(r.status, 201, r)
        cid = r.json["id"]
        gw.stop()
        gw.start()
        with open(keyfile, "rb") as f:
            self.assertEqual(f.read(), key_bytes, "the master key changed on restart")
        r = gw.http("GET", "/orgs/c/connections/" + cid, key=key)
        self.assertEqual(r.status, 200, r)
        n = len(self.telegram.requests(token=tok, method="getme"))
        r = gw.http("POST", "/orgs/c/connections/%s/test" % cid, key=key)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json, {"ok": True, "account_hint": "@mk_bot"})
        # the decrypted token is the one that reached the provider
        self.assertEqual(len(self.telegram.requests(token=tok, method="getme")), n + 1)
        gw.stop()

    def test_sigterm_exits_0_and_closes_the_port(self):
        gw = self.make_gateway(prefix="to_sig:", extra_env=self.DEFAULT_ENV)
        key = gw.keys_create(self.org)
        self.assertEqual(gw.http("GET", "/orgs/c/assistants", key=key).status, 200)
        self.assertEqual(gw.stop(), 0)
        self.assertFalse(H._port_open(gw.port))

    def test_sigterm_with_a_request_in_flight(self):
        gw = self.make_gateway(prefix="to_sig2:", extra_env=self.DEFAULT_ENV)
        key = gw.keys_create(self.org)
        tok = "6000000002:SIGTERM-inflight-%d-abcdef" % os.getpid()
        self.telegram.add_bot(tok)
        self.telegram.override("getme", delay=1.0)
        result = {}

        def create():
            try:
                result["r"] = gw.http("POST", "/orgs/c/connections", key=key, body={
                    "provider": "telegram", "credentials": {"bot_token": tok}})
            except Exception as e:  # noqa: BLE001
                result["e"] = e
        t = threading.Thread(target=create)
        t.start()
        self.telegram.wait_for(method="getme", token=tok)
        self.assertEqual(gw.stop(timeout=20), 0)
        t.join(20)
        self.assertFalse(t.is_alive())
        self.assertIn("r", result, "the request in flight got no HTTP answer: %r"
                      % result.get("e"))
        self.assertIn(result["r"].status, (201, 502, 503), result["r"])


class RedisOutageTest(H.GatewayTestCase):
    PREFIX = "to_redis:"

    def test_redis_restart_under_the_server(self):
        fx = H.load_fixture("telegram", "text_private")
        tok = H.fixture_token(fx)
        self.telegram.add_bot(tok, username="fixture_bot")
        conn = self.create_telegram(tok)
        a = self.create_assistant("survives")
        self.bind(a["id"], conn["id"], fx["binding_external_id"])
        self.assertEqual(self.post_telegram_update(conn, tok, fx["body"]).status, 200)
        secret = self.telegram.last_secret(tok)
        reconnects = H.metric_sum(metrics(self.gw), "switchboard_redis_reconnects_total")

        self.redis.stop(persist=True)
        H.wait_until(lambda: self.gw.http("GET", "/readyz").status == 503, 15,
                     "/readyz 503 while Redis is down")
        self.assertEqual(self.gw.http("GET", "/healthz").status, 200)
        r = H.wait_until(lambda: (lambda r: r.status == 503 and r)(
            self.api("GET", "/orgs/c/assistants")), 15, "management API 503 while Redis is down")
        self.assertError(r, 503, "unavailable")
        body2 = dict(fx["body"], update_id=fx["body"]["update_id"] + 1)
        r = self.post_telegram_update(conn, tok, body2, secret)
        self.assertEqual(r.status, 503, r)
        self.assertEqual(self.gw.http("GET", "/metrics").status, 200)

        self.redis.start()
        H.wait_until(lambda: self.gw.http("GET", "/readyz").status == 200, 20,
                     "/readyz 200 after Redis is back")
        r = self.api("GET", "/orgs/c/assistants")
        self.assertStatus(r, 200)
        self.assertEqual([x["id"] for x in r.json], [a["id"]])
        self.create_assistant("after restart")
        # webhooks work again (scripts are loaded again into the new Redis)
        r = self.post_telegram_update(conn, tok, body2, secret)
        self.assertEqual(r.status, 200, r)
        H.wait_until(lambda: H.metric_sum(metrics(self.gw), "switchboard_redis_reconnects_total")
                     > reconnects, 10, "switchboard_redis_reconnects_total to increase")
        self.assertTrue(self.gw.running())

    def test_redis_down_at_startup(self):
        r2 = H.RedisServer()  # not started: its port refuses connections
        self.addCleanup(r2.cleanup)
        gw = H.Gateway(r2, self.telegram, self.graph, prefix="to_late:",
                       extra_env=self.DEFAULT_ENV)
        self.addCleanup(gw.cleanup)
        gw.start(wait_ready=False)
        H.wait_until(lambda: gw.http("GET", "/healthz").status == 200, 20, "/healthz 200")
        self.assertEqual(gw.http("GET", "/readyz").status, 503)
        r2.start()
        H.wait_until(lambda: gw.http("GET", "/readyz").status == 200, 20,
                     "/readyz 200 once Redis is up")
        key = gw.keys_create(self.org)
        self.assertEqual(gw.http("GET", "/orgs/c/assistants", key=key).status, 200)
        gw.stop()


class ConfigTest(H.GatewayTestCase):
    PREFIX = "to_cfg:"

    def _run_to_exit(self, config_text, timeout=15):
        d = tempfile.mkdtemp(prefix="sb-cfg-")
        self.addCleanup(lambda: shutil.rmtree(d, ignore_errors=True))
        path = os.path.join(d, "bad.json")
        with open(path, "w", encoding="utf-8") as f:
            f.write(config_text)
        env = self.gw.env()
        env["SWITCHBOARD_LISTEN"] = "127.0.0.1:%d" % H.free_port()
        p = subprocess.Popen([self.gw.binary, "--config", path], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            self.fail("switchboard kept running with configuration %r" % config_text)
        text = (out + err).decode("utf-8", "replace")
        self.assertFalse(any(m in text for m in H.SANITIZER_MARKERS), text)
        return p.returncode, text

    def test_unknown_config_key_is_fatal_and_named(self):
        for cfg, name in (({"listen": "127.0.0.1:1", "bogus_key": 1}, "bogus_key"),
                          ({"redis": {"urll": "redis://127.0.0.1:1/0"}}, "urll"),
                          ({"providers": {"telegram_api_bse": "http://x"}}, "telegram_api_bse")):
            rc, text = self._run_to_exit(json.dumps(cfg))
            self.assertNotEqual(rc, 0, cfg)
            self.assertIn(name, text, "the error does not name the key")

    def test_invalid_config_file_is_fatal(self):
        for text in ("{", "[]", '{"listen": 8080}'):
            rc, _ = self._run_to_exit(text)
            self.assertNotEqual(rc, 0, text)
        d = tempfile.mkdtemp(prefix="sb-cfg-")
        self.addCleanup(lambda: shutil.rmtree(d, ignore_errors=True))
        p = subprocess.run([self.gw.binary, "--config", os.path.join(d, "missing.json")],
                           env=self.gw.env(), capture_output=True, timeout=15,
                           stdin=subprocess.DEVNULL)
        self.assertNotEqual(p.returncode, 0)

    def test_config_file_is_honoured_and_env_overrides_it(self):
        p1 = H.free_port()
        cfg = {"listen": "127.0.0.1:%d" % p1,
               "redis": {"url": self.redis.url, "prefix": "to_fromfile:"},
               "public_url": "http://from-file.example.test",
               "providers": {"telegram_api_base": self.telegram.base,
                             "graph_api_base": self.graph.base}}
        unset = {k: None for k in ("SWITCHBOARD_REDIS_URL", "SWITCHBOARD_REDIS_PREFIX",
                                   "SWITCHBOARD_PUBLIC_URL", "SWITCHBOARD_TELEGRAM_API_BASE",
                                   "SWITCHBOARD_GRAPH_API_BASE")}
        gw = H.Gateway(self.redis, None, None, config=cfg, port=p1, use_env_listen=False,
                       extra_env=dict(self.DEFAULT_ENV, **unset))
        self.addCleanup(gw.cleanup)
        gw.start()
        key = gw.keys_create(self.org)  # keys create reads the same file
        with self.redis.client() as c:
            self.assertTrue(c.keys("to_fromfile:*"), "nothing stored under the file's prefix")
        tok = "6000000003:CFG-file-%d-abcdefghijk" % os.getpid()
        self.telegram.add_bot(tok)
        r = gw.http("POST", "/orgs/c/connections", key=key,
                    body={"provider": "telegram", "credentials": {"bot_token": tok}})
        self.assertEqual(r.status, 201, r)
        self.assertTrue(r.json["webhook_url"].startswith(
            "http://from-file.example.test/webhooks/telegram/"), r.json)
        gw.stop()

        # environment variables win over the file
        p2 = H.free_port()
        gw2 = H.Gateway(self.redis, None, None, config=cfg, port=p2, use_env_listen=True,
                        data_dir=gw.data_dir,  # the same store needs the same master key
                        extra_env=dict(self.DEFAULT_ENV, **dict(
                            unset, SWITCHBOARD_PUBLIC_URL="http://from-env.example.test")))
        self.addCleanup(gw2.cleanup)
        gw2.start()
        self.assertFalse(H._port_open(p1), "listening on the file's port despite the env")
        tok2 = "6000000004:CFG-env-%d-abcdefghijkl" % os.getpid()
        self.telegram.add_bot(tok2)
        r = gw2.http("POST", "/orgs/c/connections", key=key,
                     body={"provider": "telegram", "credentials": {"bot_token": tok2}})
        self.assertEqual(r.status, 201, r)
        self.assertTrue(r.json["webhook_url"].startswith(
            "http://from-env.example.test/webhooks/telegram/"), r.json)
        gw2.stop()


if __name__ == "__main__":
    H.main()

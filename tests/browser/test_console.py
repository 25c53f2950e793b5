#!/usr/bin/env python3
"""
The web console in a real browser: Debian's headless chromium driven by playwright-core
(console.mjs) against the real gateway, a real redis-server and the fake providers.

This file starts redis, the fakes and the gateway (tests/integration/harness.py), creates an
org and its key, and serves a small control API on 127.0.0.1 through which the browser
script acts on the fakes the way the outside world would: a bot whose token is revoked, a
webhook delivered, an outbound command that fails for good, what the fake provider received.
The script drives the console like a person and checks what it shows.

The fakes are the harness's with what the inbox needs: the Telegram fake also answers getFile
and serves the file (an inbound photo the console shows), the Graph fake also serves a
business account's message templates. The gateway keeps WhatsApp's real 24-hour window, so a
conversation whose last inbound message is 25 hours old offers only templates.
Screenshots go to $SB_SCREENSHOT_DIR (default: a temp dir, printed).
"""
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402

CHROMIUM = os.environ.get("SB_CHROMIUM", "/usr/bin/chromium")
NODE = shutil.which("node")


def png(width, height):
    """A PNG of a sky over a green hill (a real image the browser decodes)."""
    def chunk(kind, data):
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))
    rows = []
    for y in range(height):
        row = bytearray(b"\x00")
        for x in range(width):
            hill = height * 0.62 + 18 * ((x - width / 2) / (width / 2)) ** 2
            row += bytes((46, 139, 87) if y > hill else (110 + y // 3, 170 + y // 4, 235))
        rows.append(bytes(row))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x02\x00\x00\x00")
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


class ConsoleTelegram(harness.FakeTelegram):
    """FakeTelegram plus getFile and the file download (/file/bot<token>/<file_path>)."""

    def __init__(self):
        super().__init__()
        self.files = {}  # file_id -> (file_path, bytes, content type)

    def _answer(self, token, method, params):
        if method == "getfile" and token in self.bots:
            f = self.files.get(params.get("file_id"))
            if f is None:
                return 400, {"ok": False, "error_code": 400, "description": "Bad Request: invalid file_id"}
            return 200, {"ok": True, "result": {"file_id": params["file_id"], "file_unique_id": "u1",
                                                "file_size": len(f[1]), "file_path": f[0]}}
        return super()._answer(token, method, params)

    def _dispatch(self, h, body):
        m = re.match(r"^/file/bot([^/]+)/(.+)$", urllib.parse.urlsplit(h.path).path)
        if m:
            token = urllib.parse.unquote(m.group(1))
            self._record({"http_method": h.command, "path": h.path, "method": "download",
                          "token": token, "headers": {}, "params": {}, "body": b""})
            for path, data, ctype in self.files.values():
                if path == m.group(2) and token in self.bots:
                    h.send_response(200)
                    h.send_header("Content-Type", ctype)
                    h.send_header("Content-Length", str(len(data)))
                    h.end_headers()
                    h.wfile.write(data)
                    return None
            return self._send(h, 404, {"ok": False, "error_code": 404, "description": "Not Found"})
        return super()._dispatch(h, body)


class ConsoleGraph(harness.FakeGraph):
    """FakeGraph plus a business account's message templates (GET /{waba}/message_templates)."""

    def __init__(self):
        super().__init__()
        self.templates = {}  # waba id -> [template]

    def _answer(self, method, full_path, path, token, params):
        parts = [p for p in path.split("/") if p]
        if (method == "GET" and token in self.accounts and len(parts) == 2
                and parts[1] == "message_templates" and parts[0] in self.templates):
            return 200, {"data": self.templates[parts[0]], "paging": {"cursors": {"before": "0", "after": "0"}}}
        return super()._answer(method, full_path, path, token, params)


def ensure_node_modules():
    """npm ci when node_modules is missing or older than the lock file."""
    mod = os.path.join(HERE, "node_modules", ".package-lock.json")  # written by npm at install
    lock = os.path.join(HERE, "package-lock.json")
    if os.path.exists(mod) and os.path.getmtime(mod) >= os.path.getmtime(lock):
        return
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True,
                   stdout=subprocess.DEVNULL, timeout=300)


class Control:
    """What the browser script may ask of the outside world (the fakes, Redis, the API)."""

    def __init__(self, case):
        self.case = case
        self.gw = case.gw

    def telegram_add_bot(self, a):
        self.case.telegram.add_bot(a["token"], username=a.get("username"))
        return {}

    def telegram_remove_bot(self, a):
        self.case.telegram.remove_bot(a["token"])
        return {}

    def graph_add_account(self, a):
        self.case.graph.add_account(a["token"], a["account_id"], a["name"], a.get("username"))
        return {}

    def telegram_override(self, a):
        self.case.telegram.override(a["method"], status=a.get("status"), body=a.get("body"),
                                    times=a.get("times"))
        return {}

    def telegram_sent(self, a):
        """Waits for the fake to receive a send* call matching a["method"] (and a["text"])."""
        def found():
            for r in self.case.telegram.requests(method=a["method"]):
                p = r["params"]
                if "text" in a and a["text"] not in str(p.get("text", "")) + str(p.get("caption", "")):
                    continue
                body = r.get("body") or b""
                names = re.findall(rb'filename="([^"]*)"', body) if isinstance(body, bytes) else []
                return {"params": {k: v if isinstance(v, (str, int, float)) else "<file>"
                                   for k, v in p.items()},
                        "filenames": [n.decode("utf-8", "replace") for n in names]}
            return None
        return wait_until(found, a.get("timeout", 10), "telegram %s" % a["method"])

    def webhook(self, a):
        """Delivers a Telegram update to the connection's webhook (as Telegram would)."""
        conn = self.gw.http("GET", "/orgs/c/connections/%s" % a["connection_id"], key=self.case.key).json
        token = a["token"]
        secret = self.case.telegram.last_secret(token)
        r = self.gw.http("POST", urllib.parse.urlsplit(conn["webhook_url"]).path,
                         body=json.dumps(a["update"]).encode(),
                         headers={"Content-Type": "application/json",
                                  "X-Telegram-Bot-Api-Secret-Token": secret})
        return {"status": r.status}

    def telegram_file(self, a):
        """A file the fake serves for getFile (an inbound photo's file_id)."""
        self.case.telegram.files[a["file_id"]] = (a["file_path"], png(320, 200), "image/png")
        return {}

    def whatsapp_connection(self, a):
        """A WhatsApp connection (its business account with a[\"templates\"]) bound to the
        assistant's phone number; answers the connection."""
        g = self.case.graph
        g.add_account(a["token"], a["account_id"], a["name"])
        g.add_phone_number(a["phone_number_id"], display=a["display"])
        g.templates[a["waba_id"]] = a["templates"]
        r = self.gw.http("POST", "/orgs/c/connections", key=self.case.key, body=json.dumps({
            "provider": "whatsapp", "name": a["name"], "credentials": {
                "access_token": a["token"], "app_secret": a["app_secret"],
                "verify_token": "console-verify", "waba_id": a["waba_id"]}}).encode())
        assert r.status == 201, r
        b = self.gw.http("POST", "/orgs/c/assistants/%s/channels" % a["assistant_id"], key=self.case.key,
                         body=json.dumps({"connection_id": r.json["id"],
                                          "external_id": a["phone_number_id"]}).encode())
        assert b.status == 201, b
        return r.json

    def whatsapp_inbound(self, a):
        """A signed WhatsApp webhook with a text dated a["hours_ago"] hours ago by the
        provider; answers its conversation id once the event is routed."""
        msg = {"id": a["message_id"], "from": a["phone"], "type": "text", "text": {"body": a["text"]},
               "timestamp": str(int(time.time() - a["hours_ago"] * 3600))}
        body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": a["waba_id"], "changes": [
            {"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550101234", "phone_number_id": a["phone_number_id"]},
                "contacts": [{"profile": {"name": a["name"]}, "wa_id": a["phone"]}],
                "messages": [msg]}}]}]}).encode()
        sig = "sha256=" + hmac.new(a["app_secret"].encode(), body, hashlib.sha256).hexdigest()
        r = self.gw.http("POST", "/webhooks/whatsapp/%s" % a["connection_id"], body=body,
                         headers={"Content-Type": "application/json", "X-Hub-Signature-256": sig})
        assert r.status == 200, r

        def routed():
            for _id, fields in self.case.redis.command("XRANGE", "sb:in:{%s}" % a["assistant_id"], "-", "+") or []:
                ev = json.loads(fields[fields.index(b"event") + 1])
                if ev.get("message", {}).get("external_id") == msg["id"]:
                    return {"conversation_id": ev["conversation_id"]}
            return None
        return wait_until(routed, 10, "WhatsApp message %s routed" % msg["id"])

    def graph_sent(self, a):
        """Waits for a message send to a["phone_number_id"]; answers its JSON body."""
        def found():
            for r in self.case.graph.requests(http_method="POST", path="/%s/messages" % a["phone_number_id"]):
                return {"body": json.loads(r["body"])}
            return None
        return wait_until(found, a.get("timeout", 10), "a send to %s" % a["phone_number_id"])

    def graph_sends(self, a):
        """How many message sends the Graph fake received for a["phone_number_id"]."""
        return {"count": len(self.case.graph.requests(http_method="POST",
                                                      path="/%s/messages" % a["phone_number_id"]))}

    def last_conversation(self, a):
        """The conversation id of the assistant's last inbound event."""
        def last():
            rows = self.case.redis.command("XREVRANGE", "sb:in:{%s}" % a["assistant_id"], "+", "-",
                                           "COUNT", "1")
            if not rows:
                return None
            fields = rows[0][1]
            ev = json.loads(fields[fields.index(b"event") + 1])
            return {"conversation_id": ev["conversation_id"], "contact_id": ev["contact"]["id"]}
        return wait_until(last, 10, "an inbound event")

    def assistant_command(self, a):
        """An outbound command from the assistant runtime (XADD sb:out)."""
        self.case.redis.command("XADD", "sb:out", "*", "cmd", json.dumps(a["cmd"]))
        return {}

    def command_state(self, a):
        """Waits for GET /orgs/c/commands/{id} to reach a["state"]; answers it."""
        def reached():
            r = self.gw.http("GET", "/orgs/c/commands/%s" % a["id"], key=self.case.key)
            if r.status == 200 and r.json.get("state") == a["state"]:
                return r.json
            return None
        return wait_until(reached, a.get("timeout", 15), "command %s %s" % (a["id"], a["state"]))

    def api(self, a):
        r = self.gw.http(a["method"], a["path"], body=a.get("body"), key=self.case.key)
        return {"status": r.status, "json": r.json}


def serve_control(control):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):
            pass

        def do_POST(self):
            name = self.path.strip("/")
            n = int(self.headers.get("Content-Length") or 0)
            args = json.loads(self.rfile.read(n) or b"{}")
            fn = getattr(control, name, None)
            try:
                if fn is None or name.startswith("_"):
                    raise KeyError("no control " + name)
                status, out = 200, fn(args)
            except Exception as e:  # noqa: BLE001 - reported to the script
                status, out = 500, {"error": "%s: %s" % (type(e).__name__, e)}
            data = json.dumps(out).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


class ConsoleServingTest(harness.GatewayTestCase):
    """How the gateway serves the console's files (no browser needed)."""

    def get(self, path, headers=None):
        return self.gw.http("GET", path, headers=headers)

    def test_files_and_headers(self):
        r = self.get("/console/")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers["content-type"], "text/html; charset=utf-8")
        self.assertIn(b'<script type="module" src="app.js">', r.body)
        csp = r.headers["content-security-policy"]
        for part in ("default-src 'self'", "script-src 'self'", "connect-src 'self'",
                     "frame-ancestors 'none'", "img-src 'self' data: blob: http://gw.example.test"):
            self.assertIn(part, csp)
        self.assertNotIn("unsafe-inline", csp)
        self.assertEqual(r.headers["x-content-type-options"], "nosniff")
        self.assertEqual(r.headers["cache-control"], "no-cache")
        etag = r.headers["etag"]
        self.assertRegex(etag, r'^"[0-9a-f]{20}"$')
        # No inline script in any page: every <script> names its file.
        self.assertNotRegex(r.body.decode(), r"<script(?![^>]*\bsrc=)[^>]*>")
        again = self.get("/console/", headers={"If-None-Match": etag})
        self.assertEqual(again.status, 304)
        self.assertEqual(again.body, b"")
        self.assertEqual(self.get("/console/index.html").body, r.body)
        for path, ctype in (("/console/app.js", "text/javascript; charset=utf-8"),
                            ("/console/style.css", "text/css; charset=utf-8"),
                            ("/console/icons/telegram.svg", "image/svg+xml")):
            f = self.get(path)
            self.assertEqual(f.status, 200, path)
            self.assertEqual(f.headers["content-type"], ctype, path)
            self.assertEqual(f.headers["x-content-type-options"], "nosniff", path)
            with open(os.path.join(HERE, "..", "..", "console", path[len("/console/"):]), "rb") as src:
                self.assertEqual(f.body, src.read(), "%s is the file as built" % path)
            self.assertNotEqual(f.headers["etag"], etag)

    def test_public_config(self):
        """config.json: the public settings the page reads before it has a key; Meta
        sign-in is null unless its app is configured."""
        r = self.get("/console/config.json")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers["content-type"], "application/json")
        self.assertEqual(r.headers["cache-control"], "no-store")
        self.assertIn("content-security-policy", r.headers)
        self.assertEqual(r.json, {"meta_signin": None})

    def test_redirect_unknown_and_methods(self):
        r = self.get("/console")
        self.assertEqual(r.status, 301)
        self.assertEqual(r.headers["location"], "/console/")
        self.assertEqual(self.get("/console/nope.js").status, 404)
        self.assertEqual(self.get("/console/embed.cmake").status, 404)
        self.assertEqual(self.get("/consoles").status, 404)
        r = self.gw.http("POST", "/console/", body=b"x")
        self.assertEqual(r.status, 405)
        self.assertEqual(r.headers["allow"], "GET")
        text = self.gw.http("GET", "/metrics").body.decode()
        self.assertRegex(text, r'switchboard_http_requests_total\{route="/console/",status="200"\} [1-9]')


@unittest.skipUnless(NODE and os.access(CHROMIUM, os.X_OK),
                     "needs node and %s (scripts/deps.sh test installs them)" % CHROMIUM)
class ConsoleBrowserTest(unittest.TestCase):
    result = None

    @classmethod
    def setUpClass(cls):
        ensure_node_modules()
        cls.redis = harness.RedisServer().start()
        cls.addClassCleanup(cls.redis.cleanup)
        cls.telegram = ConsoleTelegram().start()
        cls.addClassCleanup(cls.telegram.stop)
        cls.graph = ConsoleGraph().start()
        cls.addClassCleanup(cls.graph.stop)
        # WhatsApp's real 24-hour window (the harness widens it for old fixture times).
        cls.gw = harness.Gateway(cls.redis, cls.telegram, cls.graph,
                                 extra_env={"SWITCHBOARD_API_RATE_LIMIT_PER_MINUTE": "100000",
                                            "SWITCHBOARD_OUTBOUND_WHATSAPP_WINDOW_MS": "86400000"})
        cls.addClassCleanup(cls.gw.cleanup)
        cls.addClassCleanup(lambda: cls.gw.stop() if cls.gw.running() else None)
        cls.gw.start()
        cls.key = cls.gw.keys_create("org_console")
        srv = serve_control(Control(cls))
        cls.addClassCleanup(srv.server_close)
        cls.addClassCleanup(srv.shutdown)
        shots = os.environ.get("SB_SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="sb-console-shots-")
        os.makedirs(shots, exist_ok=True)
        summary = os.path.join(tempfile.mkdtemp(prefix="sb-console-"), "summary.json")
        env = dict(os.environ, SB_URL="http://127.0.0.1:%d" % cls.gw.port, SB_KEY=cls.key,
                   SB_CONTROL="http://127.0.0.1:%d" % srv.server_address[1],
                   SB_SCREENSHOT_DIR=shots, SB_SUMMARY=summary, SB_CHROMIUM=CHROMIUM)
        p = subprocess.run([NODE, os.path.join(HERE, "console.mjs")], env=env, cwd=HERE,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=400)
        out = p.stdout.decode("utf-8", "replace")
        sys.stderr.write(out)
        sys.stderr.write("screenshots: %s\n" % shots)
        summary_js = {}
        if os.path.exists(summary):
            with open(summary, encoding="utf-8") as f:
                summary_js = json.load(f)
            shutil.rmtree(os.path.dirname(summary), ignore_errors=True)
        cls.result = {"rc": p.returncode, "out": out, "summary": summary_js}

    def test_console(self):
        """Connections, assistants and channels, contacts (XSS), dead letters, no key in URLs."""
        r = self.result
        self.assertEqual(r["rc"], 0, "the browser script failed:\n" + r["out"][-6000:])
        s = r["summary"]
        for step in ("signin", "telegram_create", "rename", "inactive_after_test", "update_token",
                     "assistant_bind", "meta_setup", "xss_contact", "dead_letter_retry", "assistant_429",
                     "disconnect", "no_key_in_urls"):
            self.assertIn(step, s.get("passed", []), "step %s did not pass: %r" % (step, s))
        self.assertGreater(s.get("requests", 0), 20, "the console made too few requests: %r" % s)

    def test_inbox(self):
        """Live conversations, unread badge, image, replies, hand-off, WhatsApp templates."""
        s = self.result["summary"]
        self.assertEqual(self.result["rc"], 0, self.result["out"][-6000:])
        for step in ("inbox_live", "inbox_unread", "inbox_image", "inbox_reply_text",
                     "inbox_reply_file", "inbox_handoff", "inbox_template"):
            self.assertIn(step, s.get("passed", []), "step %s did not pass: %r" % (step, s))

    def test_zz_gateway_clean(self):
        """The gateway exits cleanly, with no sanitizer report."""
        self.gw.stop()
        self.gw.assert_no_sanitizer_report()


if __name__ == "__main__":
    unittest.main(verbosity=2)

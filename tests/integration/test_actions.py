"""
Connections of kind "action" (contract section 9) against fakes on loopback: a plain API
that needs a key (in a header, as a Bearer token or a query parameter), an MCP server that
answers the discovery call and one that only knows the older `initialize` handshake, and a
provider that exists only as a test fixture (tests/fixtures/providers/fixture_echo.c, in
the switchboard_fixtures build): created, tested before and after saving, renamed,
updated and deleted through the API, masked, and no secret in any answer, log or Redis
value.
"""

import json
import os
import random
import string
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402


def _rand(n):
    return "".join(random.SystemRandom().choice(string.ascii_letters + string.digits)
                   for _ in range(n))


class FakeServices(H.JsonFake):
    """One loopback HTTP server for the action fakes:
    /api/...        a plain API: 200 {"ok": true} when the key is where the test said, else 401
    /mcp/new        an MCP server that answers server/discover (then tools/list)
    /mcp/old        an MCP server that only knows initialize (then tools/list)
    /echo/whoami    the fixture provider's check (X-Echo-Token)
    Every request is recorded with its headers."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []
        self.api_key = None
        self.api_header = "Authorization"  # or a header name, or "query:<name>"
        self.mcp_key = None
        self.mcp_sessions = set()
        self.echo_token = None
        super().__init__()

    def respond(self, h, body):
        with self.lock:
            self.requests.append({"method": h.command, "path": h.path,
                                  "headers": dict(h.headers.items()), "body": body})
        status, answer, ctype, *extra = self.answer(h, body)
        return status, answer, dict({"Content-Type": ctype}, **(extra[0] if extra else {}))

    def recorded(self, prefix):
        with self.lock:
            return [r for r in self.requests if r["path"].startswith(prefix)]

    def clear(self):
        with self.lock:
            self.requests.clear()

    def answer(self, h, body):
        path = h.path
        if path.startswith("/api"):
            hdr = self.api_header
            if hdr.startswith("query:"):
                ok = ("%s=%s" % (hdr[6:], self.api_key)) in path
            elif hdr == "Authorization":
                ok = h.headers.get("Authorization") == "Bearer %s" % self.api_key
            else:
                ok = h.headers.get(hdr) == self.api_key
            if not ok:
                return 401, {"error": "bad key"}, "application/json"
            if path.startswith("/api/v1/redirect"):
                return 302, {"moved": True}, "application/json"
            if path.startswith("/api/v1/big"):
                return 200, b"x" * 9000, "text/plain"
            if path.startswith("/api/v1/echo"):
                return 200, {"headers": dict(h.headers.items()), "path": path,
                             "body": body.decode("utf-8", "replace")}, "application/json", {
                    "X-Request-Id": "req-42", "Connection": "keep-alive, X-Hop",
                    "X-Hop": "drop-me", "Keep-Alive": "timeout=5",
                    "X-Echo-Key": "key=%s" % self.api_key}
            if path.startswith("/api/v1/binary"):
                return 200, bytes(range(256)), "application/octet-stream"
            return 200, {"ok": True}, "application/json"
        if path.startswith("/echo/whoami"):
            if h.headers.get("X-Echo-Token") != self.echo_token:
                return 403, {"error": "no"}, "application/json"
            return 200, {"name": "echo account"}, "application/json"
        if path.startswith("/mcp/"):
            if h.headers.get("X-Mcp-Key") != self.mcp_key:
                return 401, {"error": "unauthorized"}, "application/json"
            msg = json.loads(body or b"{}")
            method = msg.get("method")
            old = path.startswith("/mcp/old")
            if "id" not in msg:
                return 202, b"", "application/json"
            if method == "server/discover" and not old:
                return 200, {"jsonrpc": "2.0", "id": msg["id"], "result": {
                    "serverInfo": {"name": "Demo MCP", "version": "1"}}}, "application/json"
            if method == "server/discover":
                return 200, {"jsonrpc": "2.0", "id": msg["id"], "error": {
                    "code": -32601, "message": "Method not found"}}, "application/json"
            if method == "initialize":
                sid = "sess-" + _rand(16)
                with self.lock:
                    self.mcp_sessions.add(sid)
                return 200, {"jsonrpc": "2.0", "id": msg["id"], "result": {
                    "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                    "serverInfo": {"name": "Old MCP", "version": "0.9"}}}, "application/json", \
                    {"Mcp-Session-Id": sid}
            sid = h.headers.get("Mcp-Session-Id")
            with self.lock:
                known = sid is None or sid in self.mcp_sessions
            if not known:
                return 404, {"jsonrpc": "2.0", "id": msg.get("id"), "error": {
                    "code": -32001, "message": "Session not found"}}, "application/json"
            if method == "tools/list":
                n = 3 if old else 2
                tools = [{"name": "t%d" % i, "inputSchema": {"type": "object"}} for i in range(n)]
                # the older server answers as an event stream
                if old:
                    ev = "event: message\ndata: %s\n\n" % json.dumps(
                        {"jsonrpc": "2.0", "id": msg["id"], "result": {"tools": tools}})
                    return 200, ev.encode(), "text/event-stream"
                return 200, {"jsonrpc": "2.0", "id": msg["id"], "result": {"tools": tools}}, \
                    "application/json"
            return 200, {"jsonrpc": "2.0", "id": msg.get("id"), "error": {
                "code": -32601, "message": "Method not found"}}, "application/json"
        return 404, {"error": "not found"}, "application/json"


class ActionConnectionsTest(H.GatewayTestCase):
    PREFIX = "ts_act:"
    EXTRA_ENV = {"SWITCHBOARD_ACTIONS_MAX_BODY_BYTES": "4096",
                 "SWITCHBOARD_ACTIONS_TIMEOUT_MS": "3000"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.fake = FakeServices().start()
        cls.addClassCleanup(cls.fake.stop)
        cls.secrets = {}

    def setUp(self):
        super().setUp()
        self.fake.clear()

    def secret(self, label):
        s = "%s-%s" % (label.replace(" ", ""), _rand(24))
        self.secrets[label] = s
        return s

    def test_api_key_connection_lifecycle(self):
        key = self.secret("api key one")
        self.fake.api_key = key
        self.fake.api_header = "X-Api-Key"
        creds = {"base_url": self.fake.base + "/api/v1", "api_key": key, "header": "X-Api-Key",
                 "test_path": "/ping"}
        # Test connection before saving: nothing stored
        r = self.api("POST", "/orgs/c/connections/test", {"provider": "api_key", "credentials": creds})
        self.assertStatus(r, 200)
        self.assertEqual(r.json, {"ok": True, "account_hint": "127.0.0.1:%s" %
                                  self.fake.base.rsplit(":", 1)[1]})
        seen = self.fake.recorded("/api/v1/ping")
        self.assertEqual(len(seen), 1)
        self.assertEqual(seen[0]["headers"].get("X-Api-Key"), key)
        r = self.api("GET", "/orgs/c/connections")
        self.assertEqual(r.json, [])
        # a wrong key: ok false with the service's error
        bad = dict(creds, api_key="wrong-" + _rand(20))
        r = self.api("POST", "/orgs/c/connections/test", {"provider": "api_key", "credentials": bad})
        self.assertStatus(r, 200)
        self.assertFalse(r.json["ok"])
        self.assertIn("401", r.json["error"])
        # create refuses credentials the service refuses
        r = self.api("POST", "/orgs/c/connections", {"provider": "api_key", "credentials": bad})
        self.assertStatus(r, 400)
        # bad input
        for c, what in ((dict(creds, base_url="ftp://x"), "base_url"),
                        (dict(creds, base_url="http://u:p@127.0.0.1/"), "base_url"),
                        (dict(creds, test_path="/../etc"), "test_path"),
                        (dict(creds, header="Bad Header"), "header"),
                        (dict(creds, extra="x"), "extra"),
                        ({"base_url": creds["base_url"]}, "api_key")):
            r = self.api("POST", "/orgs/c/connections", {"provider": "api_key", "credentials": c})
            self.assertStatus(r, 400, "bad_request")
            self.assertIn(what, r.json["error"]["message"])
        # create
        r = self.api("POST", "/orgs/c/connections",
                     {"provider": "api_key", "name": "CRM", "credentials": creds})
        self.assertStatus(r, 201)
        conn = r.json
        self.assertEqual(conn["kind"], "action")
        self.assertEqual(conn["provider"], "api_key")
        self.assertEqual(conn["status"], "active")
        self.assertEqual(conn["name"], "CRM")
        self.assertNotIn("webhook_url", conn)
        self.assertEqual(conn["credentials"]["api_key"], "****" + key[-4:])
        self.assertEqual(set(conn["credentials"]), {"base_url", "api_key", "header", "test_path"})
        path = "/orgs/c/connections/" + conn["id"]
        r = self.api("GET", "/orgs/c/connections?provider=api_key")
        self.assertEqual([c["id"] for c in r.json], [conn["id"]])
        # rename
        r = self.api("PATCH", path, {"name": "CRM (prod)"})
        self.assertStatus(r, 200)
        self.assertEqual(r.json["name"], "CRM (prod)")
        # test after saving
        self.fake.clear()
        r = self.api("POST", path + "/test")
        self.assertStatus(r, 200)
        self.assertTrue(r.json["ok"])
        self.assertEqual(len(self.fake.recorded("/api/v1/ping")), 1)
        # the service rotates its key: the test fails, the connection goes inactive
        key2 = self.secret("api key two")
        self.fake.api_key = key2
        r = self.api("POST", path + "/test")
        self.assertFalse(r.json["ok"])
        r = self.api("GET", path)
        self.assertEqual(r.json["status"], "inactive")
        self.assertEqual(r.json["error"]["code"], "token_invalid")
        # update the credentials: tested, active again
        r = self.api("PATCH", path, {"credentials": {"api_key": key2}})
        self.assertStatus(r, 200)
        self.assertEqual(r.json["status"], "active")
        self.assertEqual(r.json["credentials"]["api_key"], "****" + key2[-4:])
        # the key as a query parameter, then as a Bearer token
        self.fake.api_header = "query:key"
        r = self.api("PATCH", path, {"credentials": {"header": "query:key"}})
        self.assertStatus(r, 200)
        self.fake.api_header = "Authorization"
        r = self.api("POST", "/orgs/c/connections/test", {"provider": "api_key", "credentials": {
            "base_url": self.fake.base + "/api", "api_key": key2}})
        self.assertTrue(r.json["ok"], r.json)
        # delete
        r = self.api("DELETE", path)
        self.assertIn(r.status, (200, 204))
        r = self.api("GET", path)
        self.assertStatus(r, 404)

    def test_mcp_discovery_and_the_older_handshake(self):
        key = self.secret("mcp header")
        self.fake.mcp_key = key
        r = self.api("POST", "/orgs/c/connections", {"provider": "mcp", "credentials": {
            "url": self.fake.base + "/mcp/new", "headers": {"X-Mcp-Key": key}}})
        self.assertStatus(r, 201)
        self.assertEqual(r.json["kind"], "action")
        self.assertEqual(r.json["account_hint"], "Demo MCP (2 tools)")
        self.assertEqual(r.json["name"], "Demo MCP (2 tools)")
        self.assertEqual(r.json["credentials"]["headers"], {"X-Mcp-Key": "****" + key[-4:]})
        methods = [json.loads(x["body"]).get("method") for x in self.fake.recorded("/mcp/new")]
        self.assertEqual(methods, ["server/discover", "tools/list"])
        # an action connection has no channel to bind
        asst = self.create_assistant("mcp user")
        r = self.api("POST", "/orgs/c/assistants/%s/channels" % asst["id"],
                     {"connection_id": r.json["id"], "external_id": "x"})
        self.assertStatus(r, 400, "bad_request")
        self.assertIn("action connection", r.json["error"]["message"])
        # the older server: server/discover is unknown, initialize then tools/list
        self.fake.clear()
        r = self.api("POST", "/orgs/c/connections/test", {"provider": "mcp", "credentials": {
            "url": self.fake.base + "/mcp/old", "headers": {"X-Mcp-Key": key}}})
        self.assertStatus(r, 200)
        self.assertEqual(r.json, {"ok": True, "account_hint": "Old MCP (3 tools)"})
        reqs = self.fake.recorded("/mcp/old")
        methods = [json.loads(x["body"]).get("method") for x in reqs]
        self.assertEqual(methods, ["server/discover", "initialize", "notifications/initialized",
                                   "tools/list"])
        self.assertIn("text/event-stream", reqs[0]["headers"].get("Accept", ""))
        # the server refuses the header
        r = self.api("POST", "/orgs/c/connections/test", {"provider": "mcp", "credentials": {
            "url": self.fake.base + "/mcp/old", "headers": {"X-Mcp-Key": "nope"}}})
        self.assertFalse(r.json["ok"])
        # not an MCP server at all
        r = self.api("POST", "/orgs/c/connections/test", {"provider": "mcp", "credentials": {
            "url": self.fake.base + "/nothing"}})
        self.assertFalse(r.json["ok"])
        for c in ({"url": "file:///etc/passwd"}, {"url": self.fake.base, "headers": "x"},
                  {"url": self.fake.base, "headers": {"Bad Name": "x"}},
                  {"url": self.fake.base, "headers": {"X": "a\r\nInjected: 1"}}):
            r = self.api("POST", "/orgs/c/connections", {"provider": "mcp", "credentials": c})
            self.assertStatus(r, 400, "bad_request")

    def test_request_through_an_api_key_connection(self):
        key = self.secret("proxy api key")
        self.fake.api_key = key
        self.fake.api_header = "X-Api-Key"
        r = self.api("POST", "/orgs/c/connections", {"provider": "api_key", "credentials": {
            "base_url": self.fake.base + "/api/v1", "api_key": key, "header": "X-Api-Key"}})
        self.assertStatus(r, 201)
        path = "/orgs/c/connections/%s/request" % r.json["id"]
        r = self.api("POST", path, {"method": "GET", "path": "/items",
                                    "query": {"q": "a b&c", "n": "1"},
                                    "headers": {"X-Trace": "t1"}})
        self.assertStatus(r, 200)
        self.assertEqual(r.json["status"], 200)
        self.assertEqual(json.loads(r.json["body"]), {"ok": True})
        seen = self.fake.recorded("/api/v1/items")
        self.assertEqual(len(seen), 1)
        self.assertEqual(seen[0]["path"], "/api/v1/items?q=a%20b%26c&n=1")
        self.assertEqual(seen[0]["headers"].get("X-Api-Key"), key)
        self.assertEqual(seen[0]["headers"].get("X-Trace"), "t1")
        # a JSON body goes as application/json; the service echoes the key: blanked
        r = self.api("POST", path, {"method": "POST", "path": "/echo", "body": {"a": [1, 2]}})
        self.assertStatus(r, 200)
        self.assertEqual(r.json["status"], 200)
        echoed = json.loads(r.json["body"])
        self.assertEqual(json.loads(echoed["body"]), {"a": [1, 2]})
        self.assertEqual(echoed["headers"].get("Content-Type"), "application/json")
        self.assertNotIn(key, r.body.decode())
        self.assertEqual(echoed["headers"].get("X-Api-Key"), "*" * len(key))
        # bytes that are not text come back in base64
        r = self.api("POST", path, {"method": "GET", "path": "/binary"})
        self.assertEqual(r.json["status"], 200)
        import base64
        self.assertEqual(base64.b64decode(r.json["body_base64"]), bytes(range(256)))
        # a redirect is answered, not followed
        self.fake.clear()
        r = self.api("POST", path, {"method": "GET", "path": "/redirect"})
        self.assertStatus(r, 200)
        self.assertEqual(r.json["status"], 302)
        self.assertEqual(len(self.fake.requests), 1)
        # only under the base URL, and no credentials from the caller
        self.fake.clear()
        for bad in ({"method": "GET", "path": "http://127.0.0.1:1/x"},
                    {"method": "GET", "path": "//127.0.0.1:1/x"},
                    {"method": "GET", "path": "127.0.0.1/x"},
                    {"method": "GET", "path": "/../x"},
                    {"method": "GET", "path": "/a/%2e%2e/b"},
                    {"method": "GET", "path": "/a/.."},
                    {"method": "GET", "path": "/a\\b"},
                    {"method": "GET", "path": "/a?b=1"},
                    {"method": "GET", "path": "/a#b"},
                    {"method": "TRACE", "path": "/a"},
                    {"method": "GET", "path": "/a", "headers": {"Authorization": "Bearer x"}},
                    {"method": "GET", "path": "/a", "headers": {"Host": "evil"}},
                    {"method": "GET", "path": "/a", "headers": {"x-api-key": "other"}},
                    {"method": "GET", "path": "/a", "headers": {"X": "a\r\nB: c"}},
                    {"method": "GET", "path": "/a", "query": {"q": 1}},
                    {"method": "GET", "path": "/a", "extra": 1},
                    {"method": "POST", "path": "/a", "body": "x" * 5000}):
            r = self.api("POST", path, bad)
            self.assertStatus(r, 400, "bad_request")
        self.assertEqual(self.fake.requests, [], "a refused request reached the service")
        # an answer over actions.max_body_bytes
        r = self.api("POST", path, {"method": "GET", "path": "/big"})
        self.assertStatus(r, 502)
        # a channel connection takes no requests; another org's connection is not found
        r = self.api("POST", "/orgs/c/connections/cn_nope/request", {"method": "GET", "path": "/"})
        self.assertStatus(r, 404)
        other = self.gw.keys_create(self.new_org())
        r = self.api("POST", path, {"method": "GET", "path": "/items"}, key=other)
        self.assertStatus(r, 404)

    def test_request_through_an_mcp_connection(self):
        key = self.secret("proxy mcp header")
        self.fake.mcp_key = key
        r = self.api("POST", "/orgs/c/connections", {"provider": "mcp", "credentials": {
            "url": self.fake.base + "/mcp/new", "headers": {"X-Mcp-Key": key}}})
        self.assertStatus(r, 201)
        path = "/orgs/c/connections/%s/request" % r.json["id"]
        self.fake.clear()
        msg = {"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {}}
        r = self.api("POST", path, {"body": msg})
        self.assertStatus(r, 200)
        self.assertEqual(r.json["status"], 200)
        answer = json.loads(r.json["body"])
        self.assertEqual(answer["id"], 7)
        self.assertEqual(len(answer["result"]["tools"]), 2)
        seen = self.fake.recorded("/mcp/new")
        self.assertEqual(len(seen), 1)
        self.assertEqual(json.loads(seen[0]["body"]), msg)
        self.assertEqual(seen[0]["headers"].get("X-Mcp-Key"), key)
        for bad in ({"body": {"id": 1, "method": "x"}}, {"body": "text"},
                    {"body": msg, "path": "/other"}, {"body": msg, "headers": {"A": "b"}},
                    {"body": dict(msg, params={"pad": "x" * 5000})}):
            r = self.api("POST", path, bad)
            self.assertStatus(r, 400, "bad_request")

    def test_request_answers_the_service_headers(self):
        key = self.secret("header echo key")
        self.fake.api_key = key
        self.fake.api_header = "X-Api-Key"
        r = self.api("POST", "/orgs/c/connections", {"provider": "api_key", "credentials": {
            "base_url": self.fake.base + "/api/v1", "api_key": key, "header": "X-Api-Key"}})
        self.assertStatus(r, 201)
        r = self.api("POST", "/orgs/c/connections/%s/request" % r.json["id"],
                     {"method": "GET", "path": "/echo"})
        self.assertStatus(r, 200)
        h = r.json["headers"]
        self.assertEqual(h["x-request-id"], "req-42")
        self.assertEqual(h["content-type"], "application/json")
        # hop-by-hop headers (and those Connection names) and Content-Length are not passed on
        for name in ("connection", "keep-alive", "x-hop", "content-length"):
            self.assertNotIn(name, h)
        # a key the service echoes in a header is blanked like one in the body
        self.assertEqual(h["x-echo-key"], "key=" + "*" * len(key))
        self.assertNotIn(key, r.body.decode())

    def test_mcp_session_goes_back_to_the_server(self):
        key = self.secret("mcp session header")
        self.fake.mcp_key = key
        r = self.api("POST", "/orgs/c/connections", {"provider": "mcp", "credentials": {
            "url": self.fake.base + "/mcp/old", "headers": {"X-Mcp-Key": key}}})
        self.assertStatus(r, 201)
        path = "/orgs/c/connections/%s/request" % r.json["id"]
        self.fake.clear()
        r = self.api("POST", path, {"body": {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                             "params": {}}})
        self.assertStatus(r, 200)
        sid = r.json["headers"].get("mcp-session-id")
        self.assertTrue(sid and sid.startswith("sess-"), r.json)
        msg = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
        r = self.api("POST", path, {"body": msg, "headers": {"Mcp-Session-Id": sid}})
        self.assertStatus(r, 200)
        self.assertEqual(r.json["status"], 200)
        seen = self.fake.recorded("/mcp/old")
        self.assertEqual(len(seen), 2)
        self.assertNotIn("Mcp-Session-Id", seen[0]["headers"])
        self.assertEqual(seen[1]["headers"].get("Mcp-Session-Id"), sid)
        # a session the server does not know: its 404 is answered
        r = self.api("POST", path, {"body": msg, "headers": {"mcp-session-id": "sess-gone"}})
        self.assertStatus(r, 200)
        self.assertEqual(r.json["status"], 404)
        for bad in ({"mcp-session-id": ""}, {"Mcp-Session-Id": "a b"},
                    {"Mcp-Session-Id": "x" * 300}, {"Mcp-Session-Id": 5}, "sess"):
            r = self.api("POST", path, {"body": msg, "headers": bad})
            self.assertStatus(r, 400, "bad_request")

    def test_unknown_provider_lists_the_registry(self):
        r = self.api("POST", "/orgs/c/connections", {"provider": "nope", "credentials": {}})
        self.assertStatus(r, 400, "bad_request")
        for name in ("whatsapp", "messenger", "instagram", "telegram", "api_key", "mcp"):
            self.assertIn(name, r.json["error"]["message"])
        self.assertNotIn("fixture_echo", r.json["error"]["message"])

    def test_fixture_provider_is_one_file(self):
        binary = os.environ.get("SB_FIXTURE_BINARY")
        if not binary:
            self.skipTest("SB_FIXTURE_BINARY is not set (the switchboard_fixtures build)")
        gw = self.make_gateway(extra_env=dict(self.DEFAULT_ENV), prefix="ts_actfx:", start=False)
        gw.binary = binary
        gw.start()
        key = gw.keys_create(self.org)
        token = self.secret("echo token")
        self.fake.echo_token = token
        creds = {"base_url": self.fake.base + "/echo", "token": token}
        r = self.api("POST", "/orgs/c/connections", {"provider": "fixture_echo",
                                                     "credentials": creds}, key=key, gw=gw)
        self.assertStatus(r, 201)
        self.assertEqual(r.json["account_hint"], "echo account")
        self.assertEqual(r.json["kind"], "action")
        self.assertEqual(r.json["credentials"]["token"], "****" + token[-4:])
        seen = self.fake.recorded("/echo/whoami")
        self.assertEqual(len(seen), 1)
        self.assertEqual(seen[0]["headers"].get("X-Echo-Token"), token)
        r = self.api("GET", "/orgs/c/connections?provider=fixture_echo", key=key, gw=gw)
        self.assertEqual(len(r.json), 1)
        r = self.api("POST", "/orgs/c/connections/%s/test" % r.json[0]["id"], key=key, gw=gw)
        self.assertEqual(r.json, {"ok": True, "account_hint": "echo account"})
        self.fake.echo_token = "changed"
        r = self.api("POST", "/orgs/c/connections/test", {"provider": "fixture_echo",
                                                          "credentials": creds}, key=key, gw=gw)
        self.assertFalse(r.json["ok"])
        gw.stop()
        gw.assert_no_sanitizer_report()
        self.check_no_secret(gw)

    def check_no_secret(self, gw):
        logs = gw.stderr_text().encode("utf-8", "replace")
        with open(gw.stdout_path, "rb") as f:
            logs += f.read()
        for resp in gw.responses:
            blob = resp.body + "\n".join("%s: %s" % kv for kv in resp.headers.items()).encode()
            for label, s in self.secrets.items():
                self.assertNotIn(s.encode(), blob, "%s in an answer" % label)
        for label, s in self.secrets.items():
            for form in H.encoded_forms(s):
                self.assertNotIn(form, logs, "%s in the logs" % label)

    def test_zz_no_secret_anywhere(self):
        # runs last (name order): everything the other tests did is in the answers and logs
        if len(self.secrets) < 2:
            self.skipTest("run with the other tests of the class")
        dump = self.redis.dump_all_values()
        for label, s in self.secrets.items():
            for form in H.encoded_forms(s):
                for k, v in dump.items():
                    self.assertNotIn(form, v, "%s in Redis key %r" % (label, k))
        self.gw.stop()
        self.gw.assert_no_sanitizer_report()
        self.check_no_secret(self.gw)


if __name__ == "__main__":
    H.main()

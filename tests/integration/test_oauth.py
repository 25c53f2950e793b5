"""
OAuth 2.0 sign-in connections (contract section 9) against a fake authorization server on
loopback: the authorize redirect, the code exchange with PKCE S256 and a one-use state,
tokens refreshed ahead of expiry and after a 401 (rotating refresh tokens stored before
use, an answer without a new refresh token keeping the old one, a 500 retried), two
gateways refreshing one expired connection with a single refresh call, a revoked refresh
token making the connection inactive with "reconnect needed" and a reconnect making it
active again; no token or client secret in any answer, log or Redis value.
"""

import base64
import hashlib
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402


class FakeOAuth(H.JsonFake):
    """An authorization server and the API it protects:
    GET  /authorize  302 to redirect_uri?code&state (checks client, S256 challenge)
    POST /token      authorization_code (PKCE checked) and refresh_token grants; rotates
                     refresh tokens (unless rotate is False); the old one is then invalid_grant
    GET  /api/me     200 with a current access token, else 401"""

    def __init__(self):
        self.lock = threading.Lock()
        self.client_id = "client-" + H_rand(8)
        self.client_secret = "csecret-" + H_rand(24)
        self.codes = {}        # code -> (challenge, redirect_uri)
        self.access = {}       # access token -> expiry (monotonic)
        self.refresh_ok = set()
        self.issued = []       # every token handed out (for the secret checks)
        self.refresh_calls = 0
        self.token_calls = 0
        self.fail_next = 0     # answer this many token requests with a 500
        self.refresh_delay = 0.0
        self.rotate = True
        self.expires_in = 3600
        self.intercom_secret = "icsecret-" + H_rand(24)
        self.issued.append(self.intercom_secret)
        super().__init__()

    def _issue(self, prefix):
        t = "%s-%s" % (prefix, H_rand(28))
        self.issued.append(t)
        return t

    def tokens(self):
        with self.lock:
            access = self._issue("at")
            self.access[access] = time.monotonic() + self.expires_in
            answer = {"access_token": access, "token_type": "Bearer",
                      "expires_in": self.expires_in}
            return answer

    def expire_access_tokens(self):
        with self.lock:
            self.access.clear()

    def revoke(self):
        with self.lock:
            self.refresh_ok.clear()

    def answer(self, h, body):
        url = urllib.parse.urlsplit(h.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/authorize":
            if (q.get("client_id") != self.client_id or q.get("response_type") != "code" or
                    q.get("code_challenge_method") != "S256" or not q.get("state") or
                    not q.get("code_challenge")):
                return 400, {"error": "invalid_request"}, {}
            code = "code-" + H_rand(16)
            with self.lock:
                self.codes[code] = (q["code_challenge"], q["redirect_uri"])
            loc = "%s?%s" % (q["redirect_uri"], urllib.parse.urlencode(
                {"code": code, "state": q["state"]}))
            return 302, {}, {"Location": loc}
        if url.path == "/token":
            f = dict(urllib.parse.parse_qsl(body.decode()))
            with self.lock:
                self.token_calls += 1
                if f.get("grant_type") == "refresh_token":
                    self.refresh_calls += 1
                fail = self.fail_next > 0
                if fail:
                    self.fail_next -= 1
            if fail:
                return 500, {"error": "temporarily_unavailable"}, {}
            if f.get("client_id") != self.client_id or f.get("client_secret") != self.client_secret:
                return 401, {"error": "invalid_client"}, {}
            if f.get("grant_type") == "authorization_code":
                with self.lock:
                    c = self.codes.pop(f.get("code"), None)
                if c is None or c[1] != f.get("redirect_uri"):
                    return 400, {"error": "invalid_grant"}, {}
                digest = hashlib.sha256(f.get("code_verifier", "").encode()).digest()
                if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != c[0]:
                    return 400, {"error": "invalid_grant", "error_description": "PKCE"}, {}
                answer = self.tokens()
                with self.lock:
                    answer["refresh_token"] = self._issue("rt")
                    self.refresh_ok.add(answer["refresh_token"])
                return 200, answer, {}
            if f.get("grant_type") == "refresh_token":
                time.sleep(self.refresh_delay)
                with self.lock:
                    ok = f.get("refresh_token") in self.refresh_ok
                if not ok:
                    return 400, {"error": "invalid_grant"}, {}
                answer = self.tokens()
                if self.rotate:
                    with self.lock:
                        self.refresh_ok.discard(f["refresh_token"])
                        answer["refresh_token"] = self._issue("rt")
                        self.refresh_ok.add(answer["refresh_token"])
                return 200, answer, {}
            return 400, {"error": "unsupported_grant_type"}, {}
        if url.path == "/intercom/oauth":
            if q.get("client_id") != "ic-client" or not q.get("state"):
                return 400, {"error": "invalid_request"}, {}
            code = "iccode-" + H_rand(16)
            with self.lock:
                self.codes[code] = (None, q["redirect_uri"])
            loc = "%s?%s" % (q["redirect_uri"], urllib.parse.urlencode(
                {"code": code, "state": q["state"]}))
            return 302, {}, {"Location": loc}
        if url.path == "/intercom/auth/eagle/token":
            f = dict(urllib.parse.parse_qsl(body.decode()))
            with self.lock:
                c = self.codes.pop(f.get("code"), None)
            if c is None or f.get("client_id") != "ic-client" or \
                    f.get("client_secret") != self.intercom_secret:
                return 400, {"error": "invalid_grant"}, {}
            with self.lock:
                t = self._issue("ict")
                self.access[t] = time.monotonic() + 10 ** 9
            return 200, {"token": t, "access_token": t, "token_type": "Bearer"}, {}
        if url.path == "/intercom/me":
            auth = h.headers.get("Authorization", "")
            with self.lock:
                ok = auth[7:] in self.access and auth[7:].startswith("ict-")
            if not ok:
                return 401, {"type": "error.list"}, {}
            return 200, {"type": "admin", "name": "Ada", "app": {"name": "Acme Workspace"}}, {}
        if url.path.startswith("/api/"):
            auth = h.headers.get("Authorization", "")
            with self.lock:
                exp = self.access.get(auth[7:]) if auth.startswith("Bearer ") else None
            if exp is None or exp < time.monotonic():
                return 401, {"error": "invalid_token"}, {}
            return 200, {"name": "Ada", "path": url.path}, {}
        return 404, {"error": "not found"}, {}


def H_rand(n):
    import random
    import string
    return "".join(random.SystemRandom().choice(string.ascii_letters + string.digits)
                   for _ in range(n))


class OAuthTest(H.GatewayTestCase):
    PREFIX = "ts_oauth:"

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeOAuth().start()
        cls.EXTRA_ENV = {"SWITCHBOARD_INTERCOM_OAUTH_BASE": cls.fake.base + "/intercom",
                         "SWITCHBOARD_INTERCOM_API_BASE": cls.fake.base + "/intercom",
                         "SWITCHBOARD_INTERCOM_CLIENT_ID": "ic-client",
                         "SWITCHBOARD_INTERCOM_CLIENT_SECRET": cls.fake.intercom_secret}
        try:
            super().setUpClass()
        finally:
            cls.addClassCleanup(cls.fake.stop)

    def create(self, gw=None):
        f = self.fake
        r = self.api("POST", "/orgs/c/connections", {"provider": "oauth2", "name": "CRM",
                                                     "credentials": {
            "client_id": f.client_id, "client_secret": f.client_secret,
            "authorize_url": f.base + "/authorize", "token_url": f.base + "/token",
            "scopes": "read write", "base_url": f.base + "/api", "test_path": "/me",
            "authorize_params": {"prompt": "consent"}}}, gw=gw)
        self.assertStatus(r, 201)
        return r.json

    def sign_in(self, conn_id, gw=None):
        gw = gw or self.gw
        r = self.api("POST", "/orgs/c/connections/%s/authorize" % conn_id, gw=gw)
        self.assertStatus(r, 200)
        url = urllib.parse.urlsplit(r.json["authorize_url"])
        q = dict(urllib.parse.parse_qsl(url.query))
        self.assertEqual(q["redirect_uri"], H.PUBLIC_URL + "/oauth/callback")
        self.assertEqual(q["code_challenge_method"], "S256")
        self.assertEqual(q["scope"], "read write")
        self.assertEqual(q["prompt"], "consent")
        self.assertNotIn("code_verifier", q)
        # the browser at the provider: a redirect back to the gateway
        c = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        c.request("GET", url.path + "?" + url.query)
        res = c.getresponse()
        res.read()
        c.close()
        self.assertEqual(res.status, 302)
        back = urllib.parse.urlsplit(res.getheader("Location"))
        r = gw.http("GET", "/oauth/callback?" + back.query)
        self.assertEqual(r.status, 302, r)
        self.assertEqual(r.headers.get("location") or r.headers.get("Location"),
                         "/console/#/connections")
        return back.query

    def get(self, conn_id, gw=None):
        r = self.api("GET", "/orgs/c/connections/" + conn_id, gw=gw)
        self.assertStatus(r, 200)
        return r.json

    def test_sign_in_refresh_and_reconnect(self):
        f = self.fake
        conn = self.create()
        self.assertEqual(conn["kind"], "action")
        self.assertEqual(conn["status"], "inactive")
        self.assertEqual(conn["error"]["code"], "reconnect_needed")
        self.assertEqual(conn["credentials"]["client_secret"], "****" + f.client_secret[-4:])
        for k in ("access_token", "refresh_token", "expires_at"):
            self.assertNotIn(k, conn["credentials"])
        cid = conn["id"]
        r = self.api("POST", "/orgs/c/connections/%s/test" % cid)
        self.assertFalse(r.json["ok"])
        # tokens are never input
        r = self.api("PATCH", "/orgs/c/connections/" + cid,
                     {"credentials": {"access_token": "x" * 20}})
        self.assertStatus(r, 400, "bad_request")

        query = self.sign_in(cid)
        # the state is spent
        r = self.gw.http("GET", "/oauth/callback?" + query)
        self.assertEqual(r.status, 400, r)
        r = self.gw.http("GET", "/oauth/callback?code=x&state=" + "A" * 32)
        self.assertEqual(r.status, 400, r)
        r = self.gw.http("GET", "/oauth/callback?error=access_denied&state=" + "A" * 32)
        self.assertEqual(r.status, 400, r)
        conn = self.get(cid)
        self.assertEqual(conn["status"], "active")
        self.assertNotIn("error", conn)
        r = self.api("POST", "/orgs/c/connections/%s/test" % cid)
        self.assertEqual(r.json, {"ok": True, "account_hint": f.base[7:]})
        self.assertEqual(f.refresh_calls, 0)

        # the provider expired the token early: the proxy's 401 refreshes once, then succeeds
        f.expire_access_tokens()
        r = self.api("POST", "/orgs/c/connections/%s/request" % cid,
                     {"method": "GET", "path": "/me"})
        self.assertStatus(r, 200)
        self.assertEqual(r.json["status"], 200)
        self.assertEqual(json.loads(r.json["body"])["name"], "Ada")
        self.assertEqual(f.refresh_calls, 1)
        # the rotated refresh token was stored: the next refresh uses it
        f.expire_access_tokens()
        r = self.api("POST", "/orgs/c/connections/%s/test" % cid)
        self.assertTrue(r.json["ok"], r.json)
        self.assertEqual(f.refresh_calls, 2)

        # ahead of expiry: a token that expires within the minute is renewed before use
        f.expires_in = 30
        f.expire_access_tokens()
        r = self.api("POST", "/orgs/c/connections/%s/test" % cid)
        self.assertTrue(r.json["ok"])
        self.assertEqual(f.refresh_calls, 3)
        f.expires_in = 3600
        r = self.api("POST", "/orgs/c/connections/%s/test" % cid)
        self.assertTrue(r.json["ok"])
        self.assertEqual(f.refresh_calls, 4, "the 30-second token was not renewed ahead")
        r = self.api("POST", "/orgs/c/connections/%s/test" % cid)
        self.assertEqual(f.refresh_calls, 4)

        # an answer without a new refresh token keeps the old one
        f.rotate = False
        f.expire_access_tokens()
        r = self.api("POST", "/orgs/c/connections/%s/test" % cid)
        self.assertTrue(r.json["ok"])
        f.expire_access_tokens()
        r = self.api("POST", "/orgs/c/connections/%s/test" % cid)
        self.assertTrue(r.json["ok"])
        self.assertEqual(f.refresh_calls, 6)
        f.rotate = True

        # a 500 is retried
        f.fail_next = 1
        f.expire_access_tokens()
        calls = f.token_calls
        r = self.api("POST", "/orgs/c/connections/%s/test" % cid)
        self.assertTrue(r.json["ok"], r.json)
        self.assertEqual(f.token_calls, calls + 2)

        # revoked: inactive, "reconnect needed"; a reconnect makes it active again
        f.revoke()
        f.expire_access_tokens()
        r = self.api("POST", "/orgs/c/connections/%s/test" % cid)
        self.assertFalse(r.json["ok"])
        self.assertEqual(r.json["error"], "reconnect needed")
        conn = self.get(cid)
        self.assertEqual(conn["status"], "inactive")
        self.assertEqual(conn["error"]["code"], "reconnect_needed")
        self.assertEqual(conn["error"]["message"], "reconnect needed")
        r = self.api("POST", "/orgs/c/connections/%s/request" % cid,
                     {"method": "GET", "path": "/me"})
        self.assertStatus(r, 400)
        self.sign_in(cid)
        conn = self.get(cid)
        self.assertEqual(conn["status"], "active")
        r = self.api("POST", "/orgs/c/connections/%s/test" % cid)
        self.assertTrue(r.json["ok"])
        # another org cannot sign this connection in
        other = self.gw.keys_create(self.new_org())
        r = self.api("POST", "/orgs/c/connections/%s/authorize" % cid, key=other)
        self.assertStatus(r, 404)
        # only OAuth connections sign in
        r = self.api("POST", "/orgs/c/connections", {"provider": "api_key", "credentials": {
            "base_url": f.base + "/api", "api_key": "k" * 16}})
        self.assertStatus(r, 201)
        r = self.api("POST", "/orgs/c/connections/%s/authorize" % r.json["id"])
        self.assertStatus(r, 400, "bad_request")

    def test_intercom_preset(self):
        r = self.api("POST", "/orgs/c/connections", {"provider": "intercom", "credentials": {}})
        self.assertStatus(r, 201)
        conn = r.json
        self.assertEqual(conn["status"], "inactive")
        self.assertEqual(conn["credentials"], {})
        r = self.api("POST", "/orgs/c/connections", {"provider": "intercom",
                                                     "credentials": {"client_id": "x"}})
        self.assertStatus(r, 400, "bad_request")
        r = self.api("POST", "/orgs/c/connections/%s/authorize" % conn["id"])
        self.assertStatus(r, 200)
        url = urllib.parse.urlsplit(r.json["authorize_url"])
        self.assertEqual(url.path, "/intercom/oauth")
        c = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        c.request("GET", url.path + "?" + url.query)
        res = c.getresponse()
        res.read()
        c.close()
        back = urllib.parse.urlsplit(res.getheader("Location"))
        r = self.gw.http("GET", "/oauth/callback?" + back.query)
        self.assertEqual(r.status, 302, r)
        r = self.api("POST", "/orgs/c/connections/%s/test" % conn["id"])
        self.assertEqual(r.json, {"ok": True, "account_hint": "Acme Workspace"})
        conn = self.get(conn["id"])
        self.assertEqual(conn["status"], "active")
        self.assertEqual(conn["account_hint"], "Acme Workspace")
        r = self.api("POST", "/orgs/c/connections/%s/request" % conn["id"],
                     {"method": "GET", "path": "/me"})
        self.assertEqual(r.json["status"], 200)
        self.assertIn("Acme Workspace", r.json["body"])

    def test_two_gateways_make_one_refresh(self):
        f = self.fake
        gw2 = self.make_gateway(extra_env=dict(self.DEFAULT_ENV))
        conn = self.create()
        self.sign_in(conn["id"])
        f.expire_access_tokens()
        f.expires_in = 30  # due at once: both gateways want to renew it
        before = f.refresh_calls
        f.refresh_delay = 0.5
        results = {}

        def test(name, gw):
            results[name] = self.api("POST", "/orgs/c/connections/%s/test" % conn["id"], gw=gw)

        try:
            threads = [threading.Thread(target=test, args=(n, g))
                       for n, g in (("a", self.gw), ("b", gw2))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
        finally:
            f.refresh_delay = 0.0
            f.expires_in = 3600
        self.assertTrue(results["a"].json["ok"], results["a"].json)
        self.assertTrue(results["b"].json["ok"], results["b"].json)
        self.assertEqual(f.refresh_calls - before, 1, "two refreshes of one connection")
        gw2.stop()
        gw2.assert_no_sanitizer_report()
        self.check_no_secret(gw2)

    def check_no_secret(self, gw):
        secrets = [self.fake.client_secret] + list(self.fake.issued)
        logs = gw.stderr_text().encode("utf-8", "replace")
        with open(gw.stdout_path, "rb") as fh:
            logs += fh.read()
        for resp in gw.responses:
            blob = resp.body + "\n".join("%s: %s" % kv for kv in resp.headers.items()).encode()
            for s in secrets:
                self.assertNotIn(s.encode(), blob, "a secret in an answer to %s" % resp.path)
        for s in secrets:
            for form in H.encoded_forms(s):
                self.assertNotIn(form, logs, "a secret in the logs")

    def test_zz_no_secret_anywhere(self):
        if not self.fake.issued:
            self.skipTest("run with the other tests of the class")
        dump = self.redis.dump_all_values()
        for s in [self.fake.client_secret] + list(self.fake.issued):
            for form in H.encoded_forms(s):
                for k, v in dump.items():
                    self.assertNotIn(form, v, "a secret in Redis key %r" % k)
        self.gw.stop()
        self.gw.assert_no_sanitizer_report()
        self.check_no_secret(self.gw)


if __name__ == "__main__":
    H.main()

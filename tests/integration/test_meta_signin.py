"""
Meta sign-in for channels (contract section 9): POST /orgs/c/connections/meta against a fake
Graph API on loopback that serves the code exchange, the long-lived token, the businesses,
their WhatsApp business accounts and phone numbers, the Pages with their Instagram accounts,
the subscribed_apps calls and the number registration. Success creates the WhatsApp,
Messenger and Instagram connections and makes the subscriptions and the registration of the
unregistered number; a second sign-in updates the same connections; a Graph error at each
step answers with Meta's code, subcode and fbtrace_id and counts the step's metric; a
gateway without the configuration answers meta_signin_not_configured; no token, code or
app secret appears in any answer or log line. The webhook overrides: the fake verifies each
override's URL with Meta's GET handshake against the gateway before it accepts it (a number
of a business account with several numbers by the number's override, the only number of an
account by the account's); Pages answer the app's callback URL; without a public URL no
override is set. Webhooks of the app's callback URL are routed by entry: each Page's or
Instagram account's events reach its own connection once, never a pasted connection or another
app's; at another org's URL they reach the org that signed the account in through the app. A
connection of Instagram Login sends through the fake Instagram API.
"""

import hashlib
import hmac
import json
import os
import sys
import threading
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

APP_ID = "4242424242"
APP_SECRET = "appsecret-" + "S3cr3tV4lu3" * 2
OTHER_APP_SECRET = "otherapp-" + "S3cr3tV4lu3" * 2
CONFIG_ID = "777000111"


class FakeMetaGraph(H.JsonFake):
    """The Graph calls of the sign-in. Every code handed out by new_code() exchanges once
    for a short-lived token, which exchanges for a long-lived one."""

    BASE_PATH = "/v21.0"

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = []        # (method, path, query dict, body)
        self.codes = set()
        self.short = set()
        self.long = set()
        self.issued = []
        self.fail = {}         # path prefix -> (status, error object)
        self.reject_short = False
        self.second_ig = False   # the second Page has an Instagram account too
        self.only_pages = None   # the Page ids /me/accounts answers (None: all)
        self.pasted = {}         # access token -> (id, name): GET /me of a pasted connection
        self.page_token = "pagetok-" + H_rand(24)
        self.issued.append(self.page_token)
        # webhook overrides: the gateway's address behind harness.PUBLIC_URL, each
        # override set (path -> (body, verified)), the paths whose verification Meta
        # sends with a wrong verify token
        self.gateway_base = None
        self.overrides = {}
        self.tamper = set()
        super().__init__()

    def new_code(self):
        c = "code-" + H_rand(20)
        with self.lock:
            self.codes.add(c)
            self.issued.append(c)
        return c

    def _token(self, kind):
        t = "%s-%s" % (kind, H_rand(28))
        self.issued.append(t)
        return t

    def requests(self, method, path):
        with self.lock:
            return [c for c in self.calls if c[0] == method and c[1] == path]

    def answer(self, h, body):
        url = urllib.parse.urlsplit(h.path)
        path = url.path[len("/v21.0"):]
        q = dict(urllib.parse.parse_qsl(url.query))
        with self.lock:
            self.calls.append((h.command, path, q, body))
            for prefix, (status, err) in self.fail.items():
                if path.startswith(prefix):
                    return status, {"error": err}
        auth = h.headers.get("Authorization", "")
        bearer = auth[7:] if auth.startswith("Bearer ") else None
        bad = {"error": {"message": "Invalid OAuth access token.", "type": "OAuthException",
                         "code": 190, "fbtrace_id": "Atrace190"}}
        if path == "/oauth/access_token":
            if q.get("client_id") != APP_ID or \
                    q.get("client_secret") not in (APP_SECRET, OTHER_APP_SECRET):
                return 400, {"error": {"message": "Error validating client secret.",
                                       "type": "OAuthException", "code": 1,
                                       "fbtrace_id": "Atrace1"}}
            with self.lock:
                if q.get("grant_type") == "fb_exchange_token":
                    if q.get("fb_exchange_token") not in self.short or self.reject_short:
                        return 400, bad
                    t = self._token("longtok")
                    self.long.add(t)
                    return 200, {"access_token": t, "token_type": "bearer",
                                 "expires_in": 5183944}
                if q.get("code") not in self.codes:
                    return 400, {"error": {
                        "message": "This authorization code has been used.",
                        "type": "OAuthException", "code": 100, "error_subcode": 36009,
                        "fbtrace_id": "Atrace36009"}}
                self.codes.discard(q["code"])
                t = self._token("shorttok")
                self.short.add(t)
                return 200, {"access_token": t, "token_type": "bearer"}
        with self.lock:
            user_ok = bearer in self.long
        page_ok = bearer == self.page_token
        if path == "/me/businesses" and user_ok:
            return 200, {"data": [{"id": "5001", "name": "Acme"}]}
        if path == "/6001/phone_numbers" and user_ok:
            return 200, {"data": [
                {"id": "7001", "display_phone_number": "+1 555-010-0001",
                 "verified_name": "Acme Support", "platform_type": "CLOUD_API"},
                {"id": "7002", "display_phone_number": "+1 555-010-0002",
                 "verified_name": "Acme Sales", "platform_type": "NOT_APPLICABLE"}]}
        if path == "/5001/owned_whatsapp_business_accounts" and user_ok:
            return 200, {"data": [{"id": "6001", "name": "Acme WA"},
                                  {"id": "6002", "name": "Acme Billing"}]}
        if path == "/6002/phone_numbers" and user_ok:
            return 200, {"data": [
                {"id": "7003", "display_phone_number": "+1 555-010-0003",
                 "verified_name": "Acme Billing", "platform_type": "CLOUD_API"}]}
        if path in ("/6001/subscribed_apps", "/6002/subscribed_apps") and \
                h.command == "POST" and user_ok:
            if not body:
                return 200, {"success": True}
            # the business account's override: {override_callback_uri, verify_token}
            return self.override(path, body, json.loads(body))
        if path in ("/7001", "/7002", "/7003") and h.command == "POST" and user_ok:
            # the phone number's override: {webhook_configuration: {...}}
            b = json.loads(body or b"{}")
            if sorted(b) != ["webhook_configuration"]:
                return 400, {"error": {"message": "Unsupported post request", "code": 100}}
            return self.override(path, body, b["webhook_configuration"])
        if path == "/7002/register" and h.command == "POST" and user_ok:
            b = json.loads(body or b"{}")
            if b.get("messaging_product") != "whatsapp" or len(b.get("pin", "")) != 6:
                return 400, {"error": {"message": "bad register", "code": 100}}
            return 200, {"success": True}
        if path == "/me/accounts" and user_ok:
            pages = [{"id": "8001", "name": "Acme Page", "access_token": self.page_token,
                      "instagram_business_account": {"id": "9001", "username": "acme.ig"}},
                     {"id": "8002", "name": "Acme Shop", "access_token": self.page_token}]
            if self.second_ig:
                pages[1]["instagram_business_account"] = {"id": "9002",
                                                          "username": "acme.shop"}
            if self.only_pages is not None:
                pages = [p for p in pages if p["id"] in self.only_pages]
            return 200, {"data": pages}
        if path == "/me" and (bearer or q.get("access_token")) in self.pasted:
            pid, name = self.pasted[bearer or q.get("access_token")]
            return 200, {"id": pid, "name": name}
        if path in ("/8001/subscribed_apps", "/8002/subscribed_apps") and \
                h.command == "POST" and page_ok:
            return 200, {"success": True}
        return 401, bad

    def override(self, path, raw, hook):
        """An override as Meta sets it: the URL is verified first, with a GET handshake
        carrying the verify token, and must echo the challenge."""
        if sorted(hook) != ["override_callback_uri", "verify_token"]:
            return 400, {"error": {"message": "Unsupported post request", "code": 100}}
        url, token = hook["override_callback_uri"], hook["verify_token"]
        if path in self.tamper:
            token = "not-" + token
        challenge = H_rand(12)
        verified = False
        if url.startswith(H.PUBLIC_URL + "/") and self.gateway_base:
            q = urllib.parse.urlencode({"hub.mode": "subscribe", "hub.verify_token": token,
                                        "hub.challenge": challenge})
            target = self.gateway_base + url[len(H.PUBLIC_URL):] + "?" + q
            try:
                with urllib.request.urlopen(target, timeout=5) as res:
                    verified = res.status == 200 and res.read().decode() == challenge
            except OSError:
                verified = False
        with self.lock:
            self.overrides[path] = (json.loads(raw), verified)
        if not verified:
            return 400, {"error": {
                "message": "Callback verification failed with the following errors: "
                           "HTTP Status Code = 403",
                "type": "OAuthException", "code": 2200, "fbtrace_id": "Atrace2200"}}
        return 200, {"success": True}


def H_rand(n):
    import random
    import string
    return "".join(random.SystemRandom().choice(string.ascii_letters + string.digits)
                   for _ in range(n))


class MetaSignInTest(H.GatewayTestCase):
    PREFIX = "ts_metasignin:"

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeMetaGraph().start()
        cls.EXTRA_ENV = {"SWITCHBOARD_GRAPH_API_BASE": cls.fake.base,
                         "SWITCHBOARD_META_APP_ID": APP_ID,
                         "SWITCHBOARD_META_APP_SECRET": APP_SECRET,
                         "SWITCHBOARD_META_CONFIG_ID": CONFIG_ID}
        try:
            super().setUpClass()
        finally:
            cls.addClassCleanup(cls.fake.stop)
        cls.fake.gateway_base = "http://127.0.0.1:%d" % cls.gw.port

    def setUp(self):
        super().setUp()
        with self.fake.lock:
            self.fake.fail.clear()
            self.fake.calls.clear()
            self.fake.overrides.clear()
            self.fake.tamper.clear()
            self.fake.second_ig = False
            self.fake.only_pages = None

    def metric(self, result):
        r = self.gw.http("GET", "/metrics")
        return H.metric_sum(H.parse_prometheus(r.body.decode()), "switchboard_meta_signin_total",
                            result=result)

    def sign_in(self, **extra):
        body = {"code": self.fake.new_code()}
        body.update(extra)
        return self.api("POST", "/orgs/c/connections/meta", body)

    def assertNoSecrets(self):
        texts = [r.body.decode("utf-8", "replace") for r in self.gw.responses]
        texts.append(self.gw.stderr_text())
        with self.fake.lock:
            secrets = list(self.fake.issued) + [APP_SECRET]
        for t in texts:
            for s in secrets:
                self.assertNotIn(s, t)

    def test_info_names_the_app(self):
        r = self.api("GET", "/orgs/c/connections/meta")
        self.assertStatus(r, 200)
        self.assertEqual(r.json, {"app_id": APP_ID, "config_id": CONFIG_ID})
        r = self.api("GET", "/orgs/c/connections/meta", key="wrong")
        self.assertStatus(r, 401)

    def test_sign_in_creates_connections_once(self):
        ok_before = self.metric("ok")
        r = self.sign_in(redirect_uri="https://console.example/meta")
        self.assertStatus(r, 201)
        conns = r.json
        by = {(c["provider"], c["account_hint"]): c for c in conns}
        self.assertEqual(sorted(by), [("instagram", "acme.ig"), ("messenger", "Acme Page"),
                                      ("messenger", "Acme Shop"),
                                      ("whatsapp", "+1 555-010-0001"),
                                      ("whatsapp", "+1 555-010-0002"),
                                      ("whatsapp", "+1 555-010-0003")])
        for c in conns:
            self.assertEqual(c["status"], "active")
            self.assertEqual(c["kind"], "channel")
            self.assertEqual(sorted(c["credentials"]), sorted(
                ["app_secret", "verify_token", "access_token"] +
                (["waba_id"] if c["provider"] == "whatsapp" else [])))
            self.assertTrue(all(v.startswith("****") for v in c["credentials"].values()))
            self.assertTrue(c["webhook_url"].endswith("/webhooks/%s/%s" % (c["provider"],
                                                                         c["id"])))
        self.assertEqual(by[("whatsapp", "+1 555-010-0001")]["name"], "Acme Support")
        self.assertEqual(self.metric("ok"), ok_before + 1)
        # the redirect URI went to the code exchange; the subscriptions and the registration
        ex = self.fake.requests("GET", "/oauth/access_token")
        self.assertEqual(ex[0][2].get("redirect_uri"), "https://console.example/meta")
        self.assertEqual(ex[1][2].get("grant_type"), "fb_exchange_token")
        self.assertEqual([c[3] for c in self.fake.requests("POST", "/6001/subscribed_apps")],
                         [b""])
        page_sub = self.fake.requests("POST", "/8001/subscribed_apps")
        self.assertEqual(len(page_sub), 1)
        self.assertIn("messages", page_sub[0][2]["subscribed_fields"].split(","))
        self.assertEqual(len(self.fake.requests("POST", "/7002/register")), 1)
        self.assertEqual(self.fake.requests("POST", "/7001/register"), [])
        # listed like any connection; a test of the Page works with its stored Page token
        r = self.api("GET", "/orgs/c/connections")
        self.assertStatus(r, 200)
        self.assertEqual(sorted(c["id"] for c in r.json), sorted(c["id"] for c in conns))

        # again with a fresh code: the same connections, updated, none added; a rename stays
        wa = by[("whatsapp", "+1 555-010-0001")]
        r = self.api("PATCH", "/orgs/c/connections/" + wa["id"], {"name": "Support line"})
        self.assertStatus(r, 200)
        r = self.sign_in()
        self.assertStatus(r, 201)
        self.assertEqual(sorted(c["id"] for c in r.json), sorted(c["id"] for c in conns))
        again = {c["id"]: c for c in r.json}
        self.assertEqual(again[wa["id"]]["name"], "Support line")
        # a Page keeps its verify token (the app's callback handshake still matches); a
        # number takes the new one, which its override carries to Meta
        page = by[("messenger", "Acme Page")]
        self.assertEqual(again[page["id"]]["credentials"]["verify_token"],
                         page["credentials"]["verify_token"])
        self.assertNotEqual(again[wa["id"]]["credentials"]["verify_token"],
                            wa["credentials"]["verify_token"])
        self.assertTrue(again[wa["id"]]["webhook"]["subscribed"])
        r = self.api("GET", "/orgs/c/connections")
        self.assertEqual(len(r.json), 6)
        self.assertEqual(int(r.headers.get("pagination-count")), 6)
        self.assertNoSecrets()

    def test_graph_error_at_each_step(self):
        steps = [("/oauth/access_token", "exchange_code"),
                 ("/me/businesses", "businesses"),
                 ("/5001/owned_whatsapp_business_accounts", "whatsapp_accounts"),
                 ("/6001/phone_numbers", "phone_numbers"),
                 ("/6001/subscribed_apps", "subscribe_whatsapp"),
                 ("/7002/register", "register_phone"),
                 ("/me/accounts", "pages"),
                 ("/8001/subscribed_apps", "subscribe_page")]
        for path, step in steps:
            with self.subTest(step=step):
                before = self.metric(step)
                with self.fake.lock:
                    self.fake.fail = {path: (400, {
                        "message": "Unsupported request (%s)" % step, "type": "OAuthException",
                        "code": 100, "error_subcode": 33, "fbtrace_id": "Atrace-" + step})}
                r = self.sign_in()
                self.assertStatus(r, 400, "provider_rejected")
                e = r.json["error"]
                self.assertEqual(e["step"], step)
                self.assertIn("Unsupported request (%s)" % step, e["message"])
                self.assertEqual(e["meta"], {"code": 100, "error_subcode": 33,
                                             "type": "OAuthException",
                                             "fbtrace_id": "Atrace-" + step})
                self.assertEqual(self.metric(step), before + 1)
        # the long-lived exchange is the second call to the same path: its token refused
        before = self.metric("long_lived_token")
        with self.fake.lock:
            self.fake.fail = {}
            self.fake.reject_short = True
        try:
            r = self.sign_in()
        finally:
            with self.fake.lock:
                self.fake.reject_short = False
        self.assertStatus(r, 400, "provider_rejected")
        self.assertEqual(r.json["error"]["step"], "long_lived_token")
        self.assertEqual(r.json["error"]["meta"]["code"], 190)
        self.assertEqual(self.metric("long_lived_token"), before + 1)
        # a 5xx is Meta being unavailable (502), with its code too
        with self.fake.lock:
            self.fake.fail = {"/me/accounts": (500, {"message": "Please retry", "code": 2,
                                                     "fbtrace_id": "Atrace2"})}
        r = self.sign_in()
        self.assertStatus(r, 502, "provider_unavailable")
        self.assertEqual(r.json["error"]["meta"]["code"], 2)
        # nothing was half stored: the failed sign-ins created no connection
        r = self.api("GET", "/orgs/c/connections")
        self.assertEqual(r.json, [])
        # and a retry with a fresh code succeeds
        with self.fake.lock:
            self.fake.fail = {}
        r = self.sign_in()
        self.assertStatus(r, 201)
        self.assertEqual(len(r.json), 6)
        self.assertNoSecrets()

    def test_webhooks_point_at_each_connection(self):
        r = self.sign_in()
        self.assertStatus(r, 201)
        by = {c["account_hint"]: c for c in r.json}

        def url(c):
            return "%s/webhooks/%s/%s" % (H.PUBLIC_URL, c["provider"], c["id"])

        # WhatsApp: business account 6001 has two numbers, so each number gets its own
        # override; 6002 has one, so the account's override is enough
        for hint, path, via in (("+1 555-010-0001", "/7001", "phone_number"),
                                ("+1 555-010-0002", "/7002", "phone_number"),
                                ("+1 555-010-0003", "/6002/subscribed_apps",
                                 "whatsapp_business_account")):
            c = by[hint]
            self.assertEqual(c["webhook"], {"url": url(c), "subscribed": True, "via": via})
            self.assertEqual(c["webhook"]["url"], c["webhook_url"])
            body, verified = self.fake.overrides[path]
            hook = body["webhook_configuration"] if via == "phone_number" else body
            self.assertEqual(hook["override_callback_uri"], url(c))
            # Meta's GET handshake with that verify token was answered by the connection
            self.assertTrue(verified, path)
        self.assertEqual(sorted(self.fake.overrides),
                         ["/6002/subscribed_apps", "/7001", "/7002"])
        # Pages and Instagram accounts: the app's callback URL of the channel, the oldest
        # signed-in connection's (here the first Page's), which the operator sets once
        page, shop, ig = by["Acme Page"], by["Acme Shop"], by["acme.ig"]
        for c in (page, shop):
            self.assertEqual(c["webhook"]["url"], url(page))
            self.assertEqual((c["webhook"]["subscribed"], c["webhook"]["via"]), (False, "app"))
            self.assertIsInstance(c["webhook"]["reason"], str)
        self.assertEqual(ig["webhook"]["url"], url(ig))
        # a repeat answers the same app callback URL
        r = self.sign_in()
        again = {c["id"]: c for c in r.json}
        self.assertEqual(again[shop["id"]]["webhook"]["url"], url(page))

        # a number whose verification fails (the handshake is refused: another token) is
        # said in its answer with Meta's error; the others and the connections are there
        with self.fake.lock:
            self.fake.tamper = {"/7002"}
            self.fake.overrides.clear()
        r = self.sign_in()
        self.assertStatus(r, 201)
        w = {c["account_hint"]: c["webhook"] for c in r.json}
        self.assertFalse(self.fake.overrides["/7002"][1])
        self.assertEqual(w["+1 555-010-0002"]["subscribed"], False)
        self.assertEqual(w["+1 555-010-0002"]["via"], "phone_number")
        self.assertIn("Callback verification failed", w["+1 555-010-0002"]["reason"])
        self.assertEqual(w["+1 555-010-0002"]["meta"],
                         {"code": 2200, "type": "OAuthException", "fbtrace_id": "Atrace2200"})
        self.assertTrue(w["+1 555-010-0001"]["subscribed"])
        self.assertTrue(w["+1 555-010-0003"]["subscribed"])
        self.assertNoSecrets()

    # --- routing by entry: the webhooks of the app's callback URL

    def post_meta(self, conn, obj, entries, secret=APP_SECRET, gw=None):
        """A signed Messenger or Instagram body with one text message per (recipient, mid)
        in its own entry, POSTed to the connection's URL; the answer's status."""
        now = int(time.time() * 1000)
        body = {"object": obj, "entry": [
            {"id": rcpt, "time": now, "messaging": [
                {"sender": {"id": "user-" + mid}, "recipient": {"id": rcpt},
                 "timestamp": now, "message": {"mid": mid, "text": "hello " + mid}}]}
            for rcpt, mid in entries]}
        data = json.dumps(body).encode()
        sig = "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()
        r = (gw or self.gw).http("POST", self.webhook_path(conn), body=data,
                                 headers={"Content-Type": "application/json",
                                          "X-Hub-Signature-256": sig})
        return r.status

    def stream(self, key):
        """(message external id, connection id) of every event of a stream."""
        out = []
        for _, fields in self.redis.command("XRANGE", self.PREFIX + key, "-", "+") or []:
            ev = json.loads(dict(zip(fields[::2], fields[1::2]))[b"event"])
            out.append((ev["message"]["external_id"], ev["connection_id"]))
        return out

    def assistants_bound(self, rows):
        """An assistant per (name, connection, external id, API key), bound to that
        connection's external id: {name: its stream key, without the prefix}."""
        out = {}
        for name, conn, ext, key in rows:
            aid = self.create_assistant(name, key=key)["id"]
            self.bind(aid, conn["id"], external_id=ext, key=key)
            out[name] = "in:{%s}" % aid
        return out

    def mids(self, key, prefix):
        return [e for e in self.stream(key) if e[0].startswith(prefix)]

    def test_webhooks_routed_by_entry(self):
        self.fake.second_ig = True
        r = self.sign_in()
        self.assertStatus(r, 201)
        by = {c["account_hint"]: c for c in r.json}
        page, shop, ig1, ig2 = by["Acme Page"], by["Acme Shop"], by["acme.ig"], by["acme.shop"]
        wa1, wa2 = by["+1 555-010-0001"], by["+1 555-010-0002"]
        # the app's callback URL of each channel is its oldest signed-in connection's
        self.assertEqual(shop["webhook"]["url"], page["webhook_url"])
        self.assertEqual(ig2["webhook"]["url"], ig1["webhook_url"])
        # the same Pages signed in by another org
        org_b = self.new_org()
        key_b = self.gw.keys_create(org_b)
        r = self.gw.http("POST", "/orgs/c/connections/meta",
                         body={"code": self.fake.new_code()}, key=key_b)
        self.assertStatus(r, 201)
        b_by = {c["account_hint"]: c for c in r.json}
        b_page, b_shop = b_by["Acme Page"], b_by["Acme Shop"]
        # a pasted connection of another app for the same Page
        token = "pastedtok-" + H_rand(20)
        self.fake.pasted[token] = ("8002", "Acme Shop")
        r = self.api("POST", "/orgs/c/connections", {"provider": "messenger", "credentials": {
            "app_secret": OTHER_APP_SECRET, "verify_token": "vt-" + H_rand(8),
            "access_token": token}})
        self.assertStatus(r, 201)
        pasted = r.json
        asst = self.assistants_bound((("page", page, "8001", self.key),
                                      ("shop", shop, "8002", self.key),
                                      ("pasted", pasted, "8002", self.key),
                                      ("ig1", ig1, "9001", self.key),
                                      ("ig2", ig2, "9002", self.key),
                                      ("wa1", wa1, "7001", self.key),
                                      ("wa2", wa2, "7002", self.key),
                                      ("b_shop", b_shop, "8002", key_b)))
        inbox = "inbox:{%s}" % self.org

        # one body with entries of both Pages and of an unknown one, at the first Page's
        # URL, twice (a retry): each event in its own connection's stream once
        for _ in range(2):
            self.assertEqual(self.post_meta(page, "page", [("8001", "m_p1"), ("8002", "m_s1"),
                                                           ("8003", "m_u1")]), 200)
        self.assertEqual(self.mids(asst["page"], "m_"), [("m_p1", page["id"])])
        self.assertEqual(self.mids(asst["shop"], "m_"), [("m_s1", shop["id"])])
        self.assertEqual(self.mids("unrouted", "m_u1"), [("m_u1", page["id"])])
        self.assertEqual(sorted(self.mids(inbox, "m_")), [
            ("m_p1", page["id"]), ("m_s1", shop["id"]), ("m_u1", page["id"])])
        # the conversation replies through the Page's own connection
        convs = self.api("GET", "/orgs/c/conversations?connection_id=" + shop["id"])
        self.assertStatus(convs, 200)
        self.assertEqual(len(convs.json), 1)
        # a Page's own URL still takes its own events
        self.assertEqual(self.post_meta(shop, "page", [("8002", "m_s2")]), 200)
        self.assertEqual(self.mids(asst["shop"], "m_"), [("m_s1", shop["id"]),
                                                         ("m_s2", shop["id"])])

        # Instagram: both accounts' entries at the first account's URL
        for _ in range(2):
            self.assertEqual(self.post_meta(ig1, "instagram", [("9002", "i_2"),
                                                               ("9001", "i_1")]), 200)
        self.assertEqual(self.mids(asst["ig1"], "i_"), [("i_1", ig1["id"])])
        self.assertEqual(self.mids(asst["ig2"], "i_"), [("i_2", ig2["id"])])
        # a Page's entry at an Instagram URL is not of that channel: unrouted there
        self.assertEqual(self.post_meta(ig1, "instagram", [("8002", "i_x")]), 200)
        self.assertEqual(self.mids("unrouted", "i_x"), [("i_x", ig1["id"])])

        # WhatsApp the same way: a number's entry at another number's URL (as before its
        # override is set) reaches its own connection
        wa_body = {"object": "whatsapp_business_account", "entry": [
            {"id": "6001", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "1555010000" + n, "phone_number_id": pid},
                "contacts": [{"profile": {"name": "Ann"}, "wa_id": "15557654321"}],
                "messages": [{"from": "15557654321", "id": mid, "timestamp": "1700000000",
                              "type": "text", "text": {"body": "hi"}}]}}]}
            for pid, n, mid in (("7002", "2", "wamid.w2"), ("7001", "1", "wamid.w1"))]}
        data = json.dumps(wa_body).encode()
        sig = "sha256=" + hmac.new(APP_SECRET.encode(), data, hashlib.sha256).hexdigest()
        for _ in range(2):
            r = self.gw.http("POST", self.webhook_path(wa1), body=data,
                             headers={"Content-Type": "application/json",
                                      "X-Hub-Signature-256": sig})
            self.assertStatus(r, 200)
        self.assertEqual(self.mids(asst["wa1"], "wamid."), [("wamid.w1", wa1["id"])])
        self.assertEqual(self.mids(asst["wa2"], "wamid."), [("wamid.w2", wa2["id"])])

        # the other org's Page URL routes to the other org's connection, never to this one's
        self.assertEqual(self.post_meta(b_page, "page", [("8002", "m_b1")]), 200)
        self.assertEqual(self.mids(asst["b_shop"], "m_"), [("m_b1", b_shop["id"])])

        # the second Page signed in again through another app (another app secret): its
        # entries at the first Page's URL (this app's signature) are not routed to it (sent
        # to the gateway that stored it, whose cache the change cleared; another sees it
        # within its cache's second)
        env = dict(self.DEFAULT_ENV, **self.EXTRA_ENV)
        env["SWITCHBOARD_META_APP_SECRET"] = OTHER_APP_SECRET
        gw2 = self.make_gateway(extra_env=env)
        self.fake.only_pages = {"8002"}
        r = gw2.http("POST", "/orgs/c/connections/meta", body={"code": self.fake.new_code()},
                     key=gw2.keys_create(self.org))
        self.assertStatus(r, 201)
        self.assertIn(shop["id"], [c["id"] for c in r.json])
        self.assertEqual(self.post_meta(page, "page", [("8002", "m_o1")], gw=gw2), 200)
        self.assertEqual(self.mids("unrouted", "m_o1"), [("m_o1", page["id"])])
        gw2.stop()

        # the second Page's connection deleted: out of the index, its entries unrouted,
        # neither the pasted connection nor the other org's same Page written as
        r = self.api("DELETE", "/orgs/c/connections/" + shop["id"])
        self.assertStatus(r, 204)
        index = self.PREFIX + "metaid:{%s}:messenger" % self.org
        self.assertIsNone(self.redis.command("HGET", index, "8002"))
        self.assertEqual(self.redis.command("HGET", index, "8001"), page["id"].encode())
        self.assertEqual(self.post_meta(page, "page", [("8002", "m_d1")]), 200)
        self.assertEqual(self.mids("unrouted", "m_d1"), [("m_d1", page["id"])])
        self.assertEqual(self.stream(asst["pasted"]), [])
        self.assertEqual(self.mids(asst["b_shop"], "m_"), [("m_b1", b_shop["id"])])
        self.assertEqual(self.mids(asst["page"], "m_"), [("m_p1", page["id"])])
        self.assertEqual(self.mids(asst["shop"], "m_"), [("m_s1", shop["id"]),
                                                         ("m_s2", shop["id"])])
        self.assertNoSecrets()

    def test_webhooks_routed_across_orgs(self):
        """One app's callback URL serves every org signed in through the app: a Page's or an
        Instagram account's entries at another org's URL reach the org that signed it in."""
        self.fake.second_ig = True
        self.fake.only_pages = {"8001"}
        r = self.sign_in()
        self.assertStatus(r, 201)
        a_by = {c["account_hint"]: c for c in r.json}
        page_a, ig_a = a_by["Acme Page"], a_by["acme.ig"]
        org_b = self.new_org()
        key_b = self.gw.keys_create(org_b)
        self.fake.only_pages = {"8002"}
        r = self.gw.http("POST", "/orgs/c/connections/meta",
                         body={"code": self.fake.new_code()}, key=key_b)
        self.assertStatus(r, 201)
        b_by = {c["account_hint"]: c for c in r.json}
        shop_b, ig_b = b_by["Acme Shop"], b_by["acme.shop"]
        # the gateway's index names each signed-in connection by its Meta id, with its org
        index = self.PREFIX + "metaids:{messenger}"
        self.assertEqual(self.redis.command("HGET", index, "8002"),
                         ("%s %s" % (org_b, shop_b["id"])).encode())
        self.assertEqual(self.redis.command("HGET", self.PREFIX + "metaids:{instagram}", "9001"),
                         ("%s %s" % (self.org, ig_a["id"])).encode())
        asst = self.assistants_bound((("a_page", page_a, "8001", self.key),
                                      ("a_ig", ig_a, "9001", self.key),
                                      ("b_shop", shop_b, "8002", key_b),
                                      ("b_ig", ig_b, "9002", key_b)))
        inbox_a, inbox_b = "inbox:{%s}" % self.org, "inbox:{%s}" % org_b

        # org A's Page URL is the app's callback URL: one body with a Page of each org and an
        # unknown one, twice (a retry): each event in its own org's streams, once
        for _ in range(2):
            self.assertEqual(self.post_meta(page_a, "page", [("8002", "x_b1"), ("8001", "x_a1"),
                                                             ("8003", "x_u1")]), 200)
        self.assertEqual(self.mids(asst["a_page"], "x_"), [("x_a1", page_a["id"])])
        self.assertEqual(self.mids(asst["b_shop"], "x_"), [("x_b1", shop_b["id"])])
        self.assertEqual(self.mids("unrouted", "x_"), [("x_u1", page_a["id"])])
        self.assertEqual(sorted(self.mids(inbox_a, "x_")), [("x_a1", page_a["id"]),
                                                            ("x_u1", page_a["id"])])
        self.assertEqual(self.mids(inbox_b, "x_"), [("x_b1", shop_b["id"])])
        # each org lists its own conversation, on its own connection
        convs = self.gw.http("GET", "/orgs/c/conversations", key=key_b)
        self.assertStatus(convs, 200)
        self.assertEqual([c["connection_id"] for c in convs.json], [shop_b["id"]])
        convs = self.api("GET", "/orgs/c/conversations")
        self.assertStatus(convs, 200)
        self.assertEqual([c["connection_id"] for c in convs.json], [page_a["id"]])

        # Instagram the same way, at org B's URL this time
        for _ in range(2):
            self.assertEqual(self.post_meta(ig_b, "instagram", [("9001", "y_a1"),
                                                                ("9002", "y_b1")]), 200)
        self.assertEqual(self.mids(asst["a_ig"], "y_"), [("y_a1", ig_a["id"])])
        self.assertEqual(self.mids(asst["b_ig"], "y_"), [("y_b1", ig_b["id"])])

        # what the index names is checked against the connection itself: an entry that
        # names a connection under another org than its own routes nothing
        self.redis.command("HSET", index, "8004", "%s %s" % (self.org, shop_b["id"]))
        self.assertEqual(self.post_meta(page_a, "page", [("8004", "x_f1")]), 200)
        self.assertEqual(self.mids("unrouted", "x_f1"), [("x_f1", page_a["id"])])
        self.assertEqual(self.mids(inbox_b, "x_"), [("x_b1", shop_b["id"])])

        # org B's connection deleted: forgotten by the index, its entries at org A's URL
        # unrouted there
        r = self.gw.http("DELETE", "/orgs/c/connections/" + shop_b["id"], key=key_b)
        self.assertStatus(r, 204)
        self.assertIsNone(self.redis.command("HGET", index, "8002"))
        self.assertEqual(self.post_meta(page_a, "page", [("8002", "x_d1")]), 200)
        self.assertEqual(self.mids("unrouted", "x_d1"), [("x_d1", page_a["id"])])
        self.assertEqual(self.mids(inbox_b, "x_"), [("x_b1", shop_b["id"])])
        self.assertNoSecrets()

    def test_no_public_url_sets_no_override(self):
        gw = self.make_gateway(extra_env=dict(self.DEFAULT_ENV, **self.EXTRA_ENV,
                                              SWITCHBOARD_PUBLIC_URL="http://localhost:8080"))
        key = gw.keys_create(self.org)
        r = gw.http("POST", "/orgs/c/connections/meta", body={"code": self.fake.new_code()},
                    key=key)
        self.assertStatus(r, 201)
        for c in r.json:
            if c["provider"] != "whatsapp":
                continue
            self.assertEqual(c["webhook"]["url"],
                             "http://localhost:8080/webhooks/whatsapp/" + c["id"])
            self.assertEqual((c["webhook"]["subscribed"], c["webhook"]["via"]), (False, "app"))
            self.assertIn("public_url", c["webhook"]["reason"])
        self.assertEqual(self.fake.overrides, {})
        self.assertEqual(self.fake.requests("POST", "/7001"), [])
        gw.stop()

    def test_bad_requests(self):
        before = self.metric("bad_request")
        for body in ({}, {"code": 5}, {"code": "x", "other": 1},
                     {"code": "x", "redirect_uri": "ftp://x"}, {"code": "x", "pin": "12"}):
            r = self.api("POST", "/orgs/c/connections/meta", body)
            self.assertStatus(r, 400, "bad_request")
        self.assertEqual(self.metric("bad_request"), before + 5)
        r = self.api("DELETE", "/orgs/c/connections/meta")
        self.assertStatus(r, 405)

    def test_not_configured(self):
        gw = self.make_gateway(extra_env=dict(self.DEFAULT_ENV, SWITCHBOARD_META_APP_ID=APP_ID,
                                              SWITCHBOARD_GRAPH_API_BASE=self.fake.base))
        key = gw.keys_create(self.org)
        for method, body in (("GET", None), ("POST", {"code": "abc"}), ("POST", None)):
            r = gw.http(method, "/orgs/c/connections/meta", body=body, key=key)
            self.assertStatus(r, 501, "meta_signin_not_configured")
        self.assertEqual(self.fake.requests("GET", "/oauth/access_token"), [])
        r = gw.http("GET", "/metrics")
        self.assertGreaterEqual(H.metric_sum(H.parse_prometheus(r.body.decode()),
                                             "switchboard_meta_signin_total",
                                             result="not_configured"), 3)
        gw.stop()


class FakeInstagram(H.JsonFake):
    """Instagram API with Instagram Login: GET /me with a current token, and
    GET /refresh_access_token?grant_type=ig_refresh_token&access_token=<current> answering a
    new 60-day token (the old one then stops working), or 190 once revoked."""

    BASE_PATH = "/v21.0"

    def __init__(self):
        self.lock = threading.Lock()
        self.current = set()
        self.issued = []
        self.refresh_calls = []
        self.sends = []        # (path, Authorization, JSON body) of each Send API call
        self.revoked = False
        super().__init__()

    def respond(self, h, body):
        status, answer = self.answer(h) if h.command == "GET" else self.send(h, body)
        return status, answer, {}

    def send(self, h, body):
        """The Send API of Instagram Login: POST /{IG_ID}/messages with a current token."""
        auth = h.headers.get("Authorization", "")
        with self.lock:
            self.sends.append((h.path, auth, body))
            ok = auth.startswith("Bearer ") and auth[7:] in self.current
        if not ok:
            return 400, {"error": {"message": "Invalid OAuth access token", "code": 190,
                                   "type": "OAuthException"}}
        b = json.loads(body or b"{}")
        return 200, {"recipient_id": b.get("recipient", {}).get("id"),
                     "message_id": "mid.iglogin-%d" % len(self.sends)}

    def new_token(self):
        t = "IGAA" + H_rand(40)
        with self.lock:
            self.current.add(t)
            self.issued.append(t)
        return t

    def answer(self, h):
        url = urllib.parse.urlsplit(h.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        bad = {"error": {"message": "Invalid OAuth access token", "type": "OAuthException",
                         "code": 190}}
        if url.path == "/v21.0/me":
            auth = h.headers.get("Authorization", "")
            with self.lock:
                ok = auth.startswith("Bearer ") and auth[7:] in self.current
            if not ok or q.get("fields") != "user_id,username":
                return 400, bad
            return 200, {"user_id": "17841400000000001", "username": "acme.login", "id": "1"}
        if url.path == "/v21.0/refresh_access_token":
            with self.lock:
                self.refresh_calls.append(q.get("access_token"))
                ok = (q.get("grant_type") == "ig_refresh_token" and
                      q.get("access_token") in self.current and not self.revoked)
                if ok:
                    self.current.discard(q["access_token"])
            if not ok:
                return 400, bad
            return 200, {"access_token": self.new_token(), "token_type": "bearer",
                         "expires_in": 5184000}
        return 404, {"error": {"message": "unknown path", "code": 100}}


class InstagramLoginRenewalTest(H.GatewayTestCase):
    PREFIX = "ts_igrenew:"

    @classmethod
    def setUpClass(cls):
        cls.ig = FakeInstagram().start()
        cls.EXTRA_ENV = {"SWITCHBOARD_INSTAGRAM_API_BASE": cls.ig.base}
        try:
            super().setUpClass()
        finally:
            cls.addClassCleanup(cls.ig.stop)

    def create(self):
        token = self.ig.new_token()
        r = self.api("POST", "/orgs/c/connections", {"provider": "instagram", "credentials": {
            "app_secret": "ig-app-secret-" + H_rand(12), "verify_token": "vt-" + H_rand(12),
            "access_token": token, "login": "instagram"}})
        self.assertStatus(r, 201)
        self.assertEqual(r.json["account_hint"], "acme.login")
        self.assertEqual(r.json["credentials"]["login"], "****")
        self.assertNotIn("expires_at", r.json["credentials"])
        return r.json, token

    def due(self, conn_id):
        v = self.redis.command("ZSCORE", self.PREFIX + "renew:{tokens}", conn_id)
        return None if v is None else float(v)

    def make_due(self, conn_id):
        self.redis.command("ZADD", self.PREFIX + "renew:{tokens}", str(int(time.time() * 1000) - 1),
                           conn_id)

    def test_renewed_ahead_of_expiry_by_one_gateway(self):
        conn, token = self.create()
        now = time.time() * 1000
        # a pasted token is renewed a day later (it must be a day old)
        self.assertAlmostEqual(self.due(conn["id"]), now + 86400000, delta=60000)
        # bad values of login are refused
        r = self.api("POST", "/orgs/c/connections/test", {"provider": "instagram", "credentials": {
            "app_secret": "x" * 12, "verify_token": "y" * 12, "access_token": "z" * 20,
            "login": "twitter"}})
        self.assertStatus(r, 400, "bad_request")

        # two gateways on the same Redis: the entry made due is renewed once
        other = self.make_gateway(extra_env=dict(self.DEFAULT_ENV, **self.EXTRA_ENV))
        self.make_due(conn["id"])
        H.wait_until(lambda: len(self.ig.refresh_calls) >= 1, timeout=10, what="a renewal")
        H.wait_until(lambda: (self.due(conn["id"]) or 0) > time.time() * 1000 + 86400000 * 30,
                     timeout=10, what="the next renewal scheduled")
        self.assertEqual(self.ig.refresh_calls, [token])
        # 60 days from now, renewed 7 days ahead
        self.assertAlmostEqual(self.due(conn["id"]), time.time() * 1000 + 53 * 86400000,
                               delta=120000)
        # the renewed token is the one in use (the old one no longer works)
        for gw in (self.gw, other):
            r = self.api("POST", "/orgs/c/connections/%s/test" % conn["id"], gw=gw)
            self.assertStatus(r, 200)
            self.assertEqual(r.json, {"ok": True, "account_hint": "acme.login"})
        self.assertEqual(len(self.ig.refresh_calls), 1)
        other.stop()
        self.assertNoTokens()

    def test_revoked_token_needs_a_reconnect(self):
        conn, token = self.create()
        with self.ig.lock:
            self.ig.revoked = True
        try:
            self.make_due(conn["id"])
            H.wait_until(lambda: self.due(conn["id"]) is None, timeout=10,
                         what="the refused renewal off the schedule")
        finally:
            with self.ig.lock:
                self.ig.revoked = False
        r = self.api("GET", "/orgs/c/connections/" + conn["id"])
        self.assertEqual(r.json["status"], "inactive")
        self.assertEqual(r.json["error"]["code"], "reconnect_needed")
        # new credentials (a reconnect) make it active and scheduled again
        r = self.api("PATCH", "/orgs/c/connections/" + conn["id"],
                     {"credentials": {"access_token": self.ig.new_token()}})
        self.assertStatus(r, 200)
        self.assertEqual(r.json["status"], "active")
        self.assertIsNotNone(self.due(conn["id"]))
        # a deleted connection leaves the schedule
        r = self.api("DELETE", "/orgs/c/connections/" + conn["id"])
        self.assertStatus(r, 204)
        self.make_due(conn["id"])
        H.wait_until(lambda: self.due(conn["id"]) is None, timeout=10,
                     what="a deleted connection off the schedule")
        self.assertNoTokens()

    def test_sends_on_the_instagram_api(self):
        """A connection of Instagram Login sends through providers.instagram_api_base with
        its own token; the Graph API base sees nothing."""
        ig_id, igsid = "17841400000000001", "5566778899001122"
        secret = "ig-app-secret-" + H_rand(12)
        token = self.ig.new_token()
        r = self.api("POST", "/orgs/c/connections", {"provider": "instagram", "credentials": {
            "app_secret": secret, "verify_token": "vt-" + H_rand(12), "access_token": token,
            "login": "instagram"}})
        self.assertStatus(r, 201)
        conn = r.json
        r = self.api("POST", "/orgs/c/assistants", {"name": "ig login"})
        self.assertStatus(r, 201)
        asst = r.json["id"]
        r = self.api("POST", "/orgs/c/assistants/%s/channels" % asst,
                     {"connection_id": conn["id"], "external_id": ig_id})
        self.assertStatus(r, 201)
        now = int(time.time() * 1000)
        data = json.dumps({"object": "instagram", "entry": [{
            "id": ig_id, "time": now, "messaging": [{
                "sender": {"id": igsid}, "recipient": {"id": ig_id}, "timestamp": now,
                "message": {"mid": "mid.in-" + H_rand(8), "text": "hi"}}]}]}).encode()
        sig = "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()
        r = self.gw.http("POST", "/webhooks/instagram/" + conn["id"], body=data,
                         headers={"X-Hub-Signature-256": sig})
        self.assertStatus(r, 200)
        r = self.api("GET", "/orgs/c/conversations")
        self.assertStatus(r, 200)
        self.assertEqual(len(r.json), 1)
        conv = r.json[0]["id"]
        self.graph.clear()
        r = self.api("POST", "/orgs/c/conversations/%s/messages" % conv,
                     {"id": "ig-login-send", "type": "text", "text": "Hello"})
        self.assertStatus(r, 202)
        H.wait_until(lambda: len(self.ig.sends) >= 1, timeout=10, what="the Instagram send")
        path, auth, body = self.ig.sends[0]
        self.assertEqual(path, "/v21.0/%s/messages" % ig_id)
        self.assertEqual(auth, "Bearer " + token)
        self.assertEqual(json.loads(body), {"recipient": {"id": igsid},
                                            "message": {"text": "Hello"}})
        H.wait_until(lambda: self.api("GET", "/orgs/c/commands/ig-login-send").json.get(
            "state") == "sent", timeout=10, what="the command sent")
        self.assertEqual(self.graph.requests(), [])
        self.assertNoTokens()

    def assertNoTokens(self):
        texts = [r.body.decode("utf-8", "replace") for r in self.gw.responses]
        texts.append(self.gw.stderr_text())
        with self.ig.lock:
            tokens = list(self.ig.issued)
        for t in texts:
            for tok in tokens:
                self.assertNotIn(tok, t)


if __name__ == "__main__":
    H.main()

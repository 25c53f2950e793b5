"""
Management API (docs/api.md, contract section 6): every route, every error status.

Runs the real switchboard against a private redis-server and fake Telegram / Graph servers.
Each test gets its own org and key, so tests do not see each other's objects.
"""

import copy
import json
import os
import random
import re
import string
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
ID_CHARS = r"[A-Za-z0-9_\-.:]+"
SECRET_TOKEN = re.compile(r"^[A-Za-z0-9_-]{22,256}$")
CONTACT_STATUSES = ("SUBSCRIBED", "UNSUBSCRIBED", "BLOCKED", "AI_REPLIES_DISABLED")
BAD_PAGINATION = ("take=0", "take=101", "take=-1", "take=abc", "take=1.5", "take=",
                  "take=1e2", "take=0x10", "page=0", "page=-1", "page=abc", "page=1.5",
                  "page=", "page=2.0")

_seq = [0]


def _rand(n, alphabet=string.ascii_letters + string.digits):
    return "".join(random.SystemRandom().choice(alphabet) for _ in range(n))


def new_token():
    """A fresh Telegram token "<bot id>:<35-char secret>" with a bot id unique to this run."""
    _seq[0] += 1
    return "%d:AAH%s" % (5000000000 + os.getpid() % 10000 * 1000 + _seq[0],
                         _rand(32, string.ascii_letters + string.digits + "_-"))


def masked(secret):
    return "****" + secret[-4:] if len(secret) >= 12 else "****"


def with_query(path, q):
    return path + ("&" if "?" in path else "?") + q


class MgmtBase(H.GatewayTestCase):
    PREFIX = "tm_mgmt:"
    # A short provider timeout so that the "provider hangs" test finishes quickly.
    EXTRA_ENV = {"SWITCHBOARD_PROVIDER_TIMEOUT_MS": "1500"}

    # --- helpers

    def other_key(self):
        org = self.new_org()
        return org, self.gw.keys_create(org)

    def assertConnectionShape(self, c, provider):
        for f in ("id", "provider", "name", "status", "account_hint", "created_at",
                  "updated_at", "webhook_url", "credentials"):
            self.assertIn(f, c, "connection lacks %r: %r" % (f, c))
        self.assertRegex(c["id"], "^cn_" + ID_CHARS + "$")
        self.assertEqual(c["provider"], provider)
        self.assertIn(c["status"], ("active", "inactive"))
        self.assertRegex(c["created_at"], ISO_MS)
        self.assertRegex(c["updated_at"], ISO_MS)
        self.assertGreaterEqual(c["updated_at"], c["created_at"])
        self.assertEqual(c["webhook_url"],
                         "%s/webhooks/%s/%s" % (H.PUBLIC_URL, provider, c["id"]))
        self.assertIsInstance(c["credentials"], dict)
        for k, v in c["credentials"].items():
            self.assertRegex(v, r"^\*\*\*\*.{0,4}$", "credential %s not masked" % k)

    def assertAssistantShape(self, a):
        self.assertEqual(set(a) >= {"id", "name", "enabled", "created_at", "updated_at"}, True,
                         repr(a))
        self.assertRegex(a["id"], "^as_" + ID_CHARS + "$")
        self.assertIsInstance(a["enabled"], bool)
        self.assertRegex(a["created_at"], ISO_MS)
        self.assertRegex(a["updated_at"], ISO_MS)

    def list_all(self, path, key=...):
        r = self.api("GET", with_query(path, "take=100"), key=key)
        self.assertStatus(r, 200)
        return r.json

    def list_count(self, path, key=...):
        r = self.api("GET", path, key=key)
        self.assertStatus(r, 200)
        return int(r.headers["pagination-count"])

    def check_list_params(self, path):
        """Every invalid page/take is 400; take=100 is fine; the default is page 1, take 20."""
        for q in BAD_PAGINATION:
            r = self.api("GET", with_query(path, q))
            self.assertStatus(r, 400, "bad_request")
        r = self.api("GET", with_query(path, "take=100"))
        self.assertStatus(r, 200)
        self.assertEqual(r.headers.get("pagination-take"), "100")
        r = self.api("GET", with_query(path, "take=1&page=1"))
        self.assertStatus(r, 200)
        self.assertEqual(r.headers.get("pagination-take"), "1")
        r = self.api("GET", path)
        self.assertStatus(r, 200)
        self.assertIsInstance(r.json, list)
        self.assertEqual(r.headers.get("pagination-page"), "1")
        self.assertEqual(r.headers.get("pagination-take"), "20")
        self.assertIn("pagination-count", r.headers)

    def check_pagination(self, path, expected_ids):
        """Pages of 2 walk 'expected_ids' in creation order; a page past the end is []."""
        n = len(expected_ids)
        r = self.api("GET", path)
        self.assertStatus(r, 200)
        self.assertEqual([x["id"] for x in r.json], expected_ids[:20])
        self.assertEqual(r.headers.get("pagination-count"), str(n))
        seen = []
        pages = (n + 1) // 2
        for page in range(1, pages + 1):
            r = self.api("GET", with_query(path, "page=%d&take=2" % page))
            self.assertStatus(r, 200)
            self.assertEqual(r.headers.get("pagination-count"), str(n))
            self.assertEqual(r.headers.get("pagination-page"), str(page))
            self.assertEqual(r.headers.get("pagination-take"), "2")
            self.assertEqual(len(r.json), 2 if page * 2 <= n else n % 2)
            seen += [x["id"] for x in r.json]
        self.assertEqual(seen, expected_ids)
        for page in (pages + 1, 1000):
            r = self.api("GET", with_query(path, "page=%d&take=2" % page))
            self.assertStatus(r, 200)
            self.assertEqual(r.json, [])
            self.assertEqual(r.headers.get("pagination-count"), str(n))
            self.assertEqual(r.headers.get("pagination-page"), str(page))
        r = self.api("GET", with_query(path, "take=1&page=%d" % n))
        self.assertStatus(r, 200)
        self.assertEqual([x["id"] for x in r.json], expected_ids[-1:])

    def assertNoSecretStored(self, *secrets):
        """No Redis key name or value (any prefix) contains any of 'secrets'."""
        dump = self.redis.dump_all_values()
        for s in secrets:
            b = s.encode()
            for k, v in dump.items():
                self.assertNotIn(b, k, "secret in Redis key name %r" % k)
                self.assertNotIn(b, v, "secret in the value of Redis key %r" % k)

    def assertNothingStored(self, token):
        self.assertEqual(self.list_all("/orgs/c/connections"), [])
        self.assertEqual(self.list_count("/orgs/c/connections"), 0)
        self.assertNoSecretStored(token, token.split(":", 1)[-1])

    def telegram_methods(self, token):
        return [r["method"] for r in self.telegram.requests(token=token)]


# ======================================================================================
# authentication, routing, methods


class AuthAndRoutingTest(MgmtBase):

    ROUTES = [("GET", "/orgs/c/connections"), ("POST", "/orgs/c/connections"),
              ("GET", "/orgs/c/connections/cn_x"), ("PATCH", "/orgs/c/connections/cn_x"),
              ("DELETE", "/orgs/c/connections/cn_x"), ("POST", "/orgs/c/connections/cn_x/test"),
              ("GET", "/orgs/c/assistants"), ("POST", "/orgs/c/assistants"),
              ("GET", "/orgs/c/assistants/as_x"), ("PATCH", "/orgs/c/assistants/as_x"),
              ("DELETE", "/orgs/c/assistants/as_x"), ("GET", "/orgs/c/assistants/as_x/channels"),
              ("POST", "/orgs/c/assistants/as_x/channels"),
              ("DELETE", "/orgs/c/assistants/as_x/channels/bd_x"),
              ("GET", "/orgs/c/contacts"), ("GET", "/orgs/c/contacts/ct_x"),
              ("PATCH", "/orgs/c/contacts/ct_x")]

    def test_401_without_authorization_on_every_route(self):
        for method, path in self.ROUTES:
            body = {"name": "x"} if method in ("POST", "PATCH") else None
            r = self.api(method, path, body, key=None)
            self.assertStatus(r, 401, "unauthorized")
            self.assertTrue(r.headers.get("content-type", "").startswith("application/json"), r)

    def test_401_wrong_scheme_or_malformed(self):
        for value in ("Basic " + self.key, "Token " + self.key, self.key, "Bearer",
                      "Bearer ", "Bearer  " + self.key + "x", "Bearer " + self.key + " extra",
                      "Bearer" + self.key):
            r = self.api("GET", "/orgs/c/assistants", key=None,
                         headers={"Authorization": value})
            self.assertStatus(r, 401, "unauthorized")

    def test_401_unknown_key(self):
        for k in ("sbk_" + _rand(40), self.key + "x", self.key[:-1],
                  self.key[:-1] + ("A" if self.key[-1] != "A" else "B")):
            r = self.api("GET", "/orgs/c/assistants", key=k)
            self.assertStatus(r, 401, "unauthorized")
        r = self.api("GET", "/orgs/c/assistants")
        self.assertStatus(r, 200)

    def test_401_revoked_key_other_keys_still_work(self):
        k2 = self.gw.keys_create(self.org)
        self.assertNotEqual(k2, self.key)
        a = self.create_assistant("made with k2", key=k2)
        # both keys of the org see the same objects
        self.assertStatus(self.api("GET", "/orgs/c/assistants/" + a["id"]), 200)
        self.gw.keys_revoke(k2)
        r = self.api("GET", "/orgs/c/assistants", key=k2)
        self.assertStatus(r, 401, "unauthorized")
        r = self.api("POST", "/orgs/c/assistants", {"name": "after revoke"}, key=k2)
        self.assertStatus(r, 401, "unauthorized")
        # the other key of the org is untouched, and nothing was created by the revoked key
        r = self.api("GET", "/orgs/c/assistants")
        self.assertStatus(r, 200)
        self.assertEqual([x["id"] for x in r.json], [a["id"]])

    def test_unauthenticated_requests_change_nothing(self):
        self.assertStatus(self.api("POST", "/orgs/c/assistants", {"name": "x"}, key=None), 401)
        self.assertStatus(self.api("POST", "/orgs/c/assistants", {"name": "x"}, key="nope"), 401)
        self.assertEqual(self.list_count("/orgs/c/assistants"), 0)

    def test_404_unknown_routes(self):
        for method, path in (("GET", "/orgs/c/nothing"), ("GET", "/orgs/c"),
                             ("GET", "/orgs/c/assistants/as_x/unknown"),
                             ("POST", "/orgs/c/connections/cn_x/test/more"),
                             ("GET", "/orgs/c/assistants/as_x/channels/bd_x/more"),
                             ("GET", "/orgs/c/contactz")):
            r = self.api(method, path)
            self.assertStatus(r, 404, "not_found")
        for path in ("/nope", "/", "/webhooks", "/healthz/more"):
            r = self.gw.http("GET", path)
            self.assertEqual(r.status, 404, r)

    def test_404_other_org_in_path(self):
        other_org, other_key = self.other_key()
        a = self.create_assistant("mine")
        for path in ("/orgs/%s/assistants" % other_org,
                     "/orgs/%s/assistants/%s" % (other_org, a["id"])):
            r = self.api("GET", path)
            self.assertStatus(r, 404, "not_found")

    def test_404_unknown_ids(self):
        cases = [("GET", "/orgs/c/connections/cn_doesnotexist", None),
                 ("PATCH", "/orgs/c/connections/cn_doesnotexist", {"name": "x"}),
                 ("DELETE", "/orgs/c/connections/cn_doesnotexist", None),
                 ("POST", "/orgs/c/connections/cn_doesnotexist/test", None),
                 ("GET", "/orgs/c/assistants/as_doesnotexist", None),
                 ("PATCH", "/orgs/c/assistants/as_doesnotexist", {"name": "x"}),
                 ("DELETE", "/orgs/c/assistants/as_doesnotexist", None),
                 ("GET", "/orgs/c/assistants/as_doesnotexist/channels", None),
                 ("POST", "/orgs/c/assistants/as_doesnotexist/channels",
                  {"connection_id": "cn_x", "external_id": "1"}),
                 ("DELETE", "/orgs/c/assistants/as_doesnotexist/channels/bd_x", None),
                 ("GET", "/orgs/c/contacts/ct_doesnotexist", None),
                 ("PATCH", "/orgs/c/contacts/ct_doesnotexist", {"status": "BLOCKED"})]
        for method, path, body in cases:
            r = self.api(method, path, body)
            self.assertStatus(r, 404, "not_found")
        a = self.create_assistant()
        r = self.api("DELETE", "/orgs/c/assistants/%s/channels/bd_doesnotexist" % a["id"])
        self.assertStatus(r, 404, "not_found")

    def test_404_objects_of_another_org(self):
        tok = new_token()
        conn = self.create_telegram(tok)
        a = self.create_assistant("A's")
        b = self.bind(a["id"], conn["id"])
        other_org, k2 = self.other_key()
        cases = [("GET", "/orgs/c/connections/" + conn["id"], None),
                 ("PATCH", "/orgs/c/connections/" + conn["id"], {"name": "stolen"}),
                 ("POST", "/orgs/c/connections/%s/test" % conn["id"], None),
                 ("DELETE", "/orgs/c/connections/" + conn["id"], None),
                 ("GET", "/orgs/c/assistants/" + a["id"], None),
                 ("PATCH", "/orgs/c/assistants/" + a["id"], {"name": "stolen"}),
                 ("GET", "/orgs/c/assistants/%s/channels" % a["id"], None),
                 ("POST", "/orgs/c/assistants/%s/channels" % a["id"],
                  {"connection_id": conn["id"]}),
                 ("DELETE", "/orgs/c/assistants/%s/channels/%s" % (a["id"], b["id"]), None),
                 ("DELETE", "/orgs/c/assistants/" + a["id"], None)]
        n_calls = len(self.telegram.requests(token=tok))
        for method, path, body in cases:
            r = self.api(method, path, body, key=k2)
            self.assertStatus(r, 404, "not_found")
        # org B's lists are empty; org A's objects are untouched
        for path in ("/orgs/c/connections", "/orgs/c/assistants", "/orgs/c/contacts"):
            r = self.api("GET", path, key=k2)
            self.assertStatus(r, 200)
            self.assertEqual(r.json, [])
            self.assertEqual(r.headers.get("pagination-count"), "0")
        self.assertEqual(self.api("GET", "/orgs/c/connections/" + conn["id"]).json, conn)
        self.assertEqual(self.api("GET", "/orgs/c/assistants/" + a["id"]).json["name"], "A's")
        r = self.api("GET", "/orgs/c/assistants/%s/channels" % a["id"])
        self.assertEqual([x["id"] for x in r.json], [b["id"]])
        # nothing was sent to the provider on B's behalf (no test, no deleteWebhook)
        self.assertEqual(len(self.telegram.requests(token=tok)), n_calls)
        # B cannot bind A's connection to its own assistant
        a2 = self.create_assistant("B's", key=k2)
        r = self.api("POST", "/orgs/c/assistants/%s/channels" % a2["id"],
                     {"connection_id": conn["id"]}, key=k2)
        self.assertStatus(r, 400, "bad_request")

    def test_405_with_allow_header(self):
        tok = new_token()
        conn = self.create_telegram(tok)
        a = self.create_assistant()
        b = self.bind(a["id"], conn["id"])
        cid, aid, bid = conn["id"], a["id"], b["id"]
        cases = [("PUT", "/orgs/c/connections", {"GET", "POST"}),
                 ("DELETE", "/orgs/c/connections", {"GET", "POST"}),
                 ("PUT", "/orgs/c/connections/" + cid, {"GET", "PATCH", "DELETE"}),
                 ("POST", "/orgs/c/connections/" + cid, {"GET", "PATCH", "DELETE"}),
                 ("GET", "/orgs/c/connections/%s/test" % cid, {"POST"}),
                 ("PATCH", "/orgs/c/assistants", {"GET", "POST"}),
                 ("POST", "/orgs/c/assistants/" + aid, {"GET", "PATCH", "DELETE"}),
                 ("PUT", "/orgs/c/assistants/%s/channels" % aid, {"GET", "POST"}),
                 ("GET", "/orgs/c/assistants/%s/channels/%s" % (aid, bid), {"DELETE"}),
                 ("PATCH", "/orgs/c/assistants/%s/channels/%s" % (aid, bid), {"DELETE"}),
                 ("POST", "/orgs/c/contacts", {"GET"}),
                 ("DELETE", "/orgs/c/contacts/ct_x", {"GET", "PATCH"})]
        for method, path, allowed in cases:
            r = self.api(method, path, {"name": "x"} if method in ("PUT", "POST", "PATCH") else None)
            self.assertStatus(r, 405, "method_not_allowed")
            allow = {m.strip().upper() for m in r.headers.get("allow", "").split(",") if m.strip()}
            self.assertEqual(allow - {"HEAD", "OPTIONS"}, allowed, "%s %s Allow" % (method, path))
        # nothing was changed by the 405s
        self.assertEqual(self.api("GET", "/orgs/c/connections/" + cid).json, conn)
        self.assertEqual(self.list_count("/orgs/c/assistants/%s/channels" % aid), 1)

    def test_413_body_over_1_mib(self):
        big = '{"name":"' + "a" * (1 << 20) + '"}'
        r = self.api("POST", "/orgs/c/assistants", big)
        self.assertStatus(r, 413, "body_too_large")
        self.assertEqual(self.list_count("/orgs/c/assistants"), 0)

    def test_json_content_type(self):
        r = self.api("GET", "/orgs/c/assistants")
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"), r)
        r = self.api("GET", "/orgs/c/assistants/as_nope")
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"), r)

    def test_keep_alive_connection(self):
        s = self.gw.session()
        try:
            for _ in range(3):
                self.assertStatus(s.http("GET", "/orgs/c/assistants", key=self.key), 200)
            self.assertStatus(s.http("GET", "/orgs/c/assistants"), 401)
            self.assertStatus(s.http("GET", "/orgs/c/assistants", key=self.key), 200)
        finally:
            s.close()


# ======================================================================================
# bodies and validation


class ValidationTest(MgmtBase):

    BAD_JSON = ["{", '{"name": ', "nul", "{'name': 'x'}", '{"name": "x",}', b'{"name": "\xff"}',
                '{"name": "x"} trailing']
    NOT_OBJECT = ["[]", '["name"]', '"name"', "42", "null", "true", '[{"name": "x"}]']

    def _bodies_rejected(self, method, path):
        for body in self.BAD_JSON + self.NOT_OBJECT + [""]:
            r = self.api(method, path, body)
            self.assertStatus(r, 400, "bad_request")

    def test_400_bad_json_and_non_object_bodies(self):
        a = self.create_assistant("keep")
        self._bodies_rejected("POST", "/orgs/c/assistants")
        self._bodies_rejected("PATCH", "/orgs/c/assistants/" + a["id"])
        self._bodies_rejected("POST", "/orgs/c/connections")
        self._bodies_rejected("POST", "/orgs/c/assistants/%s/channels" % a["id"])
        self.assertEqual([x["id"] for x in self.list_all("/orgs/c/assistants")], [a["id"]])
        self.assertEqual(self.api("GET", "/orgs/c/assistants/" + a["id"]).json, a)
        self.assertEqual(self.list_count("/orgs/c/connections"), 0)
        self.assertEqual(self.list_count("/orgs/c/assistants/%s/channels" % a["id"]), 0)

    def test_assistant_name_lengths_count_characters(self):
        ok = ["a" * 1024, "é" * 1024, "😀" * 1024, "中" * 1024, "a" * 1023 + "😀", "x",
              "שלום " * 204 + "abcd"]
        for name in ok:
            self.assertEqual(len(name), 1024 if len(name) > 1 else 1)
            r = self.api("POST", "/orgs/c/assistants", {"name": name})
            self.assertStatus(r, 201)
            self.assertEqual(r.json["name"], name)
            self.assertEqual(self.api("GET", "/orgs/c/assistants/" + r.json["id"]).json["name"],
                             name)
            # limit: 10 creations per hour per org
            self.org = self.new_org()
            self.key = self.gw.keys_create(self.org)
        bad = ["", "a" * 1025, "é" * 1025, "😀" * 1025, "a" * 1024 + "é"]
        for name in bad:
            r = self.api("POST", "/orgs/c/assistants", {"name": name})
            self.assertStatus(r, 400, "bad_request")
            self.assertIn("name", r.json["error"]["message"].lower())
        self.assertEqual(self.list_count("/orgs/c/assistants"), 0)

    def test_assistant_name_missing_or_not_a_string(self):
        for body in ({}, {"enabled": True}, {"name": None}, {"name": 123}, {"name": ["a"]},
                     {"name": {"x": 1}}, {"name": True}):
            r = self.api("POST", "/orgs/c/assistants", body)
            self.assertStatus(r, 400, "bad_request")
            self.assertIn("name", r.json["error"]["message"].lower(), repr(body))
        self.assertEqual(self.list_count("/orgs/c/assistants"), 0)

    def test_assistant_enabled_must_be_bool(self):
        for v in ("true", 1, 0, None, {}, [], "false"):
            r = self.api("POST", "/orgs/c/assistants", {"name": "x", "enabled": v})
            self.assertStatus(r, 400, "bad_request")
            self.assertIn("enabled", r.json["error"]["message"].lower(), repr(v))
        self.assertEqual(self.list_count("/orgs/c/assistants"), 0)
        a = self.create_assistant("off", enabled=False)
        self.assertIs(a["enabled"], False)
        b = self.create_assistant("default")
        self.assertIs(b["enabled"], True)
        c = self.create_assistant("on", enabled=True)
        self.assertIs(c["enabled"], True)

    def test_assistant_patch_validation(self):
        a = self.create_assistant("before")
        path = "/orgs/c/assistants/" + a["id"]
        for body in ({}, {"name": ""}, {"name": "x" * 1025}, {"name": None}, {"enabled": "no"},
                     {"enabled": 1}, {"name": "ok", "enabled": "no"}):
            r = self.api("PATCH", path, body)
            self.assertStatus(r, 400, "bad_request")
        self.assertEqual(self.api("GET", path).json, a)

    def test_connection_create_field_validation(self):
        tok = new_token()
        self.telegram.add_bot(tok)
        meta = {"app_secret": "app-secret-0123456789", "verify_token": "verify-0123456789",
                "access_token": "EAAG" + _rand(30)}
        self.graph.add_account(meta["access_token"], "2001", "Some Page")
        cases = [
            {"credentials": {"bot_token": tok}},                                 # no provider
            {"provider": "sms", "credentials": {"bot_token": tok}},              # unknown
            {"provider": "Telegram", "credentials": {"bot_token": tok}},         # case
            {"provider": "", "credentials": {"bot_token": tok}},
            {"provider": 4, "credentials": {"bot_token": tok}},
            {"provider": "telegram"},                                            # no credentials
            {"provider": "telegram", "credentials": "x"},
            {"provider": "telegram", "credentials": [tok]},
            {"provider": "telegram", "credentials": {}},
            {"provider": "telegram", "credentials": {"bot_token": 5}},
            {"provider": "telegram", "credentials": {"bot_token": ""}},
            {"provider": "telegram", "credentials": {"bot_token": tok, "extra": "x"}},
            {"provider": "telegram", "credentials": {"bot_token": tok, "access_token": "x"}},
            {"provider": "telegram", "name": "", "credentials": {"bot_token": tok}},
            {"provider": "telegram", "name": "n" * 1025, "credentials": {"bot_token": tok}},
            {"provider": "telegram", "name": 7, "credentials": {"bot_token": tok}},
            {"provider": "whatsapp", "credentials": {"access_token": meta["access_token"]}},
            {"provider": "whatsapp", "credentials": dict(meta, unknown="x")},
            {"provider": "messenger", "credentials": {k: v for k, v in meta.items()
                                                      if k != "app_secret"}},
            {"provider": "instagram", "credentials": {k: v for k, v in meta.items()
                                                      if k != "verify_token"}},
            {"provider": "whatsapp", "credentials": dict(meta, app_secret=12)},
            {"provider": "messenger", "credentials": {"bot_token": tok}},
        ]
        for body in cases:
            r = self.api("POST", "/orgs/c/connections", body)
            self.assertStatus(r, 400)
            codes = ("bad_request",)
            if body.get("credentials") == {"bot_token": ""}:
                codes = ("bad_request", "provider_rejected")
            self.assertIn(r.json["error"]["code"], codes, repr(body))
        self.assertEqual(self.list_count("/orgs/c/connections"), 0)
        # unknown credential keys are refused before anything is registered
        self.assertEqual(self.telegram.setwebhook_calls(tok), [])
        # and the valid forms work
        self.create_telegram(tok, name="n" * 1024)
        self.create_meta("whatsapp", **meta)

    def test_connection_list_provider_filter(self):
        t = self.create_telegram(new_token())
        acc = "EAAG" + _rand(30)
        w = self.create_meta("whatsapp", "app-secret-0123456789", "verify-0123", acc)
        r = self.api("GET", "/orgs/c/connections?provider=telegram")
        self.assertStatus(r, 200)
        self.assertEqual([c["id"] for c in r.json], [t["id"]])
        self.assertEqual(r.headers.get("pagination-count"), "1")
        r = self.api("GET", "/orgs/c/connections?provider=whatsapp")
        self.assertEqual([c["id"] for c in r.json], [w["id"]])
        for p in ("messenger", "instagram"):
            r = self.api("GET", "/orgs/c/connections?provider=" + p)
            self.assertStatus(r, 200)
            self.assertEqual(r.json, [])
            self.assertEqual(r.headers.get("pagination-count"), "0")
        r = self.api("GET", "/orgs/c/connections")
        self.assertEqual([c["id"] for c in r.json], [t["id"], w["id"]])
        for bad in ("sms", "Telegram", "", "telegram,whatsapp"):
            r = self.api("GET", "/orgs/c/connections?provider=" + bad)
            self.assertStatus(r, 400, "bad_request")


# ======================================================================================
# pagination


class PaginationTest(MgmtBase):

    def test_assistants_pagination(self):
        self.check_list_params("/orgs/c/assistants")
        r = self.api("GET", "/orgs/c/assistants?page=3")
        self.assertStatus(r, 200)
        self.assertEqual(r.json, [])
        self.assertEqual(r.headers.get("pagination-count"), "0")
        ids = [self.create_assistant("a%d" % i)["id"] for i in range(5)]
        self.check_pagination("/orgs/c/assistants", ids)

    def test_connections_pagination(self):
        self.check_list_params("/orgs/c/connections")
        self.check_list_params("/orgs/c/connections?provider=telegram")
        ids = [self.create_telegram(new_token())["id"] for _ in range(3)]
        self.check_pagination("/orgs/c/connections", ids)
        self.check_pagination("/orgs/c/connections?provider=telegram", ids)

    def test_bindings_pagination(self):
        acc = "EAAG" + _rand(30)
        conn = self.create_meta("whatsapp", "app-secret-0123456789", "verify-0123", acc)
        a = self.create_assistant()
        path = "/orgs/c/assistants/%s/channels" % a["id"]
        self.check_list_params(path)
        ids = [self.bind(a["id"], conn["id"], "10000000000%d" % i)["id"] for i in range(5)]
        self.check_pagination(path, ids)

    def test_contacts_pagination_params(self):
        self.check_list_params("/orgs/c/contacts")
        self.check_list_params("/orgs/c/contacts?status=BLOCKED")
        r = self.api("GET", "/orgs/c/contacts?page=2&take=5")
        self.assertStatus(r, 200)
        self.assertEqual(r.json, [])
        self.assertEqual(r.headers.get("pagination-count"), "0")


# ======================================================================================
# connections


class ConnectionsTest(MgmtBase):

    def test_telegram_create(self):
        tok = new_token()
        bot = self.telegram.add_bot(tok, username="shop%d_bot" % _seq[0])
        r = self.api("POST", "/orgs/c/connections",
                     {"provider": "telegram", "credentials": {"bot_token": tok}})
        self.assertStatus(r, 201)
        c = r.json
        self.assertConnectionShape(c, "telegram")
        self.assertEqual(c["status"], "active")
        self.assertEqual(c["account_hint"], "@" + bot["username"])
        self.assertEqual(c["name"], "@" + bot["username"])  # name defaults to the hint
        self.assertEqual(c["credentials"], {"bot_token": "****" + tok[-4:]})
        self.assertNotIn(tok.split(":")[1].encode(), r.body)

        methods = self.telegram_methods(tok)
        self.assertIn("getme", methods)
        self.assertIn("setwebhook", methods)
        self.assertLess(methods.index("getme"), methods.index("setwebhook"))
        calls = self.telegram.setwebhook_calls(tok)
        self.assertEqual(len(calls), 1)
        p = calls[0]["params"]
        self.assertEqual(p.get("url"), c["webhook_url"])
        self.assertRegex(p.get("secret_token") or "", SECRET_TOKEN)
        allowed = p.get("allowed_updates")
        if isinstance(allowed, str):
            allowed = json.loads(allowed)
        self.assertEqual(sorted(allowed), sorted(H.TELEGRAM_ALLOWED_UPDATES))
        self.assertEqual(len(allowed), 6)
        # the generated secret is never shown
        self.assertNotIn(p["secret_token"].encode(), r.body)

        g = self.api("GET", "/orgs/c/connections/" + c["id"])
        self.assertStatus(g, 200)
        self.assertEqual(g.json, c)
        self.assertNotIn(p["secret_token"].encode(), g.body)
        lst = self.api("GET", "/orgs/c/connections")
        self.assertEqual(lst.json, [c])

        # a second connection gets its own secret, and keeps the name it is given
        tok2 = new_token()
        c2 = self.create_telegram(tok2, name="Support bot")
        self.assertEqual(c2["name"], "Support bot")
        self.assertNotEqual(c2["id"], c["id"])
        self.assertNotEqual(self.telegram.last_secret(tok2), p["secret_token"])

    def test_telegram_rejected_token_stores_nothing(self):
        tok = new_token()  # unknown to the fake: getMe answers 401
        r = self.api("POST", "/orgs/c/connections",
                     {"provider": "telegram", "credentials": {"bot_token": tok}})
        self.assertStatus(r, 400, "provider_rejected")
        self.assertEqual(self.telegram_methods(tok), ["getme"])
        self.assertNothingStored(tok)
        # a token without the id:secret structure (Telegram answers 404) is refused too
        bad = "notatoken" + _rand(20)
        r = self.api("POST", "/orgs/c/connections",
                     {"provider": "telegram", "credentials": {"bot_token": bad}})
        self.assertStatus(r, 400)
        self.assertEqual(self.telegram.setwebhook_calls(bad), [])
        self.assertNothingStored(bad)

    def test_telegram_setwebhook_failure_is_502_and_stores_nothing(self):
        tok = new_token()
        self.telegram.add_bot(tok)
        self.telegram.override("setwebhook", status=500, body={
            "ok": False, "error_code": 500, "description": "Internal Server Error"})
        r = self.api("POST", "/orgs/c/connections",
                     {"provider": "telegram", "credentials": {"bot_token": tok}})
        self.assertStatus(r, 502, "provider_unavailable")
        self.assertGreaterEqual(len(self.telegram.setwebhook_calls(tok)), 1)
        self.assertNothingStored(tok)

    def test_telegram_getme_failure_is_502(self):
        tok = new_token()
        self.telegram.add_bot(tok)
        self.telegram.override("getme", status=502, body="<html>Bad Gateway</html>")
        r = self.api("POST", "/orgs/c/connections",
                     {"provider": "telegram", "credentials": {"bot_token": tok}})
        self.assertStatus(r, 502, "provider_unavailable")
        self.assertEqual(self.telegram.setwebhook_calls(tok), [])
        self.assertNothingStored(tok)

    def test_provider_hang_is_502_and_does_not_block_the_server(self):
        tok = new_token()
        self.telegram.add_bot(tok)
        self.telegram.override("setwebhook", delay=30)
        result = {}

        def create():
            result["r"] = self.api("POST", "/orgs/c/connections",
                                   {"provider": "telegram", "credentials": {"bot_token": tok}})
        t = threading.Thread(target=create)
        t.start()
        try:
            self.telegram.wait_for(method="setwebhook", token=tok)
            # the server keeps answering while a provider call hangs
            for _ in range(4):
                t0 = time.monotonic()
                self.assertStatus(self.api("GET", "/orgs/c/assistants"), 200)
                self.assertEqual(self.gw.http("GET", "/healthz").status, 200)
                self.assertLess(time.monotonic() - t0, 1.0)
        finally:
            t.join(40)
        self.assertFalse(t.is_alive())
        self.assertStatus(result["r"], 502)
        self.telegram.clear_overrides()
        self.assertNothingStored(tok)

    def test_meta_create(self):
        cases = [("whatsapp", {"username": None}, "WA Business"),
                 ("messenger", {"username": None}, "Page Name"),
                 ("instagram", {"username": "ig_shop"}, "IG Shop")]
        for provider, extra, acct_name in cases:
            acc = "EAAG" + _rand(40)
            app_secret = "app-" + _rand(28)
            verify = "vt" + _rand(6)  # under 12 characters: masked as "****" alone
            self.graph.add_account(acc, "1780000000%d" % len(provider), acct_name,
                                   extra["username"])
            n = len(self.graph.requests())
            r = self.api("POST", "/orgs/c/connections", {
                "provider": provider,
                "credentials": {"app_secret": app_secret, "verify_token": verify,
                                "access_token": acc}})
            self.assertStatus(r, 201)
            c = r.json
            self.assertConnectionShape(c, provider)
            self.assertEqual(c["status"], "active")
            self.assertEqual(c["credentials"], {"app_secret": masked(app_secret),
                                                "verify_token": "****",
                                                "access_token": masked(acc)})
            self.assertEqual(c["account_hint"],
                             extra["username"] if provider == "instagram" else acct_name)
            self.assertEqual(c["name"], c["account_hint"])
            for s in (acc, app_secret, verify):
                self.assertNotIn(s.encode(), r.body)
            calls = [q for q in self.graph.requests()[n:] if q["path"] == "/me"]
            self.assertTrue(calls, "no Graph GET /me")
            q = calls[0]
            self.assertEqual(q["http_method"], "GET")
            self.assertEqual(q["headers"].get("authorization"), "Bearer " + acc)
            fields = set((q["query"].get("fields") or "").split(","))
            self.assertLessEqual({"id", "name"}, fields)
            if provider == "instagram":
                self.assertIn("username", fields)
            self.assertEqual(self.api("GET", "/orgs/c/connections/" + c["id"]).json, c)

    def test_mask_threshold_is_12_characters(self):
        acc = "EAAG" + _rand(40)
        self.graph.add_account(acc, "1001", "P")
        c = self.create_meta("messenger", app_secret="a" * 11, verify_token="v" * 8 + "WXYZ",
                             access_token=acc)
        self.assertEqual(c["credentials"]["app_secret"], "****")
        self.assertEqual(c["credentials"]["verify_token"], "****WXYZ")

    def test_meta_rejected_token_is_400_and_stores_nothing(self):
        acc = "EAAG" + _rand(40)  # unknown to the fake: code 190
        body = {"provider": "messenger", "credentials": {
            "app_secret": "app-" + _rand(28), "verify_token": "verify-" + _rand(10),
            "access_token": acc}}
        r = self.api("POST", "/orgs/c/connections", body)
        self.assertStatus(r, 400, "provider_rejected")
        calls = self.graph.requests(path="/me", token=acc)
        self.assertEqual(len(calls), 1)
        self.assertEqual(calls[0]["headers"].get("authorization"), "Bearer " + acc)
        self.assertNothingStored(acc)
        self.assertNoSecretStored(body["credentials"]["app_secret"],
                                  body["credentials"]["verify_token"])

    def test_meta_graph_5xx_is_502(self):
        acc = "EAAG" + _rand(40)
        self.graph.add_account(acc, "1001", "P")
        self.graph.override("GET /me", status=500, body={"error": {
            "message": "An unknown error occurred", "type": "OAuthException", "code": 1}})
        r = self.api("POST", "/orgs/c/connections", {"provider": "whatsapp", "credentials": {
            "app_secret": "app-" + _rand(28), "verify_token": "verify-" + _rand(10),
            "access_token": acc}})
        self.assertStatus(r, 502, "provider_unavailable")
        self.assertNothingStored(acc)

    def test_patch_rename(self):
        c = self.create_telegram(new_token())
        path = "/orgs/c/connections/" + c["id"]
        r = self.api("PATCH", path, {"name": "Renamed ✓"})
        self.assertStatus(r, 200)
        self.assertEqual(r.json["name"], "Renamed ✓")
        for f in ("id", "provider", "status", "account_hint", "created_at", "webhook_url",
                  "credentials"):
            self.assertEqual(r.json[f], c[f], f)
        self.assertGreaterEqual(r.json["updated_at"], c["updated_at"])
        self.assertEqual(self.api("GET", path).json, r.json)
        for body in ({}, {"name": ""}, {"name": "x" * 1025}, {"name": 5},
                     {"credentials": {"unknown": "x"}}, {"credentials": {"bot_token": 5}},
                     {"credentials": "x"}, {"provider": "whatsapp"}):
            rr = self.api("PATCH", path, body)
            self.assertStatus(rr, 400)
        self.assertEqual(self.api("GET", path).json, r.json)

    def test_patch_telegram_token_rotation(self):
        tok = new_token()
        c = self.create_telegram(tok, username="rot%d_bot" % _seq[0])
        path = "/orgs/c/connections/" + c["id"]
        bot_id = tok.split(":")[0]
        tok2 = bot_id + ":AAH" + _rand(32)
        self.telegram.add_bot(tok2, username=self.telegram.bots[tok]["username"])
        r = self.api("PATCH", path, {"credentials": {"bot_token": tok2}})
        self.assertStatus(r, 200)
        self.assertEqual(r.json["credentials"], {"bot_token": "****" + tok2[-4:]})
        self.assertEqual(r.json["status"], "active")
        self.assertEqual(self.telegram_methods(tok2)[:1], ["getme"])
        sw = self.telegram.setwebhook_calls(tok2)
        self.assertEqual(len(sw), 1, "the webhook must be registered again with the new token")
        self.assertEqual(sw[0]["params"].get("url"), c["webhook_url"])
        self.assertRegex(sw[0]["params"].get("secret_token") or "", SECRET_TOKEN)
        self.assertEqual(self.api("GET", path).json, r.json)

        # a token of another bot is refused and changes nothing
        other = new_token()
        self.telegram.add_bot(other)
        rr = self.api("PATCH", path, {"credentials": {"bot_token": other}})
        self.assertStatus(rr, 400)
        self.assertEqual(self.telegram.setwebhook_calls(other), [])
        self.assertEqual(self.api("GET", path).json, r.json)
        # a token the provider refuses: 400 provider_rejected, nothing changes
        refused = bot_id + ":AAH" + _rand(32)
        rr = self.api("PATCH", path, {"credentials": {"bot_token": refused}})
        self.assertStatus(rr, 400, "provider_rejected")
        self.assertEqual(self.api("GET", path).json, r.json)
        self.assertNoSecretStored(refused, other)

    def test_patch_meta_credentials_merge(self):
        acc = "EAAG" + _rand(40)
        c = self.create_meta("messenger", "app-" + _rand(28), "verify-" + _rand(10), acc,
                             account_name="Page One")
        path = "/orgs/c/connections/" + c["id"]
        acc2 = "EAAG" + _rand(40)
        self.graph.add_account(acc2, "1001", "Page One")
        r = self.api("PATCH", path, {"credentials": {"access_token": acc2}})
        self.assertStatus(r, 200)
        self.assertEqual(r.json["credentials"]["access_token"], masked(acc2))
        self.assertEqual(r.json["credentials"]["app_secret"], c["credentials"]["app_secret"])
        self.assertEqual(r.json["credentials"]["verify_token"], c["credentials"]["verify_token"])
        self.assertTrue(self.graph.requests(path="/me", token=acc2), "new token not checked")
        # a token the Graph API refuses (190) is 400 and changes nothing
        bad = "EAAG" + _rand(40)
        rr = self.api("PATCH", path, {"credentials": {"access_token": bad}})
        self.assertStatus(rr, 400, "provider_rejected")
        self.assertEqual(self.api("GET", path).json, r.json)
        # other keys alone
        app2 = "app-" + _rand(28)
        rr = self.api("PATCH", path, {"credentials": {"app_secret": app2}, "name": "both"})
        self.assertStatus(rr, 200)
        self.assertEqual(rr.json["credentials"]["app_secret"], masked(app2))
        self.assertEqual(rr.json["credentials"]["access_token"], masked(acc2))
        self.assertEqual(rr.json["name"], "both")

    def test_connection_test_telegram(self):
        tok = new_token()
        c = self.create_telegram(tok, username="tst%d_bot" % _seq[0])
        path = "/orgs/c/connections/" + c["id"]
        hint = c["account_hint"]
        n = len(self.telegram.requests(token=tok, method="getme"))
        r = self.api("POST", path + "/test")
        self.assertStatus(r, 200)
        self.assertEqual(r.json.get("ok"), True)
        self.assertEqual(r.json.get("account_hint"), hint)
        self.assertNotIn("error", r.json)
        self.assertEqual(len(self.telegram.requests(token=tok, method="getme")), n + 1)

        # the provider refuses the token: ok false with its message, status inactive
        self.telegram.remove_bot(tok)
        r = self.api("POST", path + "/test")
        self.assertStatus(r, 200)
        self.assertEqual(r.json.get("ok"), False)
        self.assertIn("account_hint", r.json)
        self.assertIn("Unauthorized", r.json.get("error", ""))
        self.assertEqual(self.api("GET", path).json["status"], "inactive")
        self.assertEqual(self.api("GET", "/orgs/c/connections").json[0]["status"], "inactive")

        # an unreachable provider changes nothing
        self.telegram.override("getme", status=500, body={
            "ok": False, "error_code": 500, "description": "Internal Server Error"})
        r = self.api("POST", path + "/test")
        self.assertIn(r.status, (200, 502), r)
        if r.status == 200:
            self.assertEqual(r.json.get("ok"), False)
        self.assertEqual(self.api("GET", path).json["status"], "inactive")
        self.telegram.clear_overrides()

        # success sets active again
        self.telegram.add_bot(tok, username=hint[1:])
        r = self.api("POST", path + "/test")
        self.assertStatus(r, 200)
        self.assertEqual(r.json, {"ok": True, "account_hint": hint})
        self.assertEqual(self.api("GET", path).json["status"], "active")

        # unreachable while active: stays active
        self.telegram.override("getme", status=503, body="down")
        r = self.api("POST", path + "/test")
        self.assertIn(r.status, (200, 502), r)
        self.assertEqual(self.api("GET", path).json["status"], "active")

    def test_new_credentials_set_active(self):
        tok = new_token()
        c = self.create_telegram(tok)
        path = "/orgs/c/connections/" + c["id"]
        self.telegram.remove_bot(tok)
        self.assertEqual(self.api("POST", path + "/test").json.get("ok"), False)
        self.assertEqual(self.api("GET", path).json["status"], "inactive")
        tok2 = tok.split(":")[0] + ":AAH" + _rand(32)
        self.telegram.add_bot(tok2)
        r = self.api("PATCH", path, {"credentials": {"bot_token": tok2}})
        self.assertStatus(r, 200)
        self.assertEqual(r.json["status"], "active")
        # a rename alone does not reactivate
        self.telegram.remove_bot(tok2)
        self.api("POST", path + "/test")
        self.assertEqual(self.api("GET", path).json["status"], "inactive")
        r = self.api("PATCH", path, {"name": "renamed"})
        self.assertStatus(r, 200)
        self.assertEqual(r.json["status"], "inactive")

    def test_connection_test_whatsapp_me_then_phone_number(self):
        acc = "EAAG" + _rand(40)
        c = self.create_meta("whatsapp", "app-" + _rand(28), "verify-" + _rand(10), acc,
                             account_name="WABA Name")
        path = "/orgs/c/connections/" + c["id"]
        self.assertEqual(c["account_hint"], "WABA Name")
        n = len(self.graph.requests())
        r = self.api("POST", path + "/test")
        self.assertStatus(r, 200)
        self.assertEqual(r.json, {"ok": True, "account_hint": "WABA Name"})
        self.assertEqual([q["path"] for q in self.graph.requests()[n:]], ["/me"])

        pnid = "1099%011d" % random.randrange(10 ** 11)
        self.graph.add_phone_number(pnid, display="+1 555-010-1234")
        a = self.create_assistant()
        self.bind(a["id"], c["id"], pnid)
        n = len(self.graph.requests())
        r = self.api("POST", path + "/test")
        self.assertStatus(r, 200)
        self.assertEqual(r.json, {"ok": True, "account_hint": "+1 555-010-1234"})
        calls = self.graph.requests()[n:]
        self.assertEqual([q["path"] for q in calls], ["/" + pnid])
        self.assertEqual(calls[0]["headers"].get("authorization"), "Bearer " + acc)
        fields = set((calls[0]["query"].get("fields") or "").split(","))
        self.assertLessEqual({"display_phone_number", "verified_name"}, fields)
        self.assertEqual(self.api("GET", path).json["account_hint"], "+1 555-010-1234")

        # token refused (190): ok false with the provider's message, inactive
        self.graph.remove_account(acc)
        r = self.api("POST", path + "/test")
        self.assertStatus(r, 200)
        self.assertEqual(r.json.get("ok"), False)
        self.assertIn("Invalid OAuth access token", r.json.get("error", ""))
        self.assertEqual(self.api("GET", path).json["status"], "inactive")
        self.graph.add_account(acc, "1", "WABA Name")
        r = self.api("POST", path + "/test")
        self.assertEqual(r.json.get("ok"), True)
        self.assertEqual(self.api("GET", path).json["status"], "active")

    def test_connection_test_messenger_and_instagram(self):
        acc = "EAAG" + _rand(40)
        m = self.create_meta("messenger", "app-" + _rand(28), "verify-" + _rand(10), acc,
                             account_name="My Page")
        r = self.api("POST", "/orgs/c/connections/%s/test" % m["id"])
        self.assertStatus(r, 200)
        self.assertEqual(r.json, {"ok": True, "account_hint": "My Page"})
        self.assertEqual(self.graph.requests(token=acc)[-1]["path"], "/me")
        acc2 = "EAAG" + _rand(40)
        i = self.create_meta("instagram", "app-" + _rand(28), "verify-" + _rand(10), acc2,
                             account_name="IG Name", username="ig_user_x")
        self.assertEqual(i["account_hint"], "ig_user_x")
        r = self.api("POST", "/orgs/c/connections/%s/test" % i["id"])
        self.assertStatus(r, 200)
        self.assertEqual(r.json, {"ok": True, "account_hint": "ig_user_x"})
        self.graph.remove_account(acc2)
        r = self.api("POST", "/orgs/c/connections/%s/test" % i["id"])
        self.assertEqual(r.json.get("ok"), False)
        self.assertEqual(self.api("GET", "/orgs/c/connections/" + i["id"]).json["status"],
                         "inactive")
        self.assertEqual(self.api("GET", "/orgs/c/connections/" + m["id"]).json["status"],
                         "active")

    def test_delete_connection(self):
        tok = new_token()
        c = self.create_telegram(tok)
        acc = "EAAG" + _rand(40)
        w = self.create_meta("whatsapp", "app-" + _rand(28), "verify-" + _rand(10), acc)
        a = self.create_assistant("keeps living")
        b1 = self.bind(a["id"], c["id"])
        b2 = self.bind(a["id"], w["id"], "10999")
        r = self.api("DELETE", "/orgs/c/connections/" + c["id"])
        self.assertStatus(r, 204)
        self.assertEqual(r.body, b"")
        self.assertIn("deletewebhook", self.telegram_methods(tok))
        self.assertStatus(self.api("GET", "/orgs/c/connections/" + c["id"]), 404, "not_found")
        self.assertEqual([x["id"] for x in self.list_all("/orgs/c/connections")], [w["id"]])
        chans = self.list_all("/orgs/c/assistants/%s/channels" % a["id"])
        self.assertEqual([x["id"] for x in chans], [b2["id"]])
        self.assertNotIn(b1["id"], [x["id"] for x in chans])
        self.assertEqual(self.list_count("/orgs/c/assistants/%s/channels" % a["id"]), 1)
        self.assertStatus(self.api("GET", "/orgs/c/assistants/" + a["id"]), 200)
        self.assertStatus(self.api("DELETE", "/orgs/c/connections/" + c["id"]), 404)
        self.assertStatus(
            self.api("DELETE", "/orgs/c/assistants/%s/channels/%s" % (a["id"], b1["id"])), 404)
        # the webhook of a deleted connection is unknown
        r = self.gw.http("POST", self.webhook_path(c), body=b'{"update_id": 1}',
                         headers={"Content-Type": "application/json",
                                  "X-Telegram-Bot-Api-Secret-Token": "x" * 32})
        self.assertEqual(r.status, 404, r)
        # Meta connections are deleted without any Telegram call
        r = self.api("DELETE", "/orgs/c/connections/" + w["id"])
        self.assertStatus(r, 204)
        self.assertEqual(self.list_all("/orgs/c/assistants/%s/channels" % a["id"]), [])
        self.assertEqual(self.list_all("/orgs/c/connections"), [])

    def test_delete_connection_when_deletewebhook_fails(self):
        tok = new_token()
        c = self.create_telegram(tok)
        self.telegram.override("deletewebhook", status=500, body={
            "ok": False, "error_code": 500, "description": "Internal Server Error"})
        r = self.api("DELETE", "/orgs/c/connections/" + c["id"])
        self.assertStatus(r, 204)
        self.assertIn("deletewebhook", self.telegram_methods(tok))
        self.assertStatus(self.api("GET", "/orgs/c/connections/" + c["id"]), 404)


# ======================================================================================
# assistants and bindings


class AssistantsAndBindingsTest(MgmtBase):

    def test_assistant_crud(self):
        r = self.api("POST", "/orgs/c/assistants", {"name": "Concierge"})
        self.assertStatus(r, 201)
        a = r.json
        self.assertAssistantShape(a)
        self.assertEqual(a["name"], "Concierge")
        self.assertIs(a["enabled"], True)
        path = "/orgs/c/assistants/" + a["id"]
        self.assertEqual(self.api("GET", path).json, a)
        self.assertEqual(self.api("GET", "/orgs/c/assistants").json, [a])

        r = self.api("PATCH", path, {"name": "Concierge 2"})
        self.assertStatus(r, 200)
        self.assertEqual(r.json["name"], "Concierge 2")
        self.assertIs(r.json["enabled"], True)
        self.assertEqual(r.json["created_at"], a["created_at"])
        self.assertGreaterEqual(r.json["updated_at"], a["updated_at"])
        r = self.api("PATCH", path, {"enabled": False})
        self.assertStatus(r, 200)
        self.assertIs(r.json["enabled"], False)
        self.assertEqual(r.json["name"], "Concierge 2")
        r = self.api("PATCH", path, {"enabled": True, "name": "Both"})
        self.assertStatus(r, 200)
        self.assertEqual((r.json["name"], r.json["enabled"]), ("Both", True))
        self.assertEqual(self.api("GET", path).json, r.json)

        r = self.api("DELETE", path)
        self.assertStatus(r, 204)
        self.assertEqual(r.body, b"")
        self.assertStatus(self.api("GET", path), 404, "not_found")
        self.assertStatus(self.api("PATCH", path, {"name": "x"}), 404, "not_found")
        self.assertStatus(self.api("DELETE", path), 404, "not_found")
        self.assertEqual(self.list_count("/orgs/c/assistants"), 0)

    def test_default_creation_limit_is_10_per_hour(self):
        for i in range(10):
            self.create_assistant("n%d" % i)
        r = self.api("POST", "/orgs/c/assistants", {"name": "eleventh"})
        self.assertStatus(r, 429, "rate_limited")
        self.assertTrue(r.headers.get("retry-after", "").isdigit(), r.headers)
        self.assertEqual(self.list_count("/orgs/c/assistants"), 10)
        # the limit is per org
        _, k2 = self.other_key()
        self.create_assistant("other org", key=k2)

    def test_binding_create_telegram_defaults_to_bot_id(self):
        tok = new_token()
        c = self.create_telegram(tok)
        a = self.create_assistant()
        r = self.api("POST", "/orgs/c/assistants/%s/channels" % a["id"],
                     {"connection_id": c["id"], "name": "main bot"})
        self.assertStatus(r, 201)
        b = r.json
        for f in ("id", "assistant_id", "connection_id", "channel", "external_id", "name",
                  "created_at"):
            self.assertIn(f, b)
        self.assertRegex(b["id"], "^bd_" + ID_CHARS + "$")
        self.assertEqual(b["assistant_id"], a["id"])
        self.assertEqual(b["connection_id"], c["id"])
        self.assertEqual(b["channel"], "telegram")
        self.assertEqual(b["external_id"], tok.split(":")[0])
        self.assertEqual(b["name"], "main bot")
        self.assertRegex(b["created_at"], ISO_MS)
        r = self.api("GET", "/orgs/c/assistants/%s/channels" % a["id"])
        self.assertEqual(r.json, [b])
        # another bot id is refused; the same one again is a conflict
        c2 = self.create_telegram(new_token())
        r = self.api("POST", "/orgs/c/assistants/%s/channels" % a["id"],
                     {"connection_id": c2["id"], "external_id": tok.split(":")[0]})
        self.assertStatus(r, 400, "bad_request")
        r = self.api("POST", "/orgs/c/assistants/%s/channels" % a["id"],
                     {"connection_id": c["id"], "external_id": tok.split(":")[0]})
        self.assertStatus(r, 409, "conflict")

    def test_binding_validation(self):
        acc = "EAAG" + _rand(40)
        w = self.create_meta("whatsapp", "app-" + _rand(28), "verify-" + _rand(10), acc)
        a = self.create_assistant()
        path = "/orgs/c/assistants/%s/channels" % a["id"]
        _, k2 = self.other_key()
        foreign = self.create_meta("whatsapp", "app-" + _rand(28), "verify-" + _rand(10),
                                   "EAAG" + _rand(40), key=k2)
        for body in ({"external_id": "123"},                               # no connection_id
                     {"connection_id": "cn_doesnotexist", "external_id": "123"},
                     {"connection_id": foreign["id"], "external_id": "123"},
                     {"connection_id": 5, "external_id": "123"},
                     {"connection_id": w["id"]},                           # Meta: required
                     {"connection_id": w["id"], "external_id": ""},
                     {"connection_id": w["id"], "external_id": "1" * 257},
                     {"connection_id": w["id"], "external_id": 123},
                     {"connection_id": w["id"], "external_id": None}):
            r = self.api("POST", path, body)
            self.assertStatus(r, 400, "bad_request")
        self.assertEqual(self.list_count(path), 0)
        b = self.bind(a["id"], w["id"], "9" * 256)
        self.assertEqual(b["external_id"], "9" * 256)
        self.assertEqual(b["channel"], "whatsapp")

    def test_binding_conflicts(self):
        acc = "EAAG" + _rand(40)
        w = self.create_meta("whatsapp", "app-" + _rand(28), "verify-" + _rand(10), acc)
        acc2 = "EAAG" + _rand(40)
        w2 = self.create_meta("whatsapp", "app-" + _rand(28), "verify-" + _rand(10), acc2)
        a1 = self.create_assistant("one")
        a2 = self.create_assistant("two")
        b = self.bind(a1["id"], w["id"], "10001")
        for aid in (a1["id"], a2["id"]):
            r = self.api("POST", "/orgs/c/assistants/%s/channels" % aid,
                         {"connection_id": w["id"], "external_id": "10001"})
            self.assertStatus(r, 409, "conflict")
        self.assertEqual(self.list_count("/orgs/c/assistants/%s/channels" % a2["id"]), 0)
        # other external id on the same connection, same external id on another connection
        self.bind(a2["id"], w["id"], "10002")
        self.bind(a2["id"], w2["id"], "10001")
        # unbinding frees the pair
        r = self.api("DELETE", "/orgs/c/assistants/%s/channels/%s" % (a1["id"], b["id"]))
        self.assertStatus(r, 204)
        self.bind(a2["id"], w["id"], "10001")

    def test_unbind_keeps_connection(self):
        tok = new_token()
        c = self.create_telegram(tok)
        a = self.create_assistant()
        a2 = self.create_assistant()
        b = self.bind(a["id"], c["id"])
        # a binding is only reachable through its own assistant
        r = self.api("DELETE", "/orgs/c/assistants/%s/channels/%s" % (a2["id"], b["id"]))
        self.assertStatus(r, 404, "not_found")
        n_delete = self.telegram_methods(tok).count("deletewebhook")
        r = self.api("DELETE", "/orgs/c/assistants/%s/channels/%s" % (a["id"], b["id"]))
        self.assertStatus(r, 204)
        self.assertEqual(r.body, b"")
        self.assertEqual(self.list_all("/orgs/c/assistants/%s/channels" % a["id"]), [])
        self.assertEqual(self.api("GET", "/orgs/c/connections/" + c["id"]).json, c)
        self.assertEqual(self.telegram_methods(tok).count("deletewebhook"), n_delete)
        self.assertStatus(
            self.api("DELETE", "/orgs/c/assistants/%s/channels/%s" % (a["id"], b["id"])), 404)
        self.bind(a["id"], c["id"])

    def test_delete_assistant_removes_its_bindings_only(self):
        tok = new_token()
        c = self.create_telegram(tok)
        acc = "EAAG" + _rand(40)
        w = self.create_meta("whatsapp", "app-" + _rand(28), "verify-" + _rand(10), acc)
        a = self.create_assistant("doomed")
        keep = self.create_assistant("kept")
        self.bind(a["id"], c["id"])
        kb = self.bind(keep["id"], w["id"], "555")
        r = self.api("DELETE", "/orgs/c/assistants/" + a["id"])
        self.assertStatus(r, 204)
        self.assertStatus(self.api("GET", "/orgs/c/assistants/%s/channels" % a["id"]), 404)
        # the connections stay; the other assistant's binding stays
        self.assertEqual([x["id"] for x in self.list_all("/orgs/c/connections")],
                         [c["id"], w["id"]])
        self.assertEqual(self.list_all("/orgs/c/assistants/%s/channels" % keep["id"]), [kb])
        self.assertNotIn("deletewebhook", self.telegram_methods(tok))
        # the (connection, external id) pair is free again
        self.bind(keep["id"], c["id"])


# ======================================================================================
# contacts (created by inbound Telegram webhooks)


class ContactsTest(MgmtBase):

    def setUp(self):
        super().setUp()
        self.fx = H.load_fixture("telegram", "text_private")
        self.token = H.fixture_token(self.fx)
        self.telegram.add_bot(self.token, username="fixture_bot")
        self.conn = self.create_telegram(self.token)
        self.addCleanup(lambda: self.api("DELETE", "/orgs/c/connections/" + self.conn["id"]))
        self.assistant = self.create_assistant("inbox")
        self.binding = self.bind(self.assistant["id"], self.conn["id"],
                                 self.fx["binding_external_id"])

    def update(self, update_id, user_id=None, first_name=None, last_name=None, username=None,
               text="hello"):
        body = copy.deepcopy(self.fx["body"])
        body["update_id"] = update_id
        msg = body["message"]
        msg["message_id"] = update_id % 100000
        msg["text"] = text
        if user_id is not None:
            for o in (msg["from"], msg["chat"]):
                o["id"] = user_id
                for k, v in (("first_name", first_name), ("last_name", last_name),
                             ("username", username)):
                    if v is None:
                        o.pop(k, None)
                    else:
                        o[k] = v
        return body

    def post(self, body, secret=None):
        r = self.post_telegram_update(self.conn, self.token, body, secret)
        return r

    def wait_contacts(self, n, key=...):
        return H.wait_until(
            lambda: (lambda r: r.status == 200 and len(r.json) == n and r.json)(
                self.api("GET", "/orgs/c/contacts", key=key)),
            10, "%d contact(s)" % n)

    def test_contact_created_by_inbound_and_listed(self):
        r = self.post(self.fx["body"])
        self.assertEqual(r.status, 200, r)
        contacts = self.wait_contacts(1)
        ct = contacts[0]
        self.assertRegex(ct["id"], "^ct_" + ID_CHARS + "$")
        self.assertEqual(ct["channel"], "telegram")
        exp = self.fx["expect"][0]
        self.assertEqual(ct["external_id"], exp["contact.external_id"])
        self.assertEqual(ct["name"], exp["contact.name"])
        self.assertEqual(ct["username"], exp["contact.username"])
        self.assertNotIn("phone", ct)
        self.assertEqual(ct["status"], "SUBSCRIBED")
        self.assertRegex(ct["created_at"], ISO_MS)
        self.assertRegex(ct["updated_at"], ISO_MS)
        g = self.api("GET", "/orgs/c/contacts/" + ct["id"])
        self.assertStatus(g, 200)
        self.assertEqual(g.json, ct)
        # redelivery and a second message of the same user: still one contact
        self.assertEqual(self.post(self.fx["body"]).status, 200)
        self.assertEqual(self.post(self.update(self.fx["body"]["update_id"] + 1)).status, 200)
        r = self.api("GET", "/orgs/c/contacts")
        self.assertEqual(len(r.json), 1)
        self.assertEqual(r.headers.get("pagination-count"), "1")

    def test_wrong_secret_creates_no_contact(self):
        for secret in ("wrong-secret", ""):
            r = self.post(self.fx["body"], secret=secret)
            self.assertEqual(r.status, 401, r)
        r = self.gw.http("POST", self.webhook_path(self.conn), body=json.dumps(self.fx["body"]),
                         headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 401, r)
        self.assertEqual(self.list_count("/orgs/c/contacts"), 0)

    def test_contacts_filter_patch_and_pagination(self):
        base = self.fx["body"]["update_id"]
        users = [(int(self.fx["expect"][0]["contact.external_id"]), None), (900000001, "Bob"),
                 (900000002, "Carol")]
        for i, (uid, first) in enumerate(users):
            body = self.fx["body"] if first is None else self.update(base + 10 + i, uid, first)
            self.assertEqual(self.post(body).status, 200)
        contacts = self.wait_contacts(3)
        self.assertEqual([c["external_id"] for c in contacts], [str(u) for u, _ in users])
        self.assertEqual(contacts[1]["name"], "Bob")
        self.assertNotIn("username", contacts[1])
        ids = [c["id"] for c in contacts]
        self.check_pagination("/orgs/c/contacts", ids)
        self.check_pagination("/orgs/c/contacts?status=ALL", ids)
        self.check_pagination("/orgs/c/contacts?status=SUBSCRIBED", ids)
        for st in ("BLOCKED", "UNSUBSCRIBED", "AI_REPLIES_DISABLED"):
            r = self.api("GET", "/orgs/c/contacts?status=" + st)
            self.assertStatus(r, 200)
            self.assertEqual(r.json, [])
            self.assertEqual(r.headers.get("pagination-count"), "0")

        alice = contacts[0]
        path = "/orgs/c/contacts/" + alice["id"]
        for st in CONTACT_STATUSES:
            r = self.api("PATCH", path, {"status": st})
            self.assertStatus(r, 200)
            self.assertEqual(r.json["status"], st)
            self.assertEqual(r.json["id"], alice["id"])
            self.assertEqual(r.json["created_at"], alice["created_at"])
            self.assertGreaterEqual(r.json["updated_at"], alice["updated_at"])
            self.assertEqual(self.api("GET", path).json["status"], st)
            r = self.api("GET", "/orgs/c/contacts?status=" + st)
            self.assertEqual([c["id"] for c in r.json], [alice["id"]] if st != "SUBSCRIBED"
                             else ids)
        r = self.api("PATCH", path, {"status": "BLOCKED"})
        self.assertStatus(r, 200)
        r = self.api("GET", "/orgs/c/contacts?status=BLOCKED")
        self.assertEqual([c["id"] for c in r.json], [alice["id"]])
        self.assertEqual(r.headers.get("pagination-count"), "1")
        r = self.api("GET", "/orgs/c/contacts?status=SUBSCRIBED")
        self.assertEqual([c["id"] for c in r.json], ids[1:])
        self.assertEqual(r.headers.get("pagination-count"), "2")
        r = self.api("GET", "/orgs/c/contacts?status=SUBSCRIBED&take=1&page=2")
        self.assertEqual([c["id"] for c in r.json], ids[2:])
        self.assertEqual(r.headers.get("pagination-count"), "2")
        self.assertEqual(self.list_count("/orgs/c/contacts"), 3)

        # invalid statuses and filters
        for body in ({"status": "FOO"}, {"status": "blocked"}, {"status": "ALL"},
                     {"status": 1}, {"status": None}, {}, {"name": "x"}):
            r = self.api("PATCH", path, body)
            self.assertStatus(r, 400, "bad_request")
        for body in ("{", "[]"):
            self.assertStatus(self.api("PATCH", path, body), 400, "bad_request")
        self.assertEqual(self.api("GET", path).json["status"], "BLOCKED")
        for st in ("FOO", "blocked", "", "SUBSCRIBED,BLOCKED"):
            r = self.api("GET", "/orgs/c/contacts?status=" + st)
            self.assertStatus(r, 400, "bad_request")

        # another org sees none of them
        _, k2 = self.other_key()
        self.assertStatus(self.api("GET", path, key=k2), 404, "not_found")
        self.assertStatus(self.api("PATCH", path, {"status": "SUBSCRIBED"}, key=k2), 404,
                          "not_found")
        r = self.api("GET", "/orgs/c/contacts", key=k2)
        self.assertEqual(r.json, [])
        self.assertEqual(r.headers.get("pagination-count"), "0")
        self.assertEqual(self.api("GET", path).json["status"], "BLOCKED")

    def test_contact_status_controls_routing(self):
        """Contract §6: BLOCKED is dropped; AI_REPLIES_DISABLED reaches the inbox only."""
        r = self.post(self.fx["body"])
        self.assertEqual(r.status, 200, r)
        ct = self.wait_contacts(1)[0]
        in_key = "%sin:{%s}" % (self.PREFIX, self.assistant["id"])
        inbox_key = "%sinbox:{%s}" % (self.PREFIX, self.org)

        def lens():
            return self.redis.command("XLEN", in_key), self.redis.command("XLEN", inbox_key)
        self.assertEqual(lens(), (1, 1))
        uid = self.fx["body"]["update_id"]
        self.assertStatus(self.api("PATCH", "/orgs/c/contacts/" + ct["id"],
                                   {"status": "AI_REPLIES_DISABLED"}), 200)
        self.assertEqual(self.post(self.update(uid + 1)).status, 200)
        self.assertEqual(lens(), (1, 2))
        self.assertStatus(self.api("PATCH", "/orgs/c/contacts/" + ct["id"],
                                   {"status": "BLOCKED"}), 200)
        self.assertEqual(self.post(self.update(uid + 2)).status, 200)
        self.assertEqual(lens(), (1, 2))
        self.assertStatus(self.api("PATCH", "/orgs/c/contacts/" + ct["id"],
                                   {"status": "SUBSCRIBED"}), 200)
        self.assertEqual(self.post(self.update(uid + 3)).status, 200)
        self.assertEqual(lens(), (2, 3))


# ======================================================================================
# rate limits (own gateways)


class AssistantCreationLimitTest(MgmtBase):
    PREFIX = "tm_acl:"
    EXTRA_ENV = {"SWITCHBOARD_API_ASSISTANT_CREATIONS_PER_HOUR": "3"}

    def test_fourth_creation_is_429_and_invalid_requests_do_not_count(self):
        self.create_assistant("one")
        for body in ({"name": ""}, {"name": "x" * 1025}, {}, {"name": "x", "enabled": "y"}):
            self.assertStatus(self.api("POST", "/orgs/c/assistants", body), 400)
        self.assertStatus(self.api("POST", "/orgs/c/assistants", "{"), 400)
        self.assertStatus(self.api("POST", "/orgs/c/assistants", {"name": "x"}, key=None), 401)
        self.create_assistant("two")
        a3 = self.create_assistant("three")
        r = self.api("POST", "/orgs/c/assistants", {"name": "four"})
        self.assertStatus(r, 429, "rate_limited")
        ra = r.headers.get("retry-after", "")
        self.assertTrue(ra.isdigit(), r.headers)
        self.assertTrue(1 <= int(ra) <= 3600, ra)
        self.assertEqual(self.list_count("/orgs/c/assistants"), 3)
        # still 429 after a delete: successful creations count, not live assistants
        self.assertStatus(self.api("DELETE", "/orgs/c/assistants/" + a3["id"]), 204)
        self.assertStatus(self.api("POST", "/orgs/c/assistants", {"name": "five"}), 429)
        # other routes of the org are not limited; other orgs are not limited
        self.assertStatus(self.api("GET", "/orgs/c/assistants"), 200)
        _, k2 = self.other_key()
        self.create_assistant("other org", key=k2)


class IpRateLimitTest(MgmtBase):
    PREFIX = "tm_ip:"
    EXTRA_ENV = {"SWITCHBOARD_API_RATE_LIMIT_PER_MINUTE": "20"}

    def test_21st_request_in_a_minute_is_429(self):
        for _ in range(5):  # outside /orgs/: not counted
            self.assertEqual(self.gw.http("GET", "/healthz").status, 200)
        statuses = []
        for i in range(20):
            # counted before authentication: unauthenticated requests count too
            r = self.api("GET", "/orgs/c/assistants", key=None if i % 2 else self.key)
            statuses.append(r.status)
        self.assertEqual(statuses, [200, 401] * 10)
        r = self.api("GET", "/orgs/c/assistants")
        self.assertStatus(r, 429, "rate_limited")
        ra = r.headers.get("retry-after", "")
        self.assertTrue(ra.isdigit(), r.headers)
        self.assertTrue(1 <= int(ra) <= 60, ra)
        r = self.api("GET", "/orgs/c/assistants", key=None)
        self.assertEqual(r.status, 429, r)
        r = self.api("POST", "/orgs/c/assistants", {"name": "x"})
        self.assertStatus(r, 429, "rate_limited")
        for path in ("/healthz", "/readyz", "/metrics"):
            self.assertEqual(self.gw.http("GET", path).status, 200, path)


if __name__ == "__main__":
    H.main()

"""
Inbound webhooks end to end (docs/events.md): every fixture of every directory of
$SB_FIXTURES_DIRS (the repository's tests/fixtures, and ../shared/fixtures when it exists)
is POSTed to the real gateway with a valid signature (Meta bodies both ASCII-escaped, as
Meta sends them, and as raw UTF-8), and the events appended to the assistant's stream are
checked field by field against the fixture's "expect" list; nothing else may be appended.
Each fixture directory has its own org, assistants and connections, so two directories
may use the same provider ids.
Then the bad inputs: duplicates, wrong signatures and secrets, bodies of another channel,
truncated JSON, arrays, a 5 MiB body, unknown connections, and Redis going away.
"""

import glob
import hashlib
import hmac
import json
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import FakeGraph, FakeTelegram, Gateway, RedisServer, wait_until  # noqa: E402

CHANNELS = ("whatsapp", "messenger", "instagram", "telegram")
META = ("whatsapp", "messenger", "instagram")


def fixtures(channel, directory=None):
    out = []
    for d, path in harness.fixture_files(channel, None if directory is None else [directory]):
        with open(path, encoding="utf-8") as f:
            fx = json.load(f)
        fx["_name"] = "%s:%s/%s" % (harness.fixture_label(d), channel, os.path.basename(path)[:-5])
        fx["_dir"] = d
        out.append(fx)
    return out


def ascii_bytes(body):
    return json.dumps(body, separators=(",", ":")).encode("ascii")


def utf8_bytes(body):
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(secret, data):
    return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def dot(obj, path):
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return KeyError(path)
        obj = obj[part]
    return obj


class Env:
    """One gateway with an org, assistants, and connections bound for every fixture."""

    def __init__(self, prefix="sb:", extra_env=None, redis=None):
        # 'redis': a deployment of the caller's (one with client() and cleanup()), else a
        # redis-server of its own
        self.redis = redis if redis is not None else RedisServer().start()
        self.tg = FakeTelegram().start()
        self.graph = FakeGraph().start()
        self.gw = Gateway(self.redis, self.tg, self.graph, prefix=prefix,
                          extra_env=extra_env).start()
        self.prefix = prefix
        self.key = self.gw.keys_create("org_in")
        self.r = self.redis.client()

    def use_org(self, org):
        """Makes the API calls that follow act for 'org' (a new key)."""
        self.key = self.gw.keys_create(org)

    def api(self, method, path, body=None):
        res = self.gw.http(method, path, body=body, key=self.key)
        return res

    def assistant(self, name):
        res = self.api("POST", "/orgs/c/assistants", {"name": name})
        assert res.status == 201, res
        return res.json["id"]

    def meta_connection(self, channel, secret, token):
        self.graph.add_account(token, "acct-" + channel, "Account " + channel, username="acct")
        res = self.api("POST", "/orgs/c/connections", {
            "provider": channel, "name": "%s test" % channel,
            "credentials": {"app_secret": secret, "verify_token": "verify-" + channel,
                            "access_token": token}})
        assert res.status == 201, res
        return res.json["id"]

    def telegram_connection(self, bot_id, secret_part="TEST-fixture-token"):
        token = "%s:%s" % (bot_id, secret_part)
        self.tg.add_bot(token)
        res = self.api("POST", "/orgs/c/connections",
                       {"provider": "telegram", "credentials": {"bot_token": token}})
        assert res.status == 201, res
        return res.json["id"], self.tg.last_secret(token)

    def bind(self, assistant, conn, external_id):
        res = self.api("POST", "/orgs/c/assistants/%s/channels" % assistant,
                       {"connection_id": conn, "external_id": external_id})
        assert res.status in (201, 409), res
        return res

    def stream(self, key):
        entries = self.r.command("XRANGE", self.prefix + key, "-", "+") or []
        out = []
        for _id, fields in entries:
            d = dict(zip(fields[::2], fields[1::2]))
            out.append(json.loads(d[b"event"]))
        return out

    def xlen(self, key):
        return self.r.command("XLEN", self.prefix + key)

    def stop(self):
        try:
            self.r.close()
            self.gw.stop()
        finally:
            self.gw.cleanup()
            self.tg.stop()
            self.graph.stop()
            self.redis.cleanup()


class TestFixtures(unittest.TestCase):
    """Every fixture of every fixture directory through the real server, field by field."""

    @classmethod
    def setUpClass(cls):
        cls.env = Env()
        e = cls.env
        cls.dirs = {}  # fixture directory -> its org, assistants and connections
        for n, d in enumerate(harness.FIXTURES_DIRS):
            org = "org_in%d" % n
            e.use_org(org)
            setup = {"org": org, "key": e.key,
                     "asst": {"ascii": e.assistant("ascii"), "utf8": e.assistant("utf8")},
                     "conns": {}, "tg_conns": {}}
            cls.dirs[d] = setup
            for ch in META:
                for form in ("ascii", "utf8"):
                    secret = "app-secret-%s-%s-%d-0123456789" % (ch, form, n)
                    cid = e.meta_connection(ch, secret, "token-%s-%s-%d-0123456789" % (ch, form, n))
                    setup["conns"][(ch, form)] = (cid, secret)
                    for fx in fixtures(ch, d):
                        e.bind(setup["asst"][form], cid, fx["binding_external_id"])
            for fx in fixtures("telegram", d):
                bot = fx["binding_external_id"]
                if bot not in setup["tg_conns"]:
                    cid, secret = e.telegram_connection(bot, "TEST-fixture-token-%d" % n)
                    setup["tg_conns"][bot] = (cid, secret)
                    e.bind(setup["asst"]["ascii"], cid, bot)

    @classmethod
    def tearDownClass(cls):
        cls.env.stop()

    def test_fixture_directories(self):
        """The repository's own fixtures always run; every channel has some."""
        self.assertIn(os.path.abspath(harness.OWN_FIXTURES_DIR),
                      [os.path.abspath(d) for d in harness.FIXTURES_DIRS])
        for ch in harness.CHANNELS:
            self.assertTrue(fixtures(ch, harness.OWN_FIXTURES_DIR), "no own %s fixture" % ch)

    def post(self, channel, conn, data, headers):
        return self.env.gw.http("POST", "/webhooks/%s/%s" % (channel, conn), body=data,
                                headers=dict(headers, **{"Content-Type": "application/json"}))

    def check_events(self, fx, events, form):
        name = "%s (%s)" % (fx["_name"], form)
        setup = self.dirs[fx["_dir"]]
        self.assertEqual(len(events), len(fx["expect"]), "%s: event count" % name)
        for i, (ev, exp) in enumerate(zip(events, fx["expect"])):
            for path, want in exp.items():
                got = dot(ev, path)
                if path == "message.media.url":
                    # the provider's URL stays inside the media reference; the event names
                    # the gateway's signed URL that serves it
                    self.assertRegex(got, "^%s/media/[A-Za-z0-9_.~-]+$" % re.escape(
                        harness.PUBLIC_URL), "%s #%d %s" % (name, i, path))
                    self.assertEqual(harness.media_url_target(got), want,
                                     "%s #%d %s" % (name, i, path))
                    continue
                if isinstance(want, float) or path.startswith("message.location."):
                    self.assertIsInstance(got, (int, float), "%s #%d %s" % (name, i, path))
                    self.assertEqual(float(got), float(want), "%s #%d %s" % (name, i, path))
                else:
                    self.assertEqual(type(got), type(want), "%s #%d %s: %r" % (name, i, path, got))
                    self.assertEqual(got, want, "%s #%d %s" % (name, i, path))
            # The envelope every event carries (docs/schema/event.schema.json).
            self.assertEqual(harness.event_problems(ev), [], "%s #%d: %r" % (name, i, ev))
            self.assertEqual(ev["v"], 1)
            self.assertEqual(ev["direction"], "in")
            self.assertEqual(ev["channel"], fx["channel"])
            self.assertEqual(ev["org_id"], setup["org"])
            self.assertEqual(ev["assistant_id"], setup["asst"][form if fx["channel"] != "telegram"
                                                               else "ascii"])
            for k in ("id", "binding_id", "conversation_id", "connection_id"):
                self.assertIsInstance(ev[k], str, "%s: %s" % (name, k))
                self.assertRegex(ev[k], r"^[A-Za-z0-9_.:-]+$")
            self.assertRegex(ev["contact"]["id"], r"^[A-Za-z0-9_.:-]+$")
            self.assertIsInstance(ev["received_at"], int)
            for k, v in ev.items():
                self.assertIsNotNone(v, "%s: %s is null (absent values are omitted)" % (name, k))
        # The reply target: the conversation of the first message/edit/postback event.
        firsts = [ev for ev in events if ev["kind"] in ("message", "edit", "postback")]
        if fx.get("reply_target") is not None:
            self.assertTrue(firsts, name)
            chat = self.env.r.command("HGET", "sb:conv:{%s}:%s" % (
                firsts[0]["org_id"], firsts[0]["conversation_id"]), "chat_id")
            self.assertEqual(chat.decode(), fx["reply_target"], "%s: reply target" % name)

    def run_fixture(self, fx, form):
        e = self.env
        ch = fx["channel"]
        setup = self.dirs[fx["_dir"]]
        if ch == "telegram":
            cid, secret = setup["tg_conns"][fx["binding_external_id"]]
            data = utf8_bytes(fx["body"])
            headers = {"X-Telegram-Bot-Api-Secret-Token": secret}
            asst = setup["asst"]["ascii"]
        else:
            cid, secret = setup["conns"][(ch, form)]
            data = ascii_bytes(fx["body"]) if form == "ascii" else utf8_bytes(fx["body"])
            headers = {"X-Hub-Signature-256": sign(secret, data)}
            asst = setup["asst"][form]
        stream = "in:{%s}" % asst
        inbox = "inbox:{%s}" % setup["org"]
        before = e.xlen(stream)
        inbox_before = e.xlen(inbox)
        unrouted_before = e.xlen("unrouted")
        res = self.post(ch, cid, data, headers)
        self.assertEqual(res.status, 200, "%s: %r" % (fx["_name"], res))
        events = e.stream(stream)[before:]
        self.check_events(fx, events, form)
        self.assertEqual(e.xlen(inbox) - inbox_before, len(fx["expect"]))
        self.assertEqual(e.xlen("unrouted"), unrouted_before, "nothing unrouted")
        # The same delivery again (a provider retry) appends nothing.
        res = self.post(ch, cid, data, headers)
        self.assertEqual(res.status, 200)
        self.assertEqual(e.xlen(stream), before + len(fx["expect"]), "%s: retry" % fx["_name"])

    def test_meta_fixtures_ascii_escaped(self):
        for ch in META:
            for fx in fixtures(ch):
                with self.subTest(fx["_name"]):
                    self.run_fixture(fx, "ascii")

    def test_meta_fixtures_raw_utf8(self):
        for ch in META:
            for fx in fixtures(ch):
                with self.subTest(fx["_name"]):
                    self.run_fixture(fx, "utf8")

    def test_telegram_fixtures(self):
        for fx in fixtures("telegram"):
            with self.subTest(fx["_name"]):
                self.run_fixture(fx, "ascii")

    def test_z_contacts_kept_fresh(self):
        """Runs after the fixture tests (names sort): the contacts they created."""
        e = self.env
        fx = harness.load_fixture("whatsapp", "text")
        setup = [v for d, v in self.dirs.items() if fx["_path"].startswith(os.path.join(d, ""))][0]
        contacts = e.gw.http("GET", "/orgs/c/contacts?take=100", key=setup["key"])
        self.assertEqual(contacts.status, 200)
        by_ext = {(c["channel"], c["external_id"]): c for c in contacts.json}
        exp = fx["expect"][0]
        c = by_ext[("whatsapp", exp["contact.external_id"])]
        self.assertEqual(c["name"], exp["contact.name"])
        self.assertEqual(c["phone"], exp["contact.phone"])
        self.assertEqual(c["status"], "SUBSCRIBED")


class TestBadInput(unittest.TestCase):
    """Bad webhooks get their status, a metric, and store nothing."""

    @classmethod
    def setUpClass(cls):
        cls.env = Env(extra_env={"SWITCHBOARD_REDIS_TIMEOUT_MS": "1000"})
        e = cls.env
        cls.asst = e.assistant("bad input")
        cls.secret = "app-secret-bad-input-0123456789"
        cls.wa = e.meta_connection("whatsapp", cls.secret, "token-bad-input-0123456789")
        cls.wa_fx = harness.load_fixture("whatsapp", "text")
        e.bind(cls.asst, cls.wa, cls.wa_fx["binding_external_id"])
        cls.tg_fx = harness.load_fixture("telegram", "text_private")
        cls.tg, cls.tg_secret = e.telegram_connection(cls.tg_fx["binding_external_id"])
        e.bind(cls.asst, cls.tg, cls.tg_fx["binding_external_id"])
        cls.stream = "in:{%s}" % cls.asst

    @classmethod
    def tearDownClass(cls):
        cls.env.stop()

    def stored(self):
        e = self.env
        return (e.xlen(self.stream), e.xlen("inbox:{org_in}"), e.xlen("unrouted"))

    def post_wa(self, data, signature=None, conn=None, channel="whatsapp"):
        headers = {"Content-Type": "application/json"}
        if signature is not False:
            headers["X-Hub-Signature-256"] = signature or sign(self.secret, data)
        return self.env.gw.http("POST", "/webhooks/%s/%s" % (channel, conn or self.wa),
                                body=data, headers=headers)

    def metric(self, name, **labels):
        text = self.env.gw.http("GET", "/metrics").body.decode()
        want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
        total = 0
        for line in text.splitlines():
            m = re.match(r"^%s(\{([^}]*)\})? (\S+)$" % re.escape(name), line)
            if m and (not labels or all('%s="%s"' % kv in (m.group(2) or "")
                                        for kv in labels.items())):
                total += float(m.group(3))
        del want
        return total

    def unique_wa_body(self, n):
        body = json.loads(json.dumps(self.wa_fx["body"]))
        msg = body["entry"][0]["changes"][0]["value"]["messages"][0]
        msg["id"] = "wamid.badinput.%d" % n
        return ascii_bytes(body)

    def test_same_body_twice_yields_one_event(self):
        data = self.unique_wa_body(1)
        before = self.stored()
        dups = self.metric("switchboard_duplicate_events_total", channel="whatsapp")
        self.assertEqual(self.post_wa(data).status, 200)
        self.assertEqual(self.post_wa(data).status, 200)
        after = self.stored()
        self.assertEqual(after[0] - before[0], 1)
        self.assertEqual(after[1] - before[1], 1)
        self.assertEqual(self.metric("switchboard_duplicate_events_total", channel="whatsapp"),
                         dups + 1)

    def test_wrong_signature(self):
        data = self.unique_wa_body(2)
        before = self.stored()
        fails = self.metric("switchboard_signature_failures_total", channel="whatsapp")
        self.assertEqual(self.post_wa(data, signature="sha256=" + "0" * 64).status, 401)
        self.assertEqual(self.post_wa(data, signature=False).status, 401)
        self.assertEqual(self.post_wa(data, signature=sign("another-secret", data)).status, 401)
        self.assertEqual(self.post_wa(data, signature=sign(self.secret, data + b" ")).status, 401)
        self.assertEqual(self.post_wa(data, signature="sha1=abc").status, 401)
        self.assertEqual(self.stored(), before)
        self.assertEqual(
            self.metric("switchboard_signature_failures_total", channel="whatsapp"), fails + 5)
        # The body itself, correctly signed, is then accepted: nothing was remembered.
        self.assertEqual(self.post_wa(data).status, 200)
        self.assertEqual(self.stored()[0], before[0] + 1)

    def test_wrong_telegram_secret(self):
        before = self.stored()
        data = utf8_bytes(self.tg_fx["body"])
        path = "/webhooks/telegram/%s" % self.tg
        for headers in ({"X-Telegram-Bot-Api-Secret-Token": "wrong"}, {},
                        {"X-Telegram-Bot-Api-Secret-Token": self.tg_secret + "x"},
                        {"X-Hub-Signature-256": sign(self.tg_secret, data)}):
            res = self.env.gw.http("POST", path, body=data, headers=headers)
            self.assertEqual(res.status, 401, headers)
        self.assertEqual(self.stored(), before)

    def test_body_of_another_channel(self):
        before = self.stored()
        # A Telegram update, validly signed, to the WhatsApp connection.
        data = ascii_bytes(self.tg_fx["body"])
        self.assertEqual(self.post_wa(data).status, 400)
        # A Messenger body to the WhatsApp connection.
        data = ascii_bytes(harness.load_fixture("messenger", "text")["body"])
        self.assertEqual(self.post_wa(data).status, 400)
        # A WhatsApp body to the Telegram connection with its right secret.
        res = self.env.gw.http("POST", "/webhooks/telegram/%s" % self.tg,
                               body=ascii_bytes(self.wa_fx["body"]),
                               headers={"X-Telegram-Bot-Api-Secret-Token": self.tg_secret})
        self.assertEqual(res.status, 400)
        # The WhatsApp connection addressed as a Messenger one: no such connection there.
        self.assertEqual(self.post_wa(self.unique_wa_body(3), channel="messenger").status, 404)
        self.assertEqual(self.stored(), before)

    def test_truncated_json_array_and_garbage(self):
        before = self.stored()
        bad_before = self.metric("switchboard_webhooks_total", channel="whatsapp",
                                 result="bad_body")
        full = self.unique_wa_body(4)
        for data in (full[: len(full) // 2], b"[" + full + b"]", b"[]", b"", b"null", b"42",
                     b"\xff\xfe not json", b'{"object":"whatsapp_business_account"}'):
            res = self.post_wa(data)
            self.assertEqual(res.status, 400, data[:40])
            self.assertEqual(res.json["error"]["code"], "bad_body")
        self.assertEqual(self.stored(), before)
        self.assertEqual(self.metric("switchboard_webhooks_total", channel="whatsapp",
                                     result="bad_body"), bad_before + 8)

    def test_body_over_the_limit(self):
        before = self.stored()
        data = b'{"object":"whatsapp_business_account","entry":[],"pad":"' + \
            b"x" * (5 * 1024 * 1024) + b'"}'
        res = self.post_wa(data)
        self.assertEqual(res.status, 413)
        self.assertEqual(self.stored(), before)
        # A 3 MB batch (Meta's documented maximum) is within the default 4 MiB limit.
        body = json.loads(json.dumps(self.wa_fx["body"]))
        body["pad"] = "y" * (3 * 1000 * 1000)
        res = self.post_wa(ascii_bytes(body))
        self.assertEqual(res.status, 200)

    def test_unknown_connection(self):
        before = self.stored()
        data = self.unique_wa_body(5)
        for path in ("/webhooks/whatsapp/cn_doesnotexist", "/webhooks/whatsapp/bad%20id",
                     "/webhooks/sms/%s" % self.wa, "/webhooks/whatsapp/"):
            res = self.env.gw.http("POST", path, body=data, headers={
                "X-Hub-Signature-256": sign(self.secret, data)})
            self.assertEqual(res.status, 404, path)
        self.assertEqual(self.stored(), before)

    def test_meta_handshake(self):
        gw = self.env.gw
        ok = gw.http("GET", "/webhooks/whatsapp/%s?hub.mode=subscribe&hub.challenge=1158201444"
                     "&hub.verify_token=verify-whatsapp" % self.wa)
        self.assertEqual((ok.status, ok.body), (200, b"1158201444"))
        bad = gw.http("GET", "/webhooks/whatsapp/%s?hub.mode=subscribe&hub.challenge=1"
                      "&hub.verify_token=nope" % self.wa)
        self.assertEqual(bad.status, 403)
        self.assertEqual(gw.http("GET", "/webhooks/whatsapp/cn_nope?hub.mode=subscribe"
                                 "&hub.challenge=1&hub.verify_token=x").status, 404)
        self.assertEqual(gw.http("GET", "/webhooks/telegram/%s" % self.tg).status, 405)

    def test_unbound_recipient_goes_to_unrouted(self):
        e = self.env
        body = json.loads(json.dumps(self.wa_fx["body"]))
        value = body["entry"][0]["changes"][0]["value"]
        value["metadata"]["phone_number_id"] = "999000999000"
        value["messages"][0]["id"] = "wamid.unrouted.1"
        before = self.stored()
        self.assertEqual(self.post_wa(ascii_bytes(body)).status, 200)
        after = self.stored()
        self.assertEqual(after[0], before[0], "not for the assistant")
        self.assertEqual(after[2], before[2] + 1, "kept in unrouted")
        ev = e.stream("unrouted")[-1]
        self.assertNotIn("assistant_id", ev)
        self.assertEqual(ev["message"]["external_id"], "wamid.unrouted.1")

    def test_contact_status_applies(self):
        e = self.env
        # Make sure the contact exists.
        self.assertEqual(self.post_wa(self.unique_wa_body(10)).status, 200)
        contacts = e.api("GET", "/orgs/c/contacts?take=100").json
        ext = self.wa_fx["expect"][0]["contact.external_id"]
        contact = [c for c in contacts if c["channel"] == "whatsapp" and c["external_id"] == ext][0]
        path = "/orgs/c/contacts/%s" % contact["id"]

        self.assertEqual(e.api("PATCH", path, {"status": "AI_REPLIES_DISABLED"}).status, 200)
        before = self.stored()
        self.assertEqual(self.post_wa(self.unique_wa_body(11)).status, 200)
        after = self.stored()
        self.assertEqual(after[0], before[0], "not to the assistant")
        self.assertEqual(after[1], before[1] + 1, "to the inbox")

        blocked = self.metric("switchboard_blocked_events_total", channel="whatsapp")
        self.assertEqual(e.api("PATCH", path, {"status": "BLOCKED"}).status, 200)
        before = self.stored()
        self.assertEqual(self.post_wa(self.unique_wa_body(12)).status, 200)
        self.assertEqual(self.stored(), before, "dropped")
        self.assertEqual(self.metric("switchboard_blocked_events_total", channel="whatsapp"),
                         blocked + 1)
        self.assertEqual(e.api("PATCH", path, {"status": "SUBSCRIBED"}).status, 200)

    def test_disabled_assistant_goes_to_unrouted(self):
        e = self.env
        asst = e.assistant("disabled one")
        secret = "app-secret-disabled-0123456789"
        conn = e.meta_connection("messenger", secret, "token-disabled-0123456789")
        fx = harness.load_fixture("messenger", "text")
        e.bind(asst, conn, fx["binding_external_id"])
        self.assertEqual(e.api("PATCH", "/orgs/c/assistants/%s" % asst,
                               {"enabled": False}).status, 200)
        before_unrouted = e.xlen("unrouted")
        data = ascii_bytes(fx["body"])
        res = e.gw.http("POST", "/webhooks/messenger/%s" % conn, body=data,
                        headers={"X-Hub-Signature-256": sign(secret, data)})
        self.assertEqual(res.status, 200)
        self.assertEqual(e.xlen("in:{%s}" % asst), 0)
        self.assertEqual(e.xlen("unrouted"), before_unrouted + 1)

    def test_zz_redis_down_then_retry_stored_once(self):
        e = self.env
        data = self.unique_wa_body(20)
        e.redis.stop(persist=True)
        wait_until(lambda: e.gw.http("GET", "/readyz").status == 503, 10, "readyz 503")
        self.assertEqual(self.post_wa(data).status, 503)
        self.assertEqual(self.post_wa(data).status, 503)
        e.redis.start()
        wait_until(lambda: e.gw.http("GET", "/readyz").status == 200, 20, "readyz 200")
        e.r.close()
        e.r = e.redis.client()
        before = self.stored()
        self.assertEqual(self.post_wa(data).status, 200)
        self.assertEqual(self.post_wa(data).status, 200)
        self.assertEqual(self.stored()[0], before[0] + 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)

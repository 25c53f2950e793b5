#!/usr/bin/env python3
"""
WhatsApp business messaging against the real binary and a fake Graph API: the template
list of a business account (synced page by page, cached, refreshed on demand), template
sends checked against it before Meta is called, the 24-hour customer service window from
the provider's time of the contact's last message, and replies to contacts known only by
their business-scoped user id (BSUID).
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import FakeGraph, FakeTelegram, RedisServer, wait_until  # noqa: E402
from test_inbound import ascii_bytes, sign  # noqa: E402

HOUR_S = 3600
PAGE_SIZE = 2  # the fake answers templates two at a time, so three make two pages


class FakeBusinessGraph(FakeGraph):
    """FakeGraph plus a business account's message templates (paged by an "after" cursor)
    and the phone number's business account (?fields=whatsapp_business_account)."""

    def __init__(self):
        super().__init__()
        self.templates = {}  # waba id -> [template]
        self.waba_of = {}  # phone_number_id -> waba id

    def _answer(self, method, full_path, path, token, params):
        parts = [p for p in path.split("/") if p]
        if token in self.accounts and method == "GET":
            if len(parts) == 2 and parts[1] == "message_templates":
                items = self.templates.get(parts[0])
                if items is None:
                    return 400, {"error": {"message": "Unknown WABA", "code": 100,
                                           "type": "GraphMethodException"}}
                start = int(params.get("after") or 0)
                page = items[start:start + PAGE_SIZE]
                answer = {"data": page, "paging": {"cursors": {
                    "before": str(start), "after": str(start + len(page))}}}
                if start + len(page) < len(items):
                    answer["paging"]["next"] = "%s/%s/message_templates?after=%d" % (
                        self.base, parts[0], start + len(page))
                return 200, answer
            if len(parts) == 1 and params.get("fields") == "whatsapp_business_account":
                waba = self.waba_of.get(parts[0])
                if waba is not None:
                    return 200, {"whatsapp_business_account": {"id": waba}, "id": parts[0]}
        return super()._answer(method, full_path, path, token, params)


def template(name, language="en_US", status="APPROVED", body="Order {{1}} has shipped",
             header=None, buttons=None):
    components = []
    if header is not None:
        components.append(header)
    components.append({"type": "BODY", "text": body})
    if buttons is not None:
        components.append({"type": "BUTTONS", "buttons": buttons})
    return {"id": "tpl-%s-%s" % (name, language), "name": name, "language": language,
            "status": status, "category": "UTILITY", "components": components}


class TestWhatsAppBusiness(harness.GatewayTestCase):
    # The real 24-hour window (the harness widens it for the shared fixtures' old times).
    EXTRA_ENV = {"SWITCHBOARD_OUTBOUND_WHATSAPP_WINDOW_MS": None}

    @classmethod
    def setUpClass(cls):
        cls.redis = RedisServer().start()
        cls.addClassCleanup(cls.redis.cleanup)
        cls.telegram = FakeTelegram().start()
        cls.addClassCleanup(cls.telegram.stop)
        cls.graph = FakeBusinessGraph().start()
        cls.addClassCleanup(cls.graph.stop)
        env = dict(cls.DEFAULT_ENV)
        env.update(cls.EXTRA_ENV)
        cls.gw = cls.make_gateway(extra_env=env, prefix=cls.PREFIX)
        cls.r = cls.redis.client()
        cls.addClassCleanup(cls.r.close)
        cls.seq = 0

    # --- helpers

    def next_id(self):
        TestWhatsAppBusiness.seq += 1
        return TestWhatsAppBusiness.seq

    def whatsapp(self, waba_id=None, discover=False):
        """A WhatsApp connection bound to a new phone number; its WABA named in the
        credentials, or found from the number ('discover'). Returns (conn, pn, secret, waba)."""
        n = self.next_id()
        pn, waba = "1099%08d" % n, "2099%08d" % n
        secret, token = "app-secret-wa-%d-0123456789" % n, "token-wa-%d-0123456789" % n
        self.graph.add_account(token, "acct-%d" % n, "Business %d" % n)
        self.graph.add_phone_number(pn)
        creds = {"app_secret": secret, "verify_token": "verify-%d" % n, "access_token": token}
        if waba_id is not None or not discover:
            creds["waba_id"] = waba
        else:
            self.graph.waba_of[pn] = waba
        r = self.api("POST", "/orgs/c/connections", {"provider": "whatsapp",
                                                     "credentials": creds})
        self.assertStatus(r, 201)
        asst = self.create_assistant("wa-%d" % n)
        self.bind(asst["id"], r.json["id"], pn)
        return {"id": r.json["id"], "pn": pn, "secret": secret, "waba": waba,
                "assistant": asst["id"], "token": token}

    def inbound(self, conn, hours_ago=0.0, phone="15550142233", user_id=None, name="Dana"):
        """POSTs a text from a contact, dated 'hours_ago' by the provider; returns its
        conversation id."""
        n = self.next_id()
        msg = {"id": "wamid.IN%d" % n, "timestamp": str(int(time.time() - hours_ago * HOUR_S)),
               "type": "text", "text": {"body": "hello %d" % n}}
        contact = {"profile": {"name": name}}
        if phone is not None:
            msg["from"] = phone
            contact["wa_id"] = phone
        if user_id is not None:
            msg["from_user_id"] = user_id
            contact["user_id"] = user_id
        body = {"object": "whatsapp_business_account", "entry": [{"id": conn["waba"], "changes": [
            {"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550101234", "phone_number_id": conn["pn"]},
                "contacts": [contact], "messages": [msg]}}]}]}
        data = ascii_bytes(body)
        res = self.gw.http("POST", "/webhooks/whatsapp/%s" % conn["id"], body=data,
                           headers={"X-Hub-Signature-256": sign(conn["secret"], data)})
        self.assertEqual(res.status, 200, res)
        key = "sb:in:{%s}" % conn["assistant"]

        def conversation():
            for _id, fields in self.r.command("XRANGE", key, "-", "+") or []:
                ev = json.loads(dict(zip(fields[::2], fields[1::2]))[b"event"])
                if ev.get("message", {}).get("external_id") == msg["id"]:
                    return ev["conversation_id"]
            return None
        return wait_until(conversation, 10, "inbound %s routed" % msg["id"])

    def command(self, conv, **cmd):
        """Adds a command to sb:out and waits until it is done; returns (done, cmd hash)."""
        cmd_id = "wa-cmd-%d" % self.next_id()
        self.r.command("XADD", "sb:out", "*", "cmd",
                       json.dumps(dict(cmd, id=cmd_id, conversation_id=conv)))
        key = "sb:cmd:{%s}:%s" % (self.org, cmd_id)
        wait_until(lambda: self.r.command("HGET", key, "done"), 15, "command %s done" % cmd_id)
        raw = self.r.command("HGETALL", key)
        state = {raw[i].decode(): raw[i + 1].decode() for i in range(0, len(raw), 2)}
        state["id"] = cmd_id
        return state["done"], state

    def dead_reason(self, cmd_id):
        for _id, fields in self.r.command("XRANGE", "sb:dead", "-", "+") or []:
            d = {k.decode(): v.decode() for k, v in zip(fields[::2], fields[1::2])}
            if json.loads(d["cmd"]).get("id") == cmd_id:
                return d["reason"]
        return None

    def failed_event(self, cmd_id):
        for _id, fields in self.r.command("XRANGE", "sb:inbox:{%s}" % self.org, "-", "+") or []:
            ev = json.loads(dict(zip(fields[::2], fields[1::2]))[b"event"])
            if ev.get("command_id") == cmd_id and ev.get("status", {}).get("state") == "failed":
                return ev
        return None

    def sends(self, conn):
        return self.graph.requests(http_method="POST", path="/%s/messages" % conn["pn"])

    def assertFailed(self, conv, conn, reason, **cmd):
        before = len(self.sends(conn))
        done, state = self.command(conv, **cmd)
        self.assertEqual(done, "failed", state)
        self.assertEqual(state["reason"], reason, state)
        self.assertEqual(self.dead_reason(state["id"]), reason)
        ev = self.failed_event(state["id"])
        self.assertIsNotNone(ev, "no failed outbound event in the inbox")
        self.assertEqual(ev["status"]["error"]["title"], reason, ev)
        if cmd["type"] == "template":
            self.assertEqual(ev["message"]["type"], "template", ev)
        self.assertEqual(len(self.sends(conn)), before, "the provider was called")
        return state

    def assertSent(self, conv, conn, **cmd):
        before = len(self.sends(conn))
        done, state = self.command(conv, **cmd)
        self.assertEqual(done, "sent", state)
        reqs = self.sends(conn)
        self.assertEqual(len(reqs), before + 1, reqs)
        return json.loads(reqs[-1]["body"])

    def body_params(self, *values):
        return [{"type": "body", "parameters": [{"type": "text", "text": v} for v in values]}]

    # --- the template list

    def test_templates_synced_paginated_cached_and_refreshed(self):
        conn = self.whatsapp(discover=True)
        self.graph.templates[conn["waba"]] = [
            template("order_update"), template("order_update", "de_DE", body="Bestellung {{1}}"),
            template("welcome", status="PENDING", body="Hi")]
        path = "/orgs/c/connections/%s/templates" % conn["id"]
        r = self.api("GET", path)
        self.assertStatus(r, 200)
        self.assertEqual([(t["name"], t["language"], t["status"]) for t in r.json],
                         [("order_update", "en_US", "APPROVED"), ("order_update", "de_DE",
                          "APPROVED"), ("welcome", "en_US", "PENDING")])
        self.assertEqual(r.json[0]["category"], "UTILITY")
        self.assertEqual(r.json[0]["components"], [{"type": "BODY",
                                                    "text": "Order {{1}} has shipped"}])
        self.assertEqual(r.headers["pagination-count"], "3")
        pages = self.graph.requests(http_method="GET",
                                    path="/%s/message_templates" % conn["waba"])
        self.assertEqual(len(pages), 2, "two pages at the fake")
        self.assertNotIn("after", pages[0]["query"])
        self.assertEqual(pages[1]["query"]["after"], "2")
        self.assertEqual(pages[0]["token"], conn["token"])
        found = self.graph.requests(http_method="GET", path="/%s" % conn["pn"])
        self.assertTrue(any(q["query"].get("fields") == "whatsapp_business_account"
                            for q in found), "the WABA was not looked up from the number")

        r = self.api("GET", path + "?page=2&take=2")
        self.assertStatus(r, 200)
        self.assertEqual([t["name"] for t in r.json], ["welcome"])
        self.assertEqual((r.headers["pagination-count"], r.headers["pagination-page"],
                          r.headers["pagination-take"]), ("3", "2", "2"))
        self.assertEqual(len(self.graph.requests(path="/%s/message_templates" % conn["waba"])),
                         2, "a fresh cached list is not synced again")
        cached = self.r.command("GET", "sb:tpl:{%s}:%s" % (self.org, conn["id"]))
        self.assertEqual(len(json.loads(cached)["templates"]), 3)

        self.graph.templates[conn["waba"]].append(template("reminder"))
        r = self.api("GET", path + "?refresh=true&take=100")
        self.assertStatus(r, 200)
        self.assertEqual(len(r.json), 4)
        self.assertEqual(len(self.graph.requests(path="/%s/message_templates" % conn["waba"])), 4)

        for bad in ("?take=0", "?page=x", "?refresh=maybe"):
            self.assertStatus(self.api("GET", path + bad), 400, "bad_request")

    def test_templates_of_another_channel_or_org(self):
        page = self.create_meta("messenger", "app-secret-ms-0123456789", "verify-ms",
                                "token-ms-templates-0123456789")
        r = self.api("GET", "/orgs/c/connections/%s/templates" % page["id"])
        self.assertStatus(r, 400, "bad_request")
        conn = self.whatsapp()
        other = self.gw.keys_create(self.new_org())
        r = self.api("GET", "/orgs/c/connections/%s/templates" % conn["id"], key=other)
        self.assertStatus(r, 404, "not_found")
        self.assertStatus(self.api("POST", "/orgs/c/connections/%s/templates" % conn["id"], {}),
                          405)

    def test_unknown_business_account_is_the_providers_refusal(self):
        conn = self.whatsapp()  # names a WABA the fake does not know
        r = self.api("GET", "/orgs/c/connections/%s/templates" % conn["id"])
        self.assertStatus(r, 400, "provider_rejected")

    def test_no_business_account_and_a_failed_sync(self):
        conn = self.whatsapp(discover=True)
        self.graph.waba_of.pop(conn["pn"])  # the number names no business account
        path = "/orgs/c/connections/%s/templates" % conn["id"]
        self.assertStatus(self.api("GET", path), 409, "conflict")
        # Found again: listed; then Meta fails and the cached list is answered.
        self.graph.waba_of[conn["pn"]] = conn["waba"]
        self.graph.templates[conn["waba"]] = [template("order_update")]
        self.assertEqual(len(self.assertStatus(self.api("GET", path), 200).json), 1)
        self.graph.override("GET /%s/message_templates" % conn["waba"], status=500,
                            body={"error": {"message": "down", "code": 1}})
        r = self.assertStatus(self.api("GET", path + "?refresh=true"), 200)
        self.assertEqual([t["name"] for t in r.json], ["order_update"])
        self.assertTrue(any(e.get("msg", "").startswith("template sync failed")
                            for e in self.gw.json_logs()), "the failed sync is not logged")
        # Nothing cached and Meta down: 502.
        self.r.command("DEL", "sb:tpl:{%s}:%s" % (self.org, conn["id"]))
        self.assertStatus(self.api("GET", path), 502, "provider_unavailable")

    def test_concurrent_template_sends_sync_once(self):
        conn = self.whatsapp()
        self.graph.templates[conn["waba"]] = [template("a"), template("b"), template("c")]
        self.graph.override("GET /%s/message_templates" % conn["waba"], delay=0.3)
        convs = [self.inbound(conn, phone="1555013%04d" % i) for i in range(4)]
        ids = []
        for i, conv in enumerate(convs):
            ids.append("wa-burst-%d-%d" % (i, self.next_id()))
            self.r.command("XADD", "sb:out", "*", "cmd", json.dumps({
                "id": ids[-1], "conversation_id": conv, "type": "template",
                "template": {"name": "b", "language": "en_US",
                             "components": self.body_params("x")}}))
        for cmd_id in ids:
            key = "sb:cmd:{%s}:%s" % (self.org, cmd_id)
            wait_until(lambda: self.r.command("HGET", key, "done") == b"sent", 15,
                       "%s sent" % cmd_id)
        pages = self.graph.requests(path="/%s/message_templates" % conn["waba"])
        self.assertEqual(len(pages), 2, "one sync (two pages) for the burst")

    # --- template sends

    def test_template_send_reaches_meta_as_it_expects(self):
        conn = self.whatsapp()
        self.graph.templates[conn["waba"]] = [template(
            "order_update", header={"type": "HEADER", "format": "TEXT", "text": "Hi {{1}}"},
            buttons=[{"type": "URL", "text": "Track", "url": "https://t.example/{{1}}"},
                     {"type": "QUICK_REPLY", "text": "Stop"}])]
        conv = self.inbound(conn)
        components = [{"type": "header", "parameters": [{"type": "text", "text": "Dana"}]},
                      {"type": "body", "parameters": [{"type": "text", "text": "4711"}]},
                      {"type": "button", "sub_type": "url", "index": "0",
                       "parameters": [{"type": "text", "text": "4711"}]}]
        body = self.assertSent(conv, conn, type="template", template={
            "name": "order_update", "language": "en_US", "components": components})
        # the inbox says which template went out, and the list shows its name
        sent = [json.loads(dict(zip(f[::2], f[1::2]))[b"event"]) for _id, f in
                self.r.command("XRANGE", "sb:inbox:{%s}" % self.org, "-", "+") or []]
        sent = [ev for ev in sent if ev["kind"] == "outbound" and
                ev["message"]["type"] == "template"]
        self.assertEqual(len(sent), 1, sent)
        self.assertEqual(sent[0]["message"]["template"],
                         {"name": "order_update", "language": "en_US"})
        self.assertEqual(sent[0]["status"]["state"], "sent")
        row = self.api("GET", "/orgs/c/conversations/%s" % conv)
        self.assertEqual(row.status, 200, row)
        self.assertEqual(row.json["last_message"]["type"], "template", row.json)
        self.assertEqual(row.json["last_message"]["preview"], "order_update", row.json)
        self.assertEqual(body, {"messaging_product": "whatsapp", "recipient_type": "individual",
                                "to": "15550142233", "type": "template",
                                "template": {"name": "order_update",
                                             "language": {"code": "en_US"},
                                             "components": components}})

    def test_rejected_templates_never_reach_meta(self):
        conn = self.whatsapp()
        self.graph.templates[conn["waba"]] = [
            template("order_update", body="Order {{1}} for {{2}}, again {{1}}"),
            template("draft", status="REJECTED"),
            template("media", header={"type": "HEADER", "format": "IMAGE"}, body="Look")]
        conv = self.inbound(conn)
        tpl = {"name": "order_update", "language": "en_US"}
        self.assertFailed(conv, conn, "template_parameters", type="template",
                          template=dict(tpl, components=self.body_params("4711")))
        self.assertFailed(conv, conn, "template_parameters", type="template",
                          template=dict(tpl, components=self.body_params("1", "2", "3")))
        self.assertFailed(conv, conn, "template_parameters", type="template", template=tpl)
        self.assertFailed(conv, conn, "template_parameters", type="template",
                          template={"name": "media", "language": "en_US"})
        self.assertFailed(conv, conn, "template_not_approved", type="template",
                          template={"name": "draft", "language": "en_US",
                                    "components": self.body_params("x")})
        self.assertFailed(conv, conn, "template_not_found", type="template",
                          template={"name": "nope", "language": "en_US"})
        self.assertFailed(conv, conn, "template_language", type="template",
                          template=dict(tpl, language="fr_FR",
                                        components=self.body_params("1", "2")))
        # The same template with the right count goes out.
        self.assertSent(conv, conn, type="template",
                        template=dict(tpl, components=self.body_params("4711", "Dana")))
        self.assertSent(conv, conn, type="template", template={
            "name": "media", "language": "en_US", "components": [{"type": "header", "parameters": [
                {"type": "image", "image": {"link": "https://cdn.example/a.jpg"}}]}]})

    def test_template_on_another_channel_fails(self):
        fx = harness.load_fixture("telegram", "text_private")
        conn = self.create_telegram(harness.fixture_token(fx))
        asst = self.create_assistant("tg")
        self.bind(asst["id"], conn["id"], fx["binding_external_id"])
        r = self.post_telegram_update(conn, harness.fixture_token(fx), fx["body"])
        self.assertEqual(r.status, 200, r)

        def conversation():
            entries = self.r.command("XRANGE", "sb:in:{%s}" % asst["id"], "-", "+") or []
            return entries and json.loads(dict(zip(entries[0][1][::2], entries[0][1][1::2]))[
                b"event"])["conversation_id"]
        conv = wait_until(conversation, 10, "telegram conversation")
        done, state = self.command(conv, type="template",
                                   template={"name": "order_update", "language": "en_US"})
        self.assertEqual((done, state["reason"]), ("failed", "unsupported"), state)
        self.assertIn("WhatsApp", state["error_message"])

    # --- the customer service window

    def test_window_from_the_providers_time(self):
        conn = self.whatsapp()
        self.graph.templates[conn["waba"]] = [template("order_update")]
        old = self.inbound(conn, hours_ago=25, phone="15550100025")
        rec = self.r.command("HGET", "sb:conv:{%s}:%s" % (self.org, old), "last_inbound_at")
        self.assertAlmostEqual(int(rec) / 1000, time.time() - 25 * HOUR_S, delta=60)
        self.assertFailed(old, conn, "outside_window", type="text", text="Too late")
        self.assertFailed(old, conn, "outside_window", type="image",
                          media={"url": "https://cdn.example/a.jpg"})
        self.assertFailed(old, conn, "outside_window", type="typing", reply_to="wamid.X")
        # A read receipt and a template pass at any time.
        self.assertSent(old, conn, type="read", reply_to="wamid.X")
        body = self.assertSent(old, conn, type="template", template={
            "name": "order_update", "language": "en_US", "components": self.body_params("1")})
        self.assertEqual(body["type"], "template")
        # A person's template through the API, outside the window too.
        before = len(self.sends(conn))
        r = self.api("POST", "/orgs/c/conversations/%s/messages" % old, {
            "id": "wa-api-%d" % self.next_id(), "type": "template", "template": {
                "name": "order_update", "language": "en_US",
                "components": self.body_params("2")}})
        self.assertStatus(r, 202)
        wait_until(lambda: len(self.sends(conn)) == before + 1, 10, "the API's template sent")
        self.assertEqual(json.loads(self.sends(conn)[-1]["body"])["template"]["components"],
                         self.body_params("2"))
        r = self.api("POST", "/orgs/c/conversations/%s/messages" % old, {
            "id": "wa-api-%d" % self.next_id(), "type": "template", "template": {"name": "x"}})
        self.assertStatus(r, 400, "bad_request")

        recent = self.inbound(conn, hours_ago=23, phone="15550100023")
        body = self.assertSent(recent, conn, type="text", text="Still open")
        self.assertEqual((body["to"], body["text"]["body"]), ("15550100023", "Still open"))

        # A record that keeps only the end of the window (window_expires_at, the inbox's
        # view of it, 24 h after the last inbound message) is held to it as well.
        other = self.inbound(conn, hours_ago=2, phone="15550100099")
        self.r.command("HDEL", "sb:conv:{%s}:%s" % (self.org, other), "last_inbound_at")
        self.r.command("HSET", "sb:conv:{%s}:%s" % (self.org, other), "window_expires_at",
                       str(int((time.time() - HOUR_S) * 1000)))
        self.assertFailed(other, conn, "outside_window", type="text", text="Closed")
        self.r.command("HSET", "sb:conv:{%s}:%s" % (self.org, other), "window_expires_at",
                       str(int((time.time() + HOUR_S) * 1000)))
        self.assertSent(other, conn, type="text", text="Open")

        # A new message reopens the window; an older one arriving late does not close it.
        self.assertEqual(self.inbound(conn, hours_ago=1, phone="15550100025"), old)
        self.inbound(conn, hours_ago=30, phone="15550100025")
        self.assertSent(old, conn, type="text", text="Welcome back")

    # --- username-only contacts

    def test_reply_to_a_bsuid_only_contact_uses_recipient(self):
        conn = self.whatsapp()
        conv = self.inbound(conn, phone=None, user_id="US.13491208655302741918")
        body = self.assertSent(conv, conn, type="text", text="Hello there")
        self.assertEqual(body["recipient"], "US.13491208655302741918")
        self.assertNotIn("to", body)
        # Once the phone is known, replies go to it.
        self.assertEqual(self.inbound(conn, phone="15550177777",
                                      user_id="US.13491208655302741918"), conv)
        body = self.assertSent(conv, conn, type="text", text="And now by phone")
        self.assertEqual(body["to"], "15550177777")
        self.assertNotIn("recipient", body)


if __name__ == "__main__":
    harness.main()

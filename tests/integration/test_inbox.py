"""
The inbox (contract section 7): the conversation list, one conversation, its history and
"read", checked field by field against what the streams say after a mix of the repository's
fixtures, replies (some failing) and statuses; unread counts, read receipts, delivery
states, edits, filters, cursors; and who may write (contract section 5): hand-off and
blocked contacts.
"""

import copy
import datetime
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402
from test_inbound import Env, ascii_bytes, sign, utf8_bytes  # noqa: E402
from test_openapi import load_doc, validate  # noqa: E402

FIXTURES = os.path.join(harness.SOURCE_DIR, "tests", "fixtures")
WA_PN = "204060801012345"
WA_SECRET = "app-secret-inbox-whatsapp-0123456789"
MS_SECRET = "app-secret-inbox-messenger-0123456789"
HISTORY_KINDS = ("message", "edit", "postback", "reaction", "referral", "outbound")
COUNTED = ("message", "postback", "referral")
RANK = {"sent": 1, "delivered": 2, "read": 3, "failed": 4}


def fixture(channel, case):
    with open(os.path.join(FIXTURES, channel, case + ".json"), encoding="utf-8") as f:
        return json.load(f)


def iso(ms):
    t = datetime.datetime.fromtimestamp(ms // 1000, tz=datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + ".%03dZ" % (ms % 1000)


def preview(ev):
    msg = ev.get("message") or {}
    text = msg.get("text")
    if text:
        return text[:120]  # the fixtures' texts are BMP: one code point per character
    return "[%s]" % (msg.get("type") or ev["kind"])


class InboxEnv(Env):
    def __init__(self):
        super().__init__()
        self.asst = self.assistant("inbox")
        self.wa = self.meta_connection("whatsapp", WA_SECRET, "token-inbox-wa-0123456789")
        self.bind(self.asst, self.wa, WA_PN)
        fx = fixture("messenger", "text")
        self.ms_page = fx["binding_external_id"]
        self.ms = self.meta_connection("messenger", MS_SECRET, "token-inbox-ms-0123456789")
        self.bind(self.asst, self.ms, self.ms_page)
        fx = fixture("telegram", "text_private")
        self.tg_bot = fx["binding_external_id"]
        self.tg_conn, self.tg_secret = self.telegram_connection(self.tg_bot)
        self.bind(self.asst, self.tg_conn, self.tg_bot)
        self.seq = 0
        self.other_key = self.gw.keys_create("org_other")

    def next(self):
        self.seq += 1
        return self.seq

    # --- webhooks built from the repository's fixtures

    def post_wa(self, value):
        body = copy.deepcopy(fixture("whatsapp", "text")["body"])
        body["entry"][0]["changes"][0]["value"] = value
        data = ascii_bytes(body)
        res = self.gw.http("POST", "/webhooks/whatsapp/%s" % self.wa, body=data,
                           headers={"X-Hub-Signature-256": sign(WA_SECRET, data)})
        assert res.status == 200, res

    def wa_value(self, case, user):
        v = copy.deepcopy(fixture("whatsapp", case)["body"]["entry"][0]["changes"][0]["value"])
        for c in v.get("contacts", []):
            c["wa_id"] = user
        for m in v.get("messages", []):
            m["from"] = user
            m["timestamp"] = str(int(time.time()))
        for s in v.get("statuses", []):
            s["recipient_id"] = user
            s["timestamp"] = str(int(time.time()))
        return v

    def wa_text(self, user, text, msg_id=None):
        v = self.wa_value("text", user)
        m = v["messages"][0]
        m["id"] = msg_id or "wamid.INBOX%d" % self.next()
        m["text"]["body"] = text
        self.post_wa(v)
        return m["id"]

    def wa_case(self, case, user, **msg):
        v = self.wa_value(case, user)
        v["messages"][0]["id"] = "wamid.INBOX%d" % self.next()
        v["messages"][0].update(msg)
        self.post_wa(v)
        return v["messages"][0]

    def wa_edit(self, user, original, text):
        v = self.wa_value("edit", user)
        m = v["messages"][0]
        m["id"] = "wamid.INBOXEDIT%d" % self.next()
        m["edit"]["original_message_id"] = original
        m["edit"]["message"]["text"]["body"] = text
        self.post_wa(v)

    def wa_reaction(self, user, target):
        v = self.wa_value("reaction", user)
        m = v["messages"][0]
        m["id"] = "wamid.INBOXREA%d" % self.next()
        m["reaction"]["message_id"] = target
        self.post_wa(v)

    def wa_status(self, user, msg_id, state):
        case = {"sent": "status_sent", "delivered": "status_delivered", "read": "status_read",
                "failed": "status_failed"}[state]
        v = self.wa_value(case, user)
        v["statuses"][0]["id"] = msg_id
        self.post_wa(v)

    def tg_text(self, chat, text):
        body = copy.deepcopy(fixture("telegram", "text_private")["body"])
        n = self.next()
        body["update_id"] = 830000000 + n
        body["message"]["message_id"] = 5000 + n
        body["message"]["chat"]["id"] = chat
        body["message"]["from"]["id"] = chat
        body["message"]["text"] = text
        del body["message"]["entities"]
        res = self.gw.http("POST", "/webhooks/telegram/%s" % self.tg_conn, body=utf8_bytes(body),
                           headers={"X-Telegram-Bot-Api-Secret-Token": self.tg_secret})
        assert res.status == 200, res

    def ms_case(self, case, psid):
        body = copy.deepcopy(fixture("messenger", case)["body"])
        for entry in body["entry"]:
            for m in entry.get("messaging", []):
                m["sender"]["id"] = psid
                if "message" in m and "mid" in m["message"]:
                    m["message"]["mid"] = "m_INBOX%d" % self.next()
        data = ascii_bytes(body)
        res = self.gw.http("POST", "/webhooks/messenger/%s" % self.ms, body=data,
                           headers={"X-Hub-Signature-256": sign(MS_SECRET, data)})
        assert res.status == 200, res

    # --- streams

    def inbox(self):
        """[(entry id, event)] of sb:inbox:{org_in}, oldest first."""
        entries = self.r.command("XRANGE", self.prefix + "inbox:{org_in}", "-", "+") or []
        out = []
        for eid, fields in entries:
            d = dict(zip(fields[::2], fields[1::2]))
            out.append((eid.decode(), json.loads(d[b"event"])))
        return out

    def conversation_of(self, kind, pred):
        for _eid, ev in reversed(self.inbox()):
            if ev["kind"] == kind and pred(ev):
                return ev["conversation_id"]
        raise AssertionError("no %s event" % kind)

    def wa_conversation(self, user):
        return self.conversation_of("message", lambda ev: ev["contact"]["external_id"] == user)

    def xadd(self, cmd):
        return self.r.command("XADD", self.prefix + "out", "*", "cmd", json.dumps(cmd))

    def cmd_done(self, cmd_id, timeout=15):
        key = "sb:cmd:{org_in}:" + cmd_id
        return wait_until(lambda: self.r.command("HGET", key, "done"), timeout,
                          "command %s done" % cmd_id).decode()

    def outbound_events(self, cmd_id):
        return [ev for _e, ev in self.inbox()
                if ev["kind"] == "outbound" and ev.get("command_id") == cmd_id]

    def dead(self, cmd_id):
        out = []
        for _id, fields in self.r.command("XRANGE", self.prefix + "dead", "-", "+") or []:
            d = {k.decode(): v.decode() for k, v in zip(fields[::2], fields[1::2])}
            if json.loads(d["cmd"]).get("id") == cmd_id:
                out.append(d)
        return out

    def contact(self, contact_id):
        res = self.api("GET", "/orgs/c/contacts/%s" % contact_id)
        assert res.status == 200, res
        return res.json

    # --- what the streams say a conversation is

    def expected(self, cv, reads=()):
        """The conversation object and its history (newest first) that the inbox stream
        implies; 'reads' are the entry ids after which the conversation was read."""
        entries = [(eid, ev) for eid, ev in self.inbox() if ev.get("conversation_id") == cv]
        assert entries, cv
        statuses = {}
        for eid, ev in self.inbox():
            if ev["kind"] == "status":
                mid = ev["status"]["message_external_id"]
                st = ev["status"]["state"]
                if RANK[st] > RANK.get(statuses.get(mid), 0):
                    statuses[mid] = st
        items, by_ext = [], {}
        for eid, ev in entries:
            if ev["kind"] not in HISTORY_KINDS:
                continue
            item = copy.deepcopy(ev)
            item["entry_id"] = eid
            if ev["kind"] == "outbound":
                st = ev["status"]["state"]
                ext = ev["message"].get("external_id")
                if ext in statuses and RANK[statuses[ext]] > RANK[st]:
                    st = statuses[ext]
                item["delivery"] = st
            if ev["kind"] in ("message", "outbound") and ev.get("message", {}).get("external_id"):
                by_ext[ev["message"]["external_id"]] = item
            if ev["kind"] == "edit":
                target = by_ext.get(ev["message"]["external_id"])
                if target is not None:
                    field = "text" if "text" in ev["message"] else "caption"
                    old = {"at": target.get("_at", target["timestamp"])}
                    if field in target["message"]:
                        old[field] = target["message"][field]
                    target.setdefault("edits", []).append(old)
                    target["message"][field] = ev["message"][field]
                    target["_at"] = ev["timestamp"]
            items.append(item)
        last_msg = None
        for it in items:
            if it["kind"] in COUNTED + ("outbound",):
                last_msg = it
        unread = 0
        window = None
        for it in items:
            if it["direction"] == "in" and it["kind"] in COUNTED:
                unread += 1
                if it["channel"] == "whatsapp":
                    window = max(window or 0, it["timestamp"] + 86400000)
            if it["entry_id"] in reads:
                unread = 0
        first = entries[0][1]
        contact = self.contact(first["contact"]["id"])
        conv = {
            "id": cv, "channel": first["channel"], "connection_id": first["connection_id"],
            "binding_id": first["binding_id"], "assistant_id": first["assistant_id"],
            "contact": {k: contact[k] for k in ("id", "external_id", "name", "username", "phone",
                                                "status") if k in contact},
            "last_message": None,
            "last_activity_at": iso(items[-1]["received_at"]),
            "unread_count": unread,
            "created_at": iso(first["received_at"]),
        }
        if last_msg is not None:
            lm = {"direction": last_msg["direction"], "preview": preview(last_msg),
                  "at": iso(last_msg["timestamp"])}
            if last_msg["message"].get("type") if "message" in last_msg else None:
                lm["type"] = last_msg["message"]["type"]
            if "author" in last_msg:
                lm["author"] = last_msg["author"]
            conv["last_message"] = lm
        if window is not None:
            conv["window_expires_at"] = iso(window)
        if first.get("message", {}).get("thread_id"):
            conv["thread_id"] = first["message"]["thread_id"]
        for it in items:
            it.pop("_at", None)
        return conv, list(reversed(items)), items[-1]["received_at"]

    def history(self, cv, **query):
        q = "&".join("%s=%s" % kv for kv in query.items())
        res = self.api("GET", "/orgs/c/conversations/%s/messages%s" % (cv, "?" + q if q else ""))
        assert res.status == 200, res
        return res


class TestInbox(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = InboxEnv()
        cls.doc = load_doc()

    def assert_documented(self, schema, value):
        self.assertEqual(validate(self.doc, {"$ref": "#/components/schemas/" + schema}, value),
                         [], schema)

    @classmethod
    def tearDownClass(cls):
        cls.env.stop()

    def assert_matches_streams(self, cvs, reads=()):
        """Every conversation of 'cvs', the list and every history page agree with the
        inbox stream, field by field."""
        e = self.env
        want = {}
        for cv in cvs:
            conv, items, activity = e.expected(cv, reads)
            want[cv] = (conv, items, activity)
            got = e.api("GET", "/orgs/c/conversations/%s" % cv)
            self.assertEqual(got.status, 200, got)
            self.assertEqual(got.json, conv)
            self.assert_documented("Conversation", got.json)
            # The whole history, then page by page with both cursors.
            res = e.history(cv, take=100)
            self.assertEqual(res.json, items)
            self.assertEqual(res.headers["pagination-count"], str(len(items)))
            for it in res.json:
                self.assert_documented("HistoryItem", it)
            pages, before = [], None
            while True:
                q = {"take": 2}
                if before:
                    q["before"] = before
                page = e.history(cv, **q).json
                if not page:
                    break
                pages.extend(page)
                before = page[-1]["entry_id"]
            self.assertEqual(pages, items, "pages with before=")
            self.assertEqual(e.history(cv, take=2, page=2).json, items[2:4], "page=2")
            res = e.history(cv, take=1, page=2, before=items[0]["entry_id"])
            self.assertEqual(res.json, items[2:3], "page=2 from a cursor")
            self.assertEqual(res.headers["pagination-page"], "2")
            pages, after = [], None
            q = {"take": 2, "after": "0-0"}
            while True:
                page = e.history(cv, **q).json
                if not page:
                    break
                pages = page + pages
                q["after"] = page[0]["entry_id"]
            self.assertEqual(pages, items, "pages with after=")
        # The list: most recent activity first, the same objects.
        res = e.api("GET", "/orgs/c/conversations?take=100")
        self.assertEqual(res.status, 200, res)
        listed = [c for c in res.json if c["id"] in want]
        order = sorted(want, key=lambda cv: (want[cv][2], cv), reverse=True)
        self.assertEqual([c["id"] for c in listed], order)
        for c in listed:
            self.assertEqual(c, want[c["id"]][0])

    def test_mix_matches_streams(self):
        e = self.env
        user, user2 = "15550190001", "15550190002"
        first = e.wa_text(user, "Hello, is the shop open today?")
        cv = e.wa_conversation(user)
        e.wa_case("image_with_caption", user)
        e.wa_case("location", user)
        e.wa_text(user2, "Another person " + "x" * 150)
        cv2 = e.wa_conversation(user2)
        e.tg_text(402233901, "/start")
        cv_tg = e.conversation_of("message", lambda ev: ev["channel"] == "telegram" and
                                  ev["contact"]["external_id"] == "402233901")
        e.ms_case("text", "6620118800000001")
        e.ms_case("postback", "6620118800000001")
        cv_ms = e.conversation_of("postback", lambda ev: ev["channel"] == "messenger")
        # Replies: the assistant's, a person's, a failing one, a split text.
        e.xadd({"id": "mx-a1", "conversation_id": cv, "type": "text", "text": "We open at 9"})
        self.assertEqual(e.cmd_done("mx-a1"), "sent")
        res = e.api("POST", "/orgs/c/conversations/%s/messages" % cv,
                    {"id": "mx-p1", "type": "text", "text": "A person here"})
        self.assertEqual(res.status, 202, res)
        self.assertEqual(e.cmd_done("mx-p1"), "sent")
        e.graph.override("POST /%s/messages" % WA_PN, status=400, times=1, body={
            "error": {"message": "Re-engagement message", "type": "OAuthException",
                      "code": 131047, "fbtrace_id": "x"}})
        e.xadd({"id": "mx-f1", "conversation_id": cv, "type": "text", "text": "too late"})
        self.assertEqual(e.cmd_done("mx-f1"), "failed")
        e.xadd({"id": "mx-img", "conversation_id": cv2, "type": "image",
                "media": {"url": "https://cdn.example.test/a.png", "caption": "Look"}})
        self.assertEqual(e.cmd_done("mx-img"), "sent")
        e.xadd({"id": "mx-tg", "conversation_id": cv_tg, "type": "text",
                "text": ("word " * 1000).strip()})
        self.assertEqual(e.cmd_done("mx-tg"), "sent")
        self.assertGreater(len(e.outbound_events("mx-tg")), 1, "split into parts")
        # Statuses: sent -> delivered -> read for one, read before delivered for another.
        a1 = e.outbound_events("mx-a1")[0]["message"]["external_id"]
        p1 = e.outbound_events("mx-p1")[0]["message"]["external_id"]
        e.wa_status(user, a1, "sent")
        e.wa_status(user, a1, "delivered")
        e.wa_status(user, a1, "read")
        e.wa_status(user, p1, "read")
        e.wa_status(user, p1, "delivered")
        # An edit of the first message, a reaction to it, and one more inbound.
        e.wa_edit(user, first, "Hello, is the shop open tomorrow?")
        e.wa_reaction(user, first)
        e.wa_text(user2, "Still there?")
        self.assert_matches_streams([cv, cv2, cv_tg, cv_ms])
        # Field checks that do not depend on the expectation code above.
        items = e.history(cv, take=100).json
        by_cmd = {it.get("command_id"): it for it in items if it["kind"] == "outbound"}
        self.assertEqual(by_cmd["mx-a1"]["delivery"], "read")
        self.assertEqual(by_cmd["mx-p1"]["delivery"], "read")
        self.assertEqual(by_cmd["mx-f1"]["delivery"], "failed")
        self.assertEqual(by_cmd["mx-a1"]["author"], {"type": "assistant"})
        self.assertEqual(by_cmd["mx-p1"]["author"]["type"], "person")
        self.assertRegex(by_cmd["mx-p1"]["author"]["key"], r"^key_[0-9a-f]{16}$")
        self.assertNotIn(e.key, json.dumps(items), "never the secret")
        orig = [it for it in items if it["kind"] == "message" and
                it["message"]["external_id"] == first][0]
        self.assertEqual(orig["message"]["text"], "Hello, is the shop open tomorrow?")
        self.assertEqual([x["text"] for x in orig["edits"]], ["Hello, is the shop open today?"])
        conv2 = e.api("GET", "/orgs/c/conversations/%s" % cv2).json
        self.assertEqual(conv2["last_message"]["preview"], "Still there?")
        self.assertEqual(conv2["unread_count"], 2)
        self.assertEqual(e.api("GET", "/orgs/c/conversations/%s" % cv_tg).json["last_message"]
                         ["author"], {"type": "assistant"})
        # The preview is cut at 120 characters, not bytes (2- and 4-byte UTF-8 here).
        text = "\u00fc\U0001F600" * 100
        e.wa_text("15550190003", text)
        cv3 = e.wa_conversation("15550190003")
        got = e.api("GET", "/orgs/c/conversations/%s" % cv3).json["last_message"]["preview"]
        self.assertEqual(got, text[:120])

    def test_unread_and_read_with_receipt(self):
        e = self.env
        user = "15550190011"
        e.wa_text(user, "one")
        cv = e.wa_conversation(user)
        last = e.wa_text(user, "two")
        conv = e.api("GET", "/orgs/c/conversations/%s" % cv).json
        self.assertEqual(conv["unread_count"], 2)
        unread = e.api("GET", "/orgs/c/conversations?unread=true&take=100")
        self.assertIn(cv, [c["id"] for c in unread.json])
        self.assertEqual(unread.headers["pagination-count"], str(len(unread.json)))
        res = e.api("POST", "/orgs/c/conversations/%s/read" % cv)
        self.assertEqual(res.status, 200, res)
        self.assertEqual(res.json["unread_count"], 0)
        self.assertNotIn(cv, [c["id"] for c in
                              e.api("GET", "/orgs/c/conversations?unread=true&take=100").json])
        # Rises again with inbound, and read with a receipt reaches the provider.
        last = e.wa_text(user, "three")
        self.assertEqual(e.api("GET", "/orgs/c/conversations/%s" % cv).json["unread_count"], 1)
        e.graph.clear()
        res = e.api("POST", "/orgs/c/conversations/%s/read" % cv, {"receipt": True})
        self.assertEqual(res.status, 200, res)
        self.assertEqual(res.json["unread_count"], 0)
        cmd_id = res.json["receipt"]["command_id"]
        self.assert_documented("ConversationRead", res.json)
        self.assertEqual(e.cmd_done(cmd_id), "sent")
        reqs = e.graph.wait_for(http_method="POST", path="/%s/messages" % WA_PN)
        body = json.loads(reqs[-1]["body"])
        self.assertEqual((body.get("status"), body.get("message_id")), ("read", last))
        entries = [eid for eid, ev in e.inbox() if ev.get("conversation_id") == cv]
        self.assert_matches_streams([cv], reads=(entries[-1],))
        # Bad bodies.
        for body in ({"receipt": "yes"}, {"other": 1}, [1]):
            res = e.api("POST", "/orgs/c/conversations/%s/read" % cv, body)
            self.assertEqual(res.status, 400, (body, res))

    def test_delivery_states(self):
        e = self.env
        user = "15550190021"
        e.wa_text(user, "hi")
        cv = e.wa_conversation(user)

        def delivery(cmd_id):
            items = e.history(cv, take=100).json
            return [it["delivery"] for it in items if it.get("command_id") == cmd_id][0]

        e.xadd({"id": "dl-1", "conversation_id": cv, "type": "text", "text": "first"})
        self.assertEqual(e.cmd_done("dl-1"), "sent")
        self.assertEqual(delivery("dl-1"), "sent")
        mid = e.outbound_events("dl-1")[0]["message"]["external_id"]
        seen = []
        for st in ("sent", "delivered", "read"):
            e.wa_status(user, mid, st)
            seen.append(delivery("dl-1"))
        self.assertEqual(seen, ["sent", "delivered", "read"])
        e.wa_status(user, mid, "delivered")  # late: never back
        self.assertEqual(delivery("dl-1"), "read")
        e.xadd({"id": "dl-2", "conversation_id": cv, "type": "text", "text": "second"})
        self.assertEqual(e.cmd_done("dl-2"), "sent")
        mid2 = e.outbound_events("dl-2")[0]["message"]["external_id"]
        e.wa_status(user, mid2, "failed")
        self.assertEqual(delivery("dl-2"), "failed")
        # A status that arrives before its message is recorded is kept for it.
        e.wa_status(user, "wamid.FAKE%d" % (e.graph._msg_id + 1), "delivered")
        e.xadd({"id": "dl-3", "conversation_id": cv, "type": "text", "text": "third"})
        self.assertEqual(e.cmd_done("dl-3"), "sent")
        self.assertEqual(e.outbound_events("dl-3")[0]["message"]["external_id"],
                         "wamid.FAKE%d" % e.graph._msg_id)
        self.assertEqual(delivery("dl-3"), "delivered")
        self.assert_matches_streams([cv])

    def test_hand_off_and_blocked(self):
        e = self.env
        user = "15550190031"
        e.wa_text(user, "I want a person")
        cv = e.wa_conversation(user)
        contact = [ev for _e, ev in e.inbox() if ev.get("conversation_id") == cv][0]["contact"]
        res = e.api("PATCH", "/orgs/c/contacts/%s" % contact["id"],
                    {"status": "AI_REPLIES_DISABLED"})
        self.assertEqual(res.status, 200, res)
        listed = e.api("GET", "/orgs/c/conversations?contact_status=AI_REPLIES_DISABLED&take=100")
        self.assertEqual([c["id"] for c in listed.json], [cv])
        self.assertNotIn(cv, [c["id"] for c in e.api(
            "GET", "/orgs/c/conversations?contact_status=SUBSCRIBED&take=100").json])
        e.graph.clear()
        e.xadd({"id": "ho-a", "conversation_id": cv, "type": "text", "text": "bot reply"})
        self.assertEqual(e.cmd_done("ho-a"), "failed")
        self.assertEqual([d["reason"] for d in e.dead("ho-a")], ["handed_off"])
        ev = e.outbound_events("ho-a")[-1]
        self.assertEqual((ev["status"]["state"], ev["status"]["error"]["title"]),
                         ("failed", "handed_off"))
        self.assertEqual(ev["author"], {"type": "assistant"})
        res = e.api("POST", "/orgs/c/conversations/%s/messages" % cv,
                    {"id": "ho-p", "type": "text", "text": "a person answers"})
        self.assertEqual(res.status, 202, res)
        self.assertEqual(e.cmd_done("ho-p"), "sent")
        sent = [json.loads(r["body"]) for r in e.graph.requests(http_method="POST")]
        self.assertEqual([s["text"]["body"] for s in sent], ["a person answers"])
        ev = e.outbound_events("ho-p")[-1]
        self.assertEqual(ev["status"]["state"], "sent")
        self.assertEqual(ev["author"]["type"], "person")
        # BLOCKED refuses both.
        res = e.api("PATCH", "/orgs/c/contacts/%s" % contact["id"], {"status": "BLOCKED"})
        self.assertEqual(res.status, 200, res)
        e.graph.clear()
        e.xadd({"id": "bl-a", "conversation_id": cv, "type": "text", "text": "bot"})
        res = e.api("POST", "/orgs/c/conversations/%s/messages" % cv,
                    {"id": "bl-p", "type": "text", "text": "person"})
        self.assertEqual(res.status, 202, res)
        for cmd_id in ("bl-a", "bl-p"):
            self.assertEqual(e.cmd_done(cmd_id), "failed")
            self.assertEqual([d["reason"] for d in e.dead(cmd_id)], ["contact_blocked"])
        self.assertEqual(e.graph.requests(http_method="POST"), [])
        conv = e.api("GET", "/orgs/c/conversations/%s" % cv).json
        self.assertEqual(conv["contact"]["status"], "BLOCKED")
        self.assertEqual([c["id"] for c in e.api(
            "GET", "/orgs/c/conversations?contact_status=BLOCKED&take=100").json], [cv])
        self.assert_matches_streams([cv])

    def test_filters_pages_and_errors(self):
        e = self.env
        for i in range(3):
            e.tg_text(402233950 + i, "filter %d" % i)
        e.wa_text("15550190041", "filter wa")
        everything = e.api("GET", "/orgs/c/conversations?take=100").json
        total = len(everything)
        for ch in ("whatsapp", "telegram", "messenger"):
            res = e.api("GET", "/orgs/c/conversations?channel=%s&take=100" % ch)
            self.assertEqual(res.status, 200, res)
            self.assertEqual([c["id"] for c in res.json],
                             [c["id"] for c in everything if c["channel"] == ch])
        res = e.api("GET", "/orgs/c/conversations?connection_id=%s&take=100" % e.tg_conn)
        self.assertEqual([c["id"] for c in res.json],
                         [c["id"] for c in everything if c["connection_id"] == e.tg_conn])
        res = e.api("GET", "/orgs/c/conversations?assistant_id=%s&take=100" % e.asst)
        self.assertEqual(len(res.json), total)
        res = e.api("GET", "/orgs/c/conversations?assistant_id=as_none&take=100")
        self.assertEqual((res.json, res.headers["pagination-count"]), ([], "0"))
        # Several filters at once.
        res = e.api("GET", "/orgs/c/conversations?channel=telegram&unread=true&assistant_id=%s"
                    "&contact_status=SUBSCRIBED&take=100" % e.asst)
        self.assertEqual([c["id"] for c in res.json],
                         [c["id"] for c in everything if c["channel"] == "telegram" and
                          c["unread_count"] > 0 and c["contact"]["status"] == "SUBSCRIBED"])
        both = [c["id"] for c in everything if c["channel"] == "telegram" and c["unread_count"] > 0]
        self.assertGreaterEqual(len(both), 3)
        for page in (1, 2, len(both), len(both) + 1):
            res = e.api("GET", "/orgs/c/conversations?channel=telegram&unread=true&take=1&page=%d"
                        % page)
            self.assertEqual([c["id"] for c in res.json], both[page - 1:page], page)
            self.assertEqual(res.headers["pagination-count"], str(len(both)))
        # Pages.
        res = e.api("GET", "/orgs/c/conversations?take=2&page=2")
        self.assertEqual([c["id"] for c in res.json], [c["id"] for c in everything[2:4]])
        self.assertEqual((res.headers["pagination-count"], res.headers["pagination-page"],
                          res.headers["pagination-take"]), (str(total), "2", "2"))
        res = e.api("GET", "/orgs/c/conversations?page=1000")
        self.assertEqual((res.status, res.json), (200, []))
        # Bad parameters, unknown and other orgs' conversations.
        cv = everything[0]["id"]
        for q in ("take=0", "take=101", "page=0", "take=x", "channel=sms", "unread=yes",
                  "contact_status=GONE", "assistant_id=a%20b"):
            res = e.api("GET", "/orgs/c/conversations?" + q)
            self.assertEqual(res.status, 400, (q, res))
            self.assertIn("error", res.json)
        for q in ("before=abc", "after=1-2-3", "take=0", "take=101", "before=-1", "page=0",
                  "page=102&take=100"):
            res = e.api("GET", "/orgs/c/conversations/%s/messages?%s" % (cv, q))
            self.assertEqual(res.status, 400, (q, res))
        for path in ("/orgs/c/conversations/cv_missing", "/orgs/c/conversations/cv_missing/messages"):
            self.assertEqual(e.api("GET", path).status, 404)
        self.assertEqual(e.api("POST", "/orgs/c/conversations/cv_missing/read").status, 404)
        for method, path in (("GET", "/orgs/c/conversations/%s" % cv),
                             ("GET", "/orgs/c/conversations/%s/messages" % cv),
                             ("POST", "/orgs/c/conversations/%s/read" % cv)):
            res = e.gw.http(method, path, key=e.other_key)
            self.assertEqual(res.status, 404, (method, path, res))
        res = e.gw.http("GET", "/orgs/c/conversations", key=e.other_key)
        self.assertEqual((res.status, res.json), (200, []))
        self.assertEqual(e.api("DELETE", "/orgs/c/conversations/%s" % cv).status, 405)
        self.assertEqual(e.api("PATCH", "/orgs/c/conversations").status, 405)
        self.assertEqual(e.gw.http("GET", "/orgs/c/conversations").status, 401)
        metrics = e.gw.http("GET", "/metrics").body.decode()
        self.assertIn('route="/orgs/c/conversations"', metrics)
        self.assertIn('route="/orgs/c/conversations/{id}/read"', metrics)

    def test_combined_filters_counts_and_pages(self):
        """Every pair and triple of filters: the order, every page and pagination-count agree
        with the unfiltered list, through reads, new messages and a contact status change,
        with the kept counts and with the ZINTERCARD of an org whose counts are not kept."""
        import itertools
        e = self.env
        for i in range(5):
            e.tg_text(402234950 + i, "combined %d" % i)
        for i in range(3):
            e.wa_text("1555019%04d" % (200 + i), "combined wa %d" % i)
        everything = e.api("GET", "/orgs/c/conversations?take=100").json
        tg = [c for c in everything if c["channel"] == "telegram"]
        # some read, one of them written to again (unread again), a contact handed off
        for c in tg[:3] + [c for c in everything if c["channel"] == "whatsapp"][:1]:
            self.assertEqual(e.api("POST", "/orgs/c/conversations/%s/read" % c["id"]).status, 200)
        e.tg_text(int(tg[0]["contact"]["external_id"]), "again")
        handed = tg[3]["contact"]["id"]  # unread: it moves in the unread counts too
        res = e.api("PATCH", "/orgs/c/contacts/%s" % handed, {"status": "AI_REPLIES_DISABLED"})
        self.assertEqual(res.status, 200, res)
        everything = e.api("GET", "/orgs/c/conversations?take=100").json
        self.assertTrue(any(c["unread_count"] == 0 for c in everything))
        self.assertTrue(any(c["contact"]["status"] == "AI_REPLIES_DISABLED" for c in everything))
        filters = {
            "channel=telegram": lambda c: c["channel"] == "telegram",
            "channel=whatsapp": lambda c: c["channel"] == "whatsapp",
            "connection_id=" + e.tg_conn: lambda c: c["connection_id"] == e.tg_conn,
            "assistant_id=" + e.asst: lambda c: c["assistant_id"] == e.asst,
            "contact_status=SUBSCRIBED": lambda c: c["contact"]["status"] == "SUBSCRIBED",
            "contact_status=AI_REPLIES_DISABLED":
                lambda c: c["contact"]["status"] == "AI_REPLIES_DISABLED",
            "unread=true": lambda c: c["unread_count"] > 0,
        }

        def check_all():
            checked = 0
            for n in (2, 3):
                for combo in itertools.combinations(sorted(filters), n):
                    names = [q.split("=")[0] for q in combo]
                    if len(set(names)) < n:
                        continue  # one value per filter
                    want = [c["id"] for c in everything if all(filters[q](c) for q in combo)]
                    got = []
                    for page in range(1, len(want) + 2):
                        res = e.api("GET", "/orgs/c/conversations?%s&take=2&page=%d"
                                    % ("&".join(combo), page))
                        self.assertEqual(res.status, 200, res)
                        self.assertEqual(res.headers["pagination-count"], str(len(want)), combo)
                        got += [c["id"] for c in res.json]
                        if not res.json:
                            break
                    self.assertEqual(got, want, combo)
                    checked += 1
            return checked

        self.assertGreater(check_all(), 20)
        counts = e.r.command("HGETALL", e.prefix + "convs:{org_in}:counts")
        counts = dict(zip(counts[::2], counts[1::2]))
        self.assertIn(b"on", counts)
        self.assertEqual(int(counts[b":ch:telegram|:unread"]),
                         sum(1 for c in everything if c["channel"] == "telegram" and
                             c["unread_count"] > 0))
        self.assertEqual(int(counts[b":st:AI_REPLIES_DISABLED|:unread"]),
                         sum(1 for c in everything if c["unread_count"] > 0 and
                             c["contact"]["status"] == "AI_REPLIES_DISABLED"))
        self.assertGreaterEqual(int(counts[b":st:AI_REPLIES_DISABLED|:unread"]), 1)
        # an org whose counts are not kept (written before they existed) counts the same way
        e.r.command("RENAME", e.prefix + "convs:{org_in}:counts", e.prefix + "kept_counts")
        try:
            check_all()
        finally:
            e.r.command("RENAME", e.prefix + "kept_counts", e.prefix + "convs:{org_in}:counts")
        # the contact back (the other tests share the org), its conversation counted back
        res = e.api("PATCH", "/orgs/c/contacts/%s" % handed, {"status": "SUBSCRIBED"})
        self.assertEqual(res.status, 200, res)
        everything = e.api("GET", "/orgs/c/conversations?take=100").json
        check_all()


if __name__ == "__main__":
    unittest.main(verbosity=2)

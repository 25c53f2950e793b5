"""
The event additions of contract section 3 that only the running server shows: one
WhatsApp contact (and one conversation) per person whether a body names the phone, the
business-scoped user id (BSUID) or both; a Telegram forum topic as a conversation of its
own, with replies sent into the topic; a timestamp on every event written, the receive
time when the provider gives none; referral events routed to the assistant. (The recorded corpus runs in test_corpus.py.)
"""

import hashlib
import hmac
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import GatewayTestCase, wait_until  # noqa: E402

PNID = "204060801077001"
PAGE = "110220330447002"
IG = "17841400000447003"
BOT = "5559876543"
FORUM = -1009988770001


def sign(secret, data):
    return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def wa_body(mid, t, text, wa_id=None, bsuid=None, name="Noor"):
    contact = {"profile": {"name": name}}
    msg = {"id": mid, "timestamp": str(t), "type": "text", "text": {"body": text}}
    if wa_id is not None:
        contact["wa_id"] = wa_id
        msg["from"] = wa_id
    if bsuid is not None:
        contact["user_id"] = bsuid
        msg["from_user_id"] = bsuid
    return {"object": "whatsapp_business_account", "entry": [{"id": "300400500647000", "changes": [
        {"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550107700", "phone_number_id": PNID},
            "contacts": [contact], "messages": [msg]}}]}]}


def tg_topic_message(update_id, message_id, thread, text):
    msg = {"message_id": message_id, "date": 1781300000 + update_id % 1000,
           "chat": {"id": FORUM, "type": "supergroup", "title": "Help desk", "is_forum": True},
           "from": {"id": 402230001, "is_bot": False, "first_name": "Ana"}, "text": text}
    if thread is not None:
        msg["is_topic_message"] = True
        msg["message_thread_id"] = thread
    return {"update_id": update_id, "message": msg}


class AdditionsCase(GatewayTestCase):
    """Stream readers and webhook helpers of the tests below."""

    def stream(self, key):
        out = []
        for _id, fields in self.redis.command("XRANGE", self.PREFIX + key, "-", "+") or []:
            d = dict(zip(fields[::2], fields[1::2]))
            out.append(json.loads(d[b"event"]))
        return out

    def assistant_events(self, assistant):
        return self.stream("in:{%s}" % assistant["id"])

    def meta_setup(self, provider, external_id):
        secret = "app-secret-%s-%s" % (provider, self.org)
        conn = self.create_meta(provider, secret, "verify-" + provider,
                                "token-%s-%s" % (provider, self.org), account_id=external_id)
        asst = self.create_assistant("additions " + provider)
        self.bind(asst["id"], conn["id"], external_id)
        return conn, secret, asst

    def post_meta(self, conn, secret, body):
        data = json.dumps(body, separators=(",", ":")).encode()
        r = self.gw.http("POST", self.webhook_path(conn), body=data,
                         headers={"Content-Type": "application/json",
                                  "X-Hub-Signature-256": sign(secret, data)})
        self.assertStatus(r, 200)

    def send(self, conversation_id, cmd_id, **cmd):
        """Adds a command to sb:out and waits for its outbound inbox event."""
        cmd = dict(cmd, id=cmd_id, conversation_id=conversation_id)
        self.redis.command("XADD", self.PREFIX + "out", "*", "cmd", json.dumps(cmd))
        return wait_until(
            lambda: [e for e in self.stream("inbox:{%s}" % self.org)
                     if e["kind"] == "outbound" and e.get("command_id") == cmd_id],
            15, "the outbound event of %s" % cmd_id)[0]

    def contacts(self):
        r = self.api("GET", "/orgs/c/contacts")
        self.assertStatus(r, 200)
        body = r.json
        return body["data"] if isinstance(body, dict) and "data" in body else body



class PayloadAdditions(AdditionsCase):

    # --- WhatsApp BSUID

    def test_phone_then_both_then_bsuid_is_one_contact(self):
        conn, secret, asst = self.meta_setup("whatsapp", PNID)
        phone, bsuid = "15550144001", "US.7001002003004005006"
        self.post_meta(conn, secret, wa_body("wamid.L1", 1781300001, "by phone", wa_id=phone))
        self.post_meta(conn, secret, wa_body("wamid.L2", 1781300002, "both", phone, bsuid))
        self.post_meta(conn, secret, wa_body("wamid.L3", 1781300003, "by bsuid", bsuid=bsuid))
        evs = wait_until(lambda: len(self.assistant_events(asst)) >= 3 and
                         self.assistant_events(asst), 10, "three events")
        self.assertEqual(len(evs), 3, evs)
        self.assertEqual([e["message"]["text"] for e in evs], ["by phone", "both", "by bsuid"])
        self.assertEqual(len({e["contact"]["id"] for e in evs}), 1, evs)
        self.assertEqual(len({e["conversation_id"] for e in evs}), 1, evs)
        # The first id seen stays the external id, whichever id a body came by.
        self.assertEqual([e["contact"]["external_id"] for e in evs], [phone] * 3)
        self.assertNotIn("user_id", evs[0]["contact"])
        self.assertEqual(evs[1]["contact"]["user_id"], bsuid)
        self.assertEqual(evs[2]["contact"]["user_id"], bsuid)
        self.assertNotIn("phone", evs[2]["contact"])
        listed = [c for c in self.contacts() if c["channel"] == "whatsapp"]
        self.assertEqual(len(listed), 1, listed)
        self.assertEqual(listed[0]["external_id"], phone)
        self.assertEqual(listed[0]["id"], evs[0]["contact"]["id"])
        # A reply goes to the phone.
        self.graph.clear()
        out = self.send(evs[2]["conversation_id"], "cmd-bsuid-1", type="text", text="Thanks")
        self.assertEqual(out["status"]["state"], "sent", out)
        reqs = self.graph.requests(path="/%s/messages" % PNID)
        self.assertEqual(len(reqs), 1, reqs)
        self.assertEqual(json.loads(reqs[0]["body"])["to"], phone)

    def test_bsuid_first_keeps_the_bsuid_and_learns_the_phone(self):
        conn, secret, asst = self.meta_setup("whatsapp", PNID)
        phone, bsuid = "15550144002", "US.7001002003004005007"
        self.post_meta(conn, secret, wa_body("wamid.K1", 1781300011, "by bsuid", bsuid=bsuid))
        self.post_meta(conn, secret, wa_body("wamid.K2", 1781300012, "both", phone, bsuid))
        self.post_meta(conn, secret, wa_body("wamid.K3", 1781300013, "by phone", wa_id=phone))
        evs = wait_until(lambda: len(self.assistant_events(asst)) >= 3 and
                         self.assistant_events(asst), 10, "three events")
        self.assertEqual(len(evs), 3, evs)
        self.assertEqual(len({e["contact"]["id"] for e in evs}), 1, evs)
        self.assertEqual(len({e["conversation_id"] for e in evs}), 1, evs)
        self.assertEqual([e["contact"]["external_id"] for e in evs], [bsuid] * 3)
        self.assertEqual(evs[0]["contact"]["user_id"], bsuid)
        self.assertEqual(evs[2]["contact"]["phone"], "+" + phone)
        listed = [c for c in self.contacts() if c["channel"] == "whatsapp"]
        self.assertEqual(len(listed), 1, listed)
        self.assertEqual(listed[0]["external_id"], bsuid)
        self.assertEqual(listed[0]["phone"], "+" + phone)
        # Once the phone is known, replies go to it.
        self.graph.clear()
        out = self.send(evs[0]["conversation_id"], "cmd-bsuid-2", type="text", text="Hello")
        self.assertEqual(out["status"]["state"], "sent", out)
        reqs = self.graph.requests(path="/%s/messages" % PNID)
        self.assertEqual(len(reqs), 1, reqs)
        self.assertEqual(json.loads(reqs[0]["body"])["to"], phone)

    # --- Telegram forum topics

    def test_forum_topic_is_its_own_conversation_and_replies_go_into_it(self):
        token = "%s:TEST-additions-%s" % (BOT, self.org[-8:])
        conn = self.create_telegram(token)
        asst = self.create_assistant("forum")
        self.bind(asst["id"], conn["id"], BOT)
        for body in (tg_topic_message(920000001, 10, 7, "in topic 7"),
                     tg_topic_message(920000002, 11, 8, "in topic 8"),
                     tg_topic_message(920000003, 12, None, "in General"),
                     tg_topic_message(920000004, 13, 7, "topic 7 again")):
            self.assertStatus(self.post_telegram_update(conn, token, body), 200)
        evs = wait_until(lambda: len(self.assistant_events(asst)) >= 4 and
                         self.assistant_events(asst), 10, "four events")
        self.assertEqual(len(evs), 4, evs)
        self.assertEqual([e["message"].get("thread_id") for e in evs], ["7", "8", None, "7"])
        convs = [e["conversation_id"] for e in evs]
        self.assertEqual(len(set(convs[:3])), 3, convs)
        self.assertEqual(convs[0], convs[3])
        # One contact across the topics: the person, not the topic.
        self.assertEqual(len({e["contact"]["id"] for e in evs}), 1, evs)

        self.telegram.clear()
        out = self.send(convs[0], "cmd-topic-1", type="text", text="Looking into it")
        self.assertEqual(out["status"]["state"], "sent", out)
        reqs = self.telegram.requests(method="sendmessage")
        self.assertEqual(len(reqs), 1, reqs)
        sent = json.loads(reqs[0]["body"])
        self.assertEqual(sent["chat_id"], FORUM)
        self.assertEqual(sent["message_thread_id"], 7)
        self.assertEqual(sent["text"], "Looking into it")

        self.telegram.clear()
        self.send(convs[2], "cmd-topic-2", type="text", text="Hello everyone")
        reqs = self.telegram.requests(method="sendmessage")
        self.assertEqual(len(reqs), 1, reqs)
        self.assertNotIn("message_thread_id", json.loads(reqs[0]["body"]))

    # --- timestamps

    def test_every_event_has_a_timestamp(self):
        token = "%s:TEST-additions-%s" % (BOT, self.org[-8:])
        conn = self.create_telegram(token)
        asst = self.create_assistant("timestamps")
        self.bind(asst["id"], conn["id"], BOT)
        before = int(time.time() * 1000)
        callback = {"update_id": 930000001, "callback_query": {
            "id": "77001", "from": {"id": 402230002, "is_bot": False, "first_name": "Ben"},
            "chat_instance": "-1", "data": "pick:1",
            "message": {"message_id": 5, "date": 1781300100,
                        "chat": {"id": 402230002, "type": "private", "first_name": "Ben"},
                        "text": "Pick one"}}}
        self.assertStatus(self.post_telegram_update(conn, token, callback), 200)
        self.assertStatus(self.post_telegram_update(
            conn, token, tg_topic_message(930000002, 6, None, "dated")), 200)
        after = int(time.time() * 1000)

        m_conn, m_secret, m_asst = self.meta_setup("messenger", PAGE)
        self.post_meta(m_conn, m_secret, {"object": "page", "entry": [{"id": PAGE, "messaging": [
            {"sender": {"id": "6620000000000001"}, "recipient": {"id": PAGE},
             "timestamp": "2026-06-01T10:00:00+0000", "message": {"mid": "m_iso", "text": "iso"}},
            {"sender": {"id": "6620000000000001"}, "recipient": {"id": PAGE},
             "delivery": {"mids": ["m_ours"], "watermark": 1781300200123}}]}]})

        evs = wait_until(lambda: len(self.assistant_events(asst)) >= 2 and
                         self.assistant_events(asst), 10, "two Telegram events")
        self.assertEqual([e["kind"] for e in evs], ["postback", "message"])
        # No provider time on a callback query: the receive time.
        self.assertIsInstance(evs[0]["timestamp"], int)
        self.assertTrue(before <= evs[0]["timestamp"] <= after, evs[0])
        self.assertEqual(evs[1]["timestamp"], (1781300000 + 2) * 1000)
        mevs = wait_until(lambda: len(self.assistant_events(m_asst)) >= 2 and
                          self.assistant_events(m_asst), 10, "two Messenger events")
        self.assertEqual(mevs[0]["timestamp"], 1780308000000)
        self.assertEqual(mevs[1]["timestamp"], 1781300200123)
        for e in self.stream("inbox:{%s}" % self.org):
            self.assertIsInstance(e.get("timestamp"), int, e)

    # --- referrals

    def test_referrals_are_routed(self):
        m_conn, m_secret, m_asst = self.meta_setup("messenger", PAGE)
        self.post_meta(m_conn, m_secret, {"object": "page", "entry": [{"id": PAGE, "messaging": [
            {"sender": {"id": "6620000000000002"}, "recipient": {"id": PAGE},
             "timestamp": 1781300300000,
             "referral": {"ref": "poster-12", "source": "SHORTLINK", "type": "OPEN_THREAD"}}]}]})
        i_conn, i_secret, i_asst = self.meta_setup("instagram", IG)
        self.post_meta(i_conn, i_secret, {"object": "instagram", "entry": [{"id": IG, "messaging": [
            {"sender": {"id": "7730000000000003"}, "recipient": {"id": IG},
             "timestamp": 1781300300001,
             "referral": {"ref": "ig-ad", "ad_id": "23850000000001234", "source": "ADS",
                          "type": "OPEN_THREAD"}}]}]})
        w_conn, w_secret, w_asst = self.meta_setup("whatsapp", PNID)
        body = wa_body("wamid.AD1", 1781300302, "from the ad", wa_id="15550144003")
        body["entry"][0]["changes"][0]["value"]["messages"][0]["referral"] = {
            "source_url": "https://fb.me/ad-example", "source_id": "120210000000000099",
            "source_type": "ad", "headline": "Spring sale", "ctwa_clid": "clid-example-99"}
        self.post_meta(w_conn, w_secret, body)

        m = wait_until(lambda: self.assistant_events(m_asst), 10, "the Messenger referral")[0]
        self.assertEqual(m["kind"], "referral")
        self.assertEqual(m["referral"], {"ref": "poster-12", "source_type": "SHORTLINK"})
        self.assertEqual(m["contact"]["external_id"], "6620000000000002")
        self.assertIsInstance(m["conversation_id"], str)
        self.assertNotIn("message", m)
        i = wait_until(lambda: self.assistant_events(i_asst), 10, "the Instagram referral")[0]
        self.assertEqual(i["kind"], "referral")
        self.assertEqual(i["referral"]["source_id"], "23850000000001234")
        w = wait_until(lambda: self.assistant_events(w_asst), 10, "the WhatsApp message")[0]
        self.assertEqual(w["kind"], "message")
        self.assertEqual(w["referral"]["ctwa_clid"], "clid-example-99")
        self.assertEqual(w["referral"]["headline"], "Spring sale")
        # A resent referral is the same event: stored once.
        self.post_meta(m_conn, m_secret, {"object": "page", "entry": [{"id": PAGE, "messaging": [
            {"sender": {"id": "6620000000000002"}, "recipient": {"id": PAGE},
             "timestamp": 1781300300000,
             "referral": {"ref": "poster-12", "source": "SHORTLINK", "type": "OPEN_THREAD"}}]}]})
        self.assertEqual(len(self.assistant_events(m_asst)), 1)
        samples = harness.parse_prometheus(self.gw.http("GET", "/metrics").body.decode())
        self.assertGreaterEqual(harness.metric_sum(samples, "switchboard_events_total",
                                                   channel="messenger", kind="referral"), 1)
        self.assertGreaterEqual(harness.metric_sum(samples, "switchboard_events_total",
                                                   channel="instagram", kind="referral"), 1)


KINDS = {"message", "edit", "postback", "reaction", "status", "referral"}
TYPES = {"text", "image", "audio", "video", "document", "sticker", "location", "contact",
         "interactive", "unsupported", "share"}
STATES = {"sent", "delivered", "read", "failed"}


def dot(obj, path):
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return KeyError(path)
        obj = obj[part]
    return obj


if __name__ == "__main__":
    harness.main()

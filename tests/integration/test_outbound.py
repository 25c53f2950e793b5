"""
Outbound end to end (contract section 5): commands added to sb:out (or POSTed to
/orgs/c/conversations/{id}/messages) reach the fake Graph and Bot API servers as the exact
provider requests, in order per conversation, once per command id, with retries, dead
letters, inactive connections, and take-over of commands held by a gateway that died.
"""

import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Gateway, wait_until  # noqa: E402
from test_inbound import Env, ascii_bytes, sign, utf8_bytes  # noqa: E402

# The token of the Telegram connection that Env creates for the text_private fixture.
TG_TOKEN = "%s:TEST-fixture-token" % harness.load_fixture("telegram", "text_private")[
    "binding_external_id"]
TG_CHAT = 412345678


class OutEnv(Env):
    """An Env with one conversation per channel, created by inbound webhooks."""

    def __init__(self, prefix="sb:", extra_env=None, redis=None):
        super().__init__(prefix=prefix, extra_env=extra_env, redis=redis)
        self.asst = self.assistant("outbound")
        self.conns = {}
        self.convs = {}
        for ch, case in (("whatsapp", "text"), ("messenger", "text"), ("instagram", "text")):
            fx = harness.load_fixture(ch, case)
            secret = "app-secret-out-%s-0123456789" % ch
            cid = self.meta_connection(ch, secret, "token-out-%s-0123456789" % ch)
            self.bind(self.asst, cid, fx["binding_external_id"])
            data = ascii_bytes(fx["body"])
            res = self.gw.http("POST", "/webhooks/%s/%s" % (ch, cid), body=data,
                               headers={"X-Hub-Signature-256": sign(secret, data)})
            assert res.status == 200, res
            self.conns[ch] = cid
            self.convs[ch] = self.last_conversation()
        fx = harness.load_fixture("telegram", "text_private")
        cid, secret = self.telegram_connection(fx["binding_external_id"])
        self.bind(self.asst, cid, fx["binding_external_id"])
        self.tg_secret = secret
        self.conns["telegram"] = cid
        self.convs["telegram"] = self.telegram_conversation(TG_CHAT, 845300000)

    def last_conversation(self):
        return self.stream("in:{%s}" % self.asst)[-1]["conversation_id"]

    def telegram_conversation(self, chat_id, update_id):
        fx = harness.load_fixture("telegram", "text_private")
        body = json.loads(json.dumps(fx["body"]))
        body["update_id"] = update_id
        body["message"]["chat"]["id"] = chat_id
        body["message"]["from"]["id"] = chat_id
        res = self.gw.http("POST", "/webhooks/telegram/%s" % self.conns["telegram"],
                           body=utf8_bytes(body),
                           headers={"X-Telegram-Bot-Api-Secret-Token": self.tg_secret})
        assert res.status == 200, res
        return self.last_conversation()

    def xadd(self, cmd):
        return self.r.command("XADD", self.prefix + "out", "*", "cmd", json.dumps(cmd))

    def inbox_outbound(self, command_id=None):
        evs = [e for e in self.stream("inbox:{org_in}") if e["kind"] == "outbound"]
        if command_id is not None:
            evs = [e for e in evs if e.get("command_id") == command_id]
        return evs

    def dead(self):
        out = []
        for _id, fields in self.r.command("XRANGE", self.prefix + "dead", "-", "+") or []:
            d = dict(zip(fields[::2], fields[1::2]))
            out.append({k.decode(): v.decode() for k, v in d.items()})
        return out

    def pending(self):
        try:
            return self.r.command("XPENDING", self.prefix + "out", "switchboard")[0]
        except harness.RedisError:
            return 0


class TestRequests(unittest.TestCase):
    """The exact request of every command type on every channel."""

    @classmethod
    def setUpClass(cls):
        cls.env = OutEnv()
        cls.n = 0

    @classmethod
    def tearDownClass(cls):
        cls.env.stop()

    def send(self, channel, **cmd):
        """Adds a command and returns the requests it caused at the fake provider."""
        e = self.env
        TestRequests.n += 1
        cmd_id = "cmd-%s-%d" % (channel, self.n)
        fake = e.tg if channel == "telegram" else e.graph
        fake.clear()
        e.xadd(dict(cmd, id=cmd_id, conversation_id=e.convs[channel]))
        wait_until(lambda: e.r.command("EXISTS", "sb:cmd:{org_in}:" + cmd_id) and
                   e.r.command("HGET", "sb:cmd:{org_in}:" + cmd_id, "done"), 10,
                   "command %s done" % cmd_id)
        self.assertEqual(e.r.command("HGET", "sb:cmd:{org_in}:" + cmd_id, "done"), b"sent")
        return cmd_id, fake.requests()

    def graph_request(self, reqs, sender):
        self.assertEqual(len(reqs), 1, reqs)
        r = reqs[0]
        self.assertEqual(r["http_method"], "POST")
        self.assertEqual(r["path"], "/%s/messages" % sender)
        self.assertEqual(r["headers"]["authorization"], "Bearer " + r["token"])
        self.assertTrue(r["token"].startswith("token-out-"))
        self.assertTrue(r["headers"]["content-type"].startswith("application/json"))
        return json.loads(r["body"])

    def tg_request(self, reqs, method):
        self.assertEqual(len(reqs), 1, reqs)
        r = reqs[0]
        self.assertEqual(r["http_method"], "POST")
        self.assertEqual(r["path"], "/bot%s/%s" % (TG_TOKEN, method))
        self.assertNotIn("authorization", r["headers"])
        return json.loads(r["body"])

    # --- WhatsApp

    def test_whatsapp(self):
        fx = harness.load_fixture("whatsapp", "text")
        pn, to = fx["binding_external_id"], fx["reply_target"]
        base = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to}
        _, reqs = self.send("whatsapp", type="text", text="Hello")
        self.assertEqual(self.graph_request(reqs, pn), dict(
            base, type="text", text={"preview_url": False, "body": "Hello"}))
        _, reqs = self.send("whatsapp", type="text", text="Re", reply_to="wamid.X")
        self.assertEqual(self.graph_request(reqs, pn), dict(
            base, type="text", text={"preview_url": False, "body": "Re"},
            context={"message_id": "wamid.X"}))
        _, reqs = self.send("whatsapp", type="text", text="Pick",
                            buttons=[{"id": "a", "title": "A"}, {"id": "b", "title": "B"}])
        self.assertEqual(self.graph_request(reqs, pn), dict(
            base, type="interactive", interactive={
                "type": "button", "body": {"text": "Pick"}, "action": {"buttons": [
                    {"type": "reply", "reply": {"id": "a", "title": "A"}},
                    {"type": "reply", "reply": {"id": "b", "title": "B"}}]}}))
        _, reqs = self.send("whatsapp", type="image",
                            media={"url": "https://cdn.example/i.png", "caption": "Look"})
        self.assertEqual(self.graph_request(reqs, pn), dict(
            base, type="image", image={"link": "https://cdn.example/i.png", "caption": "Look"}))
        _, reqs = self.send("whatsapp", type="video", media={"url": "https://cdn.example/v.mp4"})
        self.assertEqual(self.graph_request(reqs, pn), dict(
            base, type="video", video={"link": "https://cdn.example/v.mp4"}))
        _, reqs = self.send("whatsapp", type="document", media={
            "url": "https://cdn.example/d.pdf", "caption": "Doc", "file_name": "d.pdf"})
        self.assertEqual(self.graph_request(reqs, pn), dict(
            base, type="document", document={"link": "https://cdn.example/d.pdf",
                                             "caption": "Doc", "filename": "d.pdf"}))
        _, reqs = self.send("whatsapp", type="audio", media={"url": "https://cdn.example/a.ogg"})
        self.assertEqual(self.graph_request(reqs, pn), dict(
            base, type="audio", audio={"link": "https://cdn.example/a.ogg"}))
        _, reqs = self.send("whatsapp", type="typing", reply_to="wamid.IN")
        self.assertEqual(self.graph_request(reqs, pn), {
            "messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN",
            "typing_indicator": {"type": "text"}})
        _, reqs = self.send("whatsapp", type="read", reply_to="wamid.IN")
        self.assertEqual(self.graph_request(reqs, pn), {
            "messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN"})

    # --- Messenger and Instagram

    def meta_checks(self, channel, sender, psid):
        rcpt = {"id": psid}
        _, reqs = self.send(channel, type="text", text="Hello")
        body = self.graph_request(reqs, sender)
        self.assertEqual(body["recipient"], rcpt)
        self.assertEqual(body["message"], {"text": "Hello"})
        _, reqs = self.send(channel, type="text", text="Pick",
                            buttons=[{"id": "YES", "title": "Yes"}, {"id": "NO", "title": "No"}])
        body = self.graph_request(reqs, sender)
        self.assertEqual(body["message"], {"text": "Pick", "quick_replies": [
            {"content_type": "text", "title": "Yes", "payload": "YES"},
            {"content_type": "text", "title": "No", "payload": "NO"}]})
        for typ, att in (("image", "image"), ("audio", "audio"), ("video", "video"),
                         ("document", "file")):
            cmd_id, reqs = self.send(channel, type=typ, media={
                "url": "https://cdn.example/x", "caption": "Cap"})
            self.assertEqual(len(reqs), 2, "attachment, then the caption as text")
            first, second = json.loads(reqs[0]["body"]), json.loads(reqs[1]["body"])
            self.assertEqual(first["recipient"], rcpt)
            self.assertEqual(first["message"], {"attachment": {"type": att, "payload": {
                "url": "https://cdn.example/x", "is_reusable": True}}})
            self.assertEqual(second["message"], {"text": "Cap"})
            parts = [ev["part"] for ev in self.env.inbox_outbound(cmd_id)]
            self.assertEqual(parts, [1, 2])
        _, reqs = self.send(channel, type="typing")
        body = self.graph_request(reqs, sender)
        self.assertEqual((body["recipient"], body["sender_action"]), (rcpt, "typing_on"))
        self.assertNotIn("message", body)
        _, reqs = self.send(channel, type="read")
        self.assertEqual(self.graph_request(reqs, sender)["sender_action"], "mark_seen")

    def test_messenger(self):
        fx = harness.load_fixture("messenger", "text")
        self.meta_checks("messenger", fx["binding_external_id"], fx["reply_target"])

    def test_instagram(self):
        fx = harness.load_fixture("instagram", "text")
        self.meta_checks("instagram", fx["binding_external_id"], fx["reply_target"])

    # --- Telegram

    def test_telegram(self):
        _, reqs = self.send("telegram", type="text", text="Hello")
        self.assertEqual(self.tg_request(reqs, "sendMessage"), {"chat_id": TG_CHAT,
                                                                "text": "Hello"})
        _, reqs = self.send("telegram", type="text", text="Re", reply_to="%d:52" % TG_CHAT)
        self.assertEqual(self.tg_request(reqs, "sendMessage"), {
            "chat_id": TG_CHAT, "text": "Re",
            "reply_parameters": {"message_id": 52, "allow_sending_without_reply": True}})
        _, reqs = self.send("telegram", type="text", text="Pick",
                            buttons=[{"id": "a", "title": "A"}, {"id": "b", "title": "B"}])
        self.assertEqual(self.tg_request(reqs, "sendMessage"), {
            "chat_id": TG_CHAT, "text": "Pick", "reply_markup": {"inline_keyboard": [
                [{"text": "A", "callback_data": "a"}], [{"text": "B", "callback_data": "b"}]]}})
        for typ, method, field in (("image", "sendPhoto", "photo"),
                                   ("audio", "sendAudio", "audio"),
                                   ("video", "sendVideo", "video"),
                                   ("document", "sendDocument", "document")):
            _, reqs = self.send("telegram", type=typ,
                                media={"url": "https://cdn.example/x", "caption": "Cap"})
            self.assertEqual(self.tg_request(reqs, method), {
                "chat_id": TG_CHAT, field: "https://cdn.example/x", "caption": "Cap"})
        _, reqs = self.send("telegram", type="typing")
        self.assertEqual(self.tg_request(reqs, "sendChatAction"), {"chat_id": TG_CHAT,
                                                                   "action": "typing"})

    def test_inbox_event_of_a_send(self):
        e = self.env
        cmd_id, reqs = self.send("whatsapp", type="text", text="Tracked")
        evs = e.inbox_outbound(cmd_id)
        self.assertEqual(len(evs), 1)
        ev = evs[0]
        self.assertEqual(ev["direction"], "out")
        self.assertEqual(ev["status"]["state"], "sent")
        self.assertEqual(ev["part"], 1)
        self.assertEqual(ev["conversation_id"], e.convs["whatsapp"])
        self.assertTrue(ev["message"]["external_id"].startswith("wamid.FAKE"))
        self.assertEqual(ev["message"]["text"], "Tracked")

    def test_long_text_split_for_telegram(self):
        words = []
        while len(" ".join(words)) < 4500:
            words.append("word%d" % len(words))
        text = " ".join(words)[:4500].rstrip()
        cmd_id, reqs = self.send("telegram", type="text", text=text)
        sends = [r for r in reqs if r["method"] == "sendmessage"]
        self.assertEqual(len(sends), 2)
        t1, t2 = (json.loads(r["body"])["text"] for r in sends)
        self.assertLessEqual(len(t1), 4096)
        self.assertEqual(t1 + " " + t2, text)
        self.assertLess(sends[0]["time"], sends[1]["time"])
        evs = self.env.inbox_outbound(cmd_id)
        self.assertEqual([ev["part"] for ev in evs], [1, 2])

    def test_same_command_id_sent_once(self):
        e = self.env
        e.tg.clear()
        cmd = {"id": "dup-1", "conversation_id": e.convs["telegram"], "type": "text",
               "text": "only once"}
        e.xadd(cmd)
        e.xadd(cmd)
        wait_until(lambda: e.r.command("HGET", "sb:cmd:{org_in}:dup-1", "done") == b"sent", 10,
                   "sent")
        wait_until(lambda: e.pending() == 0, 10, "both entries acknowledged")
        sends = [r for r in e.tg.requests(method="sendmessage")
                 if json.loads(r["body"]).get("text") == "only once"]
        self.assertEqual(len(sends), 1)
        self.assertEqual(len(e.inbox_outbound("dup-1")), 1)

    def test_api_posts_a_command(self):
        e = self.env
        path = "/orgs/c/conversations/%s/messages" % e.convs["telegram"]
        res = e.api("POST", path, {"id": "api-1", "type": "text", "text": "from the inbox"})
        self.assertEqual(res.status, 202, res)
        self.assertEqual(res.json["id"], "api-1")
        wait_until(lambda: e.r.command("HGET", "sb:cmd:{org_in}:api-1", "done") == b"sent", 10,
                   "sent")
        # Validation, with the reason.
        for bad in ({"type": "text", "text": "x"}, {"id": "b1", "type": "fax"},
                    {"id": "b2", "type": "text"}, {"id": "b3", "type": "image", "media": {}},
                    {"id": "b4", "type": "text", "text": "x", "conversation_id": "cv_other"},
                    {"id": "b5", "type": "text", "text": "x", "extra": 1}):
            res = e.api("POST", path, bad)
            self.assertEqual(res.status, 400, bad)
            self.assertTrue(res.json["error"]["message"])
        self.assertEqual(e.api("POST", path, "[1]").status, 400)
        # No such conversation, and a conversation of another org: 404.
        res = e.api("POST", "/orgs/c/conversations/cv_000000000000000000000000/messages",
                    {"id": "x", "type": "text", "text": "x"})
        self.assertEqual(res.status, 404)
        other = e.gw.keys_create("org_other")
        res = e.gw.http("POST", path, body={"id": "x", "type": "text", "text": "x"}, key=other)
        self.assertEqual(res.status, 404)
        self.assertEqual(e.gw.http("POST", path, body={"id": "x", "type": "text",
                                                       "text": "x"}).status, 401)

    def test_invalid_command_in_stream_goes_to_dead(self):
        e = self.env
        before = len(e.dead())
        e.r.command("XADD", "sb:out", "*", "cmd", "{not json")
        e.xadd({"id": "nocv", "type": "text", "text": "x",
                "conversation_id": "cv_000000000000000000000000"})
        wait_until(lambda: len(e.dead()) >= before + 2, 10, "two dead letters")
        wait_until(lambda: e.pending() == 0, 10, "acknowledged")


class TestFailures(unittest.TestCase):
    """Retries, permanent failures, token errors."""

    @classmethod
    def setUpClass(cls):
        cls.env = OutEnv(extra_env={"SWITCHBOARD_PROVIDER_TIMEOUT_MS": "2000"})

    @classmethod
    def tearDownClass(cls):
        cls.env.stop()

    def wait_done(self, cmd_id, timeout=15):
        e = self.env
        return wait_until(lambda: e.r.command("HGET", "sb:cmd:{org_in}:" + cmd_id, "done"),
                          timeout, "command %s done" % cmd_id)

    def test_retry_after_is_honoured(self):
        e = self.env
        e.tg.clear()
        e.tg.override("sendmessage", status=429, times=1, body={
            "ok": False, "error_code": 429, "description": "Too Many Requests: retry after 2",
            "parameters": {"retry_after": 2}})
        e.xadd({"id": "r429", "conversation_id": e.convs["telegram"], "type": "text",
                "text": "after a pause"})
        self.assertEqual(self.wait_done("r429"), b"sent")
        sends = e.tg.requests(method="sendmessage")
        self.assertEqual(len(sends), 2, "one more try")
        self.assertGreaterEqual(sends[1]["time"] - sends[0]["time"], 2.0)
        self.assertEqual(len(e.inbox_outbound("r429")), 1)

    def test_server_errors_and_timeouts_are_retried(self):
        e = self.env
        sender = harness.load_fixture("messenger", "text")["binding_external_id"]
        path = "POST /%s/messages" % sender
        e.graph.clear()
        e.graph.override(path, status=503, body="unavailable", times=1)
        e.xadd({"id": "r503", "conversation_id": e.convs["messenger"], "type": "text",
                "text": "retried"})
        self.assertEqual(self.wait_done("r503"), b"sent")
        self.assertEqual(len(e.graph.requests(http_method="POST")), 2)
        e.graph.clear()
        e.graph.override(path, delay=3.0, times=1)  # longer than the 2 s provider timeout
        e.xadd({"id": "rtimeout", "conversation_id": e.convs["messenger"], "type": "text",
                "text": "after a timeout"})
        self.assertEqual(self.wait_done("rtimeout", 20), b"sent")
        self.assertGreaterEqual(len(e.graph.requests(http_method="POST")), 2)

    def test_permanent_failure(self):
        e = self.env
        sender = harness.load_fixture("whatsapp", "text")["binding_external_id"]
        e.graph.override("POST /%s/messages" % sender, status=400, times=1, body={
            "error": {"message": "Re-engagement message", "type": "OAuthException",
                      "code": 131047, "fbtrace_id": "x"}})
        e.xadd({"id": "p131047", "conversation_id": e.convs["whatsapp"], "type": "text",
                "text": "too late"})
        self.assertEqual(self.wait_done("p131047"), b"failed")
        dead = [d for d in e.dead() if json.loads(d["cmd"]).get("id") == "p131047"]
        self.assertEqual(len(dead), 1)
        self.assertEqual(dead[0]["code"], "131047")
        ev = e.inbox_outbound("p131047")[-1]
        self.assertEqual(ev["status"]["state"], "failed")
        self.assertEqual(ev["status"]["error"]["code"], 131047)
        conn = e.api("GET", "/orgs/c/connections/%s" % e.conns["whatsapp"]).json
        self.assertEqual(conn["status"], "active", "not a token error")

    def test_token_error_sets_connection_inactive(self):
        e = self.env
        sender = harness.load_fixture("instagram", "text")["binding_external_id"]
        e.graph.override("POST /%s/messages" % sender, status=400, times=1,
                         body=harness.GRAPH_BAD_TOKEN)
        e.xadd({"id": "t190", "conversation_id": e.convs["instagram"], "type": "text",
                "text": "token gone"})
        self.assertEqual(self.wait_done("t190"), b"failed")
        conn = e.api("GET", "/orgs/c/connections/%s" % e.conns["instagram"]).json
        self.assertEqual(conn["status"], "inactive")
        self.assertTrue([d for d in e.dead() if json.loads(d["cmd"]).get("id") == "t190"])
        ev = e.inbox_outbound("t190")[-1]
        self.assertEqual((ev["status"]["state"], ev["status"]["error"]["code"]), ("failed", 190))
        metrics = e.gw.http("GET", "/metrics").body.decode()
        self.assertIn('switchboard_outbound_total{channel="instagram",result="token_invalid"} 1',
                      metrics)
        # A successful test makes it active again.
        res = e.api("POST", "/orgs/c/connections/%s/test" % e.conns["instagram"])
        self.assertEqual(res.json["ok"], True)
        conn = e.api("GET", "/orgs/c/connections/%s" % e.conns["instagram"]).json
        self.assertEqual(conn["status"], "active")

    def test_telegram_401_is_a_token_error(self):
        e = self.env
        e.tg.override("sendmessage", status=401, times=1,
                      body={"ok": False, "error_code": 401, "description": "Unauthorized"})
        e.xadd({"id": "t401", "conversation_id": e.convs["telegram"], "type": "text",
                "text": "x"})
        self.assertEqual(self.wait_done("t401"), b"failed")
        conn = e.api("GET", "/orgs/c/connections/%s" % e.conns["telegram"]).json
        self.assertEqual(conn["status"], "inactive")
        self.assertEqual(e.api("POST", "/orgs/c/connections/%s/test" % e.conns["telegram"])
                         .json["ok"], True)


class TestOrderAndConcurrency(unittest.TestCase):
    """Order per conversation; conversations do not wait for each other."""

    @classmethod
    def setUpClass(cls):
        cls.env = OutEnv(extra_env={"SWITCHBOARD_OUTBOUND_RATE_TELEGRAM": "5000"})

    @classmethod
    def tearDownClass(cls):
        cls.env.stop()

    def test_thousand_commands_over_ten_conversations(self):
        e = self.env
        chats = [500000 + i for i in range(10)]
        convs = [e.telegram_conversation(chat, 846000000 + i) for i, chat in enumerate(chats)]
        e.tg.clear()
        for n in range(100):
            for i, cv in enumerate(convs):
                e.xadd({"id": "o-%d-%d" % (i, n), "conversation_id": cv, "type": "text",
                        "text": "%d:%d" % (i, n)})
        wait_until(lambda: len(e.tg.requests(method="sendmessage")) >= 1000, 60,
                   "1000 sends")
        by_chat = {}
        for r in e.tg.requests(method="sendmessage"):
            b = json.loads(r["body"])
            i, n = map(int, b["text"].split(":"))
            self.assertEqual(b["chat_id"], chats[i])
            by_chat.setdefault(i, []).append(n)
        self.assertEqual(sorted(by_chat), list(range(10)))
        for i, ns in by_chat.items():
            self.assertEqual(ns, list(range(100)), "conversation %d in order" % i)

    def test_slow_send_does_not_delay_another_conversation(self):
        e = self.env
        slow = e.telegram_conversation(600001, 847000001)
        fast = e.telegram_conversation(600002, 847000002)
        e.tg.clear()
        e.tg.override("sendmessage", delay=4.0, times=1)
        e.xadd({"id": "slow-1", "conversation_id": slow, "type": "text", "text": "slow"})
        wait_until(lambda: e.tg.requests(method="sendmessage"), 10, "the slow send started")
        t0 = time.monotonic()
        e.xadd({"id": "fast-1", "conversation_id": fast, "type": "text", "text": "fast"})
        wait_until(lambda: e.r.command("HGET", "sb:cmd:{org_in}:fast-1", "done") == b"sent", 10,
                   "the fast one sent")
        self.assertLess(time.monotonic() - t0, 3.0)
        self.assertIsNone(e.r.command("HGET", "sb:cmd:{org_in}:slow-1", "done"),
                          "the slow one is still in flight")
        wait_until(lambda: e.r.command("HGET", "sb:cmd:{org_in}:slow-1", "done") == b"sent", 15,
                   "the slow one sent")


class TestRestartSameNode(unittest.TestCase):
    """A gateway restarted under the same node_id re-reads its own pending commands at once,
    without waiting for the reclaim idle time."""

    def setUp(self):
        self.env = OutEnv(extra_env={"SWITCHBOARD_NODE_ID": "gw-fixed",
                                     "SWITCHBOARD_OUTBOUND_RECLAIM_IDLE_MS": "600000",
                                     "SWITCHBOARD_PROVIDER_TIMEOUT_MS": "30000"})

    def tearDown(self):
        self.env.stop()

    def test_own_pending_commands_are_resumed(self):
        e = self.env
        e.tg.clear()
        e.tg.override("sendmessage", delay=20.0, times=1)
        e.xadd({"id": "n1", "conversation_id": e.convs["telegram"], "type": "text",
                "text": "resumed by the same node"})
        wait_until(lambda: e.tg.requests(method="sendmessage"), 10, "the send started")
        e.gw.kill()
        e.gw.start()
        wait_until(lambda: e.r.command("HGET", "sb:cmd:{org_in}:n1", "done") == b"sent", 15,
                   "delivered after the restart (the reclaim idle time is 10 minutes)")
        wait_until(lambda: e.pending() == 0, 10, "acknowledged")
        consumers = e.r.command("XINFO", "CONSUMERS", "sb:out", "switchboard")
        names = [dict(zip(c[::2], c[1::2]))[b"name"] for c in consumers]
        self.assertEqual(names, [b"gw-fixed"])


    def test_sigterm_waits_for_a_send_in_flight(self):
        e = self.env
        e.tg.clear()
        e.tg.override("sendmessage", delay=2.0, times=1)
        e.xadd({"id": "t1", "conversation_id": e.convs["telegram"], "type": "text",
                "text": "answered during shutdown"})
        wait_until(lambda: e.tg.requests(method="sendmessage"), 10, "the send started")
        self.assertEqual(e.gw.stop(), 0)  # SIGTERM while the provider is still answering
        self.assertEqual(e.r.command("HGET", "sb:cmd:{org_in}:t1", "done"), b"sent",
                         "the answer that came during shutdown was recorded")
        self.assertEqual(e.pending(), 0)
        e.gw.start()
        self.assertEqual(len(e.tg.requests(method="sendmessage")), 1, "not sent again")


class TestGoneConsumers(unittest.TestCase):
    """The group forgets the consumers of processes that are gone (nothing pending, idle
    longer than the reclaim idle time: gateway/scripts/out_forget.lua), so that restarts
    under new names do not pile up consumers; a consumer with pending commands stays."""

    def setUp(self):
        self.env = OutEnv(extra_env={"SWITCHBOARD_NODE_ID": "gw-live",
                                     "SWITCHBOARD_OUTBOUND_RECLAIM_IDLE_MS": "1000"})

    def tearDown(self):
        self.env.stop()

    def names(self):
        consumers = self.env.r.command("XINFO", "CONSUMERS", "sb:out", "switchboard")
        return sorted(dict(zip(c[::2], c[1::2]))[b"name"] for c in consumers)

    def test_idle_consumers_without_pending_are_forgotten(self):
        e = self.env
        for name in ("gone-1", "gone-2"):
            e.r.command("XGROUP", "CREATECONSUMER", "sb:out", "switchboard", name)
        self.assertEqual(self.names(), [b"gone-1", b"gone-2", b"gw-live"])
        wait_until(lambda: self.names() == [b"gw-live"], 30, "the gone consumers forgotten")
        self.assertIn("consumers of gone processes left the group",
                      e.gw.stderr_text())

    def test_the_script_keeps_pending_and_own_consumers(self):
        lua_dir = os.environ.get("SB_LUA_DIR", "")
        if not lua_dir:
            self.skipTest("SB_LUA_DIR (the build's generated/lua) not set")
        with open(os.path.join(lua_dir, "out_forget.lua"), encoding="utf-8") as f:
            script = f.read()
        r = self.env.r
        r.command("XGROUP", "CREATE", "forget:s", "g", "0", "MKSTREAM")
        r.command("XADD", "forget:s", "*", "f", "v")
        r.command("XREADGROUP", "GROUP", "g", "holder", "COUNT", "1", "STREAMS", "forget:s", ">")
        r.command("XGROUP", "CREATECONSUMER", "forget:s", "g", "idle")
        r.command("XGROUP", "CREATECONSUMER", "forget:s", "g", "me")
        wait_until(lambda: all(dict(zip(c[::2], c[1::2]))[b"idle"] > 50 for c in
                               r.command("XINFO", "CONSUMERS", "forget:s", "g")),
                   5, "every consumer idle over 50 ms")
        self.assertEqual(r.command("EVAL", script, "1", "forget:s", "g", "me", "50"), 1)
        consumers = r.command("XINFO", "CONSUMERS", "forget:s", "g")
        self.assertEqual(sorted(dict(zip(c[::2], c[1::2]))[b"name"] for c in consumers),
                         [b"holder", b"me"], "pending and own consumers stay")
        # a long idle time forgets nobody; a group that does not exist is not an error
        self.assertEqual(r.command("EVAL", script, "1", "forget:s", "g", "me", "600000"), 0)
        self.assertEqual(r.command("EVAL", script, "1", "forget:none", "g", "me", "0"), 0)
        r.command("DEL", "forget:s")


class TestTakeOver(unittest.TestCase):
    """A dead gateway's commands are taken over; a live one's slow send is not."""

    def setUp(self):
        self.env = OutEnv(extra_env={"SWITCHBOARD_OUTBOUND_RECLAIM_IDLE_MS": "2000",
                                     "SWITCHBOARD_PROVIDER_TIMEOUT_MS": "30000"})

    def tearDown(self):
        self.env.stop()

    def test_killed_gateway_command_is_delivered_after_restart(self):
        e = self.env
        e.tg.clear()
        e.tg.override("sendmessage", delay=20.0, times=1)  # hangs until the fake stops
        e.xadd({"id": "k1", "conversation_id": e.convs["telegram"], "type": "text",
                "text": "survives a crash"})
        wait_until(lambda: e.tg.requests(method="sendmessage"), 10, "the send started")
        e.gw.kill()  # SIGKILL while the send hangs in the provider
        e.gw.start()
        wait_until(lambda: e.r.command("HGET", "sb:cmd:{org_in}:k1", "done") == b"sent", 20,
                   "delivered by the restarted gateway")
        self.assertEqual(len(e.tg.requests(method="sendmessage")), 2)
        wait_until(lambda: e.pending() == 0, 10, "acknowledged")

    def test_live_slow_send_is_not_taken_over(self):
        e = self.env
        second = Gateway(e.redis, e.tg, e.graph, data_dir=e.gw.data_dir).start()  # same key
        try:
            e.tg.clear()
            e.tg.override("sendmessage", delay=6.0, times=1)  # three reclaim periods
            e.xadd({"id": "s1", "conversation_id": e.convs["telegram"], "type": "text",
                    "text": "slow but alive"})
            wait_until(lambda: e.r.command("HGET", "sb:cmd:{org_in}:s1", "done") == b"sent", 20,
                       "sent")
            wait_until(lambda: e.pending() == 0, 10, "acknowledged")
            sends = [r for r in e.tg.requests(method="sendmessage")
                     if json.loads(r["body"]).get("text") == "slow but alive"]
            self.assertEqual(len(sends), 1)
            self.assertEqual(len(e.inbox_outbound("s1")), 1)
        finally:
            second.stop()
            second.cleanup()


if __name__ == "__main__":
    unittest.main(verbosity=2)

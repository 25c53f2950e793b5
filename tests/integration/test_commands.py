"""
Visibility and control of outbound commands (contract sections 5 and 6): the state of a
command (GET /orgs/c/commands/{id}), cancelling one before it is sent (DELETE), dead letters
(list, send again, discard), the log line of every retry and dead letter, a connection's
last error and check time, testing credentials that are not saved, and the outbound gauges.
"""

import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402
from test_inbound import ascii_bytes, sign  # noqa: E402
from test_openapi import load_doc, resolve, validate  # noqa: E402
from test_outbound import OutEnv  # noqa: E402

# the send routes of the Page and the phone number OutEnv binds (from the fixtures it loads)
MESSENGER_SEND = "POST /%s/messages" % harness.load_fixture("messenger", "text")["binding_external_id"]
WHATSAPP_SEND = "POST /%s/messages" % harness.load_fixture("whatsapp", "text")["binding_external_id"]


def texts(fake, text):
    """The requests of 'fake' that sent 'text'."""
    out = []
    for r in fake.requests(http_method="POST"):
        try:
            b = json.loads(r["body"])
        except ValueError:
            continue
        if b.get("text") == text or (b.get("message") or {}).get("text") == text or \
                (b.get("text") or {}) == {"preview_url": False, "body": text}:
            out.append(r)
    return out


class CommandBase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.env = OutEnv()
        cls.other = cls.env.gw.keys_create("org_other")

    @classmethod
    def tearDownClass(cls):
        cls.env.stop()

    def tearDown(self):
        self.env.graph.clear_overrides()
        self.env.tg.clear_overrides()

    def command(self, cmd_id):
        return self.env.api("GET", "/orgs/c/commands/" + cmd_id)

    def wait_state(self, cmd_id, state, timeout=15):
        def check():
            r = self.command(cmd_id)
            return r.json if r.status == 200 and r.json.get("state") == state else None
        return wait_until(check, timeout, "command %s %s" % (cmd_id, state))

    def metrics(self):
        return harness.parse_prometheus(self.env.gw.http("GET", "/metrics").body.decode())

    def gauge(self, name, **labels):
        return harness.metric_sum(self.metrics(), name, **labels)

    def logs(self, msg_start, cmd_id):
        return [j for j in self.env.gw.json_logs()
                if str(j.get("msg", "")).startswith(msg_start) and j.get("command_id") == cmd_id]


class TestCommandState(CommandBase):

    def test_sent_command(self):
        e = self.env
        e.xadd({"id": "st-sent", "conversation_id": e.convs["telegram"], "type": "text",
                "text": "state of a sent command"})
        c = self.wait_state("st-sent", "sent")
        self.assertEqual(c["id"], "st-sent")
        self.assertEqual(c["conversation_id"], e.convs["telegram"])
        self.assertEqual(c["type"], "text")
        self.assertEqual(c["attempts"], 1)
        self.assertEqual(c["parts_sent"], 1)
        self.assertNotIn("error", c)
        self.assertNotIn("next_attempt_at", c)
        # The state lives under the org's hash tag.
        self.assertEqual(e.r.command("HGET", "sb:cmd:{org_in}:st-sent", "state"), b"sent")
        for f in ("created_at", "updated_at", "sent_at"):
            self.assertRegex(c[f], r"^\d{4}-\d\d-\d\dT")
        # Sent: too late to cancel.
        r = e.api("DELETE", "/orgs/c/commands/st-sent")
        self.assertEqual(r.status, 409, r)
        self.assertEqual(r.json["error"]["code"], "conflict")
        self.assertEqual(self.command("st-sent").json["state"], "sent")

    def test_unknown_and_other_org(self):
        e = self.env
        self.assertEqual(self.command("never-sent-id").status, 404)
        self.assertEqual(e.api("DELETE", "/orgs/c/commands/never-sent-id").status, 404)
        e.xadd({"id": "st-org", "conversation_id": e.convs["telegram"], "type": "text",
                "text": "mine"})
        self.wait_state("st-org", "sent")
        # Another org sees nothing under the same id, and cannot cancel it.
        r = e.gw.http("GET", "/orgs/c/commands/st-org", key=self.other)
        self.assertEqual(r.status, 404, r)
        r = e.gw.http("DELETE", "/orgs/c/commands/st-org", key=self.other)
        self.assertEqual(r.status, 404, r)
        self.assertEqual(e.gw.http("GET", "/orgs/c/commands/st-org").status, 401)
        r = e.api("POST", "/orgs/c/commands/st-org")
        self.assertEqual(r.status, 405)
        self.assertEqual(set(r.headers["allow"].split(", ")), {"GET", "DELETE"})
        self.assertEqual(e.api("GET", "/orgs/c/commands/bad%20id").status, 404)

    def test_same_id_in_two_orgs(self):
        """Command ids are unique per org: two orgs' commands of one id are two commands."""
        e = self.env
        other = lambda m, p, b=None: e.gw.http(m, p, body=b, key=self.other)  # noqa: E731
        fx = harness.load_fixture("messenger", "text")
        secret, token = "app-secret-other-org-0123456789", "token-other-org-0123456789"
        e.graph.add_account(token, "acct-other", "Other Page")
        r = other("POST", "/orgs/c/connections", {
            "provider": "messenger", "credentials": {
                "app_secret": secret, "verify_token": "v-other", "access_token": token}})
        self.assertEqual(r.status, 201, r)
        cid = r.json["id"]
        asst = other("POST", "/orgs/c/assistants", {"name": "other"}).json["id"]
        self.assertEqual(other("POST", "/orgs/c/assistants/%s/channels" % asst, {
            "connection_id": cid, "external_id": fx["binding_external_id"]}).status, 201)
        data = ascii_bytes(fx["body"])
        r = e.gw.http("POST", "/webhooks/messenger/" + cid, body=data,
                      headers={"X-Hub-Signature-256": sign(secret, data)})
        self.assertEqual(r.status, 200, r)
        cv_other = e.stream("in:{%s}" % asst)[-1]["conversation_id"]
        self.assertNotEqual(cv_other, e.convs["messenger"])
        e.xadd({"id": "same-id", "conversation_id": e.convs["messenger"], "type": "text",
                "text": "from org_in"})
        e.xadd({"id": "same-id", "conversation_id": cv_other, "type": "text",
                "text": "from org_other"})
        mine = self.wait_state("same-id", "sent")
        theirs = wait_until(lambda: (lambda r: r.json if r.json.get("state") == "sent" else None)(
            other("GET", "/orgs/c/commands/same-id")), 15, "the other org's command sent")
        self.assertEqual(mine["conversation_id"], e.convs["messenger"])
        self.assertEqual(theirs["conversation_id"], cv_other)
        self.assertEqual(len(texts(e.graph, "from org_in")), 1)
        self.assertEqual(len(texts(e.graph, "from org_other")), 1)

    def test_telegram_429_then_cancelled(self):
        """Cancelled during a flood wait: nothing is sent when the wait is over."""
        e = self.env
        e.tg.clear()
        e.tg.override("sendmessage", status=429, times=1, body={
            "ok": False, "error_code": 429, "description": "Too Many Requests: retry after 3",
            "parameters": {"retry_after": 3}})
        e.xadd({"id": "cx-429", "conversation_id": e.convs["telegram"], "type": "text",
                "text": "flood"})
        c = self.wait_state("cx-429", "retrying")
        self.assertEqual(c["error"]["code"], 429)
        self.assertEqual(c["error"]["status"], 429)
        t0 = time.monotonic()
        self.assertEqual(e.api("DELETE", "/orgs/c/commands/cx-429").status, 200)
        wait_until(lambda: e.pending() == 0, 5, "acknowledged")
        # Past the time of the retry that would have come: still one request only.
        wait_until(lambda: time.monotonic() - t0 > 3.5, 5, "the flood wait over")
        self.assertEqual(len(e.tg.requests(method="sendmessage")), 1)

    def test_retrying_then_cancelled_is_never_sent(self):
        e = self.env
        cv = e.convs["messenger"]
        e.graph.clear()
        # A 503 asking for 30 s: the command waits for its next attempt.
        e.graph.override(MESSENGER_SEND, status=503, body="unavailable",
                         headers={"Retry-After": "30"})
        e.xadd({"id": "cx-retry", "conversation_id": cv, "type": "text", "text": "cx one"})
        c = self.wait_state("cx-retry", "retrying")
        self.assertEqual(c["attempts"], 1)
        self.assertRegex(c["next_attempt_at"], r"^\d{4}-\d\d-\d\dT")
        self.assertEqual(c["error"]["status"], 503)
        self.assertIn("message", c["error"])
        self.assertIn("at", c["error"])
        self.assertEqual(len(texts(e.graph, "cx one")), 1)
        # The retry's log line.
        line = wait_until(lambda: self.logs("outbound command retrying", "cx-retry"), 5,
                          "the retry log line")[0]
        self.assertEqual(line["attempt"], "1")
        self.assertEqual(line["provider_status"], "503")
        self.assertGreaterEqual(int(line["next_delay_ms"]), 30000)
        self.assertIn("provider_code", line)
        wait_until(lambda: self.gauge("switchboard_outbound_retrying") == 1, 5,
                   "retrying gauge at 1")
        wait_until(lambda: self.gauge("switchboard_outbound_pending") >= 1, 5,
                   "pending gauge")

        # A second command of the conversation waits behind it: queued, cancelled too.
        e.xadd({"id": "cx-queued", "conversation_id": cv, "type": "text", "text": "cx two"})
        self.wait_state("cx-queued", "queued")
        r = e.api("DELETE", "/orgs/c/commands/cx-queued")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["state"], "cancelled")

        # From now on the provider would accept it: cancel, and nothing more is sent.
        e.graph.clear_overrides()
        r = e.api("DELETE", "/orgs/c/commands/cx-retry")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["state"], "cancelled")
        self.assertRegex(r.json["cancelled_at"], r"^\d{4}-\d\d-\d\dT")
        self.assertNotIn("next_attempt_at", r.json)
        # Cancelling again answers the same.
        self.assertEqual(e.api("DELETE", "/orgs/c/commands/cx-retry").json["state"],
                         "cancelled")
        # Both entries are acknowledged well before the 30 s wait ends.
        wait_until(lambda: e.pending() == 0, 5, "the cancelled commands acknowledged")
        wait_until(lambda: self.logs("outbound command cancelled", "cx-retry"), 5,
                   "the cancel log line")
        # The conversation is free again at once.
        e.xadd({"id": "cx-after", "conversation_id": cv, "type": "text", "text": "cx three"})
        self.wait_state("cx-after", "sent", 10)
        self.assertEqual(len(texts(e.graph, "cx one")), 1, "never sent after the cancel")
        self.assertEqual(texts(e.graph, "cx two"), [])
        self.assertEqual(self.command("cx-retry").json["state"], "cancelled")
        self.assertEqual(self.command("cx-queued").json["state"], "cancelled")
        wait_until(lambda: self.gauge("switchboard_outbound_retrying") == 0, 5,
                   "retrying gauge back to 0")
        self.assertGreaterEqual(self.gauge("switchboard_outbound_total", result="cancelled"), 2)
        # Not a dead letter.
        ids = [d["id"] for d in e.api("GET", "/orgs/c/dead-letters?take=100").json]
        self.assertNotIn("cx-retry", ids)


class TestDeadLetters(CommandBase):

    def fail_whatsapp(self, cmd_id, text):
        e = self.env
        e.graph.override(WHATSAPP_SEND, status=400, times=1, body={
            "error": {"message": "Re-engagement message", "type": "OAuthException",
                      "code": 131047, "fbtrace_id": "x"}})
        e.xadd({"id": cmd_id, "conversation_id": e.convs["whatsapp"], "type": "text",
                "text": text})
        return self.wait_state(cmd_id, "failed")

    def test_list_retry_discard(self):
        e = self.env
        c = self.fail_whatsapp("dl-1", "dead one")
        self.assertEqual(c["reason"], "rejected")
        self.assertEqual(c["error"]["code"], 131047)
        self.assertEqual(c["error"]["status"], 400)
        self.assertIn("Re-engagement", c["error"]["message"])
        line = wait_until(lambda: self.logs("outbound command dead-lettered", "dl-1"), 5,
                          "the dead-letter log line")[0]
        self.assertEqual(line["reason"], "rejected")
        self.assertEqual(line["provider_code"], "131047")
        self.assertIn("Re-engagement", line["provider_error"])
        self.fail_whatsapp("dl-2", "dead two")

        r = e.api("GET", "/orgs/c/dead-letters")
        self.assertEqual(r.status, 200, r)
        ids = [d["id"] for d in r.json]
        self.assertLess(ids.index("dl-2"), ids.index("dl-1"), "newest first")
        d = r.json[ids.index("dl-1")]
        self.assertEqual(d["reason"], "rejected")
        self.assertEqual(d["error"]["code"], 131047)
        self.assertEqual(d["conversation_id"], e.convs["whatsapp"])
        self.assertEqual(d["command"]["text"], "dead one")
        self.assertEqual(d["attempts"], 1)
        self.assertRegex(d["failed_at"], r"^\d{4}-\d\d-\d\dT")
        dead_ids = [x["_entry"] for x in self.dead_entries()]
        self.assertIn(d["dead_letter_entry_id"], dead_ids)
        n = int(r.headers["pagination-count"])
        self.assertGreaterEqual(n, 2)
        self.assertEqual(r.headers["pagination-page"], "1")
        self.assertEqual(r.headers["pagination-take"], "20")
        r = e.api("GET", "/orgs/c/dead-letters?page=2&take=1")
        self.assertEqual(len(r.json), 1)
        self.assertEqual(r.json[0]["id"], ids[1])
        self.assertEqual(e.api("GET", "/orgs/c/dead-letters?page=%d" % (n + 1)).json, [])
        for q in ("take=0", "take=101", "page=0", "page=x"):
            self.assertEqual(e.api("GET", "/orgs/c/dead-letters?" + q).status, 400, q)
        # Another org sees none of them and cannot touch them.
        r = e.gw.http("GET", "/orgs/c/dead-letters", key=self.other)
        self.assertEqual((r.status, r.json), (200, []))
        self.assertEqual(r.headers["pagination-count"], "0")
        self.assertEqual(e.gw.http("POST", "/orgs/c/dead-letters/dl-1/retry",
                                   key=self.other).status, 404)
        self.assertEqual(e.gw.http("DELETE", "/orgs/c/dead-letters/dl-1",
                                   key=self.other).status, 404)
        # A failed command is not cancelled: its dead letter is retried or discarded.
        self.assertEqual(e.api("DELETE", "/orgs/c/commands/dl-1").status, 409)

        # Send again: the same id, a new attempt, exactly one more request to the provider.
        before = len(texts(e.graph, "dead one"))
        self.assertEqual(before, 1)
        r = e.api("POST", "/orgs/c/dead-letters/dl-1/retry")
        self.assertEqual(r.status, 202, r)
        self.assertEqual(r.json["id"], "dl-1")
        self.assertEqual(r.json["state"], "queued")
        self.assertEqual(e.api("POST", "/orgs/c/dead-letters/dl-1/retry").status, 404,
                         "no longer a dead letter")
        c = self.wait_state("dl-1", "sent")
        self.assertEqual(c["attempts"], 2)
        wait_until(lambda: e.pending() == 0, 5, "acknowledged")
        self.assertEqual(len(texts(e.graph, "dead one")), 2, "sent once more, exactly once")
        sent = [ev for ev in e.inbox_outbound("dl-1") if ev["status"]["state"] == "sent"]
        self.assertEqual(len(sent), 1)
        self.assertNotIn("dl-1", [x["id"] for x in
                                  e.api("GET", "/orgs/c/dead-letters?take=100").json])
        self.assertNotIn(d["dead_letter_entry_id"], [x["_entry"] for x in self.dead_entries()])
        # The id stays seen: the same command added again is not sent.
        e.xadd({"id": "dl-1", "conversation_id": e.convs["whatsapp"], "type": "text",
                "text": "dead one"})
        wait_until(lambda: e.pending() == 0, 5, "the duplicate acknowledged")
        self.assertEqual(len(texts(e.graph, "dead one")), 2)

        # Discard.
        r = e.api("DELETE", "/orgs/c/dead-letters/dl-2")
        self.assertEqual(r.status, 204, r)
        self.assertNotIn("dl-2", [x["id"] for x in
                                  e.api("GET", "/orgs/c/dead-letters?take=100").json])
        self.assertEqual(e.api("DELETE", "/orgs/c/dead-letters/dl-2").status, 404)
        self.assertEqual(e.api("POST", "/orgs/c/dead-letters/dl-2/retry").status, 404)
        self.assertEqual(self.command("dl-2").json["state"], "failed")
        self.assertEqual(len(texts(e.graph, "dead two")), 1)

        self.assertEqual(e.api("DELETE", "/orgs/c/dead-letters/nope").status, 404)
        self.assertEqual(e.api("POST", "/orgs/c/dead-letters/nope/retry").status, 404)
        r = e.api("GET", "/orgs/c/dead-letters/dl-2")
        self.assertEqual(r.status, 405)
        self.assertEqual(r.headers["allow"], "DELETE")
        self.assertEqual(e.api("GET", "/orgs/c/dead-letters/dl-2/retry").status, 405)
        self.assertEqual(e.gw.http("GET", "/orgs/c/dead-letters").status, 401)

    def test_dead_letter_gauge(self):
        e = self.env
        self.fail_whatsapp("dl-gauge", "gauge")
        n = e.xlen("dead")
        wait_until(lambda: self.gauge("switchboard_dead_letters") == e.xlen("dead"), 5,
                   "dead letters gauge = XLEN sb:dead (%d)" % n)

    def dead_entries(self):
        out = []
        for entry_id, fields in self.env.r.command("XRANGE", "sb:dead", "-", "+") or []:
            d = {k.decode(): v.decode() for k, v in zip(fields[::2], fields[1::2])}
            d["_entry"] = entry_id.decode()
            out.append(d)
        return out


class TestConnectionErrors(CommandBase):

    def test_outbound_token_error_and_test(self):
        e = self.env
        cid = e.conns["instagram"]
        path = "/orgs/c/connections/" + cid
        self.assertNotIn("error", e.api("GET", path).json)
        e.graph.override("POST /%s/messages" % harness.load_fixture("instagram", "text")["binding_external_id"], status=400, times=1,
                         body=harness.GRAPH_BAD_TOKEN)
        e.xadd({"id": "ce-190", "conversation_id": e.convs["instagram"], "type": "text",
                "text": "token gone"})
        self.wait_state("ce-190", "failed")
        c = e.api("GET", path).json
        self.assertEqual(c["status"], "inactive")
        self.assertEqual(c["error"]["code"], "token_invalid")
        self.assertIn("Invalid OAuth access token", c["error"]["message"])
        self.assertRegex(c["error"]["at"], r"^\d{4}-\d\d-\d\dT")
        self.assertRegex(c["last_checked_at"], r"^\d{4}-\d\d-\d\dT")
        listed = [x for x in e.api("GET", "/orgs/c/connections").json if x["id"] == cid][0]
        self.assertEqual(listed["error"]["code"], "token_invalid")
        self.assertEqual(self.command("ce-190").json["reason"], "token_invalid")
        wait_until(lambda: self.gauge("switchboard_connections_inactive") == 1, 5,
                   "one inactive connection")
        # A successful test: active again, the error is gone, the check time stays.
        r = e.api("POST", path + "/test")
        self.assertEqual(r.json["ok"], True)
        c = e.api("GET", path).json
        self.assertEqual(c["status"], "active")
        self.assertNotIn("error", c)
        self.assertRegex(c["last_checked_at"], r"^\d{4}-\d\d-\d\dT")
        wait_until(lambda: self.gauge("switchboard_connections_inactive") == 0, 5,
                   "no inactive connection")

    def test_failed_test_keeps_the_error(self):
        e = self.env
        tok = "7999000111:AAtest-error-token"
        e.tg.add_bot(tok)
        r = e.api("POST", "/orgs/c/connections",
                  {"provider": "telegram", "credentials": {"bot_token": tok}})
        self.assertEqual(r.status, 201, r)
        self.assertNotIn("last_checked_at", r.json)
        path = "/orgs/c/connections/" + r.json["id"]
        e.tg.remove_bot(tok)
        r = e.api("POST", path + "/test")
        self.assertEqual(r.json["ok"], False)
        c = e.api("GET", path).json
        self.assertEqual(c["status"], "inactive")
        self.assertEqual(c["error"]["code"], "token_invalid")
        self.assertIn("Unauthorized", c["error"]["message"])
        self.assertIn("last_checked_at", c)
        # New credentials make it active again, without the error.
        tok2 = "7999000111:AAtest-error-token-2"
        e.tg.add_bot(tok2)
        r = e.api("PATCH", path, {"credentials": {"bot_token": tok2}})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["status"], "active")
        self.assertNotIn("error", r.json)
        self.assertNotIn("error", e.api("GET", path).json)
        self.assertEqual(e.api("DELETE", path).status, 204)


class TestUnsavedCredentials(CommandBase):

    def connection_keys(self):
        return sorted(self.env.r.keys("sb:connection:*"))

    def test_telegram(self):
        e = self.env
        keys = self.connection_keys()
        tok = "7888000222:AAunsaved-token"
        e.tg.add_bot(tok, username="unsaved_bot")
        n_hooks = len(e.tg.setwebhook_calls())
        r = e.api("POST", "/orgs/c/connections/test",
                  {"provider": "telegram", "credentials": {"bot_token": tok}})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json, {"ok": True, "account_hint": "@unsaved_bot"})
        e.tg.remove_bot(tok)
        r = e.api("POST", "/orgs/c/connections/test",
                  {"provider": "telegram", "credentials": {"bot_token": tok}})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["ok"], False)
        self.assertEqual(r.json["account_hint"], "")
        self.assertIn("Unauthorized", r.json["error"])
        # Nothing stored, no webhook registered.
        self.assertEqual(self.connection_keys(), keys)
        self.assertEqual(len(e.tg.setwebhook_calls()), n_hooks)

    def test_meta_and_bad_bodies(self):
        e = self.env
        acc = "EAAGunsaved0123456789"
        e.graph.add_account(acc, "42", "Unsaved Page")
        creds = {"app_secret": "s" * 32, "verify_token": "v", "access_token": acc}
        r = e.api("POST", "/orgs/c/connections/test",
                  {"provider": "messenger", "credentials": creds})
        self.assertEqual(r.json, {"ok": True, "account_hint": "Unsaved Page"})
        r = e.api("POST", "/orgs/c/connections/test",
                  {"provider": "messenger", "credentials": dict(creds, access_token="EAAGbad")})
        self.assertEqual(r.json["ok"], False)
        self.assertIn("Invalid OAuth access token", r.json["error"])
        for body in (None, {"credentials": creds}, {"provider": "sms", "credentials": creds},
                     {"provider": "telegram", "credentials": {"bot_token": "nope"}},
                     {"provider": "messenger", "credentials": {"access_token": acc}},
                     {"provider": "messenger", "credentials": creds, "name": "x"}):
            r = e.api("POST", "/orgs/c/connections/test", body)
            self.assertEqual(r.status, 400, (body, r))
            self.assertEqual(r.json["error"]["code"], "bad_request")
        r = e.api("GET", "/orgs/c/connections/test")
        self.assertEqual(r.status, 405)
        self.assertEqual(r.headers["allow"], "POST")
        self.assertEqual(e.gw.http("POST", "/orgs/c/connections/test",
                                   body={"provider": "messenger", "credentials": creds}).status,
                         401)


class TestDocumented(CommandBase):
    """Every answer of the new routes is a status docs/openapi.json lists for the route,
    with a body that matches its schema."""

    def check(self, resp, template, status):
        doc = load_doc()
        self.assertEqual(resp.status, status, resp)
        op = doc["paths"][template][resp.method.lower()]
        self.assertIn(str(resp.status), op["responses"], "%s %s" % (resp.method, template))
        r = resolve(doc, op["responses"][str(resp.status)])
        content = r.get("content", {}).get("application/json")
        if content is not None:
            self.assertEqual(validate(doc, content["schema"], resp.json), [],
                             "%s %s %d" % (resp.method, template, resp.status))
        for h in r.get("headers", {}):
            self.assertIn(h.lower(), resp.headers)
        return resp

    def test_probes(self):
        e = self.env
        chk = self.check
        C, D = "/orgs/c/commands/{id}", "/orgs/c/dead-letters"
        e.graph.override(MESSENGER_SEND, status=503, body="x", headers={"Retry-After": "30"})
        e.xadd({"id": "doc-r", "conversation_id": e.convs["messenger"], "type": "text",
                "text": "doc retry"})
        self.wait_state("doc-r", "retrying")
        chk(e.api("GET", "/orgs/c/commands/doc-r"), C, 200)
        chk(e.api("DELETE", "/orgs/c/commands/doc-r"), C, 200)
        chk(e.api("GET", "/orgs/c/commands/doc-none"), C, 404)
        chk(e.api("DELETE", "/orgs/c/commands/doc-none"), C, 404)
        e.graph.clear_overrides()
        e.graph.override(WHATSAPP_SEND, status=400, times=1, body=harness.GRAPH_BAD_TOKEN)
        e.xadd({"id": "doc-f", "conversation_id": e.convs["whatsapp"], "type": "text",
                "text": "doc fail"})
        self.wait_state("doc-f", "failed")
        chk(e.api("GET", "/orgs/c/commands/doc-f"), C, 200)
        chk(e.api("DELETE", "/orgs/c/commands/doc-f"), C, 409)
        chk(e.api("GET", "/orgs/c/connections/" + e.conns["whatsapp"]),
            "/orgs/c/connections/{id}", 200)
        self.assertEqual(e.api("GET", "/orgs/c/connections/" + e.conns["whatsapp"])
                         .json["error"]["code"], "token_invalid")
        chk(e.api("GET", D), D, 200)
        chk(e.api("GET", D + "?take=500"), D, 400)
        chk(e.api("POST", D + "/doc-f/retry"), D + "/{id}/retry", 202)
        chk(e.api("POST", D + "/doc-f/retry"), D + "/{id}/retry", 404)
        self.wait_state("doc-f", "sent")
        chk(e.api("DELETE", D + "/doc-f"), D + "/{id}", 404)
        chk(e.api("POST", "/orgs/c/connections/" + e.conns["whatsapp"] + "/test"),
            "/orgs/c/connections/{id}/test", 200)
        T = "/orgs/c/connections/test"
        chk(e.api("POST", T, {"provider": "telegram",
                              "credentials": {"bot_token": "7000000001:AAnone"}}), T, 200)
        chk(e.api("POST", T, {"provider": "telegram"}), T, 400)


class TestGauges(CommandBase):

    def test_gauges_present_and_webhook_age(self):
        e = self.env
        samples = self.metrics()
        names = {n for n, _, _ in samples}
        for g in ("switchboard_outbound_pending", "switchboard_outbound_lag",
                  "switchboard_outbound_retrying", "switchboard_dead_letters",
                  "switchboard_connections_inactive"):
            self.assertIn(g, names)
        ages = {l["connection"]: v for n, l, v in samples
                if n == "switchboard_webhook_last_seen_age_seconds"}
        # The set-up sent one webhook per connection.
        for ch, cid in e.conns.items():
            self.assertIn(cid, ages, ch)
            self.assertGreaterEqual(ages[cid], 0)
        self.assertLessEqual(len(ages), 256)
        wait_until(lambda: self.gauge("switchboard_outbound_lag") == 0, 5, "no lag")


if __name__ == "__main__":
    unittest.main(verbosity=2)

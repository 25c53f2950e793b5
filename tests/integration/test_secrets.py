"""
Credentials never appear in plaintext (contract section 6: "Secrets are never returned in
full, never logged, and are encrypted at rest"): after creating, rotating, testing and
using Telegram and Meta connections, none of the secrets (nor their hex or base64 forms)
is in any Redis key or value, any HTTP answer the tests received, any gateway log line or
any file of the data directory. The Telegram bot id (before ':') is not a secret.
"""

import hashlib
import hmac
import json
import os
import random
import string
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402


def _rand(n):
    return "".join(random.SystemRandom().choice(string.ascii_letters + string.digits)
                   for _ in range(n))


class SecretsTest(H.GatewayTestCase):
    PREFIX = "ts_sec:"

    def test_no_credential_in_plaintext_anywhere(self):
        secrets = {}  # label -> secret string

        # --- Telegram: create, rotate, a refused rotation, test, webhooks
        tg_fx = H.load_fixture("telegram", "text_private")
        bot_id = tg_fx["binding_external_id"]
        t1 = "%s:AAFirstTgSecret%s" % (bot_id, _rand(24))
        t2 = "%s:AASecondTgSecret%s" % (bot_id, _rand(24))
        t_refused = "%s:AARefusedTgSecret%s" % (bot_id, _rand(24))
        t_other_bot = "6111111111:AAOtherBotSecret%s" % _rand(24)
        t_unknown = "6222222222:AAUnknownTgSecret%s" % _rand(24)
        for label, t in (("t1", t1), ("t2", t2), ("t_refused", t_refused),
                         ("t_other_bot", t_other_bot), ("t_unknown", t_unknown)):
            secrets[label] = t
            secrets[label + " secret part"] = t.split(":", 1)[1]
        self.telegram.add_bot(t1, username="secret_test_bot")
        self.telegram.add_bot(t2, username="secret_test_bot")
        self.telegram.add_bot(t_other_bot, username="other_bot")

        conn = self.create_telegram(t1)
        asst = self.create_assistant("secrets")
        self.bind(asst["id"], conn["id"])
        path = "/orgs/c/connections/" + conn["id"]
        r = self.api("PATCH", path, {"credentials": {"bot_token": t2}})
        self.assertStatus(r, 200)
        r = self.api("PATCH", path, {"credentials": {"bot_token": t_refused}})
        self.assertStatus(r, 400)
        r = self.api("PATCH", path, {"credentials": {"bot_token": t_other_bot}})
        self.assertStatus(r, 400)
        r = self.api("POST", "/orgs/c/connections",
                     {"provider": "telegram", "credentials": {"bot_token": t_unknown}})
        self.assertStatus(r, 400)
        r = self.api("POST", "/orgs/c/connections",
                     {"provider": "telegram", "credentials": {"bot_token": t_unknown,
                                                              "extra": t_unknown}})
        self.assertStatus(r, 400)
        r = self.api("POST", path + "/test")
        self.assertStatus(r, 200)
        self.assertEqual(r.json.get("ok"), True)
        for i, call in enumerate(self.telegram.setwebhook_calls()):
            st = call["params"].get("secret_token")
            self.assertTrue(st, "setWebhook without secret_token")
            secrets["webhook secret_token #%d" % i] = st
        tg_secret = self.telegram.last_secret(t2)
        r = self.post_telegram_update(conn, t2, tg_fx["body"], tg_secret)
        self.assertEqual(r.status, 200, r)
        r = self.post_telegram_update(conn, t2, tg_fx["body"], "wrong" + _rand(27))
        self.assertEqual(r.status, 401, r)

        # --- WhatsApp: create, bind, rotate the access token, test, handshake, signed POST
        wa_fx = H.load_fixture("whatsapp", "text")
        pnid = wa_fx["binding_external_id"]
        app_secret = "AppSecret" + _rand(24)
        verify = "VerifyToken" + _rand(16)
        acc1 = "EAAFirstAccess" + _rand(40)
        acc2 = "EAASecondAccess" + _rand(40)
        acc_refused = "EAARefusedAccess" + _rand(40)
        secrets.update({"app_secret": app_secret, "verify_token": verify, "acc1": acc1,
                        "acc2": acc2, "acc_refused": acc_refused})
        self.graph.add_account(acc1, "104857600123456", "WA Secret Test")
        self.graph.add_account(acc2, "104857600123456", "WA Secret Test")
        self.graph.add_phone_number(pnid)
        wa = self.create_meta("whatsapp", app_secret, verify, acc1)
        self.bind(asst["id"], wa["id"], pnid)
        wpath = "/orgs/c/connections/" + wa["id"]
        self.assertStatus(self.api("PATCH", wpath, {"credentials": {"access_token": acc2}}), 200)
        self.assertStatus(self.api("PATCH", wpath, {"credentials": {"access_token": acc_refused}}),
                          400)
        r = self.api("POST", wpath + "/test")
        self.assertStatus(r, 200)
        self.assertEqual(r.json.get("ok"), True, r)
        hook = urllib.parse.urlsplit(wa["webhook_url"]).path
        q = urllib.parse.urlencode({"hub.mode": "subscribe", "hub.verify_token": verify,
                                    "hub.challenge": "1158201444"})
        r = self.gw.http("GET", hook + "?" + q)
        self.assertEqual((r.status, r.body), (200, b"1158201444"))
        q = urllib.parse.urlencode({"hub.mode": "subscribe", "hub.verify_token": "wrong-verify-" + _rand(8),
                                    "hub.challenge": "1158201444"})
        self.assertEqual(self.gw.http("GET", hook + "?" + q).status, 403)
        raw = json.dumps(wa_fx["body"], separators=(",", ":")).encode()
        sig = "sha256=" + hmac.new(app_secret.encode(), raw, hashlib.sha256).hexdigest()
        r = self.gw.http("POST", hook, body=raw, headers={"Content-Type": "application/json",
                                                          "X-Hub-Signature-256": sig})
        self.assertEqual(r.status, 200, r)
        r = self.gw.http("POST", hook, body=raw, headers={"Content-Type": "application/json",
                                                          "X-Hub-Signature-256": "sha256=" + "0" * 64})
        self.assertEqual(r.status, 401, r)

        # --- Messenger and a refused Meta creation
        m_secret = "MsgAppSecret" + _rand(24)
        m_verify = "MsgVerify" + _rand(16)
        m_acc = "EAAMessengerAccess" + _rand(40)
        m_refused = "EAAMessengerRefused" + _rand(40)
        secrets.update({"m_app_secret": m_secret, "m_verify": m_verify, "m_acc": m_acc,
                        "m_refused": m_refused})
        m = self.create_meta("messenger", m_secret, m_verify, m_acc, account_name="Page")
        self.assertStatus(self.api("POST", "/orgs/c/connections/%s/test" % m["id"]), 200)
        r = self.api("POST", "/orgs/c/connections", {"provider": "instagram", "credentials": {
            "app_secret": m_secret, "verify_token": m_verify, "access_token": m_refused}})
        self.assertStatus(r, 400, "provider_rejected")
        self.graph.remove_account(m_acc)  # the test now fails with the provider's message
        r = self.api("POST", "/orgs/c/connections/%s/test" % m["id"])
        self.assertEqual(r.json.get("ok"), False, r)

        # --- reads of everything
        for p in ("/orgs/c/connections", path, wpath, "/orgs/c/connections/" + m["id"],
                  "/orgs/c/assistants/%s/channels" % asst["id"], "/orgs/c/contacts"):
            self.assertStatus(self.api("GET", p), 200)

        # the API key is a secret too: only its hash is stored
        secrets["api key"] = self.key

        for label, s in secrets.items():
            self.assertGreaterEqual(len(s), 12, label)

        # --- Redis: key names and every value (all prefixes), plain and encoded
        dump = self.redis.dump_all_values()
        self.assertTrue(dump)
        for label, s in secrets.items():
            for form in H.encoded_forms(s):
                for k, v in dump.items():
                    self.assertNotIn(form, k, "%s in the Redis key name %r" % (label, k))
                    self.assertNotIn(form, v, "%s (as %r) in the value of Redis key %r"
                                     % (label, form, k))

        # --- every HTTP answer the tests received (bodies and headers)
        self.assertGreater(len(self.gw.responses), 20)
        for resp in self.gw.responses:
            blob = resp.body + "\n".join("%s: %s" % kv for kv in resp.headers.items()).encode()
            for label, s in secrets.items():
                self.assertNotIn(s.encode(), blob, "%s in the answer to %s %s"
                                 % (label, resp.method, resp.path))

        # --- the logs (after a clean stop, so that everything is flushed)
        self.gw.stop()
        logs = self.gw.stderr_text().encode("utf-8", "replace")
        with open(self.gw.stdout_path, "rb") as f:
            logs += f.read()
        self.assertTrue(logs, "the gateway logged nothing at debug level")
        for label, s in secrets.items():
            for form in H.encoded_forms(s):
                self.assertNotIn(form, logs, "%s (as %r) in the gateway's logs" % (label, form))

        # --- the data directory (master key file)
        for name in os.listdir(self.gw.data_dir):
            p = os.path.join(self.gw.data_dir, name)
            if os.path.isfile(p):
                with open(p, "rb") as f:
                    data = f.read()
                for label, s in secrets.items():
                    self.assertNotIn(s.encode(), data, "%s in %s" % (label, p))


if __name__ == "__main__":
    H.main()

"""
Upgrading a store of the layout before hash tags (0.2.0: connection:<id>, conv:<id>,
route:<conn>:<ext>, contactidx:<org>:..., org:<org>:..., dd:<conn>:<identity>,
apikey:<sha256>): a store is filled through the API and webhooks, turned into the old layout
by renaming its keys back to the names 0.2.0 used, and two gateways are then started on it
at the same time. Exactly one moves the keys (docs/architecture.md, "Upgrading a store");
afterwards every connection, assistant, binding, contact, conversation, the inbox list and
history answer as before, the old API key still works, a webhook already stored is still a
duplicate and a new one is routed to the same conversation.
"""

import copy
import json
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from test_inbound import Env, utf8_bytes  # noqa: E402

ORG = "org_in"
# tagged kind -> how 0.2.0 named it
OBJECTS = ("connection", "assistant", "binding", "contact", "conv")


def old_name(key):
    """The 0.2.0 name of a key of the tagged layout, None to drop it, or the key itself."""
    k = key.decode()
    m = re.match(r"^sb:(connection|assistant|binding|contact|conv):\{([^}]*)\}:(.*)$", k)
    if m:
        return "sb:%s:%s" % (m.group(1), m.group(3))
    m = re.match(r"^sb:(route|dd):\{([^}]*)\}:(.*)$", k)
    if m:
        return "sb:%s:%s" % (m.group(1), m.group(3))
    m = re.match(r"^sb:(contactidx|org):\{([^}]*)\}:(.*)$", k)
    if m:
        return "sb:%s:%s:%s" % (m.group(1), m.group(2), m.group(3))
    m = re.match(r"^sb:apikey:\{(.*)\}$", k)
    if m:
        return "sb:apikey:" + m.group(1)
    if re.match(r"^sb:seq:\{", k):
        return "sb:seq"
    if re.match(r"^sb:(connorg|convorg|ddin):", k) or k == "sb:{schema}":
        return None
    return k


class UpgradeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = Env()
        e = cls.env
        cls.fx = H.load_fixture("telegram", "text_private")
        cls.asst = e.assistant("upgrade")
        cls.cid, cls.secret = e.telegram_connection(cls.fx["binding_external_id"])
        e.bind(cls.asst, cls.cid, cls.fx["binding_external_id"])
        cls.gws = []

    @classmethod
    def tearDownClass(cls):
        for gw in cls.gws:
            gw.cleanup()
        cls.env.stop()

    def body(self, update_id, user):
        b = copy.deepcopy(self.fx["body"])
        b["update_id"] = update_id
        b["message"]["message_id"] = update_id % 100000
        b["message"]["from"]["id"] = user
        b["message"]["chat"]["id"] = user
        b["message"]["text"] = "hello %d" % update_id
        return b

    def webhook(self, gw, body):
        return gw.http("POST", "/webhooks/telegram/%s" % self.cid, body=utf8_bytes(body),
                       headers={"X-Telegram-Bot-Api-Secret-Token": self.secret})

    def api(self, gw, method, path, body=None):
        return gw.http(method, path, body=body, key=self.env.key)

    def views(self, gw):
        """What the API shows of the store (the parts an upgrade must keep)."""
        out = {}
        for path in ("/orgs/c/connections", "/orgs/c/assistants", "/orgs/c/contacts",
                     "/orgs/c/assistants/%s/channels" % self.asst, "/orgs/c/conversations",
                     "/orgs/c/connections/%s" % self.cid):
            r = self.api(gw, "GET", path)
            self.assertEqual(r.status, 200, (path, r))
            out[path] = r.json
        for cv in out["/orgs/c/conversations"]["data"] if isinstance(
                out["/orgs/c/conversations"], dict) else out["/orgs/c/conversations"]:
            path = "/orgs/c/conversations/%s/messages" % cv["id"]
            r = self.api(gw, "GET", path)
            self.assertEqual(r.status, 200, (path, r))
            out[path] = r.json
        return out

    def downgrade(self):
        """Renames every key to its 0.2.0 name (identity records become the old '1')."""
        r = self.env.r
        n = 0
        for key in r.keys("sb:*"):
            new = old_name(key)
            if new == key.decode():
                continue
            n += 1
            if new is None:
                r.command("DEL", key)
            elif key.startswith(b"sb:dd:"):
                ttl = r.command("TTL", key)
                r.command("DEL", key)
                r.command("SET", new, "1", "EX", max(int(ttl), 60))
            else:
                r.command("RENAME", key, new)
        return n

    def test_upgrade_keeps_everything(self):
        e = self.env
        for i, user in enumerate((402233201, 402233202, 402233203)):
            self.assertEqual(self.webhook(e.gw, self.body(830000001 + i, user)).status, 200)
        patch = self.api(e.gw, "GET", "/orgs/c/contacts").json
        contacts = patch["data"] if isinstance(patch, dict) else patch
        self.assertEqual(len(contacts), 3)
        r = self.api(e.gw, "PATCH", "/orgs/c/contacts/%s" % contacts[0]["id"],
                     {"status": "AI_REPLIES_DISABLED"})
        self.assertEqual(r.status, 200, r)
        before = self.views(e.gw)
        in_before = e.xlen("in:{%s}" % self.asst)
        self.assertEqual(in_before, 3)
        e.gw.stop()

        self.assertGreater(self.downgrade(), 10)
        names = [k.decode() for k in e.r.keys("sb:*")]
        self.assertIn("sb:connection:%s" % self.cid, names)
        self.assertTrue(any(n.startswith("sb:org:%s:" % ORG) for n in names), names)
        self.assertTrue(any(n.startswith("sb:route:%s:" % self.cid) for n in names), names)
        self.assertFalse(any(n.startswith("sb:connorg:") for n in names), names)

        # two gateways at once: one moves the store, the other finds it moved
        for _ in range(2):
            gw = H.Gateway(e.redis, e.tg, e.graph, data_dir=e.gw.data_dir,
                           extra_env=e.gw.extra_env)
            self.gws.append(gw)
        for gw in self.gws:
            gw.start(wait_ready=False)
        for gw in self.gws:
            gw.wait_ready(30)
        moved = [gw for gw in self.gws
                 if any("moved to key layout" in j.get("msg", "") for j in gw.json_logs())]
        self.assertEqual(len(moved), 1, [gw.stderr_text()[-2000:] for gw in self.gws])
        names = [k.decode() for k in e.r.keys("sb:*")]
        self.assertIn("sb:connection:{%s}:%s" % (ORG, self.cid), names)
        self.assertFalse([n for n in names if old_name(n.encode()) != n and
                          not n.startswith(("sb:connorg:", "sb:convorg:", "sb:{schema}",
                                            "sb:seq")) and "{" not in n], names)

        gw = self.gws[0]
        after = self.views(gw)
        for path, view in before.items():
            self.assertEqual(after[path], view, path)

        # a webhook stored before is still a duplicate; a new one goes to the same conversation
        self.assertEqual(self.webhook(gw, self.body(830000002, 402233202)).status, 200)
        self.assertEqual(e.xlen("in:{%s}" % self.asst), in_before)
        self.assertEqual(self.webhook(self.gws[1], self.body(830000009, 402233202)).status, 200)
        H.wait_until(lambda: e.xlen("in:{%s}" % self.asst) == in_before + 1, 10, "routed")
        evs = e.stream("in:{%s}" % self.asst)
        self.assertEqual(evs[-1]["conversation_id"], evs[1]["conversation_id"])
        self.assertEqual(evs[-1]["contact"]["id"], evs[1]["contact"]["id"])
        # and an outbound reply through the API reaches the provider
        r = self.api(gw, "POST", "/orgs/c/conversations/%s/messages" % evs[1]["conversation_id"],
                     {"id": "upgrade-reply-1", "type": "text", "text": "after the upgrade"})
        self.assertEqual(r.status, 202, r)
        H.wait_until(lambda: any(json.loads(c["body"]).get("text") == "after the upgrade"
                                 for c in e.tg.requests(method="sendmessage")), 15, "reply sent")


if __name__ == "__main__":
    H.main()

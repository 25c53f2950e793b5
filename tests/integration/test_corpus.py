"""
Real webhook bodies through the real server: every file of $SB_CORPUS_DIR/<channel>/*.json
(the external corpus beside the repository, ../shared/corpus/external; skipped, with one
line, when it is absent). Each file gets a connection of its own (bodies of different
projects reuse ids) in an org of its own, is delivered signed (Meta) or with the secret token (Telegram), and
must be answered as the file says (accept_status, default 200; never a 5xx), yield between
expect_min_events and expect_max_events events of the kinds expect_kinds with the exact
values of expect, every one of them well-formed (docs/schema/event.schema.json), routed
unless allow_unrouted; a second delivery stores nothing new unless dedup is false.

The test_addition_* tests then check the fields of the v1 additions (timestamp, referral,
contact.user_id, message.thread_id, message.error, message.share / message.story) on every
file whose body carries them.
"""

import glob
import json
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from test_inbound import META, Env, ascii_bytes, dot, sign, utf8_bytes  # noqa: E402

ORG = "org_corpus"
REFERRAL_FIELDS = ("source_type", "source_id", "source_url", "headline", "body", "ctwa_clid",
                   "ref")


def corpus_files():
    out = []
    for ch in H.CHANNELS:
        for path in sorted(glob.glob(os.path.join(H.CORPUS_DIR, ch, "*.json"))):
            with open(path, encoding="utf-8") as f:
                cf = json.load(f)
            cf["_name"] = "%s/%s" % (ch, os.path.basename(path)[:-5])
            out.append(cf)
    return out


def walk(node):
    """Every dict inside 'node' (itself included), depth first."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


class TestCorpus(unittest.TestCase):
    """One delivery (and one redelivery) per corpus file; the checks read the results."""

    results = {}

    @classmethod
    def setUpClass(cls):
        cls.env = Env()
        cls.results = {}
        for n, cf in enumerate(corpus_files()):
            cls.results[cf["_name"]] = cls.deliver(n, cf)

    @classmethod
    def tearDownClass(cls):
        cls.env.stop()

    @classmethod
    def deliver(cls, n, cf):
        """Delivers the file's body twice, to a connection of its own in an org of its own
        (contacts are per org: bodies of different projects reuse user ids)."""
        e = cls.env
        org = "%s_%d" % (ORG, n)
        e.use_org(org)
        asst = e.assistant("corpus")
        ch = cf["channel"]
        if ch in META:
            secret = "corpus-app-secret-%d-0123456789" % n
            conn = e.meta_connection(ch, secret, "corpus-token-%d-0123456789" % n)
            data = ascii_bytes(cf["body"])
            headers = {"X-Hub-Signature-256": sign(secret, data)}
        else:
            conn, token_secret = e.telegram_connection(cf["binding_external_id"], "corpus-%d" % n)
            data = utf8_bytes(cf["body"])
            headers = {"X-Telegram-Bot-Api-Secret-Token": token_secret}
        e.bind(asst, conn, cf["binding_external_id"])
        headers["Content-Type"] = "application/json"
        path = "/webhooks/%s/%s" % (ch, conn)
        inbox = "inbox:{%s}" % org
        stream = "in:{%s}" % asst
        before = (e.xlen(inbox), e.xlen(stream), e.xlen("unrouted"))
        first = e.gw.http("POST", path, body=data, headers=headers)
        events = [ev for ev in e.stream(inbox)[before[0]:] if ev.get("connection_id") == conn]
        routed = [ev for ev in e.stream(stream)[before[1]:] if ev.get("connection_id") == conn]
        unrouted = [ev for ev in e.stream("unrouted")[before[2]:]
                    if ev.get("connection_id") == conn]
        after = e.xlen(inbox)
        second = e.gw.http("POST", path, body=data, headers=headers)
        again = [ev for ev in e.stream(inbox)[after:] if ev.get("connection_id") == conn]
        return {"status": first.status, "response": first, "events": events, "routed": routed,
                "unrouted": unrouted, "second": second.status, "again": again}

    # --- per file

    def check_file(self, cf):
        r = self.results[cf["_name"]]
        name = cf["_name"]
        accept = cf.get("accept_status", [200])
        self.assertLess(r["status"], 500, "%s: %r" % (name, r["response"]))
        self.assertIn(r["status"], accept, "%s: %r" % (name, r["response"]))
        self.assertLess(r["second"], 500, "%s: redelivery" % name)
        events = r["events"]
        if r["status"] != 200:
            self.assertEqual(events, [], "%s: answered %d but stored events" % (name, r["status"]))
            return
        for i, ev in enumerate(events):
            self.assertEqual(H.event_problems(ev), [], "%s #%d: %s" % (name, i, json.dumps(ev)))
        count = len(events)
        self.assertGreaterEqual(count, cf.get("expect_min_events", 0),
                                "%s: events %s" % (name, [e["kind"] for e in events]))
        if cf.get("expect_max_events") is not None:
            self.assertLessEqual(count, cf["expect_max_events"],
                                 "%s: events %s" % (name, [e["kind"] for e in events]))
        if cf.get("expect_kinds") is not None:
            self.assertEqual([ev["kind"] for ev in events], cf["expect_kinds"], name)
        expect = cf.get("expect") or []
        self.assertGreaterEqual(count, len(expect), "%s: fewer events than expected" % name)
        for i, (ev, exp) in enumerate(zip(events, expect)):
            for path, want in exp.items():
                got = dot(ev, path)
                where = "%s #%d %s" % (name, i, path)
                if path == "message.media.url":
                    # the event names the gateway's signed URL; the provider's URL is what
                    # that URL serves (docs/events.md)
                    self.assertEqual(H.media_url_target(got), want, "%s: %r" % (where, got))
                    continue
                if isinstance(want, float) or path.startswith("message.location."):
                    self.assertIsInstance(got, (int, float), where)
                    self.assertEqual(float(got), float(want), where)
                else:
                    self.assertEqual((type(got), got), (type(want), want), where)
        if not cf.get("allow_unrouted"):
            self.assertEqual(r["unrouted"], [], "%s: unrouted events" % name)
            self.assertEqual(len(r["routed"]), count, "%s: every event routed" % name)
        if cf.get("dedup", True):
            self.assertEqual(r["second"], 200, "%s: redelivery" % name)
            self.assertEqual(r["again"], [], "%s: the redelivery was stored again" % name)

    # --- the v1 additions, on every file whose body carries them

    def produced(self, cf):
        r = self.results.get(cf["_name"])
        return r["events"] if r and r["status"] == 200 else []

    def carriers(self, channel, find):
        """[(file, carried value, events)] of the files of 'channel' where find(body) is not
        None and that yielded events."""
        out = []
        for cf in corpus_files():
            if cf["channel"] != channel:
                continue
            v = find(cf["body"])
            evs = [ev for ev in self.produced(cf) if ev["kind"] != "status"]
            if v is not None and evs:
                out.append((cf["_name"], v, evs))
        return out

    def test_addition_timestamp(self):
        """Every event has an integer timestamp in ms (not seconds), ISO times included."""
        n = 0
        for cf in corpus_files():
            for ev in self.produced(cf):
                n += 1
                with self.subTest(cf["_name"]):
                    self.assertIsInstance(ev.get("timestamp"), int, json.dumps(ev))
                    # ms since the epoch: a real time in seconds would be under 10^11 (a body
                    # whose own time is 0 may say so)
                    self.assertTrue(ev["timestamp"] == 0 or ev["timestamp"] > 10 ** 11,
                                    "seconds, not ms: %r" % ev["timestamp"])
        self.assertGreater(n, 50)

    def test_addition_referral(self):
        def find(body):
            for d in walk(body):
                ref = d.get("referral")
                if isinstance(ref, dict):
                    return ref
            return None
        found = 0
        for ch in ("whatsapp", "messenger", "instagram"):
            for name, ref, evs in self.carriers(ch, find):
                found += 1
                with self.subTest(name):
                    got = [ev["referral"] for ev in evs if "referral" in ev]
                    self.assertTrue(got, "%s: no referral on %r" % (name, evs))
                    for k in REFERRAL_FIELDS:
                        if isinstance(ref.get(k), (str, int)) and str(ref[k]) != "":
                            self.assertEqual(got[0].get(k), str(ref[k]),
                                             "%s referral.%s" % (name, k))
        self.assertGreaterEqual(found, 3)

    def test_addition_whatsapp_user_id(self):
        def find(body):
            """The sender's BSUID: the first message's from_user_id, or the user_id of the
            contacts[] entry of its sender (wa_id = from, or the only entry without a from)."""
            for d in walk(body):
                msgs, contacts = d.get("messages"), d.get("contacts") or []
                if not isinstance(msgs, list) or not msgs or not isinstance(msgs[0], dict):
                    continue
                m = msgs[0]
                if isinstance(m.get("from_user_id"), str):
                    return m["from_user_id"]
                for c in contacts:
                    if isinstance(c, dict) and isinstance(c.get("user_id"), str) and \
                            (c.get("wa_id") == m.get("from") or
                             ("from" not in m and len(contacts) == 1)):
                        return c["user_id"]
                return None
            return None
        found = 0
        for name, uid, evs in self.carriers("whatsapp", find):
            found += 1
            with self.subTest(name):
                self.assertEqual(evs[0]["contact"].get("user_id"), uid, name)
        self.assertGreaterEqual(found, 3)

    def test_addition_telegram_thread_id(self):
        def find(body):
            for key in ("message", "edited_message", "channel_post", "edited_channel_post"):
                m = body.get(key)
                if isinstance(m, dict) and m.get("is_topic_message") and \
                        m.get("message_thread_id") is not None:
                    return str(m["message_thread_id"])
            return None
        found = 0
        for name, tid, evs in self.carriers("telegram", find):
            found += 1
            with self.subTest(name):
                self.assertEqual(evs[0].get("message", {}).get("thread_id"), tid, name)
        self.assertGreaterEqual(found, 1)

    def test_addition_message_error(self):
        def find(body):
            for d in walk(body):
                msgs = d.get("messages")
                if isinstance(msgs, list):
                    for m in msgs:
                        if isinstance(m, dict) and m.get("errors"):
                            return m["errors"][0]
            return None
        found = 0
        for name, err, evs in self.carriers("whatsapp", find):
            found += 1
            with self.subTest(name):
                got = evs[0].get("message", {}).get("error")
                self.assertIsInstance(got, dict, name)
                self.assertEqual(got.get("code"), int(err["code"]), name)
        self.assertGreaterEqual(found, 1)

    def test_addition_share_and_story(self):
        def find(body):
            for d in walk(body):
                story = (d.get("reply_to") or {}).get("story") if isinstance(
                    d.get("reply_to"), dict) else None
                if isinstance(story, dict):
                    return ("story", str(story.get("id")))
                if d.get("type") in ("share", "ig_reel", "story_mention", "reel") and \
                        isinstance(d.get("payload"), dict):
                    return ("share", d["type"])
            return None
        found = 0
        for name, (what, value), evs in self.carriers("instagram", find):
            found += 1
            with self.subTest(name):
                msg = evs[0].get("message", {})
                if what == "story":
                    self.assertEqual(msg.get("story", {}).get("id"), value, name)
                else:
                    self.assertEqual(msg.get("type"), "share", name)
                    self.assertIn(msg.get("share", {}).get("kind"),
                                  ("reel", "post", "story", "template", "link"), name)
        self.assertGreaterEqual(found, 2)


def _add_file_tests():
    for cf in corpus_files():
        name = "test_file_" + re.sub(r"[^A-Za-z0-9]+", "_", cf["_name"])

        def test(self, cf=cf):
            self.check_file(cf)
        test.__doc__ = "%s: %s" % (cf["_name"], cf.get("description", ""))
        setattr(TestCorpus, name, test)


if __name__ == "__main__":
    if not os.path.isdir(H.CORPUS_DIR):
        print("external corpus not found at %s: skipped" % H.CORPUS_DIR)
        sys.exit(77)
    _add_file_tests()
    unittest.main(verbosity=2)

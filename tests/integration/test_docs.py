"""
The runtime's interface as documented (docs/events.md, docs/schema/): the schemas are valid
JSON Schema and refuse what the formats forbid; every command example of docs/events.md and
docs/api.md (JSON blocks and XADD ... cmd '<json>' lines) is a valid command, every event
example a valid event; the Redis commands the page shows run as written on a real
redis-server; and nothing in docs/ points to a document outside the repository.
"""

import copy
import glob
import json
import os
import re
import shlex
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

DOCS = os.path.join(H.SOURCE_DIR, "docs")
EVENTS_MD = os.path.join(DOCS, "events.md")
API_MD = os.path.join(DOCS, "api.md")
COMMAND_TYPES = ("text", "image", "audio", "video", "document", "template", "typing", "read")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def code_blocks(text):
    """[(info string, body)] of every fenced code block."""
    return re.findall(r"^```([^\n]*)\n(.*?)^```", text, re.S | re.M)


def json_examples(path):
    """(events, commands, others): every JSON value of the file's ```json blocks, and the
    '<json>' of every XADD ... cmd '<json>' and curl -d '<json>' line of its other blocks."""
    events, commands, others = [], [], []
    for info, body in code_blocks(read(path)):
        if info.strip() == "json":
            v = json.loads(body)
            if isinstance(v, dict) and "v" in v and "kind" in v:
                events.append(v)
            elif isinstance(v, dict) and "type" in v and "id" in v:
                commands.append(v)
            else:
                others.append(v)
            continue
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line) if ("XADD" in line or "curl" in line) else []
            if "XADD" in words and "cmd" in words:
                commands.append(json.loads(words[words.index("cmd") + 1]))
            if words[:1] == ["curl"] and "-d" in words and "/messages" in line:
                commands.append(json.loads(words[words.index("-d") + 1]))
    return events, commands, others


class SchemaTest(unittest.TestCase):
    def test_schemas_are_valid_json_schema(self):
        for name in ("event", "command"):
            v = H.schema_validator(name)
            self.assertIn(v.schema["$schema"], (
                "https://json-schema.org/draft/2020-12/schema",
                "http://json-schema.org/draft-07/schema#"))

    def good_event(self):
        events, _, _ = json_examples(EVENTS_MD)
        return copy.deepcopy([e for e in events if e["kind"] == "message"][0])

    def test_event_schema_refuses_what_the_format_forbids(self):
        ev = self.good_event()
        self.assertEqual(H.schema_problems("event", ev), [])
        bad = []
        for path, value in (("kind", "typing"), ("direction", "sideways"), ("channel", "sms"),
                            ("v", 2), ("timestamp", 1779012345.5), ("timestamp", "1779012345000"),
                            ("received_at", None), ("assistant_id", None), ("id", 42),
                            ("conversation_id", "cv 1/2"), ("binding_id", ""),
                            ("contact", {}), ("contact.external_id", 15550142233),
                            ("contact.phone", "15550142233"), ("message.type", "gif"),
                            ("message.text", None), ("message.thread_id", 4),
                            ("message.media", {}), ("message.share", {"id": "1"}),
                            ("unknown_member", "x"), ("command_id", "c1"), ("part", 1),
                            ("referral", {"source_type": None})):
            e = copy.deepcopy(ev)
            node = e
            parts = path.split(".")
            for p in parts[:-1]:
                node = node[p]
            node[parts[-1]] = value
            bad.append((path, value, e))
        for missing in ("v", "id", "kind", "channel", "org_id", "connection_id", "contact",
                        "timestamp", "received_at"):
            e = copy.deepcopy(ev)
            del e[missing]
            bad.append((missing, "(absent)", e))
        for path, value, e in bad:
            with self.subTest(path=path, value=value):
                self.assertNotEqual(H.schema_problems("event", e), [])

    def test_event_schema_kinds_need_their_objects(self):
        base = self.good_event()
        del base["message"]
        for kind, member in (("message", "message"), ("edit", "message"),
                             ("postback", "message"), ("reaction", "reaction"),
                             ("status", "status"), ("referral", "referral")):
            with self.subTest(kind=kind):
                self.assertNotEqual(H.schema_problems("event", dict(base, kind=kind)), [])
        ok = dict(base, kind="reaction", reaction={"message_external_id": "m1", "emoji": ""})
        self.assertEqual(H.schema_problems("event", ok), [])
        # outbound: direction out, command_id and status required; author well-formed
        out = dict(base, kind="outbound", direction="out", command_id="c1", part=1,
                   message={"type": "text", "text": "hi"}, status={"state": "sent"})
        self.assertEqual(H.schema_problems("event", out), [])
        self.assertEqual(H.schema_problems("event", dict(out, author={"type": "assistant"})), [])
        for broken in (dict(out, direction="in"), dict(out, status={"state": "read"}),
                       dict(out, part=0), dict(out, author={"type": "person"}),
                       dict(out, author={"type": "bot"}),
                       {k: v for k, v in out.items() if k != "command_id"}):
            self.assertNotEqual(H.schema_problems("event", broken), [], broken)

    def good_command(self):
        return {"id": "c-1", "conversation_id": "cv_0123", "type": "text", "text": "hi"}

    def test_command_schema_refuses_what_the_format_forbids(self):
        self.assertEqual(H.schema_problems("command", self.good_command()), [])
        c = self.good_command
        bad = [dict(c(), type="sticker"), dict(c(), id=""), dict(c(), id="x" * 257),
               dict(c(), id=7), dict(c(), text=None), dict(c(), conversation_id="cv 1"),
               dict(c(), extra=1), {k: v for k, v in c().items() if k != "text"},
               {k: v for k, v in c().items() if k != "id"},
               {k: v for k, v in c().items() if k != "type"},
               dict(c(), type="image"), dict(c(), type="image", media={"caption": "x"}),
               dict(c(), type="image", media={"url": "ftp://x/y"}),
               dict(c(), type="image", media={"url": "https://x/y", "size": 1}),
               dict(c(), buttons=[{"id": "b%d" % i, "title": "t"} for i in range(14)]),
               dict(c(), buttons=[{"id": "", "title": "t"}]),
               dict(c(), type="template"), dict(c(), type="template", template={"name": "x"}),
               dict(c(), template={"name": "x", "language": "en_US"})]
        for cmd in bad:
            with self.subTest(cmd=cmd):
                self.assertNotEqual(H.schema_problems("command", cmd), [])
        for t in COMMAND_TYPES:
            cmd = {"id": "c", "conversation_id": "cv_1", "type": t}
            if t == "text":
                cmd["text"] = "x"
            elif t == "template":
                cmd["template"] = {"name": "n", "language": "en_US", "components": []}
            elif t not in ("typing", "read"):
                cmd["media"] = {"url": "https://cdn.example.com/f"}
            self.assertEqual(H.schema_problems("command", cmd), [], cmd)


class ExamplesTest(unittest.TestCase):
    def test_every_command_example_is_valid(self):
        seen_types = set()
        count = 0
        for path in (EVENTS_MD, API_MD):
            _, commands, _ = json_examples(path)
            for cmd in commands:
                count += 1
                with self.subTest(doc=os.path.basename(path), cmd=cmd):
                    self.assertEqual(H.schema_problems("command", cmd), [])
                seen_types.add(cmd.get("type"))
        self.assertGreaterEqual(count, 8)
        self.assertEqual(seen_types - set(COMMAND_TYPES), set())
        self.assertLessEqual({"text", "image", "document", "template", "typing", "read"},
                             seen_types, "examples of every kind of command")

    def test_every_event_example_is_valid(self):
        events, _, _ = json_examples(EVENTS_MD)
        self.assertGreaterEqual(len(events), 6)
        for ev in events:
            with self.subTest(ev=ev["id"]):
                self.assertEqual(H.schema_problems("event", ev), [])
        kinds = {e["kind"] for e in events}
        self.assertLessEqual({"message", "reaction", "status", "referral", "outbound"}, kinds)
        self.assertEqual({e["status"]["state"] for e in events if e["kind"] == "outbound"},
                         {"sent", "failed"})

    def test_every_schema_member_is_documented(self):
        text = read(EVENTS_MD)
        for name in ("event", "command"):
            schema = H.schema_validator(name).schema
            for prop in schema["properties"]:
                self.assertIn("`%s`" % prop, text, "%s member %s" % (name, prop))
        ev = H.schema_validator("event").schema
        for prop in ev["$defs"]["message"]["properties"]:
            self.assertIn("`%s`" % prop, text, "message." + prop)
        for prop in ev["$defs"]["contact"]["properties"]:
            self.assertIn("`%s`" % prop, text, "contact." + prop)
        for kind in ev["properties"]["kind"]["enum"]:
            self.assertIn("- `%s`:" % kind, text, "kind %s is explained" % kind)
        for reason in ("outside_window", "contact_blocked", "handed_off"):
            self.assertIn("`%s`" % reason, text)

    def test_stream_names_carry_their_braces(self):
        text = read(EVENTS_MD)
        for name in ("sb:in:{ASSISTANT_ID}", "sb:inbox:{ORG_ID}", "sb:unrouted", "sb:out",
                     "sb:dead"):
            self.assertIn("`%s`" % name, text)
        self.assertIn("XREADGROUP GROUP rt c1 COUNT 10 BLOCK 5000 STREAMS sb:in:{as_123} >", text)
        self.assertIn("XADD sb:out", text)
        self.assertIn("POST /orgs/c/conversations/{conversation_id}/messages", text)


class RedisCommandsTest(unittest.TestCase):
    """The page's Redis commands, run as written against a real redis-server."""

    @classmethod
    def setUpClass(cls):
        cls.redis = H.RedisServer(validate_events=True).start()
        cls.addClassCleanup(cls.redis.cleanup)

    def test_documented_commands_run(self):
        text = read(EVENTS_MD)
        lines = []
        for info, body in code_blocks(text):
            if info.strip() in ("", "sh"):
                for line in body.splitlines():
                    line = line.strip()
                    if line.startswith("redis-cli "):
                        line = line[len("redis-cli "):]
                    if re.match(r"^X[A-Z]+ ", line):
                        lines.append(shlex.split(line))
        names = [w[0] for w in lines]
        self.assertLessEqual({"XGROUP", "XREADGROUP", "XACK", "XADD"}, set(names), names)
        events, _, _ = json_examples(EVENTS_MD)
        with self.redis.client() as c:
            for words in lines:
                if words[0] == "XACK":
                    # acknowledge the entry just read, under the documented stream and group
                    words = words[:3] + [self.last_read]
                if words[0] == "XREADGROUP" and words[-1] == ">":
                    c.command("XADD", "sb:in:{as_123}", "*", "event", json.dumps(events[0]))
                reply = c.command(*words)
                if words[0] == "XREADGROUP" and words[-1] == ">":
                    stream, entries = reply[0]
                    self.assertEqual(stream, b"sb:in:{as_123}")
                    self.assertEqual(json.loads(dict(zip(entries[0][1][::2],
                                                         entries[0][1][1::2]))[b"event"]),
                                     events[0])
                    self.last_read = entries[0][0].decode()
                if words[0] == "XACK":
                    self.assertEqual(reply, 1)
            self.assertEqual(c.command("XLEN", "sb:out"), 1)
            cmd = c.command("XRANGE", "sb:out", "-", "+")[0][1]
            self.assertEqual(H.schema_problems("command", json.loads(cmd[1])), [])
            self.assertEqual(c.command("XPENDING", "sb:in:{as_123}", "rt")[0], 0)


class NoOutsideReferencesTest(unittest.TestCase):
    def test_docs_refer_to_nothing_outside_the_repository(self):
        files = [p for p in glob.glob(os.path.join(DOCS, "**", "*"), recursive=True)
                 if os.path.isfile(p) and not p.endswith((".png", ".jpg", ".svg"))]
        self.assertIn(EVENTS_MD, files)
        for path in files:
            text = read(path)
            for needle in ("../shared", "contract.md", "channels.md", "/work/"):
                self.assertNotIn(needle, text, "%s names %s" % (os.path.relpath(path, DOCS),
                                                                needle))

    def test_readme_says_where_the_formats_are(self):
        text = read(os.path.join(H.SOURCE_DIR, "README.md"))
        for name in ("docs/events.md", "docs/schema/"):
            self.assertTrue(name in text, "README.md does not name %s" % name)


if __name__ == "__main__":
    unittest.main(verbosity=2)

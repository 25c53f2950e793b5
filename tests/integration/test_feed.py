"""
The live inbox feed (contract section 7): GET /orgs/c/inbox/events as Server-Sent Events
and POST /orgs/c/inbox/tickets.

Events are appended to the org's real stream in the real Redis (XADD, as the gateway's own
scripts do), or arrive through a real webhook; the feed is read over a plain socket with a
small SSE client that decodes HTTP/1.1 chunks itself, so every byte the gateway writes is seen.
"""

import json
import os
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
import test_openapi as OA  # noqa: E402

REPO_FIXTURES = os.path.join(H.SOURCE_DIR, "tests", "fixtures")


class SSE:
    """One SSE stream over a raw socket: the status line, headers, then parsed events."""

    def __init__(self, port, path, key=None, headers=None, rcvbuf=None, timeout=10.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1", "Accept: text/event-stream"]
        if key is not None:
            lines.append("Authorization: Bearer " + key)
        for k, v in (headers or {}).items():
            lines.append("%s: %s" % (k, v))
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.raw = b""
        self.body = b""
        self.status = None
        self.headers = {}
        self.chunked = False
        self.eof = False
        self.broken = False  # the stream ended without the final chunk
        self.items = []      # ("event", {id, event, data}) | ("comment", text) | ("retry", n)
        self._pending = b""
        self._chunk_left = 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _recv(self, timeout):
        self.sock.settimeout(max(timeout, 0.01))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            return True
        self.raw += data
        self._parse()
        return True

    def _parse(self):
        if self.status is None:
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.raw[:end].decode("latin-1").split("\r\n")
            self.status = int(head[0].split()[1])
            for line in head[1:]:
                k, _, v = line.partition(":")
                self.headers[k.strip().lower()] = v.strip()
            self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
            self._pending = self.raw[end + 4:]
        else:
            self._pending += self.raw
        self.raw = b""
        if not self.chunked:
            self.body += self._pending
            self._pending = b""
        else:
            while self._pending:
                if self._chunk_left > 0:
                    take = self._pending[:self._chunk_left]
                    self.body += take
                    self._chunk_left -= len(take)
                    self._pending = self._pending[len(take):]
                    if self._chunk_left == 0:
                        self._chunk_left = -1  # expect CRLF
                    continue
                if self._chunk_left == -1:
                    if len(self._pending) < 2:
                        break
                    if self._pending[:2] != b"\r\n":
                        self.broken = True
                        self._pending = b""
                        break
                    self._pending = self._pending[2:]
                    self._chunk_left = 0
                    continue
                nl = self._pending.find(b"\r\n")
                if nl < 0:
                    break
                try:
                    size = int(self._pending[:nl], 16)
                except ValueError:  # h2o's mark of a response that ended in an error
                    self.broken = True
                    self._pending = b""
                    break
                self._pending = self._pending[nl + 2:]
                if size == 0:
                    self._chunk_left = -2  # final chunk
                    self._pending = b""
                    break
                self._chunk_left = size
        self._parse_events()

    def _parse_events(self):
        while True:
            end = self.body.find(b"\n\n")
            if end < 0:
                return
            block, self.body = self.body[:end].decode("utf-8"), self.body[end + 2:]
            ev = {}
            for line in block.split("\n"):
                if line.startswith(":"):
                    self.items.append(("comment", line[1:].strip()))
                    continue
                name, _, value = line.partition(":")
                if value.startswith(" "):
                    value = value[1:]
                if name == "retry":
                    self.items.append(("retry", int(value)))
                elif name == "data":
                    ev["data"] = ev["data"] + "\n" + value if "data" in ev else value
                elif name in ("id", "event"):
                    ev[name] = value
            if ev:
                self.items.append(("event", ev))

    def wait_headers(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while self.status is None and not self.eof:
            if time.monotonic() > deadline:
                raise AssertionError("no response headers within %.1fs" % timeout)
            self._recv(deadline - time.monotonic())
        if self.status is None:
            raise AssertionError("connection closed before the headers: %r" % self.raw)
        return self.status

    def events(self):
        return [ev for kind, ev in self.items if kind == "event"]

    def comments(self):
        return [c for kind, c in self.items if kind == "comment"]

    def summary(self):
        return [(k, v.get("id"), v.get("event")) if k == "event" else (k, v)
                for k, v in self.items[-12:]] + ["%d items" % len(self.items)]

    def wait(self, predicate, timeout=10.0, what="events"):
        """Reads until predicate(self) is true (returned) or the deadline (AssertionError)."""
        deadline = time.monotonic() + timeout
        while True:
            v = predicate(self)
            if v:
                return v
            if self.eof:
                raise AssertionError("stream ended while waiting for %s; got %r"
                                     % (what, self.summary()))
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for %s; got %r" % (what, self.summary()))
            self._recv(min(0.2, deadline - time.monotonic()))

    def wait_events(self, n, timeout=10.0):
        self.wait(lambda s: len(s.events()) >= n, timeout, "%d events" % n)
        return self.events()

    def wait_eof(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not self.eof:
            if time.monotonic() > deadline:
                raise AssertionError("the stream did not end within %.1fs" % timeout)
            self._recv(deadline - time.monotonic())
        return self

    def wait_events_in_thread(self, n, timeout=60.0):
        """Starts reading until 'n' events in a thread; returns a function that joins it and
        returns the events (or raises what the thread raised)."""
        out = {}

        def run():
            try:
                out["events"] = self.wait_events(n, timeout)
            except BaseException as e:  # noqa: BLE001 - re-raised by join()
                out["error"] = e

        t = threading.Thread(target=run, daemon=True)
        t.start()

        def join():
            t.join(timeout + 5)
            if "error" in out:
                raise out["error"]
            return out["events"]
        return join

    def read_nothing_for(self, seconds):
        """Reads for 'seconds' and returns the events that arrived meanwhile."""
        before = len(self.events())
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.eof:
            self._recv(deadline - time.monotonic())
        return self.events()[before:]


def event_json(org, kind="message", channel="telegram", conv="cv_a", n=0, pad=0):
    """A well-formed event (docs/schema) of 'kind', as the gateway would write it."""
    ev = {"v": 1, "id": "ev_%s_%d" % (kind, n), "kind": kind,
          "direction": "out" if kind == "outbound" else "in", "channel": channel,
          "org_id": org, "connection_id": "cn_feed", "conversation_id": conv,
          "contact": {"id": "ct_feed", "external_id": "4242"},
          "timestamp": 1732200000000 + n, "received_at": 1732200000123 + n}
    text = "x" * pad if pad else "event %d" % n
    if kind in ("message", "edit"):
        ev["message"] = {"external_id": "4242:%d" % n, "type": "text", "text": text}
    elif kind == "postback":
        ev["message"] = {"external_id": "4242:%d" % n, "type": "interactive", "payload": text}
    elif kind == "reaction":
        ev["reaction"] = {"message_external_id": "4242:%d" % n, "emoji": "\U0001F44D"}
    elif kind == "status":
        ev["status"] = {"message_external_id": "4242:%d" % n, "state": "delivered"}
    elif kind == "referral":
        ev["referral"] = {"source_type": "ad", "ref": text}
    elif kind == "outbound":
        ev.update(command_id="cmd_%d" % n, part=1, author={"type": "assistant"},
                  status={"state": "sent"},
                  message={"external_id": "4242:%d" % n, "type": "text", "text": text})
    elif pad:
        ev["message"] = {"type": "text", "text": text}
    return json.dumps(ev, separators=(",", ":"))


class FeedTestCase(H.GatewayTestCase):
    PREFIX = "tfd:"
    EXTRA_ENV = {"SWITCHBOARD_INBOX_HEARTBEAT_MS": "400",
                 "SWITCHBOARD_INBOX_MAX_PENDING_BYTES": "65536"}

    def stream_key(self, org=None):
        return "%sinbox:{%s}" % (self.PREFIX, org or self.org)

    def xadd(self, data, org=None):
        return self.redis.command("XADD", self.stream_key(org), "*", "event", data).decode()

    def open(self, query="", key=..., headers=None, gw=None, **kw):
        path = "/orgs/c/inbox/events" + ("?" + query if query else "")
        s = SSE((gw or self.gw).port, path, key=self.key if key is ... else key,
                headers=headers, **kw)
        self.addCleanup(s.close)
        return s

    def open_ok(self, *a, **kw):
        s = self.open(*a, **kw)
        self.assertEqual(s.wait_headers(), 200, s.raw)
        self.assertTrue(s.headers["content-type"].startswith("text/event-stream"), s.headers)
        self.assertEqual(s.headers.get("cache-control"), "no-cache")
        # retry: comes first, before any event
        s.wait(lambda x: x.items, 5, "retry")
        self.assertEqual(s.items[0], ("retry", 3000))
        return s

    def metrics(self, gw=None):
        return H.parse_prometheus((gw or self.gw).http("GET", "/metrics").body.decode())

    def metric(self, name, gw=None):
        return H.metric_sum(self.metrics(gw), name)

    def wait_subscribers(self, n, gw=None):
        H.wait_until(lambda: self.metric("switchboard_inbox_subscribers", gw) == n, 10,
                     "%d subscribers" % n)

    def follow_marker(self, s, org=None):
        """Appends a marker event and reads until it arrives: everything before it was seen."""
        mid = self.xadd(event_json(org or self.org, kind="status", n=999999), org)
        s.wait(lambda x: any(e["id"] == mid for e in x.events()), 10, "marker " + mid)
        return mid


class FeedEventsTest(FeedTestCase):

    def test_events_carry_stream_ids_kinds_and_json(self):
        s = self.open_ok()
        self.wait_subscribers(1)
        kinds = ["message", "status", "outbound", "reaction", "edit", "postback", "referral"]
        sent = []
        for i, k in enumerate(kinds):
            data = event_json(self.org, kind=k, n=i)
            sent.append((self.xadd(data), k, data))
        evs = s.wait_events(len(sent))
        self.assertEqual([(e["id"], e["event"], e["data"]) for e in evs], sent)
        # each id is the entry id of sb:inbox:{ORG}, in stream order
        ids = [e[0].decode() for e in self.redis.command("XRANGE", self.stream_key(), "-", "+")]
        self.assertEqual([e["id"] for e in evs], ids)
        for e in evs:
            self.assertEqual(json.loads(e["data"])["org_id"], self.org)
        self.assertGreaterEqual(self.metric("switchboard_inbox_events_delivered_total"),
                                len(sent))

    def test_without_a_last_id_the_stream_starts_now(self):
        old = self.xadd(event_json(self.org, n=1))
        s = self.open_ok()
        self.wait_subscribers(1)
        new = self.xadd(event_json(self.org, n=2))
        evs = s.wait_events(1)
        self.assertEqual([e["id"] for e in evs], [new])
        self.assertNotIn(old, [e["id"] for e in s.read_nothing_for(0.3)])

    def test_filters(self):
        everything = self.open_ok()
        by_kind = self.open_ok("kind=status,reaction")
        by_channel = self.open_ok("channel=whatsapp")
        by_conv = self.open_ok("conversation_id=cv_b")
        combined = self.open_ok("kind=message&channel=telegram&conversation_id=cv_b")
        self.wait_subscribers(5)
        plan = [("message", "telegram", "cv_a"), ("status", "whatsapp", "cv_b"),
                ("reaction", "telegram", "cv_b"), ("message", "telegram", "cv_b"),
                ("outbound", "whatsapp", "cv_a"), ("message", "instagram", "cv_c")]
        ids = [self.xadd(event_json(self.org, kind=k, channel=c, conv=cv, n=i))
               for i, (k, c, cv) in enumerate(plan)]
        everything.wait_events(len(plan))

        def expect(sub, pred):
            want = [ids[i] for i, p in enumerate(plan) if pred(*p)]
            sub.wait_events(len(want))
            got = [e["id"] for e in sub.events()]
            self.assertEqual(got, want)

        expect(by_kind, lambda k, c, cv: k in ("status", "reaction"))
        expect(by_channel, lambda k, c, cv: c == "whatsapp")
        expect(by_conv, lambda k, c, cv: cv == "cv_b")
        expect(combined, lambda k, c, cv: (k, c, cv) == ("message", "telegram", "cv_b"))
        # nothing more arrives on the filtered streams afterwards (a later matching-nothing
        # event for everything, then a short read)
        last = self.xadd(event_json(self.org, kind="edit", channel="messenger", conv="cv_z"))
        everything.wait(lambda x: x.events()[-1]["id"] == last, 10, "last")
        for sub in (by_kind, by_channel, by_conv, combined):
            self.assertNotIn(last, [e["id"] for e in sub.read_nothing_for(0.2)])

    def test_bad_parameters(self):
        for q in ("kind=bogus", "channel=sms", "conversation_id=a/b", "kind=", "kind=message,"):
            s = self.open(q)
            self.assertEqual(s.wait_headers(), 400, q)
        for h in ("garbage", "12", "1-2-3", "-1-0"):
            s = self.open(headers={"Last-Event-ID": h})
            self.assertEqual(s.wait_headers(), 400, h)
        s = self.open("last_event_id=nope")
        self.assertEqual(s.wait_headers(), 400)
        self.assertError(self.api("GET", "/orgs/c/inbox/events", key=None), 401, "unauthorized")
        self.assertError(self.api("GET", "/orgs/c/inbox/events", key="sbk_wrong"), 401)
        r = self.api("POST", "/orgs/c/inbox/events", {})
        self.assertError(r, 405)
        self.assertEqual(r.headers.get("allow"), "GET")
        r = self.api("GET", "/orgs/c/inbox/tickets")
        self.assertError(r, 405)
        self.assertEqual(r.headers.get("allow"), "POST")

    def test_webhook_event_reaches_the_feed(self):
        with open(os.path.join(REPO_FIXTURES, "telegram", "text_private.json"),
                  encoding="utf-8") as f:
            fx = json.load(f)
        token = H.fixture_token(fx, "feed-test-token")
        conn = self.create_telegram(token)
        asst = self.create_assistant("feed")
        self.bind(asst["id"], conn["id"], fx["binding_external_id"])
        s = self.open_ok("kind=message")
        self.wait_subscribers(1)
        self.assertStatus(self.post_telegram_update(conn, token, fx["body"]), 200)
        ev = s.wait_events(1)[0]
        entries = self.redis.command("XRANGE", self.stream_key(), "-", "+")
        self.assertEqual(ev["id"], entries[-1][0].decode())
        self.assertEqual(json.loads(ev["data"]), json.loads(entries[-1][1][1]))
        self.assertEqual(ev["event"], "message")
        self.assertEqual(json.loads(ev["data"])["connection_id"], conn["id"])


    def test_answers_are_the_documented_ones(self):
        doc = OA.load_doc()
        ev = doc["paths"]["/orgs/c/inbox/events"]["get"]
        tk = doc["paths"]["/orgs/c/inbox/tickets"]["post"]
        seen = []
        for q, kw in (("", {}), ("kind=bogus", {}), ("", {"key": None}),
                      ("ticket=tk_unknown", {"key": None})):
            s = self.open(q, **kw)
            seen.append(s.wait_headers())
            self.assertIn(str(s.status), ev["responses"], q)
            s.close()
        self.assertIn("text/event-stream", ev["responses"]["200"]["content"])
        r = self.api("POST", "/orgs/c/inbox/tickets")
        seen.append(r.status)
        schema = tk["responses"]["201"]["content"]["application/json"]["schema"]
        self.assertEqual(OA.validate(doc, schema, r.json), [])
        self.assertNotEqual(OA.validate(doc, schema, dict(r.json, extra=1)), [])
        r = self.api("POST", "/orgs/c/inbox/tickets", key=None)
        seen.append(r.status)
        err = OA.resolve(doc, tk["responses"]["401"])["content"]["application/json"]["schema"]
        self.assertEqual(OA.validate(doc, err, r.json), [])
        for code in seen:
            self.assertTrue(str(code) in ev["responses"] or str(code) in tk["responses"], code)
        self.assertEqual(seen, [200, 400, 401, 401, 201, 401])


class FeedResumeTest(FeedTestCase):
    # Resuming, not cutting off, is what this class checks: the default bound (1 MiB) holds a
    # whole burst however slowly this process reads it (slow subscribers: FeedConnectionsTest).
    EXTRA_ENV = dict(FeedTestCase.EXTRA_ENV, SWITCHBOARD_INBOX_MAX_PENDING_BYTES="1048576")

    def test_reconnect_mid_burst_gets_every_later_event_once_in_order(self):
        s = self.open_ok()
        self.wait_subscribers(1)
        total = 400
        ids = []
        done = threading.Event()

        def burst():
            with self.redis.client() as c:
                for i in range(total):
                    ids.append(c.command("XADD", self.stream_key(), "*", "event",
                                         event_json(self.org, n=i)).decode())
            done.set()

        t = threading.Thread(target=burst)
        t.start()
        self.addCleanup(t.join)
        s.wait_events(25, 20)
        s.close()  # mid-burst
        seen = [e["id"] for e in s.events()]
        last = seen[-1]
        # reconnect with the last id, alternately by header and by parameter
        r = self.open_ok(headers={"Last-Event-ID": last})
        t.join(30)
        self.assertTrue(done.is_set())
        rest = r.wait_events(total - len(seen), 30)
        got = seen + [e["id"] for e in rest]
        self.assertEqual(got, ids, "every event once, in stream order")
        self.assertEqual(r.read_nothing_for(0.3), [])

        # a second cut, resumed by the query parameter, with more events while away
        cut = got[total // 2]
        more = [self.xadd(event_json(self.org, n=1000 + i)) for i in range(30)]
        q = self.open_ok("last_event_id=" + cut)
        want = ids[total // 2 + 1:] + more
        evs = q.wait_events(len(want), 30)
        self.assertEqual([e["id"] for e in evs], want)

    def test_resume_from_the_last_entry_and_while_others_are_live(self):
        live = self.open_ok()
        self.wait_subscribers(1)
        a = [self.xadd(event_json(self.org, n=i)) for i in range(5)]
        live.wait_events(5)
        # resume exactly at the newest entry: nothing, then what follows
        r = self.open_ok(headers={"Last-Event-ID": a[-1]})
        # and from the middle while the shared read is already further
        m = self.open_ok(headers={"Last-Event-ID": a[1]})
        self.wait_subscribers(3)
        b = [self.xadd(event_json(self.org, n=10 + i)) for i in range(5)]
        self.assertEqual([e["id"] for e in r.wait_events(5)], b)
        self.assertEqual([e["id"] for e in m.wait_events(8)], a[2:] + b)
        self.assertEqual([e["id"] for e in live.wait_events(10)], a + b)
        for sub in (r, m, live):
            self.assertEqual(sub.read_nothing_for(0.2), [])
            self.assertFalse([e for e in sub.events() if e["event"] == "reset"])

    def test_trimmed_position_starts_with_one_reset(self):
        old = [self.xadd(event_json(self.org, n=i)) for i in range(10)]
        self.redis.command("XTRIM", self.stream_key(), "MAXLEN", "3")
        resets = self.metric("switchboard_inbox_resets_total")
        s = self.open_ok(headers={"Last-Event-ID": old[2]})
        ev = s.wait_events(1)[0]
        self.assertEqual(ev["event"], "reset")
        # the reset carries the position the stream follows from: the current end
        self.assertEqual(ev["id"], old[-1])
        self.assertEqual(json.loads(ev["data"])["last_event_id"], old[2])
        new = self.xadd(event_json(self.org, n=50))
        evs = s.wait_events(2)
        self.assertEqual([e["id"] for e in evs], [old[-1], new])
        self.assertEqual(len([e for e in s.events() if e["event"] == "reset"]), 1)
        self.assertEqual(self.metric("switchboard_inbox_resets_total"), resets + 1)
        # reconnecting with the reset's id is an ordinary resume
        r = self.open_ok(headers={"Last-Event-ID": ev["id"]})
        self.assertEqual([e["id"] for e in r.wait_events(1)], [new])
        # a kept entry resumes without a reset
        k = self.open_ok(headers={"Last-Event-ID": old[7]})
        self.assertEqual([e["id"] for e in k.wait_events(3)], old[8:] + [new])
        # a position the stream never reached is a reset too
        f = self.open_ok(headers={"Last-Event-ID": "99999999999999-0"})
        self.assertEqual(f.wait_events(1)[0]["event"], "reset")
        self.assertEqual(self.metric("switchboard_inbox_resets_total"), resets + 2)

    def test_empty_new_stream_resumes_from_zero_without_reset(self):
        s = self.open_ok(headers={"Last-Event-ID": "0-0"})
        self.wait_subscribers(1)
        a = self.xadd(event_json(self.org, n=1))
        self.assertEqual([(e["id"], e["event"]) for e in s.wait_events(1)], [(a, "message")])


class FeedTenancyAndTicketsTest(FeedTestCase):

    def test_another_orgs_key_or_ticket_sees_nothing_of_this_org(self):
        other = self.new_org()
        other_key = self.gw.keys_create(other)
        mine = self.open_ok()
        theirs = self.open_ok(key=other_key)
        t = self.api("POST", "/orgs/c/inbox/tickets", key=other_key)
        self.assertStatus(t, 201)
        by_ticket = self.open_ok("ticket=" + t.json["ticket"], key=None)
        self.wait_subscribers(3)
        a = [self.xadd(event_json(self.org, n=i)) for i in range(5)]
        mine.wait_events(5)
        m = self.follow_marker(theirs, other)
        by_ticket.wait(lambda x: any(e["id"] == m for e in x.events()), 10, "marker")
        for sub in (theirs, by_ticket):
            got = [e["id"] for e in sub.events()]
            self.assertEqual(got, [m])
            for e in sub.events():
                self.assertEqual(json.loads(e["data"])["org_id"], other)
        self.assertEqual([e["id"] for e in mine.events()], a)
        # resuming with this org's ids under the other key stays on the other org's stream
        r = self.open_ok(key=other_key, headers={"Last-Event-ID": m})
        self.follow_marker(r, other)
        self.assertFalse(set(a) & {e["id"] for e in r.events()})

    def test_ticket_works_once_and_expires(self):
        r = self.api("POST", "/orgs/c/inbox/tickets")
        self.assertStatus(r, 201)
        ticket = r.json["ticket"]
        self.assertRegex(ticket, r"^tk_[A-Za-z0-9]{32}$")
        self.assertRegex(r.json["expires_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        ttl = self.redis.command("TTL", "%sticket:{%s}" % (self.PREFIX, ticket))
        self.assertTrue(0 < ttl <= 60, ttl)
        self.assertError(self.api("POST", "/orgs/c/inbox/tickets", key=None), 401)
        # a ticket is no key for the other routes
        self.assertError(self.api("GET", "/orgs/c/assistants?ticket=" + ticket, key=None), 401)
        s = self.open_ok("ticket=" + ticket, key=None)
        self.wait_subscribers(1)
        a = self.xadd(event_json(self.org, n=1))
        self.assertEqual([e["id"] for e in s.wait_events(1)], [a])
        # used: refused, and stored nowhere any more
        again = self.open("ticket=" + ticket, key=None)
        self.assertEqual(again.wait_headers(), 401)
        self.assertIsNone(self.redis.command("GET", "%sticket:{%s}" % (self.PREFIX, ticket)))
        for bogus in ("tk_" + "A" * 32, "nope", "tk_%2F..%2F"):
            b = self.open("ticket=" + bogus, key=None)
            self.assertEqual(b.wait_headers(), 401, bogus)
        # expiry: the key's TTL runs out (shortened here instead of waiting 60 s)
        t2 = self.api("POST", "/orgs/c/inbox/tickets").json["ticket"]
        self.redis.command("PEXPIRE", "%sticket:{%s}" % (self.PREFIX, t2), 1)
        H.wait_until(lambda: self.redis.command(
            "EXISTS", "%sticket:{%s}" % (self.PREFIX, t2)) == 0, 5, "ticket expired")
        e = self.open("ticket=" + t2, key=None)
        self.assertEqual(e.wait_headers(), 401)


class FeedConnectionsTest(FeedTestCase):

    def test_heartbeat_comments(self):
        s = self.open_ok()
        stamps = []

        def two(x):
            n = len(x.comments())
            if n and (not stamps or stamps[-1][0] != n):
                stamps.append((n, time.monotonic()))
            return n >= 4

        s.wait(two, 10, "4 keepalive comments")
        self.assertEqual(set(s.comments()), {"keepalive"})
        gaps = [b[1] - a[1] for a, b in zip(stamps, stamps[1:])]
        # inbox.heartbeat_ms is 400 here: never a longer silence (with slack for a busy box)
        self.assertTrue(all(g < 1.5 for g in gaps), gaps)

    def test_one_redis_read_connection_per_worker(self):
        def clients():
            text = self.redis.command("CLIENT", "LIST").decode()
            return [line for line in text.splitlines() if line]

        subs = [self.open_ok() for _ in range(6)]
        orgs = [self.new_org() for _ in range(3)]
        for o in orgs:
            k = self.gw.keys_create(o)
            subs += [self.open_ok(key=k) for _ in range(4)]
        self.wait_subscribers(len(subs))
        before = len(clients())
        more = [self.open_ok() for _ in range(10)]
        self.wait_subscribers(len(subs) + len(more))
        self.assertEqual(len(clients()), before, "no connection per subscriber")
        blocked = [c for c in clients() if "cmd=xread " in c + " "]
        self.assertLessEqual(len(blocked), 2, blocked)  # 2 workers: one blocking read each
        a = self.xadd(event_json(self.org, n=1))
        for s in subs[:6] + more:
            self.assertEqual([e["id"] for e in s.wait_events(1)], [a])
        for s in subs + more:
            s.close()
        self.wait_subscribers(0)

    def test_client_disconnect_ends_the_subscriber(self):
        base = self.metric("switchboard_inbox_subscribers")
        s = self.open_ok()
        self.wait_subscribers(base + 1)
        s.close()
        # noticed at once (not only at the next write)
        self.wait_subscribers(base)

    def test_slow_subscriber_is_cut_off_and_memory_stays_bounded(self):
        limit = 65536
        slow = self.open(rcvbuf=4096)  # reads nothing from here on
        # another subscriber of the same stream, reading its small events all along
        fast = self.open_ok("kind=status")
        self.wait_subscribers(2)
        cut = self.metric("switchboard_inbox_subscribers_cut_off_total")
        pid = self.gw.proc.pid

        def rss_kb():
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])

        rss0 = rss_kb()
        n = 1000  # 8 MB: more than the kernel buffers of the slow connection hold
        ids, small = [], []
        peak = 0
        join = fast.wait_events_in_thread(n // 10)
        with self.redis.client() as c:
            for i in range(n):
                ids.append(c.command("XADD", self.stream_key(), "*", "event",
                                     event_json(self.org, n=i, pad=8000)).decode())
                if i % 10 == 0:
                    small.append(c.command("XADD", self.stream_key(), "*", "event",
                                           event_json(self.org, kind="status", n=i)).decode())
                    peak = max(peak, self.metric("switchboard_inbox_pending_bytes"))
        H.wait_until(lambda: self.metric("switchboard_inbox_subscribers_cut_off_total") == cut + 1,
                     30, "the slow subscriber cut off")
        # the subscriber that keeps up got everything it asked for, and was not cut off
        self.assertEqual([e["id"] for e in join()], small)
        self.assertFalse(fast.eof)
        self.wait_subscribers(1)
        # what the gateway held for its subscribers never passed the limit (plus one event)
        self.assertLessEqual(peak, limit + 9000, peak)
        grown = rss_kb() - rss0
        self.assertLess(grown, 96 * 1024, "RSS grew by %d KiB" % grown)
        # the slow one's connection was closed: draining it ends in EOF, as an error
        slow.wait_eof(30)
        self.assertEqual(slow.status, 200)
        got = [e["id"] for e in slow.events() if e["event"] == "message"]
        self.assertLess(len(got), n)
        self.assertTrue(slow.broken, "ended as an error, not cleanly")
        self.assertEqual(got, ids[:len(got)])
        # and it resumes by id
        last = slow.events()[-1]["id"]
        r = self.open_ok("kind=message", headers={"Last-Event-ID": last})
        rest = r.wait_events_in_thread(n - len(got))()
        self.assertEqual(got + [e["id"] for e in rest], ids)

    def test_shutdown_with_open_subscribers_exits_promptly(self):
        gw = self.make_gateway(extra_env=dict(self.DEFAULT_ENV, **self.EXTRA_ENV,
                                              SWITCHBOARD_SHUTDOWN_TIMEOUT_MS="20000"))
        key = gw.keys_create(self.org)
        subs = [self.open_ok(key=key, gw=gw) for _ in range(3)]
        # a slow reader on another org's stream, with a write stuck in flight
        other = self.new_org()
        slow = self.open(key=gw.keys_create(other), gw=gw, rcvbuf=4096)
        self.assertEqual(slow.wait_headers(), 200)
        self.wait_subscribers(4, gw)
        joins = [s.wait_events_in_thread(20) for s in subs]
        for i in range(20):
            self.xadd(event_json(self.org, n=i))
        for i in range(6):  # about 48 KB: within the limit, more than a 4 KB window
            self.xadd(event_json(other, n=i, pad=8000), other)
        for j in joins:
            self.assertEqual(len(j()), 20)
        t0 = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        for s in subs:
            s.wait_eof(10)
            self.assertFalse(s.broken, "a clean end of stream")
            self.assertEqual(s._chunk_left, -2, "the final chunk was sent")
        gw.proc.wait(10)
        self.assertLess(time.monotonic() - t0, 5.0, "shutdown did not wait on open streams")
        self.assertEqual(gw.proc.returncode, 0, gw.stderr_text()[-3000:])
        gw.assert_no_sanitizer_report()


class FeedRedisRestartTest(FeedTestCase):

    def test_open_streams_survive_a_redis_restart(self):
        s = self.open_ok()
        self.wait_subscribers(1)
        a = self.xadd(event_json(self.org, n=1))
        self.assertEqual([e["id"] for e in s.wait_events(1)], [a])
        self.redis.stop(persist=True)
        n = len(s.comments())
        s.wait(lambda x: len(x.comments()) > n, 10, "a heartbeat while Redis is down")
        self.redis.start()
        self.gw.wait_ready()
        b = self.xadd(event_json(self.org, n=2))
        evs = s.wait_events(2, 20)
        self.assertEqual([e["id"] for e in evs], [a, b], "the same stream goes on, no reset")
        self.assertFalse(s.eof)


if __name__ == "__main__":
    H.main()

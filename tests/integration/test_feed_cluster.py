"""
The live inbox feed on a Redis Cluster (three primaries, three replicas;
tests/integration/cluster.py). The keys of one XREAD must share a slot, so the feed reads each
followed slot on a blocked connection of its own: here two orgs whose inbox streams live on
different primaries and a third on the same primary as the first, each subscriber getting its
own org's events, in order, once; resumed by Last-Event-ID (the catch-up's XRANGE routed to the
stream's node); and still following its stream after the stream's slot moved to another
primary (MOVED).

The API keys are written into the cluster as `switchboard keys create` writes them (the
management scripts do not all run on a cluster yet): each on the primary that also holds the
rate-limit window of 127.0.0.1, since the authentication script touches both.
"""

import hashlib
import os
import secrets
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from cluster import RedisCluster  # noqa: E402
from test_feed import SSE, event_json  # noqa: E402

PREFIX = "sb:"


class FeedOnClusterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rc = RedisCluster().start()
        cls.addClassCleanup(cls.rc.stop)
        cls.gw = H.Gateway(cls.rc, prefix=PREFIX,
                           extra_env={"SWITCHBOARD_REDIS_TIMEOUT_MS": "3000",
                                      "SWITCHBOARD_WORKERS": "1",
                                      "SWITCHBOARD_INBOX_HEARTBEAT_MS": "1000"})
        cls.addClassCleanup(cls.gw.cleanup)
        cls.gw.start(timeout=30)
        primaries = cls.rc.primary_ports()
        a = cls.org_on(primaries[0], "cla")
        b = cls.org_on(primaries[1], "clb")
        c = cls.org_on(primaries[0], "clc", avoid_slot=cls.rc.key_slot(cls.stream(a).encode()))
        cls.orgs = (a, b, c)
        cls.keys = {org: cls.make_key(org) for org in cls.orgs}

    @classmethod
    def stream(cls, org):
        return "%sinbox:{%s}" % (PREFIX, org)

    @classmethod
    def org_on(cls, port, base, avoid_slot=None):
        """An org id whose inbox stream lives on the primary at 'port'."""
        for i in range(100000):
            org = "%s%d" % (base, i)
            key = cls.stream(org).encode()
            if cls.rc.primary_of_key(key) == port and cls.rc.key_slot(key) != avoid_slot:
                return org
        raise AssertionError("no org id for port %d" % port)

    @classmethod
    def make_key(cls, org):
        """An API key of 'org', written where the gateway looks it up (apikey:{sha256}, a
        slot of its own)."""
        key = "sk_" + secrets.token_hex(16)
        name = "%sapikey:{%s}" % (PREFIX, hashlib.sha256(key.encode()).hexdigest())
        cls.rc.node(cls.rc.primary_of_key(name.encode())).command(
            "HSET", name, "org", org, "created_at", str(int(time.time() * 1000)))
        return key

    def on_cluster(self, *args):
        return self.rc.node(self.rc.primary_of_key(args[1].encode())).command(*args)

    def xadd(self, org, n):
        return self.on_cluster("XADD", self.stream(org), "*", "event",
                               event_json(org, n=n)).decode()

    def open(self, org, headers=None):
        """A stream of 'org' with status 200 and its retry: line. The authentication script
        runs on any primary while the management scripts do not all run on a cluster yet;
        an answer other than 200 is asked again until the deadline."""
        got = []

        def attempt():
            s = SSE(self.gw.port, "/orgs/c/inbox/events", key=self.keys[org], headers=headers)
            self.addCleanup(s.close)
            status = s.wait_headers()
            got.append(status)
            if status != 200:
                s.close()
                return None
            s.wait(lambda x: x.items, 5, "retry")
            return s
        return H.wait_until(attempt, 30, "a 200 stream for %s (got %r)" % (org, got[-5:]))

    def ids_of(self, s, org):
        evs = s.events()
        for e in evs:
            self.assertIn('"org_id":"%s"' % org, e["data"], "another org's event: %r" % e)
        return [e["id"] for e in evs]

    def test_each_org_gets_its_own_events_in_order_once(self):
        a, b, c = self.orgs
        self.assertNotEqual(self.rc.primary_of_key(self.stream(a).encode()),
                            self.rc.primary_of_key(self.stream(b).encode()))
        self.assertEqual(self.rc.primary_of_key(self.stream(a).encode()),
                         self.rc.primary_of_key(self.stream(c).encode()))
        subs = {org: self.open(org) for org in self.orgs}
        sent = {org: [] for org in self.orgs}
        for n in range(30):
            for org in self.orgs:
                sent[org].append(self.xadd(org, n))
        for org, s in subs.items():
            s.wait_events(len(sent[org]), 20)
        # nothing more comes (no double delivery), and each has exactly its own, in order
        for org, s in subs.items():
            self.assertEqual(s.read_nothing_for(0.5), [])
            self.assertEqual(self.ids_of(s, org), sent[org], org)

        # Resume by id: the catch-up reads the stream on its own node.
        s = subs[b]
        s.close()
        more = [self.xadd(b, 100 + n) for n in range(5)]
        r = self.open(b, headers={"Last-Event-ID": sent[b][9]})
        r.wait_events(len(sent[b]) - 10 + len(more), 20)
        self.assertEqual(self.ids_of(r, b), sent[b][10:] + more)

    def test_a_stream_whose_slot_moves_is_still_followed(self):
        a = self.org_on(self.rc.primary_ports()[2], "cld")  # an org of its own: its slot moves
        self.keys[a] = self.make_key(a)
        s = self.open(a)
        first = [self.xadd(a, n) for n in range(5)]
        s.wait_events(5, 20)
        slot = self.rc.key_slot(self.stream(a).encode())
        src = self.rc.primary_of_slot(slot)
        dst = [p for p in self.rc.primary_ports() if p != src][0]
        self.rc.migrate_slot(slot, dst)
        self.assertEqual(self.rc.primary_of_key(self.stream(a).encode()), dst)
        later = [self.xadd(a, 50 + n) for n in range(5)]
        s.wait_events(10, 30)
        self.assertEqual(s.read_nothing_for(0.5), [])
        self.assertEqual(self.ids_of(s, a)[-10:], first + later)

    def tearDown(self):
        self.gw.assert_no_sanitizer_report()

    @classmethod
    def tearDownClass(cls):
        # a clean stop with subscribers of several slots open
        try:
            assert cls.gw.stop() == 0
        finally:
            cls.gw.assert_no_sanitizer_report()


if __name__ == "__main__":
    unittest.main(verbosity=2)

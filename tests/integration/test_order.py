"""
Outbound guarantees across gateways (contract sections 1, 2 and 5): with several gateways on
one Redis, each conversation's commands reach the provider in the order they were added to
sb:out, whichever gateway holds them; a command id is sent once; one connection's pacing is
one budget shared by every gateway; a dead gateway's commands are taken over in order; and a
gateway killed and restarted under a new consumer name keeps every conversation's order.
Each test runs twice: on one redis-server, and on a 3-primary, 3-replica Redis Cluster where
the conversations are made by webhooks through the gateway (the *OnCluster classes).
"""

import json
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import RedisCluster  # noqa: E402
from harness import Gateway, wait_until  # noqa: E402
from test_outbound import OutEnv  # noqa: E402


def timed(fake):
    """Records each request's arrival time (monotonic seconds) in its 't' field."""
    record = fake._record

    def _record(rec):
        rec["t"] = time.monotonic()
        record(rec)
    fake._record = _record


def sent_count(gw):
    """The gateway's switchboard_outbound_total of sent Telegram parts."""
    for line in gw.http("GET", "/metrics").body.decode().splitlines():
        if line.startswith('switchboard_outbound_total{channel="telegram",result="sent"}'):
            return int(float(line.split()[-1]))
    return 0


class OrderBase(unittest.TestCase):
    RATE = "5000"
    RECLAIM_MS = "2000"

    def setUp(self):
        self.env = OutEnv(extra_env={"SWITCHBOARD_OUTBOUND_RATE_TELEGRAM": self.RATE,
                                     "SWITCHBOARD_OUTBOUND_RECLAIM_IDLE_MS": self.RECLAIM_MS})
        self.others = []

    def tearDown(self):
        for gw in self.others:
            gw.stop()
            gw.cleanup()
        self.env.stop()

    def second_gateway(self, **kw):
        e = self.env
        gw = Gateway(e.redis, e.tg, e.graph, data_dir=e.gw.data_dir,  # the same master key
                     extra_env=dict(e.gw.extra_env, **kw))
        self.others.append(gw)
        return gw.start()

    def conversations(self, n, base):
        e = self.env
        chats = [base + i for i in range(n)]
        convs = [e.telegram_conversation(chat, base * 10 + i) for i, chat in enumerate(chats)]
        return chats, convs

    def add(self, convs, start, count, tag):
        """Adds commands start..start+count-1 to every conversation, interleaved."""
        for n in range(start, start + count):
            for i, cv in enumerate(convs):
                self.env.xadd({"id": "%s-%d-%d" % (tag, i, n), "conversation_id": cv,
                               "type": "text", "text": "%s:%d:%d" % (tag, i, n)})

    def sends(self, tag):
        """{conversation index: [command number, ...]} in the order the provider got them."""
        out = {}
        for r in self.env.tg.requests(method="sendmessage"):
            t, i, n = json.loads(r["body"])["text"].split(":")
            if t == tag:
                out.setdefault(int(i), []).append(int(n))
        return out

    def wait_all(self, tag, nconv, count, timeout):
        def done():
            got = self.sends(tag)
            return all(len(set(got.get(i, []))) >= count for i in range(nconv))
        wait_until(done, timeout, "every %s command sent" % tag, interval=0.2)

    def assert_in_order(self, tag, nconv, count, max_repeats=0):
        """Each conversation's sends in command order; a command sent again (a gateway died
        between the provider's answer and recording it) only right after itself."""
        got = self.sends(tag)
        repeats = 0
        for i in range(nconv):
            seq = got.get(i, [])
            dedup = [n for k, n in enumerate(seq) if k == 0 or seq[k - 1] != n]
            repeats += len(seq) - len(dedup)
            self.assertEqual(dedup, list(range(count)), "conversation %d in order" % i)
        self.assertLessEqual(repeats, max_repeats, "commands sent twice")

    def wait_acknowledged(self):
        e = self.env
        wait_until(lambda: e.pending() == 0, 20, "sb:out acknowledged")
        wait_until(lambda: not e.r.keys("sb:cq:*"), 20, "every conversation queue empty")


class TestTwoGateways(OrderBase):

    def test_thousand_commands_in_order_once(self):
        e = self.env
        self.second_gateway()
        chats, convs = self.conversations(10, 700000)
        e.tg.clear()
        # Added while both consume: ten rounds of ten per conversation, each round once the
        # previous one is taken in (both gateways are then waiting on sb:out, and Redis hands
        # new entries to the one that waited longest, so both get conversations).
        for k in range(10):
            self.add(convs, k * 10, 10, "two")
            wait_until(lambda: e.pending() == 0, 20, "round %d read" % k)
        self.wait_all("two", 10, 100, 90)
        self.assert_in_order("two", 10, 100)
        self.wait_acknowledged()
        # Both gateways sent (the conversations are shared out by their leases).
        counts = [sent_count(g) for g in [e.gw] + self.others]
        self.assertTrue(all(n > 0 for n in counts), counts)
        for chat, i in zip(chats, range(10)):
            self.assertTrue(all(json.loads(r["body"])["chat_id"] == chat
                                for r in e.tg.requests(method="sendmessage")
                                if json.loads(r["body"])["text"].startswith("two:%d:" % i)))
        # Every command's state says sent, once.
        for i in (0, 9):
            self.assertEqual(e.r.command("HGET", "sb:cmd:{org_in}:two-%d-99" % i, "done"),
                             b"sent")


class TestSharedPacing(OrderBase):
    RATE = "30"

    def test_one_budget_for_both_gateways(self):
        e = self.env
        self.second_gateway()
        _, convs = self.conversations(6, 710000)
        timed(e.tg)
        e.tg.clear()
        self.add(convs, 0, 25, "pace")  # 150 sends of one bot: 5 s at 30/s
        self.wait_all("pace", 6, 25, 60)
        times = sorted(r["t"] for r in e.tg.requests(method="sendmessage"))
        self.assertEqual(len(times), 150)
        t0 = times[0]
        worst = 0
        for k, t in enumerate(times):
            if t < t0 + 1.0:
                continue  # the first second may hold the burst
            n = sum(1 for u in times[k:] if u < t + 1.0)
            worst = max(worst, n)
        self.assertLessEqual(worst, 40, "at most 40 sends in any one-second window")
        span = times[-1] - t0
        self.assertGreater(span, 150 / 30.0 - 1.5, "paced at about 30/s overall")
        self.assert_in_order("pace", 6, 25)


class TestTakeOverInOrder(OrderBase):
    RATE = "200"

    def test_killed_gateway_commands_sent_by_the_other_in_order(self):
        e = self.env
        other = self.second_gateway()
        _, convs = self.conversations(10, 720000)
        e.tg.clear()
        self.add(convs, 0, 30, "kill")
        # Kill the first gateway while it is sending: some of its conversations are mid-way.
        wait_until(lambda: len(e.tg.requests(method="sendmessage")) >= 60, 30, "sends started")
        e.gw.kill()
        killed_at = len(e.tg.requests(method="sendmessage"))
        self.wait_all("kill", 10, 30, 90)
        self.assertGreater(len(e.tg.requests(method="sendmessage")), killed_at)
        # A command may go twice only if the gateway died between the answer and its record.
        self.assert_in_order("kill", 10, 30, max_repeats=10)
        self.wait_acknowledged()
        self.assertTrue(other.running())
        e.gw.start()  # for the clean stop of tearDown


class TestRestartNewName(OrderBase):
    RATE = "300"

    def test_three_kills_keep_every_conversation_in_order(self):
        e = self.env
        # The shipped default consumer name (hostname and pid): a new one after each start.
        self.assertNotIn("SWITCHBOARD_NODE_ID", e.gw.extra_env)
        _, convs = self.conversations(10, 730000)
        e.tg.clear()
        stop = threading.Event()
        added = [0]

        def producer():
            for k in range(60):
                if stop.is_set():
                    return
                self.add(convs, k, 1, "rs")
                added[0] = k + 1
                time.sleep(0.05)
        t = threading.Thread(target=producer, daemon=True)
        t.start()
        try:
            for kill in range(3):
                seen = len(e.tg.requests(method="sendmessage"))
                wait_until(lambda: len(e.tg.requests(method="sendmessage")) > seen + 40, 60,
                           "sends before kill %d" % (kill + 1))
                e.gw.kill()
                e.gw.start()
        finally:
            t.join(30)
            stop.set()
        self.assertEqual(added[0], 60)
        self.wait_all("rs", 10, 60, 120)
        self.assert_in_order("rs", 10, 60, max_repeats=30)
        self.wait_acknowledged()


class ClusterRedis:
    """A 3-primary, 3-replica Redis Cluster as OutEnv's Redis: its URL for the gateways, a
    client that sends each command to the primary of its key (KEYS: of every primary), and
    cleanup() stops it."""

    def __init__(self):
        self.rc = RedisCluster().start()

    @property
    def url(self):
        return self.rc.url

    def client(self):
        return self

    def command(self, *args):
        key = args[1] if len(args) > 1 else b""
        key = key if isinstance(key, bytes) else str(key).encode()
        return self.rc.node(self.rc.primary_of_key(key)).command(*args)

    def keys(self, pattern="*"):
        return self.rc.all_keys(pattern)

    def close(self):
        pass

    def cleanup(self):
        self.rc.stop()


class OnCluster:
    """The same test, its conversations made by webhooks and its commands consumed by two
    gateways (one for the restart test), on a Redis Cluster instead of one redis-server."""

    def setUp(self):
        self.env = OutEnv(extra_env={"SWITCHBOARD_OUTBOUND_RATE_TELEGRAM": self.RATE,
                                     "SWITCHBOARD_OUTBOUND_RECLAIM_IDLE_MS": self.RECLAIM_MS,
                                     "SWITCHBOARD_REDIS_TIMEOUT_MS": "3000"},
                          redis=ClusterRedis())
        self.others = []


class TestTwoGatewaysOnCluster(OnCluster, TestTwoGateways):
    pass


class TestSharedPacingOnCluster(OnCluster, TestSharedPacing):
    pass


class TestTakeOverInOrderOnCluster(OnCluster, TestTakeOverInOrder):
    pass


class TestRestartNewNameOnCluster(OnCluster, TestRestartNewName):
    pass


if __name__ == "__main__":
    unittest.main(verbosity=2)

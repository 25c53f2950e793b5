"""
Webhooks on a Redis Cluster while it changes under them, with redis.wait_replicas 1 (every
200 means each write of the webhook reached a replica): a primary holding the org's slot is
SIGKILLed and its replica promoted (answers are 503 until the old primary is back, as its
replica, to acknowledge), then the slots of the assistant's stream and of the
org are moved to other primaries (one by hand, with ASK redirections, then some more with
`redis-cli --cluster reshard`). A provider that retries every non-200 answer ends with every
event of every webhook in the assistant's stream and in the org's inbox exactly once.
"""

import json
import os
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from cluster import RedisCluster  # noqa: E402
import test_cluster_e2e as E  # noqa: E402
from test_inbound import utf8_bytes  # noqa: E402

N = 600


class Provider(threading.Thread):
    """Sends webhooks 0..N-1 in order, each again until it is answered 200."""

    def __init__(self, test):
        super().__init__(daemon=True)
        self.test = test
        self.done = 0
        self.non_200 = 0
        self.error = None

    def run(self):
        try:
            for i in range(N):
                def attempt(i=i):
                    r = self.test.webhook(i)
                    if r.status != 200:
                        self.non_200 += 1
                    return r.status == 200
                H.wait_until(attempt, 90, "webhook %d answered 200" % i, interval=0.05)
                self.done = i + 1
        except BaseException as e:  # reported by the test
            self.error = e


class ClusterFaultsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rc = RedisCluster().start()
        cls.addClassCleanup(cls.rc.stop)
        E.RC = cls.rc
        cls.env = E.ClusterEnv(extra_env={"SWITCHBOARD_REDIS_WAIT_REPLICAS": "1",
                                          "SWITCHBOARD_REDIS_TIMEOUT_MS": "2000"})
        cls.addClassCleanup(cls.env.stop)
        e = cls.env
        cls.fx = H.load_fixture("telegram", "text_private")
        cls.asst = e.assistant("faults")
        cls.cid, cls.secret = e.telegram_connection(cls.fx["binding_external_id"])
        e.bind(cls.asst, cls.cid, cls.fx["binding_external_id"])

    def webhook(self, i):
        body = json.loads(json.dumps(self.fx["body"]))
        body["update_id"] = 960000000 + i
        body["message"]["message_id"] = 10000 + i
        body["message"]["text"] = "load %d" % i
        return self.env.next_gw().http(
            "POST", "/webhooks/telegram/%s" % self.cid, body=utf8_bytes(body),
            headers={"X-Telegram-Bot-Api-Secret-Token": self.secret}, timeout=10)

    def texts(self, key):
        c = self.rc.node(self.rc.primary_of_key(key.encode()))
        out = []
        for _id, fields in c.command("XRANGE", key, "-", "+") or []:
            d = dict(zip(fields[::2], fields[1::2]))
            ev = json.loads(d[b"event"])
            if ev["kind"] == "message":
                out.append(ev["message"]["text"])
        return out

    def test_failover_and_resharding_under_load(self):
        rc = self.rc
        stream = "sb:in:{%s}" % self.asst
        inbox = "sb:inbox:{org_in}"
        p = Provider(self)
        resharded_at = N
        p.start()
        try:
            H.wait_until(lambda: p.done >= N // 6 or p.error, 60, "a sixth sent")
            # the primary of the org's slot dies; its replica takes over
            victim = rc.primary_of_key(inbox.encode())
            rc.kill_primary_and_wait_failover(victim)
            # until the old primary is back as its replica, the promoted one has no replica
            # and every webhook of the org is answered 503 (wait_replicas 1)
            rc.restart_node(victim)
            H.wait_until(lambda: p.done >= N // 3 or p.error, 90, "a third sent")
            # the assistant's stream moves by hand (ASK while its keys move), the org's too
            others = [q for q in rc.primary_ports() if q != rc.primary_of_key(stream.encode())]
            rc.migrate_slot(rc.key_slot(stream.encode()), others[0])
            others = [q for q in rc.primary_ports() if q != rc.primary_of_key(inbox.encode())]
            rc.migrate_slot(rc.key_slot(inbox.encode()), others[0])
            H.wait_until(lambda: p.done >= N // 2 or p.error, 90, "half sent")
            ports = rc.primary_ports()
            rc.reshard(ports[0], ports[1], 200)
            resharded_at = p.done
        finally:
            p.join(120)
        self.assertIsNone(p.error, [gw.stderr_text()[-3000:] for gw in self.env.gws])
        self.assertEqual(p.done, N)
        self.assertGreater(p.non_200, 0, "the failover was seen by the webhooks")
        self.assertLess(resharded_at, N, "the resharding ended before the load")
        # the moved slots were followed (MOVED / ASK), and counted
        redirects = sum(H.metric_sum(H.parse_prometheus(gw.http("GET", "/metrics").body.decode()),
                                     "switchboard_redis_redirects_total")
                        for gw in self.env.gws)
        self.assertGreater(redirects, 0, "redirections counted in /metrics")
        want = ["load %d" % i for i in range(N)]
        for key in (stream, inbox):
            got = self.texts(key)
            self.assertEqual(sorted(got), sorted(want), "%s: every event once" % key)
            self.assertEqual(got, want, "%s: in the order sent" % key)


if __name__ == "__main__":
    H.main()

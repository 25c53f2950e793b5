"""
redis.wait_replicas (contract section 1): with a primary and a real replica
(redis-server replicating the primary), a webhook is answered 200 only once that many replicas
acknowledged its events; when too few do within the time allowed, the answer is 503 (the
provider retries), counted, and the event is still stored once.
"""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import RedisServer, wait_until  # noqa: E402
from test_inbound import Env, utf8_bytes  # noqa: E402


class Replica(RedisServer):
    """A redis-server replicating 'primary'."""

    def __init__(self, primary):
        super().__init__(validate_events=False)
        self.primary = primary

    def start(self, timeout=10.0):
        super().start(timeout)
        self.command("REPLICAOF", "127.0.0.1", str(self.primary.port))
        wait_until(lambda: b"master_link_status:up" in self.command("INFO", "replication"),
                   timeout, "replica linked to its primary")
        return self


class WaitBase(unittest.TestCase):
    WAIT = "1"

    @classmethod
    def setUpClass(cls):
        cls.env = Env(extra_env={"SWITCHBOARD_REDIS_WAIT_REPLICAS": cls.WAIT,
                                 "SWITCHBOARD_REDIS_TIMEOUT_MS": "2000"})
        cls.replica = Replica(cls.env.redis).start()
        e = cls.env
        fx = harness.load_fixture("telegram", "text_private")
        cls.asst = e.assistant("wait")
        cls.cid, cls.secret = e.telegram_connection(fx["binding_external_id"])
        e.bind(cls.asst, cls.cid, fx["binding_external_id"])
        cls.fixture = fx

    @classmethod
    def tearDownClass(cls):
        try:
            cls.replica.cleanup()
        finally:
            cls.env.stop()

    def webhook(self, update_id):
        body = json.loads(json.dumps(self.fixture["body"]))
        body["update_id"] = update_id
        return self.env.gw.http("POST", "/webhooks/telegram/%s" % self.cid,
                                body=utf8_bytes(body),
                                headers={"X-Telegram-Bot-Api-Secret-Token": self.secret})

    def replica_timeouts(self):
        m = harness.parse_prometheus(self.env.gw.http("GET", "/metrics").body.decode())
        return harness.metric_sum(m, "switchboard_webhook_replica_timeouts_total")

    def stream_len(self, server):
        return server.command("XLEN", "sb:in:{%s}" % self.asst)


class TestOneReplica(WaitBase):
    WAIT = "1"

    def test_200_once_the_replica_has_the_event(self):
        before = self.stream_len(self.env.redis)
        r = self.webhook(870000001)
        self.assertEqual(r.status, 200, r)
        # WAIT answered: the replica holds the event already, not only the primary.
        self.assertEqual(self.stream_len(self.replica), before + 1)
        self.assertEqual(self.stream_len(self.env.redis), before + 1)
        self.assertEqual(self.replica_timeouts(), 0)


class TestTooFewReplicas(WaitBase):
    WAIT = "2"

    def test_503_counted_and_stored_once(self):
        e = self.env
        before = self.stream_len(e.redis)
        r = self.webhook(870000002)
        self.assertEqual(r.status, 503, r)
        self.assertEqual(self.replica_timeouts(), 1)
        # The primary ran the script: the event is there once; the provider's retry is told
        # 503 again (still one replica) and stores nothing more.
        self.assertEqual(self.stream_len(e.redis), before + 1)
        r = self.webhook(870000002)
        self.assertEqual(r.status, 503, r)
        self.assertEqual(self.replica_timeouts(), 2)
        self.assertEqual(self.stream_len(e.redis), before + 1)
        logs = [j for j in e.gw.json_logs()
                if str(j.get("msg", "")).startswith("enqueue not acknowledged by enough replicas")]
        self.assertEqual(len(logs), 2)
        # Readiness is not affected: Redis answers, only the replicas are too few.
        self.assertEqual(e.gw.http("GET", "/readyz").status, 200)


if __name__ == "__main__":
    unittest.main(verbosity=2)

"""
The gateway on a Redis Cluster (three primaries, three replicas; tests/integration/cluster.py):
found out at connect from a seed list, /readyz 503 while a slot has no primary (a primary
SIGKILLed) and 200 again once its replica is promoted, a clean SIGTERM afterwards.
Webhooks, the management API and replies on a cluster, through two gateways, are in
test_cluster_e2e.py; order and pacing across gateways in test_order.py.
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from cluster import RedisCluster  # noqa: E402


class ClusterReadinessTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rc = RedisCluster().start()
        cls.addClassCleanup(cls.rc.stop)
        cls.gw = H.Gateway(cls.rc, extra_env={"SWITCHBOARD_REDIS_TIMEOUT_MS": "2000"})
        cls.addClassCleanup(cls.gw.cleanup)
        cls.gw.start(timeout=30)

    def readyz(self):
        return self.gw.http("GET", "/readyz", record=False).status

    def test_readyz_follows_the_primaries(self):
        self.assertEqual(self.readyz(), 200)
        msgs = [j.get("msg", "") for j in self.gw.json_logs()]
        self.assertTrue(any("is a cluster node: cluster mode" in m for m in msgs), msgs[-20:])

        victim = self.rc.primary_of_key(b"sb:out")
        self.rc.node(victim).kill()
        H.wait_until(lambda: self.readyz() == 503, 10, "readyz 503 without a primary")
        self.rc.wait_ok(30)  # a replica took over the slots
        self.assertNotEqual(self.rc.primary_of_key(b"sb:out"), victim)
        H.wait_until(lambda: self.readyz() == 200, 20, "readyz 200 after the failover")

        self.assertEqual(self.gw.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)

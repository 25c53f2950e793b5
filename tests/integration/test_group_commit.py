"""
The group commit of webhooks (docs/architecture.md, "Inbound"): webhooks of one org and
channel that reach one worker in the same loop iteration are enqueued by one script call.
A burst of webhooks of two orgs, sent all at once on many connections, with every tenth
one sent twice at the same moment: each is answered 200, each event is in its own org's
streams exactly once (never in the other org's), a copy is a duplicate, and Redis ran fewer
enqueue calls than there were webhooks (the burst was batched).
"""

import json
import os
import socket
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from test_inbound import Env, utf8_bytes  # noqa: E402

PER_ORG = 60  # distinct updates per org
COPIES_EVERY = 10  # every tenth update is sent twice, in the same burst


def burst(port, requests, timeout=30.0):
    """Sends every request (bytes) on its own connection before reading any answer; returns
    the status codes in the order of 'requests'."""
    socks = []
    try:
        for _ in requests:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=timeout))
        for s, req in zip(socks, requests):
            s.sendall(req)
        statuses = []
        for s in socks:
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            line = data.split(b"\r\n", 1)[0].split()
            statuses.append(int(line[1]) if len(line) > 1 else 0)
        return statuses
    finally:
        for s in socks:
            s.close()


class TestGroupCommit(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = Env(extra_env={"SWITCHBOARD_WORKERS": "1"})
        e = cls.env
        cls.fx = harness.load_fixture("telegram", "text_private")
        cls.orgs = {}
        for n, org in enumerate(("org_gc_a", "org_gc_b")):
            e.use_org(org)
            asst = e.assistant("gc-%d" % n)
            cid, secret = e.telegram_connection("80000%d" % n)
            e.bind(asst, cid, "80000%d" % n)
            cls.orgs[org] = (asst, cid, secret)

    @classmethod
    def tearDownClass(cls):
        cls.env.stop()

    def request(self, org, update_id):
        _asst, cid, secret = self.orgs[org]
        body = json.loads(json.dumps(self.fx["body"]))
        body["update_id"] = update_id
        body["message"]["message_id"] = update_id
        data = utf8_bytes(body)
        head = ("POST /webhooks/telegram/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/json\r\nContent-Length: %d\r\n"
                "X-Telegram-Bot-Api-Secret-Token: %s\r\nConnection: close\r\n\r\n"
                % (cid, len(data), secret))
        return head.encode() + data

    def evalsha_calls(self):
        info = self.env.redis.command("INFO", "commandstats").decode()
        for line in info.splitlines():
            if line.startswith("cmdstat_evalsha:"):
                return int(line.split("calls=")[1].split(",")[0])
        return 0

    def test_a_burst_of_two_orgs_is_batched_and_stored_once_each(self):
        e = self.env
        reqs, sent = [], {org: [] for org in self.orgs}
        for i in range(PER_ORG):
            for org in self.orgs:  # the two orgs interleaved, as they would arrive
                uid = 500000 + i
                reqs.append(self.request(org, uid))
                sent[org].append(uid)
                if i % COPIES_EVERY == 0:
                    reqs.append(self.request(org, uid))
        e.redis.command("CONFIG", "RESETSTAT")
        statuses = burst(e.gw.port, reqs)
        self.assertEqual(statuses, [200] * len(reqs))
        calls = self.evalsha_calls()
        self.assertLess(calls, len(reqs) // 2,
                        "%d script calls for %d webhooks: not batched" % (calls, len(reqs)))
        copies = len(reqs) - 2 * PER_ORG
        for org, (asst, _cid, _secret) in self.orgs.items():
            events = e.stream("in:{%s}" % asst)
            got = [int(ev["message"]["external_id"].rsplit(":", 1)[1]) for ev in events]
            self.assertEqual(sorted(got), sorted(sent[org]), org)  # each once
            self.assertTrue(all(ev["org_id"] == org for ev in events), org)
            inbox = e.stream("inbox:{%s}" % org)
            self.assertEqual(len(inbox), PER_ORG, org)
            self.assertTrue(all(ev["org_id"] == org for ev in inbox), org)
        m = harness.parse_prometheus(e.gw.http("GET", "/metrics").body.decode())
        self.assertEqual(harness.metric_sum(m, "switchboard_duplicate_events_total",
                                            channel="telegram"), copies)

if __name__ == "__main__":
    unittest.main(verbosity=2)

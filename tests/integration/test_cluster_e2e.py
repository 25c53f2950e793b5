"""
The gateway end to end on a Redis Cluster (three primaries, three replicas;
tests/integration/cluster.py) with two gateways on it: API keys from `switchboard keys
create` (through every seed, redirections followed), the management API (connections,
assistants, bindings, contacts PATCH, DELETE), every fixture of every fixture directory
sent once and again as a provider retry, alternating between the two gateways, each giving
its events in the right streams exactly once (test_inbound's fixture runner), the inbox
list and history, and an outbound reply through the HTTP route delivered to the fake
provider; and test_meta_signin's sign-in tests, the webhooks of one Meta app routed by entry
to the connection of each Page, of the URL's org or another. Every script the gateway runs
touches one hash slot, or the cluster refuses it.
"""

import json
import os
import re
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from cluster import RedisCluster  # noqa: E402
import test_inbound  # noqa: E402
import test_meta_signin  # noqa: E402
from test_inbound import Env, utf8_bytes  # noqa: E402

RC = None


def setUpModule():
    global RC
    RC = RedisCluster().start()


def tearDownModule():
    if RC is not None:
        RC.stop()


class ClusterClient:
    """command(*args) on the primary of args[1]'s slot (what Env.stream and Env.xlen use)."""

    def __init__(self, rc):
        self.rc = rc

    def command(self, *args):
        key = args[1] if len(args) > 1 else b""
        if isinstance(key, str):
            key = key.encode()
        return self.rc.node(self.rc.primary_of_key(key)).command(*args)

    def close(self):
        pass


class ClusterAsRedis(ClusterClient):
    """The module's cluster where a GatewayTestCase starts its redis-server: its URL for the
    gateways and command() on the primary of the key; the module stops it, not the class."""

    @property
    def url(self):
        return self.rc.url

    def cleanup(self):
        pass


class ClusterEnv(Env):
    """Env on the cluster with two gateways; API calls go to them in turn."""

    def __init__(self, prefix="sb:", extra_env=None):
        self.redis = RC
        self.tg = H.FakeTelegram().start()
        self.graph = H.FakeGraph().start()
        env = dict({"SWITCHBOARD_REDIS_TIMEOUT_MS": "3000"}, **(extra_env or {}))
        self.gw = H.Gateway(RC, self.tg, self.graph, prefix=prefix, extra_env=env)
        self.gw2 = H.Gateway(RC, self.tg, self.graph, prefix=prefix, extra_env=env,
                             data_dir=self.gw.data_dir)
        self.gws = [self.gw, self.gw2]
        self.turn = 0
        self.gw.start(timeout=30)
        self.gw2.start(timeout=30)
        self.prefix = prefix
        self.key = self.gw.keys_create("org_in")
        self.r = ClusterClient(RC)

    def next_gw(self):
        self.turn += 1
        return self.gws[self.turn % 2]

    def api(self, method, path, body=None):
        return self.next_gw().http(method, path, body=body, key=self.key)

    def stop(self):
        try:
            for gw in self.gws:
                gw.stop()
        finally:
            for gw in self.gws:
                gw.cleanup()
            self.tg.stop()
            self.graph.stop()


class TestFixturesOnCluster(test_inbound.TestFixtures):
    """test_inbound's fixture runner, every webhook to one of the two gateways in turn."""

    @classmethod
    def setUpClass(cls):
        saved = test_inbound.Env
        test_inbound.Env = ClusterEnv
        try:
            super().setUpClass()
        finally:
            test_inbound.Env = saved

    def post(self, channel, conn, data, headers):
        return self.env.next_gw().http(
            "POST", "/webhooks/%s/%s" % (channel, conn), body=data,
            headers=dict(headers, **{"Content-Type": "application/json"}))


class TestMetaSignInOnCluster(test_meta_signin.MetaSignInTest):
    """test_meta_signin's sign-in tests on the cluster: the connections and their indexes,
    and the webhooks of the app's callback URL routed by entry, within an org and across
    orgs (each org's round in its own slot, the index across orgs in one of its own)."""

    PREFIX = "sbs:"  # a store of its own: each prefix is sealed with one master key

    @classmethod
    def start_redis(cls):
        return ClusterAsRedis(RC)


class TestManagementOnCluster(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # a prefix of its own: the store under "sb:" is sealed with the fixture class's key
        cls.env = ClusterEnv(prefix="sbm:")

    @classmethod
    def tearDownClass(cls):
        cls.env.stop()

    def test_keys_management_inbox_and_a_reply(self):
        e = self.env
        fx = H.load_fixture("telegram", "text_private")
        bot = "7%09d" % (os.getpid() % 10**9)
        asst = e.assistant("cluster")
        cid, secret = e.telegram_connection(bot, "TEST-cluster-token")
        r = e.bind(asst, cid, bot)
        self.assertEqual(r.status, 201, r)
        binding = r.json["id"]
        self.assertEqual(e.bind(asst, cid, bot).status, 409)  # unique, in the org's slot
        for path in ("/orgs/c/connections", "/orgs/c/assistants",
                     "/orgs/c/assistants/%s/channels" % asst):
            r = e.api("GET", path)
            self.assertEqual(r.status, 200, (path, r))
            self.assertEqual(len(r.json), 1, (path, r.json))

        body = json.loads(json.dumps(fx["body"]))
        for i, gw in enumerate(e.gws):
            body["update_id"] = 990000001 + i
            body["message"]["message_id"] = 900 + i
            res = gw.http("POST", "/webhooks/telegram/%s" % cid, body=utf8_bytes(body),
                          headers={"X-Telegram-Bot-Api-Secret-Token": secret})
            self.assertEqual(res.status, 200, res)
        evs = e.stream("in:{%s}" % asst)
        self.assertEqual(len(evs), 2)
        cv = evs[0]["conversation_id"]
        self.assertEqual(evs[1]["conversation_id"], cv)

        contacts = e.api("GET", "/orgs/c/contacts").json
        self.assertEqual(len(contacts), 1, contacts)
        r = e.api("PATCH", "/orgs/c/contacts/%s" % contacts[0]["id"],
                  {"status": "AI_REPLIES_DISABLED"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["status"], "AI_REPLIES_DISABLED")

        r = e.api("GET", "/orgs/c/conversations")
        self.assertEqual(r.status, 200, r)
        self.assertEqual([c["id"] for c in r.json], [cv])
        self.assertEqual(r.json[0]["contact"]["status"], "AI_REPLIES_DISABLED")
        r = e.api("GET", "/orgs/c/conversations/%s/messages" % cv)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.json), 2)
        r = e.api("POST", "/orgs/c/conversations/%s/read" % cv, {"receipt": True})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["unread_count"], 0)
        # the receipt is a command on sb:out (another slot than the conversation's)
        self.assertTrue(r.json["receipt"]["command_id"].startswith("read_"), r.json)
        self.assertRegex(r.json["receipt"]["entry_id"], r"^[0-9]+-[0-9]+$")

        # a person's reply through the API (the contact is handed off: a person may write)
        r = e.api("POST", "/orgs/c/conversations/%s/messages" % cv,
                  {"id": "cluster-reply-1", "type": "text", "text": "from the cluster"})
        self.assertEqual(r.status, 202, r)
        H.wait_until(lambda: [q for q in e.tg.requests(method="sendmessage")
                              if json.loads(q["body"]).get("text") == "from the cluster"],
                     20, "the reply at the provider")
        H.wait_until(lambda: e.api("GET", "/orgs/c/commands/cluster-reply-1").json.get(
            "state") == "sent", 20, "command state sent")
        self.assertEqual(e.api("POST", "/orgs/c/conversations/cv_missing/messages",
                               {"id": "x", "type": "text", "text": "x"}).status, 404)

        self.assertEqual(e.api("DELETE", "/orgs/c/assistants/%s/channels/%s"
                               % (asst, binding)).status, 204)
        self.assertEqual(e.api("DELETE", "/orgs/c/assistants/%s" % asst).status, 204)
        self.assertEqual(e.api("DELETE", "/orgs/c/connections/%s" % cid).status, 204)
        self.assertEqual(e.api("GET", "/orgs/c/connections").json, [])
        # the connection is gone for webhooks too (after the 1 s connection cache)
        H.wait_until(lambda: e.gw.http(
            "POST", "/webhooks/telegram/%s" % cid, body=utf8_bytes(body),
            headers={"X-Telegram-Bot-Api-Secret-Token": secret}).status == 404, 5, "404")

    def test_keys_revoke(self):
        e = self.env
        key = e.gw.keys_create("org_revoke")
        self.assertEqual(e.gw.http("GET", "/orgs/c/connections", key=key).status, 200)
        e.gw.keys_revoke(key)
        self.assertEqual(e.gw2.http("GET", "/orgs/c/connections", key=key).status, 401)


class TestMasterKeyOnCluster(unittest.TestCase):
    """The master-key subcommands and simulate on a cluster: connections of orgs whose slots
    are on different primaries are all re-sealed, both gateways go on opening them, and
    simulate reads keys of several slots."""

    @classmethod
    def setUpClass(cls):
        cls.env = ClusterEnv(prefix="sbk:")  # its own store, under its own key

    @classmethod
    def tearDownClass(cls):
        cls.env.stop()

    def test_rotate_reseals_every_primary_and_simulate_delivers(self):
        e = self.env
        conns, primaries = [], set()
        for n in range(8):
            e.use_org("org_mk%d" % n)
            bot = "8%03d%05d" % (n, os.getpid() % 10**5)
            asst = e.assistant("mk%d" % n)
            cid, secret = e.telegram_connection(bot, "TEST-mk-token-%d" % n)
            self.assertEqual(e.bind(asst, cid, bot).status, 201)
            conns.append((cid, secret, asst))
            primaries.add(RC.primary_of_key(("sbk:connection:{org_mk%d}" % n).encode()))
        self.assertGreaterEqual(len(primaries), 2, "the orgs' slots are on one primary")
        p = e.gw.run_cli("master-key", "rotate", "--wait", "20", timeout=90)
        self.assertEqual(p.returncode, 0, p.stderr.decode() + p.stdout.decode())
        m = re.search(rb"(\d+) credential\(s\) re-sealed, (\d+) sealed with it in all", p.stdout)
        self.assertTrue(m, p.stdout)
        self.assertGreaterEqual(int(m.group(1)), len(conns), p.stdout)
        self.assertEqual(int(m.group(1)), int(m.group(2)), p.stdout)
        show = e.gw.run_cli("master-key", "show")
        self.assertEqual(show.returncode, 0, show.stderr)
        self.assertNotIn(b"a rotation is under way", show.stdout)
        # both gateways open the re-sealed credentials: webhooks verify, events arrive
        fx = H.load_fixture("telegram", "text_private")
        for i, (cid, secret, asst) in enumerate(conns):
            body = json.loads(json.dumps(fx["body"]))
            body["update_id"] = 700000 + i
            gw = e.gws[i % 2]
            H.wait_until(lambda: gw.http(
                "POST", "/webhooks/telegram/%s" % cid, body=utf8_bytes(body),
                headers={"X-Telegram-Bot-Api-Secret-Token": secret}).status == 200, 10,
                "webhook of %s after the rotation" % cid)
            self.assertEqual(e.xlen("in:{%s}" % asst), 1)
        # a gateway holding another key is refused on the cluster too, and so is keys create
        d = tempfile.mkdtemp(prefix="sb-otherkey-")
        self.addCleanup(lambda: shutil.rmtree(d, ignore_errors=True))
        with open(os.path.join(d, "master.key"), "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        os.chmod(os.path.join(d, "master.key"), 0o600)
        other = H.Gateway(RC, e.tg, e.graph, prefix="sbk:", data_dir=d)
        self.addCleanup(other.cleanup)
        other.start(wait_ready=False)
        H.wait_until(lambda: other.proc.poll() is not None, 20, "the refused gateway exits")
        self.assertNotEqual(other.proc.returncode, 0)
        self.assertIn("refusing to start", other.stderr_text())
        self.assertNotEqual(other.run_cli("keys", "create", "--org", "org_mk0").returncode, 0)
        # simulate reads connorg, the connection and its binding (three slots)
        cid, _secret, asst = conns[-1]
        p = e.gw.run_cli("simulate", cid, "--text", "simulated on the cluster")
        self.assertEqual(p.returncode, 0, p.stderr.decode() + p.stdout.decode())
        H.wait_until(lambda: e.xlen("in:{%s}" % asst) == 2, 10, "the simulated event")


if __name__ == "__main__":
    H.main()

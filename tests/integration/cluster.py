"""
A private Redis Cluster for integration tests (Python 3 standard library only).

    from cluster import RedisCluster
    with RedisCluster() as rc:          # 3 primaries + 3 replicas on free loopback ports
        env["SWITCHBOARD_REDIS_URL"] = rc.url
        port = rc.primary_of_key(b"sb:out")
        rc.kill_primary_and_wait_failover(port)
        rc.reshard(from_port=..., to_port=..., count=100)

Every redis-server runs in its own temporary directory and its own process group, and is
killed (with its group) when the cluster stops: on leaving the `with` block, on stop(), at
interpreter exit, on SIGTERM/SIGINT, and when the test process dies (PR_SET_PDEATHSIG).
Synchronization is always a deadline poll; nothing sleeps to wait for something to happen.

Run as a script it starts a cluster, prints its nodes and stops it again (a self-check).
"""

import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import RedisError, RespClient, StopWaiting, wait_until  # noqa: E402

NSLOTS = 16384
_LIVE = set()  # clusters not stopped yet, for the exit and signal hooks


def _bindable(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_cluster_port(taken=()):
    """A port free on 127.0.0.1 whose cluster bus port (port + 10000) is free too."""
    for _ in range(2000):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port + 10000 > 65535:
            port = 20000 + port % 25000
        if (port not in taken and port + 10000 not in taken and port - 10000 not in taken
                and _bindable(port) and _bindable(port + 10000)):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _child_setup():
    """In the child before exec: its own process group, killed when the parent dies."""
    os.setpgrp()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Node:
    def __init__(self, port, root, node_timeout_ms):
        self.port = port
        self.dir = os.path.join(root, str(port))
        os.makedirs(self.dir, exist_ok=True)
        self.node_timeout_ms = node_timeout_ms
        self.proc = None

    def start(self):
        log = open(os.path.join(self.dir, "redis.log"), "ab")
        try:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", str(self.node_timeout_ms),
                 "--repl-diskless-sync-delay", "0",
                 # CLUSTER SLOTS lists a replica once its offset moved: ping it soon
                 "--repl-ping-replica-period", "1",
                 "--appendonly", "no", "--save", "", "--dir", self.dir],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.dir, preexec_fn=_child_setup)
        finally:
            log.close()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL to the node's process group; waits for the process."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        self.proc = None

    def client(self, timeout=5.0):
        return RespClient("127.0.0.1", self.port, timeout=timeout)

    def command(self, *args):
        with self.client() as c:
            return c.command(*args)

    def log_text(self):
        try:
            with open(os.path.join(self.dir, "redis.log"), encoding="utf-8",
                      errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""


class RedisCluster:
    """primaries x (1 + replicas) cluster-enabled redis-server processes on loopback."""

    def __init__(self, primaries=3, replicas=1, node_timeout_ms=1000):
        self.primaries = primaries
        self.replicas = replicas
        self.root = tempfile.mkdtemp(prefix="sb-cluster-")
        taken = set()
        self.nodes = []
        for _ in range(primaries * (1 + replicas)):
            port = free_cluster_port(taken)
            taken.add(port)
            self.nodes.append(Node(port, self.root, node_timeout_ms))

    # -- lifecycle --

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self, timeout=60.0):
        _install_hooks()
        _LIVE.add(self)
        try:
            for n in self.nodes:
                n.start()
            for n in self.nodes:
                wait_until(lambda n=n: self._ping(n), 10, "redis-server on port %d" % n.port)
            cmd = ["redis-cli", "--cluster", "create"]
            cmd += ["127.0.0.1:%d" % n.port for n in self.nodes]
            cmd += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
            out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 timeout=timeout, preexec_fn=_child_setup)
            if out.returncode != 0:
                raise RuntimeError("redis-cli --cluster create failed:\n"
                                   + out.stdout.decode("utf-8", "replace")[-3000:])
            self.wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Kills every node (and its process group) and removes the directories."""
        for n in self.nodes:
            n.kill()
        shutil.rmtree(self.root, ignore_errors=True)
        _LIVE.discard(self)

    # -- state --

    @property
    def url(self):
        """redis.url naming every primary of the initial layout as a seed."""
        return "redis://" + ",".join("127.0.0.1:%d" % n.port
                                     for n in self.nodes[:self.primaries]) + "/0"

    def node(self, port):
        for n in self.nodes:
            if n.port == port:
                return n
        raise KeyError(port)

    def live_nodes(self):
        return [n for n in self.nodes if n.alive()]

    @staticmethod
    def _ping(n):
        if n.proc is not None and n.proc.poll() is not None:
            raise StopWaiting("redis-server on port %d exited: %s"
                              % (n.port, n.log_text()[-2000:]))
        return n.command("PING") == "PONG"

    def _state_ok(self):
        live = self.live_nodes()
        for n in live:
            info = n.command("CLUSTER", "INFO").decode()
            if "cluster_state:ok" not in info:
                return False
            repl = n.command("INFO", "replication").decode()
            if "role:slave" in repl and "master_link_status:up" not in repl:
                return False
        # every live node agrees on who serves every slot, and it is a live node
        layouts = {tuple(self._ranges(n)) for n in live}
        if len(layouts) != 1:
            return False
        layout = layouts.pop()
        ports = {n.port for n in live}
        if not all(p in ports for _, _, p, _ in layout):
            return False
        # every primary has its replicas attached, as far as the live nodes allow
        spare = len(live) - len({p for _, _, p, _ in layout})
        want = min(self.replicas, spare // max(1, len({p for _, _, p, _ in layout})))
        return all(len(reps) >= want for _, _, _, reps in layout)

    def wait_ok(self, timeout=30.0):
        """Waits until every live node says cluster_state:ok and they agree on the slots."""
        wait_until(self._state_ok, timeout, "cluster_state:ok on every node")

    @staticmethod
    def _ranges(n):
        out = []
        for e in n.command("CLUSTER", "SLOTS"):
            out.append((e[0], e[1], e[2][1], tuple(sorted(r[1] for r in e[3:]))))
        return sorted(out)

    def slots(self):
        """[(first_slot, last_slot, primary_port, (replica_ports...))] from a live node."""
        return self._ranges(self.live_nodes()[0])

    def key_slot(self, key):
        return self.live_nodes()[0].command("CLUSTER", "KEYSLOT", key)

    def primary_of_slot(self, slot):
        for first, last, port, _ in self.slots():
            if first <= slot <= last:
                return port
        return None

    def primary_of_key(self, key):
        return self.primary_of_slot(self.key_slot(key))

    def primary_ports(self):
        return sorted({p for _, _, p, _ in self.slots()})

    def replicas_of(self, port):
        return sorted({r for _, _, p, reps in self.slots() if p == port for r in reps})

    def node_id(self, port):
        return self.node(port).command("CLUSTER", "MYID").decode()

    # -- faults and changes --

    def kill_primary_and_wait_failover(self, port, timeout=30.0):
        """SIGKILLs the primary at 'port' and waits until a replica took over its slots."""
        owned = [(f, l) for f, l, p, _ in self.slots() if p == port]
        self.node(port).kill()

        def promoted():
            live = [n for n in self.live_nodes()]
            for n in live:
                if "cluster_state:ok" not in n.command("CLUSTER", "INFO").decode():
                    return False
            return all(self.primary_of_slot(f) not in (None, port) for f, _ in owned)

        wait_until(promoted, timeout, "a replica of %d promoted" % port)
        self.wait_ok(timeout)

    def failover(self, replica_port, timeout=30.0):
        """CLUSTER FAILOVER on a replica (a clean switch, no data lost) and waits for it."""
        self.node(replica_port).command("CLUSTER", "FAILOVER")
        wait_until(lambda: replica_port in self.primary_ports(), timeout,
                   "%d promoted" % replica_port)
        self.wait_ok(timeout)

    def restart_node(self, port, timeout=30.0):
        """Starts a killed node again (it rejoins from its nodes.conf, as a replica when
        another node took over its slots)."""
        n = self.node(port)
        n.start()
        wait_until(lambda: self._ping(n), 10, "redis-server on port %d" % port)
        self.wait_ok(timeout)

    def reshard(self, from_port, to_port, count, timeout=120.0):
        """redis-cli --cluster reshard: moves 'count' slots (and their keys) between
        primaries, while clients keep running."""
        cmd = ["redis-cli", "--cluster", "reshard", "127.0.0.1:%d" % from_port,
               "--cluster-from", self.node_id(from_port),
               "--cluster-to", self.node_id(to_port),
               "--cluster-slots", str(count), "--cluster-yes"]
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             timeout=timeout, preexec_fn=_child_setup)
        if out.returncode != 0:
            raise RuntimeError("redis-cli --cluster reshard failed:\n"
                               + out.stdout.decode("utf-8", "replace")[-3000:])
        self.wait_ok(timeout)

    def migrate_slot(self, slot, to_port):
        """Moves one slot and its keys by hand (SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT
        NODE on every primary)."""
        from_port = self.primary_of_slot(slot)
        if from_port == to_port:
            return
        src, dst = self.node(from_port), self.node(to_port)
        dst.command("CLUSTER", "SETSLOT", slot, "IMPORTING", self.node_id(from_port))
        src.command("CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(to_port))
        while True:
            keys = src.command("CLUSTER", "GETKEYSINSLOT", slot, 100)
            if not keys:
                break
            src.command("MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *keys)
        target = self.node_id(to_port)
        for p in self.primary_ports() + [to_port]:
            try:
                self.node(p).command("CLUSTER", "SETSLOT", slot, "NODE", target)
            except RedisError:
                pass
        self.wait_ok()

    def all_keys(self, pattern="*"):
        """Every key on every live primary."""
        out = []
        for p in self.primary_ports():
            with self.node(p).client() as c:
                out.extend(c.keys(pattern))
        return out


def _stop_all():
    for rc in list(_LIVE):
        rc.stop()


_HOOKED = False


def _install_hooks():
    global _HOOKED
    if _HOOKED:
        return
    _HOOKED = True
    atexit.register(_stop_all)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        previous = signal.getsignal(sig)

        def handler(signum, frame, previous=previous):
            _stop_all()
            if callable(previous):
                previous(signum, frame)
            else:
                sys.exit(128 + signum)

        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass


if __name__ == "__main__":
    t0 = time.monotonic()
    with RedisCluster() as rc:
        print("cluster up in %.1fs: %s" % (time.monotonic() - t0, rc.url))
        for first, last, port, reps in rc.slots():
            print("  slots %5d-%5d: primary %d, replicas %s" % (first, last, port, list(reps)))
        victim = rc.primary_ports()[0]
        rc.kill_primary_and_wait_failover(victim)
        print("killed %d; primaries now %s" % (victim, rc.primary_ports()))
        rc.reshard(rc.primary_ports()[0], rc.primary_ports()[1], 10)
        print("resharded 10 slots; layout %s" % [(f, l, p) for f, l, p, _ in rc.slots()])
    print("stopped; %s removed: %s" % (rc.root, not os.path.exists(rc.root)))

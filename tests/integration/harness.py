"""
Integration test harness for Switchboard (Python 3.11 standard library, plus jsonschema from
Debian's python3-jsonschema for the event schema).

Each test file starts a real redis-server, fake provider servers (Telegram Bot API and the
Graph API) and the real switchboard binary ($SB_BINARY), then talks to it over HTTP.

Synchronization is always a deadline poll (wait_until); tests never sleep to wait for
something to happen.

Test data: the webhook fixtures are read from every directory of $SB_FIXTURES_DIRS
(colon-separated; default: the repository's tests/fixtures, then ../shared/fixtures beside
the repository), skipping those that do not exist when the test runs; the external corpus
from $SB_CORPUS_DIR (default ../shared/corpus/external).

No process left behind: every child process started from a test's Python (redis-server,
switchboard, CLI runs, anything else through subprocess) runs in its own process group,
carries SB_TEST_RUN=<this run's id> (and the SB_TEST_SUITE of the ctest run) in its
environment, and is killed by the kernel if the Python that started it dies
(PR_SET_PDEATHSIG). At exit and on SIGTERM, SIGINT or SIGHUP the harness kills what is
still running, and the test's Python itself gets SIGTERM when its parent (ctest) dies.
Children must be started from the main thread (the kernel signals a child when the thread
that forked it ends).

Every event the gateway wrote is validated against docs/schema/event.schema.json when a
test's redis-server is stopped (RedisServer.stop and cleanup), so a malformed event fails
the test class that produced it.
"""

import atexit
import base64
import ctypes
import glob
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SOURCE_DIR = os.environ.get(
    "SB_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
OWN_FIXTURES_DIR = os.path.join(SOURCE_DIR, "tests", "fixtures")
SHARED_DIR = os.path.abspath(os.path.join(SOURCE_DIR, "..", "shared"))


def _dirs_from_env(name, default):
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return list(default)
    return [d for d in value.split(":") if d]


# Every configured fixture directory, existing or not; FIXTURES_DIRS those that exist now.
CONFIGURED_FIXTURES_DIRS = _dirs_from_env(
    "SB_FIXTURES_DIRS", [OWN_FIXTURES_DIR, os.path.join(SHARED_DIR, "fixtures")])
FIXTURES_DIRS = [d for d in CONFIGURED_FIXTURES_DIRS if os.path.isdir(d)]
MISSING_FIXTURES_DIRS = [d for d in CONFIGURED_FIXTURES_DIRS if not os.path.isdir(d)]
CORPUS_DIR = os.environ.get("SB_CORPUS_DIR") or os.path.join(SHARED_DIR, "corpus", "external")
# Kept for the tests that name one directory: the first that exists.
FIXTURES_DIR = FIXTURES_DIRS[0] if FIXTURES_DIRS else OWN_FIXTURES_DIR
CHANNELS = ("whatsapp", "messenger", "instagram", "telegram")
SCHEMA_DIR = os.path.join(SOURCE_DIR, "docs", "schema")

PUBLIC_URL = "http://gw.example.test"

# Lines that mean a sanitizer found something; any of them fails the test that ran the binary.
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer",
                     "ERROR: ThreadSanitizer", "WARNING: ThreadSanitizer")

# Every SWITCHBOARD_* variable of contract section 1 (listed by --help).
CONTRACT_ENV_VARS = (
    "SWITCHBOARD_LISTEN", "SWITCHBOARD_REDIS_URL", "SWITCHBOARD_REDIS_PREFIX",
    "SWITCHBOARD_PUBLIC_URL", "SWITCHBOARD_GRAPH_API_BASE", "SWITCHBOARD_TELEGRAM_API_BASE",
    "SWITCHBOARD_MASTER_KEY_FILE", "SWITCHBOARD_OUTBOUND_RECLAIM_IDLE_MS",
    "SWITCHBOARD_NODE_ID", "SWITCHBOARD_MAX_BODY_BYTES", "SWITCHBOARD_WORKERS",
)

TELEGRAM_ALLOWED_UPDATES = ["message", "edited_message", "channel_post",
                            "edited_channel_post", "callback_query", "message_reaction"]


# --------------------------------------------------------------------------------------
# child processes: marked, in their own process group, never left behind

RUN_MARKER = "SB_TEST_RUN"      # set on every child of this Python: its run id
SUITE_MARKER = "SB_TEST_SUITE"  # set by ctest on every test of one build tree
RUN_ID = "%d-%s" % (os.getpid(), uuid.uuid4().hex[:12])
_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: children are still killed at exit
    _prctl = None
_children = {}  # pid -> Popen of every child started from this process
_children_lock = threading.Lock()
_OriginalPopen = subprocess.Popen


class TrackedPopen(_OriginalPopen):
    """subprocess.Popen for everything a test starts (installed as subprocess.Popen, so
    subprocess.run and every test file use it): the child gets the run marker in its
    environment, its own process group, and SIGKILL when the thread that started it dies;
    kill_children() ends what is left."""

    def __init__(self, args, **kw):
        env = dict(os.environ if kw.get("env") is None else kw["env"])
        env[RUN_MARKER] = RUN_ID
        if os.environ.get(SUITE_MARKER):
            env.setdefault(SUITE_MARKER, os.environ[SUITE_MARKER])
        kw["env"] = env
        user_preexec = kw.get("preexec_fn")
        parent = os.getpid()

        def child_setup():  # in the child, between fork and exec: no allocation, no locks
            if _prctl is not None:
                _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(70)
            if user_preexec is not None:
                user_preexec()

        kw["preexec_fn"] = child_setup
        if not kw.get("start_new_session") and kw.get("process_group") is None:
            kw["process_group"] = 0
        super().__init__(args, **kw)
        with _children_lock:
            for pid in [pid for pid, p in _children.items() if p.returncode is not None]:
                del _children[pid]
            _children[self.pid] = self


subprocess.Popen = TrackedPopen


def kill_children(wait=True):
    """SIGKILLs the process group of every child still running (the harness's own
    processes only: they are known by pid); with 'wait', reaps them."""
    with _children_lock:
        procs = list(_children.values())
    for p in procs:
        if p.returncode is None and p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except PermissionError:
                p.kill()
    if wait:
        for p in procs:
            try:
                p.wait(5)
            except Exception:  # noqa: BLE001 - best effort at exit
                pass


def _on_fatal_signal(signum, frame):
    kill_children(wait=False)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


atexit.register(kill_children)
if threading.current_thread() is threading.main_thread():
    for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(_sig, _on_fatal_signal)
    # This Python ends (SIGTERM, so its children are killed first) when the process that
    # started it goes away: ctest stopped with Ctrl-C leaves its tests running otherwise.
    if _prctl is not None and os.getppid() != 1:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() == 1:  # the parent died before prctl took effect
            _on_fatal_signal(signal.SIGTERM, None)


def marked_processes(marker=RUN_MARKER, value=RUN_ID):
    """[(pid, command line)] of every process whose environment holds marker=value (read
    from /proc/<pid>/environ; processes that cannot be read are not ours)."""
    needle = ("%s=%s" % (marker, value)).encode()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % d, "rb") as f:
                env = f.read().split(b"\0")
            if needle not in env:
                continue
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            continue
        out.append((int(d), cmd))
    return out


# --------------------------------------------------------------------------------------
# the event and command schemas (docs/schema)

_validators = {}


def schema_validator(name):
    """A jsonschema validator for docs/schema/<name>.schema.json (checked once)."""
    if name not in _validators:
        try:
            import jsonschema  # noqa: PLC0415 - only the schema checks need it
        except ImportError as e:
            raise RuntimeError("python3-jsonschema is needed by the tests "
                               "(scripts/deps.sh test installs it)") from e
        with open(os.path.join(SCHEMA_DIR, name + ".schema.json"), encoding="utf-8") as f:
            schema = json.load(f)
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        _validators[name] = cls(schema)
    return _validators[name]


def schema_problems(name, value):
    """Every way 'value' breaks docs/schema/<name>.schema.json ([] when it is valid)."""
    out = []
    for e in schema_validator(name).iter_errors(value):
        where = "/".join(str(x) for x in e.absolute_path) or "$"
        out.append("%s: %s" % (where, e.message))
    return sorted(out)


def event_problems(ev, stream=None):
    """schema_problems of an event, plus what its stream implies: sb:in:{A} events name the
    assistant A, its binding and conversation; sb:inbox:{O} events name the org O."""
    out = schema_problems("event", ev)
    if stream is not None and isinstance(ev, dict):
        m = re.search(r"(?:^|:)in:\{([^{}]+)\}$", stream)
        if m:
            if ev.get("assistant_id") != m.group(1):
                out.append("assistant_id %r in %s" % (ev.get("assistant_id"), stream))
            for k in ("binding_id", "conversation_id"):
                if k not in ev:
                    out.append("%s missing in %s" % (k, stream))
        m = re.search(r"(?:^|:)inbox:\{([^{}]+)\}$", stream)
        if m and ev.get("org_id") != m.group(1):
            out.append("org_id %r in %s" % (ev.get("org_id"), stream))
    return out


# --------------------------------------------------------------------------------------
# small utilities


def free_port():
    """Returns a TCP port that was free on 127.0.0.1 a moment ago (bound with port 0)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


class StopWaiting(AssertionError):
    """Raised by a wait_until predicate to give up at once (e.g. the process died)."""


def wait_until(predicate, timeout=10.0, what="condition", interval=0.02):
    """
    Polls 'predicate' until it returns a truthy value (returned) or 'timeout' seconds have
    passed (AssertionError naming 'what' and the last value or exception seen).
    Exceptions raised by the predicate count as "not yet", except StopWaiting.
    """
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = predicate()
            if v:
                return v
            last = repr(v)
        except StopWaiting:
            raise
        except Exception as e:  # noqa: BLE001 - "not yet" for the poll
            last = "%s: %s" % (type(e).__name__, e)
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s (last: %s)"
                                 % (timeout, what, last))
        time.sleep(interval)


def fixture_label(directory):
    """A short name for a fixture directory in messages: "own", "shared" or its path."""
    d = os.path.abspath(directory)
    if d == os.path.abspath(OWN_FIXTURES_DIR):
        return "own"
    if d == os.path.abspath(os.path.join(SHARED_DIR, "fixtures")):
        return "shared"
    return d


def fixture_files(channel, dirs=None):
    """[(directory, path)] of every <dir>/<channel>/*.json of the existing fixture
    directories, directory by directory, in name order."""
    out = []
    for d in FIXTURES_DIRS if dirs is None else dirs:
        for path in sorted(glob.glob(os.path.join(d, channel, "*.json"))):
            out.append((d, path))
    return out


def load_fixture(channel, case):
    """The fixture <channel>/<case>.json from the first fixture directory that has it."""
    for d in FIXTURES_DIRS:
        path = os.path.join(d, channel, case + ".json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                fx = json.load(f)
            fx["_path"] = path
            return fx
    raise FileNotFoundError("no fixture %s/%s.json in %s" % (channel, case, FIXTURES_DIRS))


def shared_missing_note():
    """The one line that says which shared test data was not found (None: all found)."""
    missing = MISSING_FIXTURES_DIRS + ([] if os.path.isdir(CORPUS_DIR) else [CORPUS_DIR])
    if not missing:
        return None
    return ("shared test data not found (%s): running the repository's own fixtures only"
            % ", ".join(missing))


def _port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def encoded_forms(secret):
    """
    The secret as it would appear if stored or logged merely encoded rather than encrypted:
    itself, lower/upper hex, and standard/URL-safe base64 at each of the 3 byte alignments
    (middle part only, so that it matches inside a longer encoded blob).
    """
    raw = secret.encode("utf-8") if isinstance(secret, str) else secret
    forms = {raw, raw.hex().encode(), raw.hex().upper().encode()}
    for pad in range(3):
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            b = enc(b"\0" * pad + raw).rstrip(b"=")
            skip = (pad * 8 + 5) // 6 + 1  # characters touched by the padding bytes
            mid = b[skip:len(b) - 3]
            if len(mid) >= 12:
                forms.add(mid)
    return forms


# --------------------------------------------------------------------------------------
# RESP2 client


class RedisError(Exception):
    """An error reply (-ERR ...) from Redis."""


class RespClient:
    """A minimal blocking RESP2 client: command(*args) returns the decoded reply."""

    def __init__(self, host, port, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.rfile = self.sock.makefile("rb")

    def close(self):
        try:
            self.rfile.close()
        finally:
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def _encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, bytes):
                b = a
            elif isinstance(a, str):
                b = a.encode("utf-8")
            elif isinstance(a, (int, float)):
                b = str(a).encode()
            else:
                raise TypeError("unsupported argument type %r" % type(a))
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)

    def _readline(self):
        line = self.rfile.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        if not line.endswith(b"\r\n"):
            raise ConnectionError("truncated reply line %r" % line)
        return line[:-2]

    def _read_reply(self):
        line = self._readline()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode("utf-8", "replace")
        if t == b"-":
            raise RedisError(rest.decode("utf-8", "replace"))
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.rfile.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError("truncated bulk reply")
            return data[:-2]
        if t == b"*":
            n = int(rest)
            if n < 0:
                return None
            items = []
            err = None
            for _ in range(n):
                try:
                    items.append(self._read_reply())
                except RedisError as e:  # an error inside an array (EXEC): keep reading
                    items.append(e)
                    err = err or e
            return items
        raise ConnectionError("unknown reply type %r" % line)

    def command(self, *args):
        """Sends one command and returns its reply (bytes for bulk strings, str for simple
        strings, int, list, None); an error reply raises RedisError."""
        self.sock.sendall(self._encode(args))
        return self._read_reply()

    def keys(self, pattern="*"):
        """Every key name (bytes) matching 'pattern', via SCAN."""
        cursor = b"0"
        out = []
        while True:
            cursor, batch = self.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            out.extend(batch)
            if cursor in (b"0", 0, "0"):
                return out


# --------------------------------------------------------------------------------------
# redis-server


class RedisServer:
    """A private redis-server on a free port in a temporary directory."""

    def __init__(self, port=None, validate_events=True):
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="sb-redis-")
        self.proc = None
        self._log = None
        # Every stream entry with an "event" field is checked against the event schema
        # before the server stops (check_streams); validated[key] = last entry id seen.
        self.validate_events = validate_events
        self.validated = {}

    def start(self, timeout=10.0):
        """Starts redis-server (on the same port after a stop) and waits for PING."""
        assert self.proc is None or self.proc.poll() is not None, "redis already running"
        self._log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.dir,
             "--dbfilename", "dump.rdb",
             # its process title would overwrite the environment (and the run marker in it)
             "--set-proc-title", "no"],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=self.dir)

        def ping():
            if self.proc.poll() is not None:
                raise StopWaiting("redis-server exited with %s; log: %s"
                                     % (self.proc.returncode, self.log_text()[-2000:]))
            with RespClient("127.0.0.1", self.port, timeout=1.0) as c:
                return c.command("PING") == "PONG"

        wait_until(ping, timeout, "redis-server PING on port %d" % self.port)
        return self

    def stop(self, persist=False, timeout=10.0):
        """
        Kills redis-server (SIGKILL: the gateway sees the connection drop as in a crash).
        With 'persist' it first SAVEs to dump.rdb so that the next start() loads the data;
        without it the next start() begins empty.
        """
        if self.proc is None or self.proc.poll() is not None:
            return
        problems = []
        if self.validate_events:
            try:
                problems = self.check_streams()
            except (OSError, ConnectionError, RedisError):
                pass  # a paused or broken server: nothing to read
        try:
            self._stop(persist, timeout)
        finally:
            if problems:
                raise AssertionError("%d malformed stream entries (docs/schema):\n%s"
                                     % (len(problems), "\n".join(problems[:20])))

    def check_streams(self):
        """Validates every entry not checked before of every stream of this server: an
        "event" field must hold an event of docs/schema/event.schema.json (event_problems),
        an sb:dead entry its cmd, reason and integer code. Returns the problems."""
        problems = []
        with self.client(timeout=10.0) as c:
            keys, cursor = [], b"0"
            while True:
                cursor, batch = c.command("SCAN", cursor, "COUNT", 1000, "TYPE", "stream")
                keys.extend(batch)
                if cursor in (b"0", 0, "0"):
                    break
            for key in keys:
                name = key.decode("utf-8", "replace")
                last = self.validated.get(name)
                entries = c.command("XRANGE", key, "(" + last if last else "-", "+") or []
                for entry_id, fields in entries:
                    eid = entry_id.decode()
                    self.validated[name] = eid
                    d = dict(zip(fields[::2], fields[1::2]))
                    where = "%s %s" % (name, eid)
                    if b"event" in d:
                        try:
                            ev = json.loads(d[b"event"])
                        except ValueError as e:
                            problems.append("%s: not JSON: %s" % (where, e))
                            continue
                        problems += ["%s: %s (%s)" % (where, p, d[b"event"][:300].decode(
                            "utf-8", "replace")) for p in event_problems(ev, name)]
                    elif re.search(r"(?:^|:)dead$", name):
                        if not d.get(b"reason") or b"cmd" not in d or \
                                not re.match(rb"^-?[0-9]+$", d.get(b"code") or b""):
                            problems.append("%s: dead letter without cmd, reason and "
                                            "integer code: %r" % (where, d))
        return problems

    def _stop(self, persist, timeout):
        if persist:
            with self.client() as c:
                c.command("SAVE")
        else:
            self.validated = {}  # the next start begins empty
            try:
                os.unlink(os.path.join(self.dir, "dump.rdb"))
            except FileNotFoundError:
                pass
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout)
        if self._log:
            self._log.close()
            self._log = None
        wait_until(lambda: not _port_open(self.port), timeout, "redis port %d closed" % self.port)

    def cleanup(self):
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self):
        try:
            with open(os.path.join(self.dir, "redis.log"), encoding="utf-8",
                      errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def client(self, timeout=5.0):
        return RespClient("127.0.0.1", self.port, timeout=timeout)

    def command(self, *args):
        with self.client() as c:
            return c.command(*args)

    def dump_all_values(self, pattern="*"):
        """
        Returns {key (bytes): value (bytes)} for every key: strings GET, hashes HGETALL,
        sets SMEMBERS, zsets ZRANGE WITHSCORES, lists LRANGE, streams XRANGE; each value is
        the concatenation of every element (field names included) separated by newlines.
        """
        out = {}
        with self.client() as c:
            for key in c.keys(pattern):
                t = c.command("TYPE", key)
                if t == "string":
                    parts = [c.command("GET", key) or b""]
                elif t == "hash":
                    parts = c.command("HGETALL", key)
                elif t == "set":
                    parts = c.command("SMEMBERS", key)
                elif t == "zset":
                    parts = c.command("ZRANGE", key, 0, -1, "WITHSCORES")
                elif t == "list":
                    parts = c.command("LRANGE", key, 0, -1)
                elif t == "stream":
                    parts = []
                    for entry_id, fields in c.command("XRANGE", key, "-", "+"):
                        parts.append(entry_id)
                        parts.extend(fields)
                    # consumer groups and their consumers' names
                    try:
                        for g in c.command("XINFO", "GROUPS", key):
                            parts.extend(x for x in g if isinstance(x, bytes))
                    except RedisError:
                        pass
                elif t == "none":
                    continue
                else:
                    parts = [("<%s>" % t).encode()]
                out[key] = b"\n".join(p if isinstance(p, bytes) else str(p).encode()
                                      for p in parts)
        return out


# --------------------------------------------------------------------------------------
# fake provider servers


class _Override:
    def __init__(self, status=None, body=None, delay=0.0, times=None, headers=None):
        self.status = status
        self.body = body
        self.delay = delay
        self.times = times  # None = until cleared
        self.headers = headers or {}


def _http_server(dispatch):
    """A ThreadingHTTPServer on 127.0.0.1:0 that hands every request, whatever its method, to
    dispatch(handler, body), and the thread that will serve it (not started yet)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet
            pass

        def _handle(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            dispatch(self, body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.block_on_close = False
    return httpd, threading.Thread(target=httpd.serve_forever, daemon=True)


class _FakeServer:
    """Common part of the fake providers: a ThreadingHTTPServer on 127.0.0.1:0 that records
    every request and lets a test override answers."""

    def __init__(self):
        self._lock = threading.Lock()
        self._requests = []
        self._overrides = {}
        self._release = threading.Event()  # set on stop: delayed handlers return at once
        self.httpd, self._thread = _http_server(self._dispatch)
        self.port = self.httpd.server_address[1]

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- recording

    def _record(self, rec):
        with self._lock:
            self._requests.append(rec)

    def requests(self, **match):
        """Copies of the recorded requests whose fields equal every given value."""
        with self._lock:
            reqs = list(self._requests)
        return [r for r in reqs if all(r.get(k) == v for k, v in match.items())]

    def clear(self):
        with self._lock:
            self._requests.clear()

    def wait_for(self, timeout=10.0, count=1, **match):
        return wait_until(lambda: len(self.requests(**match)) >= count and self.requests(**match),
                          timeout, "%d request(s) matching %r" % (count, match))

    # --- overrides

    def override(self, key, status=None, body=None, delay=0.0, times=None, headers=None):
        """Makes requests matching 'key' answer 'status'/'body' (dict = JSON) after 'delay'
        seconds, for 'times' requests (None: until clear_overrides)."""
        with self._lock:
            self._overrides[key] = _Override(status, body, delay, times, headers)

    def clear_overrides(self):
        with self._lock:
            self._overrides.clear()

    def _take_override(self, key):
        with self._lock:
            o = self._overrides.get(key)
            if o is None:
                return None
            if o.times is not None:
                o.times -= 1
                if o.times <= 0:
                    del self._overrides[key]
            return o

    def _send(self, h, status, body, headers=None):
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            ctype = "application/json"
        elif isinstance(body, str):
            data = body.encode()
            ctype = "text/plain"
        else:
            data = body or b""
            ctype = "application/octet-stream"
        try:
            h.send_response(status)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _apply_override(self, h, o, default_status, default_body):
        if o.delay:
            self._release.wait(o.delay)
        status = o.status if o.status is not None else default_status
        body = o.body if o.body is not None else default_body
        self._send(h, status, body, o.headers)

    @staticmethod
    def _parse_params(h, query, body):
        params = {}
        for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True):
            params[k] = v
        ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if body:
            if ctype == "application/json" or (not ctype and body[:1] in (b"{", b"[")):
                try:
                    j = json.loads(body)
                    if isinstance(j, dict):
                        params.update(j)
                except ValueError:
                    pass
            elif ctype == "application/x-www-form-urlencoded":
                for k, v in urllib.parse.parse_qsl(body.decode("utf-8", "replace"),
                                                   keep_blank_values=True):
                    params[k] = v
            elif ctype == "multipart/form-data":
                params.update(_parse_multipart(h.headers.get("Content-Type"), body))
        return params


def _parse_multipart(ctype, body):
    m = re.search(r'boundary="?([^";]+)"?', ctype or "")
    if not m:
        return {}
    out = {}
    for part in body.split(b"--" + m.group(1).encode()):
        if b"\r\n\r\n" not in part:
            continue
        head, _, value = part.partition(b"\r\n\r\n")
        nm = re.search(rb'name="([^"]*)"', head)
        if nm:
            out[nm.group(1).decode()] = value[:-2].decode("utf-8", "replace") \
                if value.endswith(b"\r\n") else value.decode("utf-8", "replace")
    return out


class JsonFake:
    """
    A fake HTTP API of a test's own (for what FakeTelegram and FakeGraph do not serve): a
    ThreadingHTTPServer on 127.0.0.1:0 that hands every request, whatever its method, to
    self.respond(handler, body) and writes back what it returns, (status, answer, headers):
    answer a JSON value, or bytes sent as they are; headers may set Content-Type (default
    application/json). By default respond() calls self.answer(handler, body), which returns
    (status, answer) or (status, answer, headers). self.base is http://127.0.0.1:PORT
    followed by BASE_PATH.
    """

    BASE_PATH = ""

    def __init__(self):
        self.httpd, self.thread = _http_server(self._write)
        self.base = "http://127.0.0.1:%d%s" % (self.httpd.server_address[1], self.BASE_PATH)

    def _write(self, h, body):
        status, answer, headers = self.respond(h, body)
        data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        headers = dict(headers or {})
        h.send_response(status)
        h.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
        h.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def respond(self, h, body):
        res = self.answer(h, body)
        return res if len(res) == 3 else (res[0], res[1], {})

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class FakeTelegram(_FakeServer):
    """
    The Telegram Bot API at http://127.0.0.1:PORT: /bot<TOKEN>/<method>, methods
    case-insensitive, parameters in the query string, JSON, form or multipart bodies.
    Records {http_method, path, method (lower-case), token, headers, params, body}.
    Overrides are keyed by the lower-case method name.
    """

    def __init__(self):
        super().__init__()
        self.bots = {}  # token -> {"id", "username", "first_name"}
        self.webhooks = {}  # token -> params of the last setWebhook
        self._msg_id = 1000

    @property
    def base(self):
        return "http://127.0.0.1:%d" % self.port

    def add_bot(self, token, username=None, first_name=None):
        bot_id = int(token.split(":", 1)[0])
        self.bots[token] = {"id": bot_id, "username": username or "bot%d_bot" % bot_id,
                            "first_name": first_name or "Bot %d" % bot_id}
        return self.bots[token]

    def remove_bot(self, token):
        self.bots.pop(token, None)

    def setwebhook_calls(self, token=None):
        m = {"method": "setwebhook"}
        if token is not None:
            m["token"] = token
        return self.requests(**m)

    def last_secret(self, token):
        """The secret_token of the last setWebhook call made with 'token'."""
        calls = self.setwebhook_calls(token)
        assert calls, "no setWebhook call for that token"
        return calls[-1]["params"].get("secret_token")

    def _dispatch(self, h, body):
        u = urllib.parse.urlsplit(h.path)
        m = re.match(r"^/bot([^/]*)/([^/]+)$", u.path)
        headers = {k.lower(): v for k, v in h.headers.items()}
        if not m:
            self._record({"http_method": h.command, "path": u.path, "method": None,
                          "token": None, "headers": headers, "params": {}, "body": body})
            self._send(h, 404, {"ok": False, "error_code": 404, "description": "Not Found"})
            return
        token = urllib.parse.unquote(m.group(1))
        method = m.group(2).lower()
        params = self._parse_params(h, u.query, body)
        self._record({"http_method": h.command, "path": u.path, "method": method,
                      "token": token, "headers": headers, "params": params, "body": body,
                      "time": time.monotonic()})
        status, answer = self._answer(token, method, params)
        o = self._take_override(method)
        if o is not None:
            self._apply_override(h, o, status, answer)
        else:
            self._send(h, status, answer)

    def _answer(self, token, method, params):
        if ":" not in token:
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        bot = self.bots.get(token)
        if bot is None:
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        if method == "getme":
            return 200, {"ok": True, "result": {
                "id": bot["id"], "is_bot": True, "first_name": bot["first_name"],
                "username": bot["username"], "can_join_groups": True,
                "can_read_all_group_messages": False, "supports_inline_queries": False}}
        if method == "setwebhook":
            with self._lock:
                self.webhooks[token] = dict(params)
            return 200, {"ok": True, "result": True, "description": "Webhook was set"}
        if method == "deletewebhook":
            with self._lock:
                self.webhooks.pop(token, None)
            return 200, {"ok": True, "result": True, "description": "Webhook was deleted"}
        if method == "getwebhookinfo":
            wh = self.webhooks.get(token) or {}
            allowed = wh.get("allowed_updates")
            if isinstance(allowed, str):
                try:
                    allowed = json.loads(allowed)
                except ValueError:
                    allowed = None
            res = {"url": wh.get("url", ""), "has_custom_certificate": False,
                   "pending_update_count": 0}
            if allowed is not None:
                res["allowed_updates"] = allowed
            return 200, {"ok": True, "result": res}
        if method.startswith("send") and method != "sendchataction":
            with self._lock:
                self._msg_id += 1
                mid = self._msg_id
            chat = params.get("chat_id")
            try:
                chat = int(chat)
            except (TypeError, ValueError):
                pass
            return 200, {"ok": True, "result": {
                "message_id": mid, "date": int(time.time()),
                "chat": {"id": chat, "type": "private"},
                "from": {"id": bot["id"], "is_bot": True, "first_name": bot["first_name"],
                         "username": bot["username"]},
                "text": params.get("text", "")}}
        if method in ("sendchataction", "answercallbackquery", "setmessagereaction"):
            return 200, {"ok": True, "result": True}
        return 404, {"ok": False, "error_code": 404, "description": "Not Found: method not found"}


GRAPH_BAD_TOKEN = {"error": {"message": "Invalid OAuth access token.", "type": "OAuthException",
                             "code": 190, "fbtrace_id": "x"}}


class FakeGraph(_FakeServer):
    """
    The Graph API at http://127.0.0.1:PORT/v21.0. GET /me answers the account of a known
    Bearer token (else 400 code 190); GET /<phone_number_id> answers the number's details.
    Records {http_method, path (without /v21.0), query, token, headers, params, body}.
    Overrides are keyed by "<HTTP method> <path>" or by the path alone (without /v21.0).
    """

    def __init__(self):
        super().__init__()
        self.accounts = {}  # access token -> {"id", "name", "username"?}
        self.phone_numbers = {}  # phone_number_id -> {"display_phone_number", "verified_name"}
        self._msg_id = 5000

    @property
    def base(self):
        return "http://127.0.0.1:%d/v21.0" % self.port

    def add_account(self, token, account_id, name, username=None):
        a = {"id": str(account_id), "name": name}
        if username is not None:
            a["username"] = username
        self.accounts[token] = a
        return a

    def remove_account(self, token):
        self.accounts.pop(token, None)

    def add_phone_number(self, phone_number_id, display="+1 555-010-1234",
                         verified_name="Switchboard Test"):
        self.phone_numbers[str(phone_number_id)] = {
            "display_phone_number": display, "verified_name": verified_name,
            "quality_rating": "GREEN", "platform_type": "CLOUD_API",
            "throughput": {"level": "STANDARD"}, "id": str(phone_number_id)}

    def _dispatch(self, h, body):
        u = urllib.parse.urlsplit(h.path)
        headers = {k.lower(): v for k, v in h.headers.items()}
        path = u.path[len("/v21.0"):] if u.path.startswith("/v21.0/") else u.path
        params = self._parse_params(h, u.query, body)
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else params.get("access_token")
        self._record({"http_method": h.command, "path": path, "full_path": u.path,
                      "query": dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True)),
                      "token": token, "headers": headers, "params": params, "body": body,
                      "time": time.monotonic()})
        status, answer = self._answer(h.command, u.path, path, token, params)
        o = self._take_override("%s %s" % (h.command, path)) or self._take_override(path)
        if o is not None:
            self._apply_override(h, o, status, answer)
        else:
            self._send(h, status, answer)

    def _answer(self, method, full_path, path, token, params):
        if not full_path.startswith("/v21.0/"):
            return 404, {"error": {"message": "Unknown path components", "type": "OAuthException",
                                   "code": 2500, "fbtrace_id": "x"}}
        if token not in self.accounts:
            return 400, GRAPH_BAD_TOKEN
        acct = self.accounts[token]
        parts = [p for p in path.split("/") if p]
        if method == "GET" and parts == ["me"]:
            return 200, dict(acct)
        if method == "GET" and len(parts) == 1:
            pn = self.phone_numbers.get(parts[0])
            if pn is None:
                return 400, {"error": {
                    "message": "Unsupported get request. Object with ID '%s' does not exist"
                               % parts[0], "type": "GraphMethodException", "code": 100,
                    "error_subcode": 33, "fbtrace_id": "x"}}
            return 200, dict(pn)
        if method == "POST" and len(parts) == 2 and parts[1] == "messages":
            with self._lock:
                self._msg_id += 1
                mid = self._msg_id
            if params.get("messaging_product") == "whatsapp":
                return 200, {"messaging_product": "whatsapp",
                             "contacts": [{"input": str(params.get("to")),
                                           "wa_id": str(params.get("to"))}],
                             "messages": [{"id": "wamid.FAKE%d" % mid}]}
            rcpt = params.get("recipient")
            if isinstance(rcpt, str):
                try:
                    rcpt = json.loads(rcpt)
                except ValueError:
                    rcpt = {}
            return 200, {"recipient_id": str((rcpt or {}).get("id", "")),
                         "message_id": "m_FAKE%d" % mid}
        return 400, {"error": {"message": "Unsupported request", "type": "GraphMethodException",
                               "code": 100, "fbtrace_id": "x"}}


# --------------------------------------------------------------------------------------
# the gateway


class Response:
    """One HTTP answer; unpacks as (status, headers, body, json)."""

    def __init__(self, status, headers, body, js, method=None, path=None):
        self.status = status
        self.headers = headers
        self.body = body
        self.json = js
        self.method = method
        self.path = path

    def __iter__(self):
        return iter((self.status, self.headers, self.body, self.json))

    def __repr__(self):
        return "<%s %s -> %s %r>" % (self.method, self.path, self.status, self.body[:300])


def _binary():
    b = os.environ.get("SB_BINARY")
    if not b:
        for cand in (os.path.join(SOURCE_DIR, "build", "switchboard"), "/tmp/build-it/switchboard"):
            if os.access(cand, os.X_OK):
                return cand
        raise RuntimeError("SB_BINARY is not set (path of the built switchboard binary)")
    if not os.access(b, os.X_OK):
        raise RuntimeError("SB_BINARY=%s is not an executable file" % b)
    return b


def _sanitizer_env(env):
    env["ASAN_OPTIONS"] = "halt_on_error=1:abort_on_error=0:detect_leaks=1"
    env["UBSAN_OPTIONS"] = "halt_on_error=1:abort_on_error=0:print_stacktrace=1"
    # h2o keeps per-thread recycled buffers that LeakSanitizer cannot see once the worker
    # threads have exited: tests/lsan.supp names them.
    env["LSAN_OPTIONS"] = "exitcode=23:suppressions=" + os.path.join(SOURCE_DIR, "tests",
                                                                       "lsan.supp")
    return env


class Gateway:
    """The real switchboard binary with a private listen port, Redis prefix and data dir."""

    def __init__(self, redis, telegram=None, graph=None, prefix="sb:", extra_env=None,
                 config=None, port=None, data_dir=None, use_env_listen=True):
        self.redis = redis
        self.telegram = telegram
        self.graph = graph
        self.prefix = prefix
        self.port = port or free_port()
        self.extra_env = dict(extra_env or {})
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="sb-data-")
        self._own_data_dir = data_dir is None
        self.config = config  # dict written as JSON and passed with --config
        self.use_env_listen = use_env_listen
        self.proc = None
        self.binary = _binary()
        self.log_dir = tempfile.mkdtemp(prefix="sb-logs-")
        self.stderr_path = os.path.join(self.log_dir, "stderr.log")
        self.stdout_path = os.path.join(self.log_dir, "stdout.log")
        self.config_path = None
        self.responses = []  # every Response this object received (for secret checks)
        self._starts = 0

    # --- environment

    def env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        env.update({
            "SWITCHBOARD_REDIS_URL": self.redis.url if self.redis else "",
            "SWITCHBOARD_REDIS_PREFIX": self.prefix,
            "SWITCHBOARD_PUBLIC_URL": PUBLIC_URL,
            "SWITCHBOARD_DATA_DIR": self.data_dir,
            "SWITCHBOARD_WORKERS": "2",
            "SWITCHBOARD_LOG_LEVEL": "debug",
            # The shared fixtures carry provider times of months ago: a WhatsApp reply to
            # them is outside the 24-hour service window. Tests of the window itself set
            # this to None (the default window) in their extra_env.
            "SWITCHBOARD_OUTBOUND_WHATSAPP_WINDOW_MS": "315360000000",
        })
        if self.use_env_listen:
            env["SWITCHBOARD_LISTEN"] = "127.0.0.1:%d" % self.port
        if self.graph:
            env["SWITCHBOARD_GRAPH_API_BASE"] = self.graph.base
        if self.telegram:
            env["SWITCHBOARD_TELEGRAM_API_BASE"] = self.telegram.base
        for k, v in self.extra_env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        return _sanitizer_env(env)

    def _argv(self):
        argv = [self.binary]
        if self.config is not None:
            self.config_path = os.path.join(self.log_dir, "config.json")
            with open(self.config_path, "w", encoding="utf-8") as f:
                json.dump(self.config, f)
            argv += ["--config", self.config_path]
        return argv

    # --- lifecycle

    def start(self, timeout=20.0, wait_ready=True):
        assert self.proc is None or self.proc.poll() is not None, "gateway already running"
        self._starts += 1
        err = open(self.stderr_path, "ab")
        out = open(self.stdout_path, "ab")
        try:
            self.proc = subprocess.Popen(self._argv(), env=self.env(), stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, cwd=self.log_dir)
        finally:
            err.close()
            out.close()
        if not wait_ready:
            return self

        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=20.0):
        """Waits until GET /healthz and then GET /readyz answer 200."""
        def probe(path):
            if self.proc.poll() is not None:
                raise StopWaiting("switchboard exited with %s; stderr:\n%s"
                                  % (self.proc.returncode, self.stderr_text()[-4000:]))
            return self.http("GET", path, timeout=2.0, record=False).status == 200

        for path in ("/healthz", "/readyz"):
            try:
                wait_until(lambda: probe(path), timeout, "GET %s = 200" % path)
            except StopWaiting:
                raise
            except AssertionError as e:
                raise AssertionError("%s; stderr:\n%s" % (e, self.stderr_text()[-4000:]))

    def stop(self, timeout=15.0, check=True):
        """SIGTERM; asserts a clean exit (code 0 within 'timeout') and no sanitizer report."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                if check:
                    raise AssertionError("switchboard did not exit within %.0fs of SIGTERM; "
                                         "stderr:\n%s" % (timeout, self.stderr_text()[-4000:]))
        rc = self.proc.returncode
        if check:
            self.assert_no_sanitizer_report()
            if rc != 0:
                raise AssertionError("switchboard exited with %s after SIGTERM; stderr:\n%s"
                                     % (rc, self.stderr_text()[-4000:]))
        return rc

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cleanup(self):
        self.kill()
        shutil.rmtree(self.log_dir, ignore_errors=True)
        if self._own_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    # --- logs

    def stderr_text(self):
        try:
            with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def logs(self):
        """The stderr lines of every run of this gateway."""
        return self.stderr_text().splitlines()

    def json_logs(self):
        """The stderr lines that parse as JSON objects."""
        out = []
        for line in self.logs():
            try:
                j = json.loads(line)
            except ValueError:
                continue
            if isinstance(j, dict):
                out.append(j)
        return out

    def assert_no_sanitizer_report(self):
        bad = [l for l in self.logs() if any(m in l for m in SANITIZER_MARKERS)]
        if bad:
            raise AssertionError("sanitizer report in switchboard stderr:\n%s\n...\n%s"
                                 % ("\n".join(bad[:10]), self.stderr_text()[-6000:]))

    # --- CLI

    def run_cli(self, *args, timeout=30.0, env_extra=None):
        env = self.env()
        for k, v in (env_extra or {}).items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        argv = [self.binary]
        if self.config is not None:
            argv = self._argv()
        p = subprocess.run(argv + list(args), env=env, capture_output=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, cwd=self.log_dir)
        text = p.stderr.decode("utf-8", "replace")
        with open(self.stderr_path, "a", encoding="utf-8") as f:  # sanitizer checks see it
            f.write(text)
        if any(m in text for m in SANITIZER_MARKERS):
            raise AssertionError("sanitizer report from switchboard %s:\n%s"
                                 % (" ".join(args), text[-4000:]))
        return p

    def keys_create(self, org):
        """`switchboard keys create --org ORG`: returns the key (exactly one stdout line)."""
        p = self.run_cli("keys", "create", "--org", org)
        if p.returncode != 0:
            raise AssertionError("keys create --org %s exited %d: %s"
                                 % (org, p.returncode, p.stderr.decode("utf-8", "replace")))
        lines = p.stdout.decode("utf-8").splitlines()
        if len(lines) != 1 or not lines[0].strip():
            raise AssertionError("keys create must print exactly one line, got %r" % p.stdout)
        return lines[0].strip()

    def keys_revoke(self, key):
        p = self.run_cli("keys", "revoke", key)
        if p.returncode != 0:
            raise AssertionError("keys revoke exited %d: %s"
                                 % (p.returncode, p.stderr.decode("utf-8", "replace")))
        return p

    # --- HTTP

    def http(self, method, path, body=None, headers=None, key=None, timeout=15.0, record=True,
             port=None):
        """
        One request on a fresh connection. 'body': dict/list (sent as JSON), str or bytes
        (sent as is). 'key' adds Authorization: Bearer KEY. Returns a Response, which
        unpacks as (status, headers (lower-case names), body bytes, parsed JSON or None).
        """
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=timeout)
        try:
            return self._exchange(conn, method, path, body, headers, key, record)
        finally:
            conn.close()

    def session(self, timeout=15.0):
        """A keep-alive connection: s.http(...) like Gateway.http; close with s.close()."""
        return _Session(self, timeout)

    def _exchange(self, conn, method, path, body, headers, key, record):
        hdrs = dict(headers or {})
        data = None
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode("utf-8")
            hdrs.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            data = body.encode("utf-8")
        elif body is not None:
            data = body
        if data is not None and not any(k.lower() == "content-type" for k in hdrs):
            hdrs["Content-Type"] = "application/json"
        if key is not None:
            hdrs["Authorization"] = "Bearer " + key
        try:
            conn.request(method, path, body=data, headers=hdrs)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer (413) before reading the whole body
        resp = conn.getresponse()
        rbody = resp.read()
        rh = {}
        for k, v in resp.getheaders():
            k = k.lower()
            rh[k] = rh[k] + ", " + v if k in rh else v
        js = None
        if rbody:
            try:
                js = json.loads(rbody)
            except ValueError:
                js = None
        r = Response(resp.status, rh, rbody, js, method, path)
        if record:
            self.responses.append(r)
        return r

    # --- redis helpers

    def redis_keys(self):
        with self.redis.client() as c:
            return c.keys(self.prefix + "*")


class _Session:
    def __init__(self, gw, timeout):
        self.gw = gw
        self.conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=timeout)

    def http(self, method, path, body=None, headers=None, key=None):
        return self.gw._exchange(self.conn, method, path, body, headers, key, True)

    def close(self):
        self.conn.close()


# --------------------------------------------------------------------------------------
# unittest base


class GatewayTestCase(unittest.TestCase):
    """
    Starts, once per class, a redis-server, a FakeTelegram, a FakeGraph and a gateway with
    the class's Redis prefix (PREFIX) and extra environment (EXTRA_ENV). Each test gets a
    fresh org and key (self.org, self.key).
    """

    PREFIX = "sb:"
    EXTRA_ENV = {}
    # Most test classes send far more than 500 requests a minute from 127.0.0.1.
    DEFAULT_ENV = {"SWITCHBOARD_API_RATE_LIMIT_PER_MINUTE": "100000"}

    @classmethod
    def start_redis(cls):
        """The class's Redis, started (a subclass may give another: a cluster's)."""
        return RedisServer().start()

    @classmethod
    def setUpClass(cls):
        cls.redis = cls.start_redis()
        cls.addClassCleanup(cls.redis.cleanup)
        cls.telegram = FakeTelegram().start()
        cls.addClassCleanup(cls.telegram.stop)
        cls.graph = FakeGraph().start()
        cls.addClassCleanup(cls.graph.stop)
        env = dict(cls.DEFAULT_ENV)
        env.update(cls.EXTRA_ENV)
        cls.gw = cls.make_gateway(extra_env=env, prefix=cls.PREFIX)

    @classmethod
    def make_gateway(cls, extra_env=None, prefix=None, start=True, **kw):
        """Another gateway on the class's Redis and fakes (stopped and cleaned at class end).
        On the class gateway's prefix it shares that gateway's data directory, hence its
        master key (the store refuses any other key)."""
        main = getattr(cls, "gw", None)
        if "data_dir" not in kw and main is not None and (prefix or cls.PREFIX) == main.prefix:
            kw["data_dir"] = main.data_dir
        gw = Gateway(cls.redis, cls.telegram, cls.graph, prefix=prefix or cls.PREFIX,
                     extra_env=extra_env, **kw)
        cls.addClassCleanup(gw.cleanup)
        # Runs before gw.cleanup (cleanups are LIFO): a gateway still running at the end of
        # the class must exit cleanly on SIGTERM, without sanitizer reports.
        cls.addClassCleanup(lambda: gw.stop() if gw.running() else None)
        if start:
            gw.start()
        return gw

    _org_seq = 0

    def new_org(self):
        GatewayTestCase._org_seq += 1
        return "org_%s_%d_%d" % (re.sub(r"[^A-Za-z0-9]", "", self._testMethodName)[-24:],
                                 os.getpid(), GatewayTestCase._org_seq)

    def setUp(self):
        self.telegram.clear_overrides()
        self.graph.clear_overrides()
        self.org = self.new_org()
        self.key = self.gw.keys_create(self.org)

    # --- request helpers bound to self.gw and self.key

    def api(self, method, path, body=None, key=..., headers=None, gw=None):
        return (gw or self.gw).http(method, path, body=body, headers=headers,
                                    key=self.key if key is ... else key)

    def assertStatus(self, resp, status, code=None):
        self.assertEqual(resp.status, status, "%s %s: expected %d, got %d: %r"
                         % (resp.method, resp.path, status, resp.status, resp.body[:500]))
        if code is not None or status >= 400:
            self.assertError(resp, status, code)
        return resp

    def assertError(self, resp, status, code=None):
        self.assertEqual(resp.status, status, repr(resp))
        self.assertIsInstance(resp.json, dict, "error body is not a JSON object: %r" % resp)
        err = resp.json.get("error")
        self.assertIsInstance(err, dict, "no error object: %r" % resp)
        self.assertIsInstance(err.get("code"), str, repr(resp))
        self.assertIsInstance(err.get("message"), str, repr(resp))
        if code is not None:
            self.assertEqual(err["code"], code, repr(resp))

    # --- object helpers

    def create_assistant(self, name="Assistant", key=..., **fields):
        body = {"name": name}
        body.update(fields)
        r = self.api("POST", "/orgs/c/assistants", body, key=key)
        self.assertStatus(r, 201)
        return r.json

    def create_telegram(self, token, username=None, name=None, key=...):
        if token not in self.telegram.bots:
            self.telegram.add_bot(token, username=username)
        body = {"provider": "telegram", "credentials": {"bot_token": token}}
        if name is not None:
            body["name"] = name
        r = self.api("POST", "/orgs/c/connections", body, key=key)
        self.assertStatus(r, 201)
        return r.json

    def create_meta(self, provider, app_secret, verify_token, access_token, account_id="1001",
                    account_name="Test Page", username=None, name=None, key=...):
        if access_token not in self.graph.accounts:
            self.graph.add_account(access_token, account_id, account_name, username)
        body = {"provider": provider, "credentials": {
            "app_secret": app_secret, "verify_token": verify_token, "access_token": access_token}}
        if name is not None:
            body["name"] = name
        r = self.api("POST", "/orgs/c/connections", body, key=key)
        self.assertStatus(r, 201)
        return r.json

    def bind(self, assistant_id, connection_id, external_id=None, name=None, key=...):
        body = {"connection_id": connection_id}
        if external_id is not None:
            body["external_id"] = external_id
        if name is not None:
            body["name"] = name
        r = self.api("POST", "/orgs/c/assistants/%s/channels" % assistant_id, body, key=key)
        self.assertStatus(r, 201)
        return r.json

    def webhook_path(self, connection):
        return urllib.parse.urlsplit(connection["webhook_url"]).path

    def post_telegram_update(self, connection, token, body, secret=None):
        """POSTs a Telegram update to the connection's webhook with the registered secret."""
        if secret is None:
            secret = self.telegram.last_secret(token)
        return self.gw.http("POST", self.webhook_path(connection),
                            body=json.dumps(body).encode(),
                            headers={"Content-Type": "application/json",
                                     "X-Telegram-Bot-Api-Secret-Token": secret})


def fixture_token(fixture, secret_part="TEST-fixture-token"):
    return "%s:%s" % (fixture["binding_external_id"], secret_part)


def parse_prometheus(text):
    """[(name, {label: value}, float value)] of every sample line."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$", line)
        if not m:
            raise AssertionError("not a Prometheus sample line: %r" % line)
        labels = {k: bytes(v, "utf-8").decode("unicode_escape")
                  for k, v in re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                         m.group(2) or "")}
        v = m.group(3)
        samples.append((m.group(1), labels,
                        float("inf") if v == "+Inf" else float("-inf") if v == "-Inf"
                        else float(v)))
    return samples


def metric_sum(samples, name, **labels):
    return sum(v for n, l, v in samples
               if n == name and all(l.get(k) == str(x) for k, x in labels.items()))


def main():
    unittest.main(verbosity=2)


def media_url_target(url):
    """
    What a gateway media URL ({PUBLIC_URL}/media/{token}) serves: the provider reference
    ("r": media id, file id or CDN URL) of the token's signed JSON payload, or None when
    'url' is not a gateway media URL. The payload is signed, not secret (it holds no token).
    """
    prefix = PUBLIC_URL + "/media/"
    if not isinstance(url, str) or not url.startswith(prefix):
        return None
    payload = url[len(prefix):].split(".", 1)[0]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        return json.loads(raw).get("r")
    except (ValueError, AttributeError):
        return None

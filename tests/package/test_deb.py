"""
The Debian package through its whole life on this machine (label "package", root only):

  build     scripts/package.sh (release build in a temporary directory), lintian without
            errors, the control fields (version from CMakeLists.txt, runtime libraries by
            their package names, Recommends redis-server), no master key inside;
  install   apt-get install ./switchboard_<version>-1_<arch>.deb: the binary, the unit
            (enabled), the conffile (0640 root:switchboard), /var/lib/switchboard (0700,
            owned by the system user switchboard), the docs and the manual page;
  run       the installed binary as user switchboard with the packaged configuration,
            against a private redis-server and a fake Graph API: an API key, an assistant,
            a WhatsApp connection, a binding, a signed webhook in, the event out in
            sb:in:{assistant}; the master key appears on first start with mode 0600;
  upgrade   the operator edits the conffile; the same build packaged as revision 2 is
            installed over it: the edit and the master key stay, and a second webhook
            (its signature checked with the secret decrypted by that key) still goes through;
  remove    apt-get remove: binary gone, configuration, key and user kept;
  purge     apt-get purge: configuration, state, user, group and the unit's enablement gone;
            the installed packages are those before the test.

Cleanup (however the test ends) purges the package and removes what the test created, so
the machine is left as it was. The test waits for a lock, so that two runs on one machine
take turns, and skips when a switchboard installation of the machine's own is present.
"""

import atexit
import fcntl
import grp
import gzip
import hashlib
import hmac
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness as H  # noqa: E402

SOURCE_DIR = os.environ.get("SB_SOURCE_DIR", os.path.abspath(os.path.join(HERE, "..", "..")))
SKIP = 77  # ctest SKIP_RETURN_CODE

CONF = "/etc/switchboard/switchboard.json"
STATE = "/var/lib/switchboard"
UNIT = "/lib/systemd/system/switchboard.service"
WANTS = "/etc/systemd/system/multi-user.target.wants/switchboard.service"
# Everything the package or its scripts may create; none of it may exist before or after.
TRACES = (CONF, "/etc/switchboard", STATE, UNIT, WANTS, "/usr/bin/switchboard",
          "/usr/share/doc/switchboard", "/usr/share/man/man1/switchboard.1.gz",
          "/etc/systemd/system/switchboard.service",
          "/var/lib/systemd/deb-systemd-helper-enabled/switchboard.service.dsh-also",
          "/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/"
          "switchboard.service",
          "/var/lib/systemd/deb-systemd-helper-masked/switchboard.service")
APT = ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=600"]
LOCK = "/run/lock/switchboard-package-test.lock"

PHONE_ID = "109988776655443"
APP_SECRET = "pkg-app-secret-0123456789abcdef"
ACCESS_TOKEN = "pkg-access-token-0123456789abcdef"


def project_version():
    with open(os.path.join(SOURCE_DIR, "CMakeLists.txt"), encoding="utf-8") as f:
        m = re.search(r"^project\(switchboard VERSION ([0-9][0-9A-Za-z.+~]*)", f.read(), re.M)
    if not m:
        raise AssertionError("CMakeLists.txt: no project(switchboard VERSION x.y.z ...)")
    return m.group(1)


def run(argv, check=True, timeout=900, **kw):
    """Runs argv (no stdin), returns the CompletedProcess; check: exit 0 or AssertionError
    with the output."""
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                       text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError("%s exited %d\nstdout:\n%s\nstderr:\n%s"
                             % (" ".join(argv), p.returncode, p.stdout[-4000:],
                                p.stderr[-4000:]))
    return p


def dpkg_status(pkg="switchboard"):
    """dpkg's abbreviated status ("ii", "rc", ...) or None when dpkg does not know it."""
    p = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", pkg], check=False)
    status = p.stdout.strip() if p.returncode == 0 else ""
    return None if status in ("", "un", "pn") else status


def installed_packages():
    out = run(["dpkg-query", "-W", "-f=${binary:Package} ${db:Status-Abbrev}\n"]).stdout
    return {line.split()[0] for line in out.splitlines()
            if len(line.split()) > 1 and line.split()[1].startswith("i")}


def user_exists(name="switchboard"):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def group_exists(name="switchboard"):
    try:
        return grp.getgrnam(name)
    except KeyError:
        return None


def mode_owner(path):
    st = os.lstat(path)
    return (stat.S_IMODE(st.st_mode), pwd.getpwuid(st.st_uid).pw_name,
            grp.getgrgid(st.st_gid).gr_name)


def sign(secret, data):
    return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def whatsapp_text(wamid, text):
    return {"object": "whatsapp_business_account", "entry": [{
        "id": "104857600123456", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550101234", "phone_number_id": PHONE_ID},
            "contacts": [{"profile": {"name": "Ana Souza"}, "wa_id": "5511987654321"}],
            "messages": [{"from": "5511987654321", "id": wamid, "timestamp": "1779012460",
                          "type": "text", "text": {"body": text}}]}}]}]}


class PackagedGateway(H.Gateway):
    """The installed /usr/bin/switchboard, run as user switchboard with the packaged
    configuration (its data_dir puts the master key in /var/lib/switchboard); the test's
    Redis, fake Graph API and listen port come from the environment."""

    def __init__(self, redis, graph):
        super().__init__(redis, None, graph, data_dir=STATE)
        self.config = CONF  # not None: run_cli uses _argv too

    def env(self):
        env = super().env()
        env.pop("SWITCHBOARD_DATA_DIR")
        env["SWITCHBOARD_WORKERS"] = "1"
        return env

    def _argv(self):
        return ["setpriv", "--reuid=switchboard", "--regid=switchboard", "--init-groups", "--",
                "/usr/bin/switchboard", "--config", CONF]


class DebPackageTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.version = project_version()
        cls.tmp = tempfile.mkdtemp(prefix="sb-deb-")
        cls.build = os.path.join(cls.tmp, "build")
        cls.packages_before = installed_packages()
        cls.cleaned = False
        atexit.register(cls.cleanup_machine)
        cls.addClassCleanup(cls.cleanup_machine)

    @classmethod
    def cleanup_machine(cls):
        """Purges the package and removes every trace the test (or the package) left, and
        the packages that the installation pulled in; idempotent."""
        if cls.cleaned:
            return
        cls.cleaned = True
        problems = []
        if dpkg_status() is not None:
            p = run(APT + ["purge", "switchboard"], check=False)
            if p.returncode != 0:
                run(["dpkg", "--purge", "--force-all", "switchboard"], check=False)
        pulled = sorted(installed_packages() - cls.packages_before)
        if pulled:
            problems.append("packages pulled in: %s" % " ".join(pulled))
            run(APT + ["purge"] + pulled, check=False)
        if user_exists():
            problems.append("user switchboard")
            run(["userdel", "switchboard"], check=False)
        if group_exists():
            problems.append("group switchboard")
            run(["groupdel", "switchboard"], check=False)
        for path in TRACES:
            if os.path.lexists(path):
                problems.append(path)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
        shutil.rmtree(cls.tmp, ignore_errors=True)
        if problems:
            print("cleanup removed what the test left: %s" % ", ".join(problems),
                  file=sys.stderr)

    # --- steps

    def package(self, revision):
        t0 = time.monotonic()
        p = run([os.path.join(SOURCE_DIR, "scripts", "package.sh"), "--build-dir", self.build,
                 "--revision", str(revision)], timeout=1500)
        deb = p.stdout.strip().splitlines()[-1]
        arch = run(["dpkg", "--print-architecture"]).stdout.strip()
        self.assertEqual(os.path.basename(deb),
                         "switchboard_%s-%s_%s.deb" % (self.version, revision, arch))
        self.assertTrue(os.path.isfile(deb), deb)
        print("built %s in %.0f s" % (deb, time.monotonic() - t0), file=sys.stderr)
        return deb

    def apt_install(self, deb):
        # apt needs a path with a slash to take it as a file, as an operator types it.
        run(APT + ["install", "./" + os.path.basename(deb)], cwd=os.path.dirname(deb))

    def check_control(self, deb, revision):
        field = lambda name: run(["dpkg-deb", "-f", deb, name]).stdout.strip()  # noqa: E731
        self.assertEqual(field("Package"), "switchboard")
        self.assertEqual(field("Version"), "%s-%s" % (self.version, revision))
        depends = [d.strip().split()[0] for d in field("Depends").split(",")]
        for lib in ("libc6", "libh2o0.13", "libuv1", "libhiredis0.14", "libcurl4",
                    "libjansson4", "libssl3", "adduser"):
            self.assertTrue(any(d == lib or d.startswith(lib) for d in depends),
                            "Depends lacks %s: %s" % (lib, depends))
        self.assertFalse([d for d in depends if d.endswith("-dev")], depends)
        self.assertIn("redis-server", field("Recommends"))
        names = run(["dpkg-deb", "-c", deb]).stdout
        self.assertNotIn("master.key", names)
        self.assertNotIn("./var/lib/switchboard", names)
        ctrl = os.path.join(self.tmp, "control-%s" % revision)
        run(["dpkg-deb", "-e", deb, ctrl])
        with open(os.path.join(ctrl, "conffiles"), encoding="utf-8") as f:
            self.assertEqual(f.read().split(), [CONF])

    def check_lintian(self, deb):
        p = run(["lintian", "--fail-on", "error", deb], check=False, timeout=600)
        errors = [l for l in p.stdout.splitlines() if l.startswith("E:")]
        self.assertEqual(p.returncode, 0, "lintian:\n%s\n%s" % (p.stdout, p.stderr))
        self.assertEqual(errors, [], p.stdout)
        if p.stdout.strip():
            print("lintian (no errors):\n%s" % p.stdout.strip(), file=sys.stderr)

    def check_installed(self):
        self.assertEqual(dpkg_status(), "ii")
        self.assertEqual(mode_owner("/usr/bin/switchboard"), (0o755, "root", "root"))
        u = user_exists()
        self.assertIsNotNone(u, "the package must create the user switchboard")
        self.assertLess(u.pw_uid, 1000, "switchboard must be a system user")
        self.assertEqual(u.pw_dir, STATE)
        self.assertEqual(u.pw_shell, "/usr/sbin/nologin")
        self.assertEqual(grp.getgrgid(u.pw_gid).gr_name, "switchboard")
        self.assertEqual(mode_owner(STATE), (0o700, "switchboard", "switchboard"))
        self.assertEqual(mode_owner("/etc/switchboard"), (0o755, "root", "root"))
        self.assertEqual(mode_owner(CONF), (0o640, "root", "switchboard"))
        with open(CONF, encoding="utf-8") as f:
            conf = json.load(f)
        self.assertEqual(conf["data_dir"], STATE)
        self.assertEqual(conf["listen"], "127.0.0.1:8080")
        conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "switchboard"]).stdout
        self.assertIn(CONF, conffiles)

        self.assertEqual(mode_owner(UNIT), (0o644, "root", "root"))
        with open(UNIT, encoding="utf-8") as f:
            unit = f.read()
        for line in ("ExecStart=/usr/bin/switchboard --config /etc/switchboard/switchboard.json",
                     "User=switchboard", "StateDirectory=switchboard", "NoNewPrivileges=yes",
                     "ProtectSystem=strict", "ReadWritePaths=/var/lib/switchboard",
                     "WantedBy=multi-user.target"):
            self.assertIn("\n" + line + "\n", unit)
        self.assertNotIn("/usr/local", unit)
        # Enabled (deb-systemd-helper works without a running systemd).
        self.assertTrue(os.path.islink(WANTS), "the unit is not enabled: no %s" % WANTS)
        self.assertEqual(os.readlink(WANTS), UNIT)

        doc = "/usr/share/doc/switchboard"
        for name in ("copyright", "changelog.Debian.gz", "README.md", "deploy.md",
                     "configuration.md", "api.md", "examples/redis.conf.snippet"):
            self.assertEqual(mode_owner(os.path.join(doc, name)), (0o644, "root", "root"), name)
        with gzip.open(os.path.join(doc, "changelog.Debian.gz"), "rt") as f:
            self.assertTrue(f.readline().startswith("switchboard (%s-" % self.version))
        with gzip.open("/usr/share/man/man1/switchboard.1.gz", "rt") as f:
            self.assertIn("switchboard %s" % self.version, f.readline())

        p = run(["/usr/bin/switchboard", "--version"], check=False)
        if p.returncode == 0:
            self.assertIn(self.version, p.stdout + p.stderr)
        else:
            print("skipped: this switchboard has no --version (exit %d); not compared with "
                  "the package version %s" % (p.returncode, self.version), file=sys.stderr)

    def start_fakes(self):
        redis = H.RedisServer().start()
        self.addCleanup(redis.cleanup)
        graph = H.FakeGraph().start()
        self.addCleanup(graph.stop)
        graph.add_account(ACCESS_TOKEN, "acct-pkg", "Package test account", username="acct")
        return redis, graph

    def gateway(self, redis, graph):
        os.environ["SB_BINARY"] = "/usr/bin/switchboard"
        gw = PackagedGateway(redis, graph)
        self.addCleanup(gw.cleanup)
        gw.start()
        return gw

    def post_webhook(self, gw, connection_id, wamid, text):
        data = json.dumps(whatsapp_text(wamid, text), separators=(",", ":")).encode()
        r = gw.http("POST", "/webhooks/whatsapp/%s" % connection_id, body=data,
                    headers={"Content-Type": "application/json",
                             "X-Hub-Signature-256": sign(APP_SECRET, data)})
        self.assertEqual(r.status, 200, repr(r))

    @staticmethod
    def stream_texts(redis, assistant_id):
        out = []
        for _id, fields in redis.command("XRANGE", "sb:in:{%s}" % assistant_id, "-", "+") or []:
            ev = json.loads(dict(zip(fields[::2], fields[1::2]))[b"event"])
            out.append(ev.get("message", {}).get("text"))
        return out

    def wait_events(self, redis, gw, assistant, texts):
        try:
            H.wait_until(lambda: self.stream_texts(redis, assistant) == texts, 10,
                         "the texts %r in sb:in:{%s}" % (texts, assistant))
        except AssertionError as e:
            raise AssertionError("%s\nkeys: %r\ngateway stderr:\n%s"
                                 % (e, sorted(redis.command("KEYS", "*")),
                                    gw.stderr_text()[-3000:])) from None

    def run_first(self, redis, graph):
        """A key, an assistant, a connection, a binding, one webhook in, one event out."""
        gw = self.gateway(redis, graph)
        key = gw.keys_create("org_pkg")
        r = gw.http("POST", "/orgs/c/assistants", {"name": "Package test"}, key=key)
        self.assertEqual(r.status, 201, repr(r))
        assistant = r.json["id"]
        r = gw.http("POST", "/orgs/c/connections", {
            "provider": "whatsapp", "name": "package test",
            "credentials": {"app_secret": APP_SECRET, "verify_token": "pkg-verify",
                            "access_token": ACCESS_TOKEN}}, key=key)
        self.assertEqual(r.status, 201, repr(r))
        connection = r.json["id"]
        r = gw.http("POST", "/orgs/c/assistants/%s/channels" % assistant,
                    {"connection_id": connection, "external_id": PHONE_ID}, key=key)
        self.assertEqual(r.status, 201, repr(r))
        self.post_webhook(gw, connection, "wamid.PKG-FIRST", "before the upgrade")
        self.wait_events(redis, gw, assistant, ["before the upgrade"])
        gw.stop()

        keyfile = os.path.join(STATE, "master.key")
        self.assertEqual(mode_owner(keyfile), (0o600, "switchboard", "switchboard"))
        with open(keyfile, "rb") as f:
            master_key = f.read()
        self.assertRegex(master_key.strip(), rb"^[0-9a-f]{64}$")
        return assistant, connection, master_key

    # --- the life of the package

    def test_lifecycle(self):
        # Build, check, install.
        deb1 = self.package(1)
        self.check_control(deb1, 1)
        self.check_lintian(deb1)
        self.apt_install(deb1)
        self.check_installed()
        self.assertEqual(os.listdir(STATE), [], "the state directory must start empty")
        uid = user_exists().pw_uid

        # Run it: a webhook in, an event out; the master key made on first start.
        redis, graph = self.start_fakes()
        assistant, connection, master_key = self.run_first(redis, graph)

        # The operator's edit of the conffile.
        with open(CONF, encoding="utf-8") as f:
            conf = json.load(f)
        conf["log_level"] = "warn"
        conf["public_url"] = "https://gateway.package-test.example"
        edited = json.dumps(conf, indent=2) + "\n"
        with open(CONF, "w", encoding="utf-8") as f:
            f.write(edited)

        # Upgrade to the same build as revision 2.
        deb2 = self.package(2)
        self.check_control(deb2, 2)
        self.apt_install(deb2)
        self.assertEqual(run(["dpkg-query", "-W", "-f=${Version}", "switchboard"]).stdout,
                         "%s-2" % self.version)
        self.check_installed()
        with open(CONF, encoding="utf-8") as f:
            self.assertEqual(f.read(), edited, "the upgrade must keep the edited conffile")
        with open(os.path.join(STATE, "master.key"), "rb") as f:
            self.assertEqual(f.read(), master_key, "the upgrade must keep the master key")
        self.assertEqual(user_exists().pw_uid, uid)
        # The kept key still decrypts the connection's app secret: the webhook's signature
        # is checked with it.
        gw = self.gateway(redis, graph)
        self.post_webhook(gw, connection, "wamid.PKG-SECOND", "after the upgrade")
        self.wait_events(redis, gw, assistant, ["before the upgrade", "after the upgrade"])
        gw.stop()

        # Remove: the binary goes, the configuration, the key and the user stay.
        run(APT + ["remove", "switchboard"])
        self.assertEqual(dpkg_status(), "rc")
        self.assertFalse(os.path.exists("/usr/bin/switchboard"))
        self.assertFalse(os.path.exists(UNIT))
        with open(CONF, encoding="utf-8") as f:
            self.assertEqual(f.read(), edited)
        with open(os.path.join(STATE, "master.key"), "rb") as f:
            self.assertEqual(f.read(), master_key)
        self.assertIsNotNone(user_exists())

        # Purge: everything goes.
        run(APT + ["purge", "switchboard"])
        self.assertIsNone(dpkg_status())
        self.assertIsNone(user_exists(), "purge must remove the user")
        self.assertIsNone(group_exists(), "purge must remove the group")
        left = [p for p in TRACES if os.path.lexists(p)]
        self.assertEqual(left, [], "purge left these behind")
        self.assertEqual(sorted(installed_packages() - self.packages_before), [],
                         "the installation pulled in packages")


def missing_tools():
    """The tools the test needs that are not installed (scripts/deps.sh test installs them)."""
    return [t for t in ("apt-get", "dpkg", "dpkg-deb", "dpkg-shlibdeps", "file", "lintian",
                        "setpriv", "redis-server") if shutil.which(t) is None]


def own_installation():
    """What says the machine has a switchboard of its own, which the test must not touch."""
    status = dpkg_status()
    if status is not None:
        return "the package switchboard is known to dpkg (status %s)" % status
    if user_exists() or group_exists():
        return "a user or group switchboard exists"
    found = [p for p in TRACES if os.path.lexists(p)]
    if found:
        return "%s exists" % ", ".join(found)
    return None


def main():
    if os.geteuid() != 0:
        print("skipped: needs root, as it installs, upgrades and purges the package on this "
              "machine (CI runs as root)")
        sys.exit(SKIP)
    missing = missing_tools()
    if missing:
        print("FAIL: not installed: %s (scripts/deps.sh test installs them)" % " ".join(missing))
        sys.exit(1)
    # One run at a time on a machine: the package, its user and its paths are machine-wide.
    lock = open(LOCK, "w")
    H.wait_until(lambda: _try_lock(lock), 1200, "the lock %s of another run" % LOCK,
                 interval=0.5)
    why = own_installation()
    if why:
        print("skipped: %s; the test installs and purges the package, so it runs only on a "
              "machine without one (apt-get purge switchboard to clean up a broken run)" % why)
        sys.exit(SKIP)
    # SIGTERM (ctest's timeout, a CI stop) must still run the cleanup.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    unittest.main(verbosity=2)


def _try_lock(f):
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


if __name__ == "__main__":
    main()

"""
The gateway's Lua scripts (gateway/scripts/*.lua, embedded at build time with the libraries
they include): every script the build embeds is loaded into a real redis-server, so a syntax
error fails here rather than at the first request that runs it, and the text Redis is given
hashes to the SHA-1 the gateway sends with EVALSHA.
"""

import hashlib
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

SOURCE = os.environ.get("SB_SOURCE_DIR") or os.path.join(os.path.dirname(__file__), "..", "..")
LUA_DIR = os.environ.get("SB_LUA_DIR", "")


def embedded_scripts():
    """{name: text} of the scripts the build embedded (SB_LUA_DIR)."""
    out = {}
    for f in sorted(os.listdir(LUA_DIR)):
        if f.endswith(".lua"):
            with open(os.path.join(LUA_DIR, f), "rb") as fh:
                out[f[:-4]] = fh.read()
    return out


class ScriptsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not LUA_DIR or not os.path.isdir(LUA_DIR):
            raise unittest.SkipTest("SB_LUA_DIR (the build's generated/lua) not set")
        cls.redis = H.RedisServer(validate_events=False).start()
        cls.addClassCleanup(cls.redis.stop)

    def test_every_source_file_is_embedded(self):
        src = sorted(f[:-4] for f in os.listdir(os.path.join(SOURCE, "gateway", "scripts"))
                     if f.endswith(".lua"))
        self.assertGreater(len(src), 20)
        self.assertEqual(sorted(embedded_scripts()), src)

    def test_every_script_loads(self):
        for name, text in embedded_scripts().items():
            with self.subTest(script=name):
                sha = self.redis.command("SCRIPT", "LOAD", text)
                self.assertEqual(sha.decode(), hashlib.sha1(text).hexdigest())

    def test_included_libraries_come_first(self):
        lib = os.path.join(SOURCE, "gateway", "scripts", "lib")
        with open(os.path.join(lib, "keys.lua"), "rb") as fh:
            keys = fh.read()
        with open(os.path.join(lib, "inbox.lua"), "rb") as fh:
            sbx = fh.read()
        text = embedded_scripts()["enqueue"]
        self.assertTrue(text.startswith(keys + sbx), text[:200])

    def test_metaids_forget_keeps_a_later_sign_in(self):
        # a delete forgets the Meta id only while it still names the deleted connection
        text = embedded_scripts()["metaids_forget"]
        key = "ts_scripts:metaids:{messenger}"
        self.redis.command("HSET", key, "8001", "org_b cn_new", "8002", "org_a cn_old")
        self.assertEqual(self.redis.command("EVAL", text, 1, key, "8001", "org_a cn_old"), 0)
        self.assertEqual(self.redis.command("EVAL", text, 1, key, "8002", "org_a cn_old"), 1)
        self.assertEqual(self.redis.command("HGETALL", key), [b"8001", b"org_b cn_new"])
        self.redis.command("DEL", key)

    def test_a_syntax_error_is_refused(self):
        # the check above can fail: Redis compiles what SCRIPT LOAD is given
        with self.assertRaises(H.RedisError):
            self.redis.command("SCRIPT", "LOAD", b"local x = ")


if __name__ == "__main__":
    H.main()

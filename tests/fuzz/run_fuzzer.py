#!/usr/bin/env python3
"""Runs one adapter fuzzer for a bounded time on a seed corpus built at test time.

The corpus is a fresh temporary directory holding (1) the "body" of every fixture file of
the channel under $SB_FIXTURES_DIR/<channel>/, serialized the two ways a provider may send
it (compact with non-ASCII as \\uXXXX, and compact raw UTF-8), and (2) the hand-written
seeds in tests/fuzz/seeds/<channel>/. Nothing is written to the source tree: crash inputs
go to --artifacts (in the build tree). Exits with the fuzzer's status (0 = no finding).
Standard library only.
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fuzzer", required=True)
    ap.add_argument("--channel", required=True)
    ap.add_argument("--fixtures", default=os.environ.get("SB_FIXTURES_DIR", ""))
    ap.add_argument("--seeds", required=True)
    ap.add_argument("--dict")
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--seconds", type=int, default=25)
    args = ap.parse_args()

    corpus = tempfile.mkdtemp(prefix="sb-fuzz-%s-" % args.channel)
    try:
        n = 0
        for path in sorted(glob.glob(os.path.join(args.fixtures, args.channel, "*.json"))):
            with open(path, encoding="utf-8") as f:
                body = json.load(f).get("body")
            if body is None:
                continue
            name = os.path.splitext(os.path.basename(path))[0]
            forms = {
                "ascii": json.dumps(body, separators=(",", ":")).encode(),
                "utf8": json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
            }
            for form, data in forms.items():
                with open(os.path.join(corpus, "fixture-%s-%s" % (name, form)), "wb") as f:
                    f.write(data)
                n += 1
        for path in sorted(glob.glob(os.path.join(args.seeds, "*"))):
            shutil.copy(path, os.path.join(corpus, "seed-" + os.path.basename(path)))
            n += 1
        if n == 0:
            print("no seeds for %s (fixtures: %r)" % (args.channel, args.fixtures), file=sys.stderr)
            return 1
        os.makedirs(args.artifacts, exist_ok=True)
        cmd = [args.fuzzer, "-max_total_time=%d" % args.seconds, "-rss_limit_mb=2048",
               "-timeout=10", "-max_len=65536", "-print_final_stats=1",
               "-artifact_prefix=%s/%s-" % (args.artifacts, args.channel)]
        if args.dict:
            cmd.append("-dict=%s" % args.dict)
        cmd.append(corpus)
        print("corpus: %d seeds; running %s" % (n, " ".join(cmd)), flush=True)
        return subprocess.call(cmd)
    finally:
        shutil.rmtree(corpus, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

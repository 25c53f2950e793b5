#!/usr/bin/env python3
"""Runs one adapter fuzzer for a bounded time on a seed corpus built at test time.

The corpus is a fresh temporary directory holding (1) the "body" of every fixture file of
the channel under <dir>/<channel>/ of every existing directory of --fixtures-dirs
(colon-separated, default $SB_FIXTURES_DIRS: the repository's tests/fixtures, and
../shared/fixtures when it exists), serialized the two ways a provider may send it
(compact with non-ASCII as \\uXXXX, and compact raw UTF-8), and (2) the hand-written seeds
in tests/fuzz/seeds/<channel>/ (which must exist and hold at least one file). A fuzzer
without seeds would only explore from nothing and pass: that is a failure here. Nothing is
written to the source tree: crash inputs go to --artifacts (in the build tree). Exits with
the fuzzer's status (0 = no finding). Standard library only.
"""
import argparse
import ctypes
import glob
import json
import os
import shutil
import subprocess
import signal
import sys
import tempfile


def _die_with_parent():
    """In the fuzzer's process, before exec: SIGKILL when this script dies (a ctest timeout
    or Ctrl-C never leaves a fuzzer running)."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fuzzer", required=True)
    ap.add_argument("--channel", required=True)
    ap.add_argument("--fixtures-dirs", default=os.environ.get("SB_FIXTURES_DIRS", ""))
    ap.add_argument("--seeds", required=True)
    ap.add_argument("--dict")
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--seconds", type=int, default=25)
    args = ap.parse_args()
    # Ended with ctest (SIGTERM when it dies, as after Ctrl-C): the fuzzer is killed and the
    # temporary corpus removed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    corpus = tempfile.mkdtemp(prefix="sb-fuzz-%s-" % args.channel)
    try:
        n = 0
        dirs = [d for d in args.fixtures_dirs.split(":") if d and os.path.isdir(d)]
        fixtures = 0
        for d in dirs:
            for path in sorted(glob.glob(os.path.join(d, args.channel, "*.json"))):
                with open(path, encoding="utf-8") as f:
                    body = json.load(f).get("body")
                if body is None:
                    continue
                name = "%d-%s" % (dirs.index(d), os.path.splitext(os.path.basename(path))[0])
                forms = {
                    "ascii": json.dumps(body, separators=(",", ":")).encode(),
                    "utf8": json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
                }
                for form, data in forms.items():
                    with open(os.path.join(corpus, "fixture-%s-%s" % (name, form)), "wb") as f:
                        f.write(data)
                    n += 1
                fixtures += 1
        seeds = sorted(p for p in glob.glob(os.path.join(args.seeds, "*")) if os.path.isfile(p))
        for path in seeds:
            shutil.copy(path, os.path.join(corpus, "seed-" + os.path.basename(path)))
            n += 1
        if not seeds:
            print("FAIL: no seed files in %s" % args.seeds, file=sys.stderr)
            return 1
        # the webhook adapters' fuzzers also start from every fixture body of their channel;
        # others (fuzz_media: references and multipart bodies) from their seeds alone
        if fixtures == 0 and args.channel in ("whatsapp", "messenger", "instagram", "telegram"):
            print("FAIL: no %s fixture in any of %r" % (args.channel, args.fixtures_dirs),
                  file=sys.stderr)
            return 1
        print("seeds: %d fixtures of %s, %d files of %s"
              % (fixtures, ", ".join(dirs), len(seeds), args.seeds), flush=True)
        os.makedirs(args.artifacts, exist_ok=True)
        cmd = [args.fuzzer, "-max_total_time=%d" % args.seconds, "-rss_limit_mb=2048",
               "-timeout=10", "-max_len=65536", "-print_final_stats=1",
               "-artifact_prefix=%s/%s-" % (args.artifacts, args.channel)]
        if args.dict:
            cmd.append("-dict=%s" % args.dict)
        cmd.append(corpus)
        print("corpus: %d seeds; running %s" % (n, " ".join(cmd)), flush=True)
        return subprocess.call(cmd, preexec_fn=_die_with_parent)
    finally:
        shutil.rmtree(corpus, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""
Where a webhook's Redis time goes: runs the org's enqueue script (gateway/scripts/enqueue.lua,
as embedded: BUILD/generated/lua/enqueue.lua) alone against a private redis-server, with the
arguments the gateway sends for the realistic WhatsApp text event (bench/README.md), and
prints its cost per event from INFO commandstats: the script call (EVALSHA usec), the
commands it ran (their own usec) and how many, then the same for variants of the script
with one part taken out, so that each part's share is the difference.

  bench/script_cost.py --build-dir build-rel [--events 20000] [--batch 20] [--senders 1]
                       [--runs 3]

--batch is the number of events per call (the group commit sends several webhooks of one org
in one call; bench/run.sh shows how many it averaged), --senders the number of distinct
contacts (each its own conversation; the bench's load generator uses one). The variants:
  full            the script as embedded
  call only       the same arguments, a script that returns at once (the fixed cost of a call)
  no inbox        without SBX.item (history, list, filter sets, counts of the conversation)
  no history      without the history copy (XADD hist)
  no filter sets  without the ZADDs of the list and its filter sets
  no stream copy  without the XADD to the assistant's stream (sb:in:{assistant})
and two scripts of their own, with the same arguments, for the floor under any enqueue:
  three copies    only the three appends of the event that the contract and the inbox ask
                  for (sb:inbox:{org}, the conversation's history, sb:in:{assistant}), the
                  event built from its parts in one concatenation; nothing else
  one copy        only the append to sb:inbox:{org} (what the minimal server does, in a script)
A variant whose anchor text is not found in the script is skipped (the script changed).
Each run starts from an empty Redis with the route, binding and assistant in place; the
figures are medians over --runs. Times are wall-clock inside Redis (usec), on whatever core
the kernel gives it: compare variants of one run of this tool, not against bench/run.sh.
"""

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TEXT = ("Hello again! I ordered the blue ceramic vase (order 48213) on Monday and the tracking "
        "page still says that the label was created but the parcel has not moved since. Could "
        "you check with the carrier whether it was really picked up? It is a birthday present "
        "for my mother, Ren\u00e9e, and her birthday is on Saturday, so timing matters a lot "
        "to me. If it cannot arrive by Friday, is there any way to send a replacement by "
        "express, or to pick it up from your store in the city centre? I am happy to pay the "
        "difference for the faster shipping if needed. Also, the confirmation email said "
        "\u201cgift wrap included\u201d but the receipt does not show it; could you confirm "
        "that it will be wrapped? Thank you so much for your help \U0001F60A")


def resp(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Redis:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.f = self.s.makefile("rb")

    def read(self):
        line = self.f.readline()
        t, rest = line[:1], line[1:-2]
        if t in (b"+", b":"):
            return rest
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if t == b"*":
            n = int(rest)
            return [self.read() for _ in range(max(n, 0))]
        raise RuntimeError("bad reply %r" % line)

    def call(self, *args):
        self.s.sendall(resp(args))
        return self.read()


def event_args(i, senders):
    """The 22 per-event arguments of enqueue.lua (gateway/webhook.c says which)."""
    sender = "1631555%04d" % (i % senders)
    wamid = "wamid.%015d" % (900000000000000 + i)
    text = TEXT.encode("unicode_escape").decode("ascii")  # the shape the adapter writes
    content = (',"message":{"external_id":"%s","type":"text","text":"%s"},"timestamp":%d' %
               (wamid, text.replace('"', '\\"'), 1779012345000 + i))
    contact = '"name":"Ren\\u00e9e M\\u00fcller","phone":"+%s"' % sender
    return ["m:" + wamid, "100000000000777", sender, "Ren\u00e9e M\u00fcller", "+" + sender,
            "", sender, "message", "ev_bench%08d" % i, contact, content, "ct_bench%08d" % i,
            "", "", wamid, "", "text", TEXT[:120], str(1779012345000 + i), "", "",
            "cn_bench"]


VARIANTS = [
    ("full", None, None),
    ("call only", "local P, org, channel", "do return {} end\nlocal P, org, channel"),
    ("no inbox", "SBX.item(P, org, cv, ev, eid, 'in', kind, mtype, preview, ts, now, '', mext, maxlen, pre)", ""),
    ("no history", "redis.pcall('XADD', P .. 'hist:' .. tag .. ':' .. cv, 'MAXLEN', '~', maxlen, eid, 'e', ev)", ""),
    ("no filter sets", None, None),  # built below
    ("no stream copy", "redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'event', ev)", ""),
    ("three copies", None, None),  # scripts of their own, below
    ("one copy", None, None),
]

FLOOR = """local P, org, maxlen, n = ARGV[1], ARGV[2], ARGV[4], tonumber(ARGV[7])
for i = 0, n - 1 do
  local b = 9 + i * 22
  local ev = '{"v":1,"id":"' .. ARGV[b + 8] .. '","contact":{' .. ARGV[b + 9] .. '}' ..
    ARGV[b + 10] .. '}'
  local eid = redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'event', ev)
  if COPIES == 3 then
    redis.call('XADD', P .. 'hist:{' .. org .. '}:cv_bench', 'MAXLEN', '~', maxlen, eid, 'e', ev)
    redis.call('XADD', P .. 'in:{as_bench}', 'MAXLEN', '~', maxlen, '*', 'event', ev)
  end
end
return {}
"""


def variant_text(script, name, anchor, replacement):
    if name == "full":
        return script
    if name == "three copies":
        return "local COPIES = 3\n" + FLOOR
    if name == "one copy":
        return "local COPIES = 1\n" + FLOOR
    if name == "no filter sets":
        i = script.find("function SBX.item(")
        j = script.find("function SBX.edit(")
        if i < 0 or j < 0:
            return None
        body = re.sub(r"redis\.call\('ZADD'[^\n]*?cv\)", "nil", script[i:j])
        body = body.replace("then nil end", "then end").replace("\n  nil\n", "\n  local _ = nil\n")
        body = re.sub(r"\n(\s*)nil\n", r"\n\1local _ = nil\n", body)
        return script[:i] + body + script[j:]
    if anchor not in script:
        return None
    return script.replace(anchor, replacement, 1)


def run_once(script, events, batch, senders):
    port = 20000 + os.getpid() % 20000
    d = tempfile.mkdtemp(prefix="sb-script-cost-")
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", d],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                r = Redis(port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        org, conn, P = "bench", "cn_bench", "sb:"
        r.call("SET", "%sroute:{%s}:%s:100000000000777" % (P, org, conn), "bd_bench")
        r.call("HSET", "%sbinding:{%s}:bd_bench" % (P, org), "assistant_id", "as_bench")
        r.call("HSET", "%sassistant:{%s}:as_bench" % (P, org), "enabled", "1")
        sha = r.call("SCRIPT", "LOAD", script)
        r.call("CONFIG", "RESETSTAT")
        sent = 0
        while sent < events:
            n = min(batch, events - sent)
            keys = ["%sinbox:{%s}" % (P, org)]
            argv = []
            for i in range(sent, sent + n):
                a = event_args(i, senders)
                keys.append("%sdd:{%s}:%s:%s" % (P, org, conn, a[0]))
                argv += a
            fixed = [P, org, "whatsapp", "1000000", "691200", str(int(time.time() * 1000)),
                     str(n), "1"]
            r.call("EVALSHA", sha, len(keys), *(keys + fixed + argv))
            sent += n
        info = r.call("INFO", "commandstats").decode()
        stats = {m.group(1): (int(m.group(2)), int(m.group(3)))
                 for m in re.finditer(r"cmdstat_(\S+):calls=(\d+),usec=(\d+)", info)}
        ev = stats.get("evalsha", (0, 0))
        inner = [(k, v) for k, v in stats.items()
                 if k not in ("evalsha", "script|load", "config|resetstat", "info")]
        return {"script": ev[1] / events, "inner": sum(v[1] for _, v in inner) / events,
                "calls": sum(v[0] for _, v in inner) / events}
    finally:
        p.terminate()
        p.wait()
        subprocess.run(["rm", "-rf", d])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--senders", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    o = ap.parse_args()
    path = os.path.join(o.build_dir, "generated", "lua", "enqueue.lua")
    if not os.path.exists(path):
        sys.exit("script_cost.py: %s not found (build the gateway in %s first)" % (path, o.build_dir))
    script = open(path).read()
    print("enqueue.lua from %s: %d events, %d per call, %d sender(s), median of %d run(s)"
          % (o.build_dir, o.events, o.batch, o.senders, o.runs))
    texts = [(name, variant_text(script, name, anchor, repl)) for name, anchor, repl in VARIANTS]
    runs = {name: [] for name, _ in texts}
    for _ in range(o.runs):  # the variants interleaved, so that a drift of the machine's speed
        for name, text in texts:  # touches them all alike
            if text is not None:
                runs[name].append(run_once(text, o.events, o.batch, o.senders))
    print("%-16s %12s %12s %10s" % ("variant", "script us/ev", "inner us/ev", "calls/ev"))
    for name, text in texts:
        if text is None:
            print("%-16s %12s" % (name, "(skipped)"))
            continue
        med = {k: statistics.median(r[k] for r in runs[name]) for k in runs[name][0]}
        print("%-16s %12.1f %12.1f %10.1f" % (name, med["script"], med["inner"], med["calls"]))

if __name__ == "__main__":
    main()

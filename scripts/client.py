#!/usr/bin/env python3
"""Demo client: HTTP requests to the VIP from distinct source ports.

Prints which node answered each request and, with --owner, checks it is the
node `xnlb owner` names. With --until-all-answered, repeats rounds of fresh
connections until one whole round is answered, and prints how long that took
after --t0 (a failover measurement)."""
import argparse
import random
import shlex
import socket
import subprocess
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("vip")
ap.add_argument("port", type=int)
ap.add_argument("count", type=int)
ap.add_argument("--owner", help="xnlb command prefix to ask `owner`")
ap.add_argument("--until-all-answered", action="store_true")
ap.add_argument("--t0", type=int, help="CLOCK_REALTIME ns of the fault")
ap.add_argument("--quiet", action="store_true")
ap.add_argument("--timeout", type=float, default=0.25)
a = ap.parse_args()


def request(sport):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(a.timeout)
    try:
        s.bind(("0.0.0.0", sport))
        s.connect((a.vip, a.port))
        s.settimeout(2)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        body = data.split(b"\r\n\r\n", 1)[-1].decode().strip()
        return body, s.getsockname()[0]
    except OSError:
        return None, None
    finally:
        s.close()


def owner(src, sport):
    # "xnlb --socket S" -> xnlb owner --socket S --vip ...
    exe, rest = shlex.split(a.owner)[0], shlex.split(a.owner)[1:]
    cmd = [exe, "owner"] + rest + ["--vip", a.vip, "--src", f"{src}:{sport}", "--dport", str(a.port)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    return out.stdout.strip() or out.stderr.strip()


rng = random.Random()
if a.until_all_answered:
    # A fresh connection every 5 ms, each with its own thread, for 1.5 s:
    # the outage lasts until the SYN of the last attempt that went
    # unanswered. Then a check that 200 more in a row are all answered.
    import concurrent.futures
    t0 = a.t0 or time.time_ns()
    results = []

    def probe():
        start = time.time_ns()
        return start, request(rng.randrange(20000, 60000))[0]

    with concurrent.futures.ThreadPoolExecutor(max_workers=128) as pool:
        futures = []
        end = time.time_ns() + 1_500_000_000
        while time.time_ns() < end:
            futures.append(pool.submit(probe))
            time.sleep(0.005)
        results = [f.result() for f in futures]
    failed = [start for start, body in results if body is None]
    nodes = sorted({body for _, body in results if body})
    later = [request(rng.randrange(20000, 60000))[0] for _ in range(200)]
    if not all(later):
        print(f"{later.count(None)} of 200 connections still unanswered after the window", file=sys.stderr)
        sys.exit(1)
    if failed:
        print(f"{len(failed)} of {len(results)} probe connections (one every 5 ms) failed; the last failed one "
              f"started {(max(failed) - t0) / 1e6:.0f} ms after the fault; since then all answered, by {', '.join(nodes)}")
    else:
        print(f"none of {len(results)} probe connections failed, answered by {', '.join(nodes)}")
    sys.exit(0)

bad = 0
by_node = {}
for i in range(a.count):
    sport = rng.randrange(20000, 60000)
    body, src = request(sport)
    if body is None:
        print(f"  port {sport}: NO ANSWER")
        bad += 1
        continue
    n = body.split()[-1]
    by_node[n] = by_node.get(n, 0) + 1
    line = f"  client port {sport:5d} -> answered by node {n}"
    if a.owner:
        o = owner(src, sport)
        ok = o == n
        bad += not ok
        line += f"   (xnlb owner: {o}) {'ok' if ok else 'MISMATCH'}"
    if not a.quiet:
        print(line)
print(f"{a.count - bad} of {a.count} requests answered by the owning node; per node: "
      + ", ".join(f"node {k}: {v}" for k, v in sorted(by_node.items())))
sys.exit(1 if bad else 0)

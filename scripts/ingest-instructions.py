#!/usr/bin/env python3
"""Instructions per position of ingest-api's request path, under callgrind.

`make bench-ingest` measures time on a 2-core VM whose speed varies by
+-15 % from run to run, so a change of a few percent does not show there.
Instruction counts do: the same binary and requests give the same counts
whatever else the machine does. This runs the release binary under
`valgrind --tool=callgrind` with the local sink, posts REQUESTS requests of
BATCH positions one at a time (so each request is also one stream record),
and prints the instructions per position of the whole service (startup
subtracted, from a second run with no request) and of its main stages.

Usage: scripts/ingest-instructions.py [BINARY] (default target/release/ingest-api)
Environment: REQUESTS (default 200), BATCH (default 100); BARE, the built
`ingest_load` bench binary (target/release/deps/ingest_load-*), to count the
bare route (`--serve-bare`, the same JSON parse only) the same way.
"""

import datetime
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

STAGES = [
    ("JSON parse (the bare route's work too)", "courier_model::payload::parse_body"),
    ("validation (RawPosition::check)", "courier_model::payload::RawPosition::check"),
    ("  of which Position::try_new", "courier_model::position::Position::try_new"),
    ("Avro datum (encode_datum)", "courier_model::avro::encode_datum"),
    ("record compression (RecordEncoder::encode)", "courier_model::avro::RecordEncoder::encode"),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(binary, out, requests, batch, bare=False):
    token = "instructions-" + os.urandom(8).hex()
    keys = "bench:" + hashlib.sha256(token.encode()).hexdigest()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data:
        service = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary]
            + (["--serve-bare", f"127.0.0.1:{port}"] if bare else
               ["serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data]),
            env=dict(os.environ, INGEST_API_KEYS=keys, RUST_LOG="warn"),
            cwd=data,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    urllib.request.urlopen(base + "/readyz", timeout=2)
                    break
                except OSError:
                    if service.poll() is not None or time.monotonic() > deadline:
                        sys.exit(f"ingest-api under valgrind did not become ready on {base}")
                    time.sleep(0.2)
            now = datetime.datetime.now(datetime.timezone.utc)
            recorded_at = now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            for r in range(requests):
                positions = [
                    {"event_id": "00000000-0000-4000-8000-%012x" % (r * batch + i),
                     "courier_id": "courier-7", "lat": -23.5 + i * 1e-6, "lon": -46.6559,
                     "recorded_at": recorded_at, "speed_mps": 8.2}
                    for i in range(batch)
                ]
                request = urllib.request.Request(
                    base + "/v1/positions",
                    data=json.dumps({"positions": positions}).encode(),
                    headers={"Authorization": "Bearer " + token,
                             "Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=120) as answer:
                    if answer.status != 202:
                        sys.exit(f"request {r} answered {answer.status}, not 202")
        finally:
            service.terminate()
            service.wait(timeout=120)


def inclusive(out):
    # Run outside the workspace: where callgrind_annotate finds the sources
    # (relative paths from the workspace root), it splits a function's
    # inlined code into entries of their own and the stages come out short.
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", out],
                          cwd=os.path.dirname(out),
                          capture_output=True, text=True, check=True).stdout
    counts = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*)$", line)
        if not m:
            continue
        n = int(m.group(1).replace(",", ""))
        name = m.group(2)
        if name.startswith("PROGRAM TOTALS"):
            counts["total"] = n
        for _, symbol in STAGES:
            # The function's own entry ("file:symbol [binary]"), not inlined copies.
            if re.search(":" + re.escape(symbol) + r" \[", name):
                counts[symbol] = max(counts.get(symbol, 0), n)
    return counts


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/ingest-api")
    requests = int(os.environ.get("REQUESTS", "200"))
    batch = int(os.environ.get("BATCH", "100"))
    with tempfile.TemporaryDirectory() as work:
        loaded, idle = os.path.join(work, "loaded.out"), os.path.join(work, "idle.out")
        run(binary, loaded, requests, batch)
        run(binary, idle, 0, batch)
        with_load, without = inclusive(loaded), inclusive(idle)
    positions = requests * batch
    print(f"ingest-api instructions per position ({requests} requests of {batch}, "
          f"one at a time, local sink; {binary})\n")
    print("| stage | instructions per position |")
    print("|---|---:|")
    total = (with_load["total"] - without["total"]) / positions
    print(f"| whole service (startup subtracted) | {total:,.0f} |")
    for label, symbol in STAGES:
        print(f"| {label} | {with_load.get(symbol, 0) / positions:,.0f} |")
    bare = os.environ.get("BARE")
    if bare:
        with tempfile.TemporaryDirectory() as work:
            loaded, idle = os.path.join(work, "loaded.out"), os.path.join(work, "idle.out")
            run(os.path.abspath(bare), loaded, requests, batch, bare=True)
            run(os.path.abspath(bare), idle, 0, batch, bare=True)
            bare_total = (inclusive(loaded)["total"] - inclusive(idle)["total"]) / positions
        print(f"| bare route, whole server (startup subtracted) | {bare_total:,.0f} |")
        print(f"\nbare route / ingest-api instructions: {bare_total / total:.2f}")


if __name__ == "__main__":
    main()

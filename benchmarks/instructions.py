"""Server instructions per HTTP request, counted by callgrind: ``python -m benchmarks.instructions
[--requests N] [CASE ...]`` (default cases ``b g``, as P4 compares them).

Wall-clock CPU per request (:mod:`benchmarks.http_load`) moves by 10 to 30 % between runs on a
shared 2-core VM, more than P4's goal of 5 %. Counting instructions does not: each case's server
(:mod:`benchmarks.server`, plain ``hypercorn.trio.serve``) runs under ``valgrind
--tool=callgrind`` with collection off; after a warm-up of 300 requests, ``callgrind_control -i
on`` opens the window, exactly N requests are sent over 8 keep-alive connections by a client in
another process (its instructions are not counted), and ``callgrind_control -i off`` closes it.
The window's total, divided by N, is the server's cost of one request: Hypercorn's, the app's
and trio_bg's, the collector's included. Three runs of (b) and (g) with 1,000 and 2,000 requests
agreed to within 0.1 %.

Needs Debian's ``valgrind`` (``callgrind_control`` comes with it); about 30 s per case.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from .apps import CASES

ROOT = Path(__file__).resolve().parent.parent
WARM_UP = 300
CONNECTIONS = 8


async def _client(host: str, port: int, requests: int, connections: int) -> int:
    """Send ``requests`` keep-alive ``GET /`` over ``connections`` connections; return how many
    complete responses came back."""
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    done = 0

    async def one_connection(count: int) -> None:
        nonlocal done
        stream = await trio.open_tcp_stream(host, port)
        buffer = b""
        async with stream:
            for _ in range(count):
                await stream.send_all(request)
                while True:
                    head, found, rest = buffer.partition(b"\r\n\r\n")
                    if found:
                        length = 0
                        for line in head.split(b"\r\n")[1:]:
                            key, _, value = line.partition(b":")
                            if key.strip().lower() == b"content-length":
                                length = int(value)
                        if len(rest) >= length:
                            buffer = rest[length:]
                            break
                    data = await stream.receive_some(65536)
                    if not data:
                        raise RuntimeError("the server closed the connection")
                    buffer += data
                done += 1

    async with trio.open_nursery() as nursery:
        for index in range(connections):
            share = requests // connections + (index < requests % connections)
            nursery.start_soon(one_connection, share)
    return done


def _send(host: str, port: int, requests: int) -> None:
    sent = trio.run(_client, host, port, requests, CONNECTIONS)
    if sent != requests:
        raise RuntimeError(f"{sent} of {requests} requests answered")


def count(case: str, requests: int, workdir: Path) -> float:
    """Instructions the server of ``case`` runs per request."""
    app = CASES[case][0]
    out = workdir / f"callgrind.{case}.out"
    for old in workdir.glob(f"callgrind.{case}.out*"):
        old.unlink()
    command = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
        sys.executable, "-m", "benchmarks.server", app,
        "--stats-file", str(workdir / "stats.json"),
    ]  # fmt: skip
    log = (workdir / f"server.{case}.log").open("w")
    env = dict(os.environ, PYTHONHASHSEED="0")
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, env=env)
    try:
        assert server.stdout is not None
        line = server.stdout.readline().decode()  # READY http://host:port trio_bg=...
        if not line.startswith("READY "):
            raise RuntimeError(f"the server of case ({case}) did not start: {line!r}")
        host, _, port = line.split()[1].removeprefix("http://").rpartition(":")
        _send(host, int(port), WARM_UP)
        control = ["callgrind_control"]
        subprocess.run([*control, "-i", "on", str(server.pid)], check=True, capture_output=True)
        _send(host, int(port), requests)
        subprocess.run([*control, "-i", "off", str(server.pid)], check=True, capture_output=True)
        subprocess.run([*control, "-d", str(server.pid)], check=True, capture_output=True)
        time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=120)
        log.close()
    total = 0
    for dump in workdir.glob(f"callgrind.{case}.out*"):
        for text in dump.read_text(errors="replace").splitlines():
            if text.startswith("totals:"):
                total += int(text.split()[1])
    return total / requests


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("cases", nargs="*", default=["b", "g"], choices=sorted(CASES))
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        counted = {case: count(case, args.requests, Path(directory)) for case in args.cases}
    first = counted[args.cases[0]]
    print(f"Server instructions per request (callgrind, {args.requests} requests per case):")
    for case, value in counted.items():
        ratio = f"{value / first:5.3f}x ({args.cases[0]})"
        print(f"  ({case}) {CASES[case][1]:62} {value:12,.0f}   {ratio}")
    if "b" in counted and "g" in counted:
        print(f"  P4 in instructions: (b) / (g) = {counted['b'] / counted['g']:.3f}")


if __name__ == "__main__":
    main()

"""`python -m bench.experiments [--seconds N] [VARIANT ...]`: hot-path ideas measured side by side.

Each variant (see bench/variants.py) is the real gateway with one change made from outside. Every
variant gets the same wrk load (32 connections, small JSON sends, upstream by IP) against the same
fast upstream; the table shows req/s, p50/p99 and the gateway process's own CPU time per request
(utime + stime from /proc, so wrk and the upstream sharing the cores do not blur it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path

import uvloop

from bench.load import fixed_rate, run_wrk
from bench.services import (
    SEND_BODY,
    SEND_PATH,
    Stack,
    make_certificates,
    sigterm_unwinds,
    start_dnsmasq,
    start_gateway,
    start_upstream,
)

VARIANTS = ("stock", "asyncio-loop", "h11", "lean-transport", "raw-asgi", "combined", "floor-static", "floor-aiohttp",
            "floor-lean")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (and its reaped children), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.experiments", description=__doc__)
    parser.add_argument("variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--dns", action="store_true", help="upstream by name, resolved per request by dnsmasq")
    parser.add_argument("--fixed", action="store_true", help="also latency at a fixed 500 req/s (open loop)")
    args = parser.parse_args(argv)
    print(f"{'variant':<16}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'CPU µs/req':>12}"
          + (f"{'500/s p50':>11}{'500/s p99':>11}" if args.fixed else ""))
    with sigterm_unwinds(), tempfile.TemporaryDirectory(prefix="aftm-exp-") as tmp, contextlib.ExitStack() as exits:
        stack = Stack(workdir=Path(tmp), stack=exits)
        certs = make_certificates(stack.workdir)
        upstream, _ = start_upstream(stack, certs)
        dns = start_dnsmasq(stack) if args.dns else None
        for variant in args.variants:
            with contextlib.ExitStack() as one:
                gateway = start_gateway(Stack(workdir=stack.workdir, stack=one), certs, upstream,
                                        name=f"gw-{variant}", dns_port=dns, variant=variant)
                before = cpu_seconds(gateway.pid)
                result = run_wrk(f"http://127.0.0.1:{gateway.port}{SEND_PATH}", connections=args.connections,
                                 seconds=args.seconds, token=gateway.token)
                cpu = cpu_seconds(gateway.pid) - before
                fixed = ""
                if args.fixed:
                    latency = uvloop.run(fixed_rate("127.0.0.1", gateway.port, path=SEND_PATH, body=SEND_BODY,
                                                    rate=500, seconds=6, token=gateway.token))
                    fixed = f"{latency.p50_ms:>11.2f}{latency.p99_ms:>11.2f}"
            per_request = cpu / result.requests * 1e6 if result.requests else float("nan")
            print(f"{variant:<16}{result.rate:>8.0f}{result.p50_ms:>9.2f}{result.p99_ms:>9.2f}{result.errors:>8}"
                  f"{per_request:>12.0f}{fixed}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

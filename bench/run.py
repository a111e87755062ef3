"""`python -m bench.run [--quick]`: the gateway beside direct calls, nginx and HAProxy, in one run.

Prints, per target and concurrency, req/s, p50/p99 and errors; then the ratios the platform team
asks for and each target of the speed issue as met or not. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import ssl
import sys
import tempfile
from pathlib import Path

from bench.load import LoadResult, fixed_rate, run_wrk
from bench.services import (
    SEND_BODY,
    SEND_PATH,
    UPSTREAM_NAME,
    Stack,
    make_certificates,
    require,
    start_dnsmasq,
    start_gateway,
    start_haproxy,
    start_nginx_proxy,
    start_upstream,
)

TARGET_RATIO, GOAL_RATIO = 0.2, 0.5
TARGET_P50_MS, TARGET_P99_MS = 0.5, 2.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few seconds in all (smoke test)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per wrk run (default 8, quick 1)")
    args = parser.parse_args(argv)
    missing = require("wrk", "nginx", "haproxy", "dnsmasq")
    if missing:
        print(f"missing programs: {', '.join(missing)} (Debian: apt-get install wrk nginx-light haproxy "
              "dnsmasq-base)", file=sys.stderr)
        return 2
    seconds = args.seconds or (1.0 if args.quick else 8.0)
    with tempfile.TemporaryDirectory(prefix="aftm-bench-") as tmp, contextlib.ExitStack() as exits:
        stack = Stack(workdir=Path(tmp), stack=exits)
        rows, fixed = _measure(stack, seconds=seconds, quick=args.quick)
    _report(rows, fixed)
    return 0


def _measure(stack: Stack, *, seconds: float, quick: bool) -> tuple[dict[str, dict[int, LoadResult]],
                                                                   dict[str, LoadResult]]:
    certs = make_certificates(stack.workdir)
    upstream = start_upstream(stack, certs)
    nginx = start_nginx_proxy(stack, certs, upstream)
    haproxy = start_haproxy(stack, certs, upstream)
    dns = start_dnsmasq(stack)
    gateway, token = start_gateway(stack, certs, upstream, name="gateway")
    gateway_dns, token_dns = start_gateway(stack, certs, upstream, name="gateway-dns", dns_port=dns)
    gateway_2, token_2 = start_gateway(stack, certs, upstream, name="gateway-2w", workers=2)
    targets = {
        "a direct": (f"https://127.0.0.1:{upstream}{SEND_PATH}", None),
        "b gateway": (f"http://127.0.0.1:{gateway}{SEND_PATH}", token),
        "c nginx": (f"http://127.0.0.1:{nginx}{SEND_PATH}", None),
        "d haproxy": (f"http://127.0.0.1:{haproxy}{SEND_PATH}", None),
        "e gateway+dns": (f"http://127.0.0.1:{gateway_dns}{SEND_PATH}", token_dns),
        "b2 gateway x2": (f"http://127.0.0.1:{gateway_2}{SEND_PATH}", token_2),
    }
    rows: dict[str, dict[int, LoadResult]] = {}
    for name, (url, app_token) in targets.items():
        rows[name] = {c: run_wrk(url, connections=c, seconds=seconds, token=app_token) for c in (32, 128)}
    direct_context = ssl.create_default_context(cafile=certs.ca_file)
    rate_seconds = 1.0 if quick else 6.0
    fixed = {
        "a direct": asyncio.run(fixed_rate("127.0.0.1", upstream, path=SEND_PATH, body=SEND_BODY, rate=500,
                                           seconds=rate_seconds, context=direct_context,
                                           server_name=UPSTREAM_NAME)),
        "e gateway+dns": asyncio.run(fixed_rate("127.0.0.1", gateway_dns, path=SEND_PATH, body=SEND_BODY,
                                                rate=500, seconds=rate_seconds, token=token_dns)),
    }
    return rows, fixed


def _report(rows: dict[str, dict[int, LoadResult]], fixed: dict[str, LoadResult]) -> None:
    print(f"machine: {os.cpu_count()} cores; one worker process per proxy; wrk -t1 on the same machine")
    print(f"{'target':<16}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, by_conns in rows.items():
        for conns, result in by_conns.items():
            print(f"{name:<16}{conns:>6}{result.rate:>10.0f}{result.p50_ms:>9.2f}{result.p99_ms:>9.2f}"
                  f"{result.errors:>8}")
    print()
    for conns in (32, 128):
        b, a, c, d, e = (rows[k][conns].rate for k in ("b gateway", "a direct", "c nginx", "d haproxy",
                                                     "e gateway+dns"))
        dns_cost_us = (1 / e - 1 / b) * 1e6 if b and e else float("nan")
        print(f"c={conns}: b/a {b / a:.2f}  b/c {b / c:.2f}  b/d {b / d:.2f}  "
              f"DNS cost per request {dns_cost_us:.0f} µs (1/e - 1/b)")
    print()
    print(f"{'fixed 500 req/s':<16}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, result in fixed.items():
        print(f"{name:<16}{result.p50_ms:>9.2f}{result.p99_ms:>9.2f}{result.errors:>8}")
    added_p50 = fixed["e gateway+dns"].p50_ms - fixed["a direct"].p50_ms
    added_p99 = fixed["e gateway+dns"].p99_ms - fixed["a direct"].p99_ms
    ratio = max(rows["b gateway"][32].rate, rows["b2 gateway x2"][32].rate) / rows["c nginx"][32].rate
    print()
    print("targets:")
    print(f"  throughput >= {TARGET_RATIO}x nginx (goal {GOAL_RATIO}x), best of 1 and 2 workers: {ratio:.2f}x "
          f"{'met' if ratio >= TARGET_RATIO else 'NOT met'}{' (goal met)' if ratio >= GOAL_RATIO else ''}")
    print(f"  added p50 at 500 req/s with DNS <= {TARGET_P50_MS} ms: {added_p50:.2f} ms "
          f"{'met' if added_p50 <= TARGET_P50_MS else 'NOT met'}")
    print(f"  added p99 at 500 req/s with DNS <= {TARGET_P99_MS} ms: {added_p99:.2f} ms "
          f"{'met' if added_p99 <= TARGET_P99_MS else 'NOT met'}")


if __name__ == "__main__":
    raise SystemExit(main())

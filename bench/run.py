"""`python -m bench.run [--quick]`: the gateway beside direct calls, nginx and HAProxy, in one run.

Prints, per target and concurrency, req/s, p50/p99, errors and the CPU time the process under test
spent per request; then the ratios b/a, b/c, b/d, what per-request DNS costs (e against b), latency
at a fixed 500 req/s, and each target of the speed issue as met or not. Everything runs on 127.0.0.1
from a temporary folder; every process started is stopped at the end (also on errors, Ctrl-C and
SIGTERM, and, through PR_SET_PDEATHSIG, when this process is killed).

`--quick` (the smoke test) loads all targets at the same time for 1 s per concurrency, so it takes a
few seconds; its numbers show that everything works, not how fast it is.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import platform
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop

from bench.load import LoadResult, fixed_rate, run_wrk
from bench.services import (
    SEND_BODY,
    SEND_PATH,
    UPSTREAM_NAME,
    Stack,
    make_certificates,
    require,
    sigterm_unwinds,
    start_dnsmasq,
    start_gateway,
    start_haproxy,
    start_nginx_proxy,
    start_upstream,
)

TARGET_RATIO, GOAL_RATIO = 0.2, 0.5
TARGET_P50_MS, TARGET_P99_MS = 0.5, 2.0
FIXED_RATE = 500
CONNECTIONS = (32, 128)
APT_PACKAGES = "wrk nginx-light haproxy dnsmasq-base"


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    token: str | None
    pid: int  # the process under test (its CPU is measured with its children)


@dataclass(frozen=True)
class Row:
    load: LoadResult
    cpu_us: float  # CPU of the process under test per request (nan when unknown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few seconds in all (smoke test)")
    parser.add_argument("--seconds", type=int, default=None, help="seconds per wrk run (default 8; quick 1)")
    args = parser.parse_args(argv)
    missing = require("wrk", "nginx", "haproxy", "dnsmasq")
    if missing:
        print(f"missing programs: {', '.join(missing)} (Debian: apt-get install {APT_PACKAGES})", file=sys.stderr)
        return 2
    seconds = args.seconds or (1 if args.quick else 8)
    started = time.monotonic()
    with sigterm_unwinds(), tempfile.TemporaryDirectory(prefix="aftm-bench-") as tmp, \
            contextlib.ExitStack() as exits:
        stack = Stack(workdir=Path(tmp), stack=exits)
        rows, fixed = _measure(stack, seconds=seconds, quick=args.quick)
    _report(rows, fixed, quick=args.quick, seconds=seconds, elapsed=time.monotonic() - started)
    return 0


def _measure(stack: Stack, *, seconds: int, quick: bool) -> tuple[dict[str, dict[int, Row]], dict[str, LoadResult]]:
    certs = make_certificates(stack.workdir)
    upstream, upstream_pid = start_upstream(stack, certs)
    nginx, nginx_pid = start_nginx_proxy(stack, certs, upstream)
    haproxy, haproxy_pid = start_haproxy(stack, certs, upstream)
    dns = start_dnsmasq(stack)
    gateway = start_gateway(stack, certs, upstream, name="gateway")
    gateway_dns = start_gateway(stack, certs, upstream, name="gateway-dns", dns_port=dns)
    targets = [
        Target("a direct", f"https://127.0.0.1:{upstream}{SEND_PATH}", None, upstream_pid),
        Target("b gateway", f"http://127.0.0.1:{gateway.port}{SEND_PATH}", gateway.token, gateway.pid),
        Target("c nginx", f"http://127.0.0.1:{nginx}{SEND_PATH}", None, nginx_pid),
        Target("d haproxy", f"http://127.0.0.1:{haproxy}{SEND_PATH}", None, haproxy_pid),
        Target("e gateway+dns", f"http://127.0.0.1:{gateway_dns.port}{SEND_PATH}", gateway_dns.token,
               gateway_dns.pid),
    ]
    if not quick:
        two = start_gateway(stack, certs, upstream, name="gateway-2w", workers=2)
        targets.append(Target("b2 gateway x2", f"http://127.0.0.1:{two.port}{SEND_PATH}", two.token, two.pid))
    rows: dict[str, dict[int, Row]] = {t.name: {} for t in targets}
    for conns in CONNECTIONS:
        if quick:  # all at once: a few seconds in all, numbers not comparable
            with concurrent.futures.ThreadPoolExecutor(len(targets)) as pool:
                loads = list(pool.map(lambda t, c=conns: run_wrk(t.url, connections=c, seconds=seconds,
                                                                 token=t.token), targets))
            for target, load in zip(targets, loads, strict=True):
                rows[target.name][conns] = Row(load, float("nan"))
            continue
        for target in targets:
            before = tree_cpu_seconds(target.pid)
            load = run_wrk(target.url, connections=conns, seconds=seconds, token=target.token)
            cpu = tree_cpu_seconds(target.pid) - before
            rows[target.name][conns] = Row(load, cpu / load.requests * 1e6 if load.requests else float("nan"))
    rate_seconds = 0.5 if quick else 6.0
    context = ssl.create_default_context(cafile=certs.ca_file)
    fixed = {
        "a direct": uvloop.run(fixed_rate("127.0.0.1", upstream, path=SEND_PATH, body=SEND_BODY, rate=FIXED_RATE,
                                          seconds=rate_seconds, context=context, server_name=UPSTREAM_NAME)),
        "b gateway": uvloop.run(fixed_rate("127.0.0.1", gateway.port, path=SEND_PATH, body=SEND_BODY,
                                           rate=FIXED_RATE, seconds=rate_seconds, token=gateway.token)),
        "e gateway+dns": uvloop.run(fixed_rate("127.0.0.1", gateway_dns.port, path=SEND_PATH, body=SEND_BODY,
                                               rate=FIXED_RATE, seconds=rate_seconds, token=gateway_dns.token)),
    }
    return rows, fixed


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live descendants (nginx's and the gateway's workers)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
    return total


def _machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, {system}"


def _status(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _report(rows: dict[str, dict[int, Row]], fixed: dict[str, LoadResult], *, quick: bool, seconds: int,
            elapsed: float) -> None:
    print(f"machine: {_machine()}")
    print(f"load: wrk -t1, POST {len(SEND_BODY)}-byte JSON send, {seconds} s per run"
          + (" (QUICK: all targets at once, numbers not comparable)" if quick else ", one target at a time"))
    print("a = nginx (1 worker) answering login + trigger with fixed JSON over TLS; c/d one worker/thread;"
          " b/e one gateway process (uvicorn, uvloop, httptools); CPU = process under test per request")
    print(f"{'target':<16}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'CPU µs/req':>12}")
    for name, by_conns in rows.items():
        for conns, row in by_conns.items():
            load = row.load
            print(f"{name:<16}{conns:>6}{load.rate:>10.0f}{load.p50_ms:>9.2f}{load.p99_ms:>9.2f}"
                  f"{load.errors:>8}{row.cpu_us:>12.0f}")
    print()
    for conns in CONNECTIONS:
        a, b, c, d, e = (rows[k][conns] for k in ("a direct", "b gateway", "c nginx", "d haproxy", "e gateway+dns"))
        wall_us = (1 / e.load.rate - 1 / b.load.rate) * 1e6 if b.load.rate and e.load.rate else float("nan")
        print(f"c={conns}: b/a {_ratio(b, a)}  b/c {_ratio(b, c)}  b/d {_ratio(b, d)}  "
              f"DNS cost per request: {wall_us:.0f} µs of throughput (1/e - 1/b), "
              f"{e.cpu_us - b.cpu_us:.0f} µs of gateway CPU (e - b)")
    print()
    print(f"fixed {FIXED_RATE} req/s (open loop, 16 connections, latency from each request's due time)")
    print(f"{'target':<16}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, result in fixed.items():
        print(f"{name:<16}{result.rate:>10.0f}{result.p50_ms:>9.2f}{result.p99_ms:>9.2f}{result.errors:>8}")
    a, b, e = fixed["a direct"], fixed["b gateway"], fixed["e gateway+dns"]
    print(f"added over direct: gateway p50 +{b.p50_ms - a.p50_ms:.2f} ms p99 +{b.p99_ms - a.p99_ms:.2f} ms; "
          f"with DNS p50 +{e.p50_ms - a.p50_ms:.2f} ms p99 +{e.p99_ms - a.p99_ms:.2f} ms "
          f"(DNS alone p50 +{e.p50_ms - b.p50_ms:.2f} ms)")
    print()
    print("targets:")
    for conns in CONNECTIONS:
        ratio = rows["b gateway"][conns].load.rate / max(rows["c nginx"][conns].load.rate, 1e-9)
        goal = "goal met" if ratio >= GOAL_RATIO else f"goal {GOAL_RATIO}x not met"
        print(f"  c={conns}: gateway throughput >= {TARGET_RATIO}x nginx (one process each): {ratio:.2f}x "
              f"{_status(ratio >= TARGET_RATIO)} ({goal})")
    if "b2 gateway x2" in rows:
        best = max(rows["b2 gateway x2"][c].load.rate / rows["c nginx"][c].load.rate for c in CONNECTIONS)
        print(f"  (information: 2 gateway workers vs 1 nginx worker, best: {best:.2f}x)")
    added_p50, added_p99 = e.p50_ms - a.p50_ms, e.p99_ms - a.p99_ms
    print(f"  added p50 at {FIXED_RATE} req/s with per-request DNS <= {TARGET_P50_MS} ms: {added_p50:.2f} ms "
          f"{_status(added_p50 <= TARGET_P50_MS)}")
    print(f"  added p99 at {FIXED_RATE} req/s with per-request DNS <= {TARGET_P99_MS} ms: {added_p99:.2f} ms "
          f"{_status(added_p99 <= TARGET_P99_MS)}")
    print(f"run took {elapsed:.0f} s")


def _ratio(x: Row, y: Row) -> str:
    return f"{x.load.rate / y.load.rate:.2f}" if y.load.rate else "n/a"


if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m bench.run [--quick]`: the gateway beside direct calls, nginx, HAProxy and a bare proxy, in one run.

Prints, per target and concurrency, req/s, p50/p99, errors and the CPU time the process under test
spent per request; then the ratios b/a, b/c, b/d, b/f, what per-request DNS costs (e against b),
latency at a fixed 500 req/s, the gateway's RSS over 100,000 sends, and each target of the speed
issue (#14) as met or not. Everything runs on 127.0.0.1 from a temporary folder; every process started
is stopped at the end (also on errors, Ctrl-C and SIGTERM, and, through PR_SET_PDEATHSIG, when this
process is killed).

`--quick` (the smoke test) loads all targets at the same time for 1 s per concurrency and skips the
two-worker gateway and the 100,000 sends, so it takes a few seconds; its numbers show that everything
works, not how fast it is.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import math
import os
import platform
import re
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvloop

from bench.load import LoadResult, fixed_rate, run_wrk
from bench.services import (
    SEND_BODY,
    SEND_PATH,
    UPSTREAM_NAME,
    Gateway,
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

# The targets of issue 14 (one gateway process against one nginx worker, same upstream, same run).
TARGET_RATIO = 0.15  # gateway req/s over nginx's at 32 connections
TARGET_SHARE = 0.75  # gateway req/s over the bare proxy's (same server and client, nothing else)
TARGET_CPU_US = 150.0  # gateway CPU per forwarded send at 32 connections
TARGET_P50_MS, TARGET_P99_MS = 0.5, 2.0  # added at 500 req/s, DNS per request, over nginx by IP
TARGET_TAIL = 5.0  # p99 over p50 at 128 connections, with no errors
RSS_SENDS = 100_000  # the gateway's RSS is read after this many sends
RSS_GROWTH_MIB = 2.0  # more than this after warm-up counts as growth (allocator noise stays below)
FIXED_RATE = 500
CONNECTIONS = (32, 128)
APT_PACKAGES = "wrk nginx-light haproxy dnsmasq-base"

GATEWAY, GATEWAY_DNS, NGINX, BARE, TWO = "b gateway", "e gateway+dns", "c nginx", "f bare proxy", "b2 gateway x2"


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


@dataclass
class Memory:
    """The gateway's RSS (MiB) against the sends it had forwarded when it was read.

    Warm-up ends once every load shape has run on the gateway once (32 and 128 connections, the fixed
    rate): 128 connections hold more buffers than 32 did, once. Growth is counted from there.
    """

    samples: list[tuple[int, float]] = field(default_factory=list)
    warm: int = 0  # index of the sample read at the end of warm-up

    def read(self, gateway: Gateway, *, warm: bool = False) -> None:
        if warm:
            self.warm = len(self.samples)
        self.samples.append((forwarded_sends(gateway.port), rss_mib(gateway.pid)))


@dataclass
class Measured:
    rows: dict[str, dict[int, Row]]
    fixed: dict[str, LoadResult]
    memory: Memory
    split: dict[int, list[float]]  # connections -> each worker's share of b2's CPU


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
    load_before = os.getloadavg()
    with sigterm_unwinds(), tempfile.TemporaryDirectory(prefix="aftm-bench-") as tmp, \
            contextlib.ExitStack() as exits:
        stack = Stack(workdir=Path(tmp), stack=exits)
        measured = _measure(stack, seconds=seconds, quick=args.quick)
    _report(measured, quick=args.quick, seconds=seconds, elapsed=time.monotonic() - started,
            load=(load_before, os.getloadavg()))
    return 0


def _measure(stack: Stack, *, seconds: int, quick: bool) -> Measured:
    certs = make_certificates(stack.workdir)
    upstream, upstream_pid = start_upstream(stack, certs)
    nginx, nginx_pid = start_nginx_proxy(stack, certs, upstream)
    haproxy, haproxy_pid = start_haproxy(stack, certs, upstream)
    dns = start_dnsmasq(stack)
    gateway = start_gateway(stack, certs, upstream, name="gateway")
    gateway_dns = start_gateway(stack, certs, upstream, name="gateway-dns", dns_port=dns)
    bare = start_gateway(stack, certs, upstream, name="bare-proxy", variant="floor-aiohttp")
    targets = [
        Target("a direct", f"https://127.0.0.1:{upstream}{SEND_PATH}", None, upstream_pid),
        Target(GATEWAY, f"http://127.0.0.1:{gateway.port}{SEND_PATH}", gateway.token, gateway.pid),
        Target(NGINX, f"http://127.0.0.1:{nginx}{SEND_PATH}", None, nginx_pid),
        Target("d haproxy", f"http://127.0.0.1:{haproxy}{SEND_PATH}", None, haproxy_pid),
        Target(GATEWAY_DNS, f"http://127.0.0.1:{gateway_dns.port}{SEND_PATH}", gateway_dns.token, gateway_dns.pid),
        Target(BARE, f"http://127.0.0.1:{bare.port}{SEND_PATH}", bare.token, bare.pid),
    ]
    if not quick:
        two = start_gateway(stack, certs, upstream, name="gateway-2w", workers=2)
        targets.append(Target(TWO, f"http://127.0.0.1:{two.port}{SEND_PATH}", two.token, two.pid))
    memory = Memory()
    split: dict[int, list[float]] = {}
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
            before, workers_before = tree_cpu_seconds(target.pid), children_cpu_seconds(target.pid)
            load = run_wrk(target.url, connections=conns, seconds=seconds, token=target.token)
            cpu = tree_cpu_seconds(target.pid) - before
            rows[target.name][conns] = Row(load, cpu / load.requests * 1e6 if load.requests else float("nan"))
            if target.name == TWO:  # how the one socket's connections spread over the workers
                spent = [after - workers_before.get(child, 0.0)
                         for child, after in children_cpu_seconds(target.pid).items()]
                split[conns] = [part / max(sum(spent), 1e-9) for part in spent]
            if target.name == GATEWAY and not memory.samples:
                memory.read(gateway)  # after its first run: thousands of sends on every connection
    rate_seconds = 0.5 if quick else 6.0
    context = ssl.create_default_context(cafile=certs.ca_file)

    def at_fixed_rate(port: int, token: str | None = None, tls: bool = False) -> LoadResult:
        return uvloop.run(fixed_rate("127.0.0.1", port, path=SEND_PATH, body=SEND_BODY, rate=FIXED_RATE,
                                     seconds=rate_seconds, token=token, context=context if tls else None,
                                     server_name=UPSTREAM_NAME if tls else None))

    fixed = {
        "a direct": at_fixed_rate(upstream, tls=True),
        NGINX: at_fixed_rate(nginx),
        GATEWAY: at_fixed_rate(gateway.port, gateway.token),
        GATEWAY_DNS: at_fixed_rate(gateway_dns.port, gateway_dns.token),
    }
    memory.read(gateway, warm=True)
    if not quick:  # on to 100,000 sends, the RSS read about every 20,000
        url = f"http://127.0.0.1:{gateway.port}{SEND_PATH}"
        rate = max(rows[GATEWAY][32].load.rate, 100.0)
        while (sent := memory.samples[-1][0]) < RSS_SENDS:
            chunk = min(20_000, RSS_SENDS - sent)
            run_wrk(url, connections=32, seconds=max(1.0, math.ceil(chunk / rate)), token=gateway.token)
            memory.read(gateway)
    return Measured(rows, fixed, memory, split)


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


def children_cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU of each direct child of `pid` (the workers of `serve --workers N`)."""
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            children.extend(int(child) for child in (task / "children").read_text().split())
    return {child: tree_cpu_seconds(child) for child in children}


def rss_mib(pid: int) -> float:
    """The resident set of one process, in MiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


_REQUESTS = re.compile(r'^aftm_requests_total\{[^}]*\broute="rest"[^}]*\} ([0-9.e+]+)$', re.MULTILINE)


def forwarded_sends(port: int) -> int:
    """REST calls the gateway process has handled, from its own counter (`/metrics`)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False, timeout=10).text
    return round(sum(float(value) for value in _REQUESTS.findall(text)))


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


def _report(measured: Measured, *, quick: bool, seconds: int, elapsed: float,
            load: tuple[tuple[float, float, float], tuple[float, float, float]]) -> None:
    rows, fixed = measured.rows, measured.fixed
    print(f"machine: {_machine()}")
    print(f"load average (1, 5, 15 min): {' '.join(f'{v:.2f}' for v in load[0])} before the run, "
          f"{' '.join(f'{v:.2f}' for v in load[1])} after")
    print(f"load: wrk -t1, POST {len(SEND_BODY)}-byte JSON send, {seconds} s per run"
          + (" (QUICK: all targets at once, numbers not comparable)" if quick else ", one target at a time"))
    print("a = nginx (1 worker) answering login + trigger with fixed JSON over TLS; c/d one worker/thread;"
          " b/e one gateway process (uvicorn, uvloop, httptools; e resolves the upstream per request);"
          " f = uvicorn + one aiohttp POST per request, nothing else (the gateway's stack, bare);"
          " CPU = process under test per request")
    print(f"{'target':<16}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'CPU µs/req':>12}")
    for name, by_conns in rows.items():
        for conns, row in by_conns.items():
            result = row.load
            print(f"{name:<16}{conns:>6}{result.rate:>10.0f}{result.p50_ms:>9.2f}{result.p99_ms:>9.2f}"
                  f"{result.errors:>8}{row.cpu_us:>12.0f}")
    print()
    for conns in CONNECTIONS:
        a, b, c, d, e, f = (rows[k][conns] for k in ("a direct", GATEWAY, NGINX, "d haproxy", GATEWAY_DNS, BARE))
        wall_us = (1 / e.load.rate - 1 / b.load.rate) * 1e6 if b.load.rate and e.load.rate else float("nan")
        print(f"c={conns}: b/a {_ratio(b, a)}  b/c {_ratio(b, c)}  b/d {_ratio(b, d)}  b/f {_ratio(b, f)}  "
              f"DNS cost per request: {wall_us:.0f} µs of throughput (1/e - 1/b), "
              f"{e.cpu_us - b.cpu_us:.0f} µs of gateway CPU (e - b)")
    print()
    print(f"fixed {FIXED_RATE} req/s (open loop, 16 connections, latency from each request's due time)")
    print(f"{'target':<16}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, result in fixed.items():
        print(f"{name:<16}{result.rate:>10.0f}{result.p50_ms:>9.2f}{result.p99_ms:>9.2f}{result.errors:>8}")
    direct, nginx, b_fixed, e_fixed = fixed["a direct"], fixed[NGINX], fixed[GATEWAY], fixed[GATEWAY_DNS]
    print(f"added over direct: nginx p50 {nginx.p50_ms - direct.p50_ms:+.2f} ms p99 {nginx.p99_ms - direct.p99_ms:+.2f}"
          f" ms; gateway p50 {b_fixed.p50_ms - direct.p50_ms:+.2f} ms p99 {b_fixed.p99_ms - direct.p99_ms:+.2f} ms;"
          f" with DNS p50 {e_fixed.p50_ms - direct.p50_ms:+.2f} ms p99 {e_fixed.p99_ms - direct.p99_ms:+.2f} ms"
          f" (DNS alone p50 {e_fixed.p50_ms - b_fixed.p50_ms:+.2f} ms)")
    print()
    samples = measured.memory.samples
    print("gateway RSS (b, one process) by sends forwarded: "
          + ", ".join(f"{sends:,}: {mib:.1f} MiB" + (" (warm-up done)" if i == measured.memory.warm else "")
                      for i, (sends, mib) in enumerate(samples)))
    print()
    print("targets (issue 14; b = one gateway process, c = one nginx worker, f = the bare proxy):")
    b32, b128 = rows[GATEWAY][32], rows[GATEWAY][128]
    ratio = b32.load.rate / max(rows[NGINX][32].load.rate, 1e-9)
    print(f"  throughput at 32 connections >= {TARGET_RATIO}x nginx: b/c {ratio:.2f}x {_status(ratio >= TARGET_RATIO)}")
    share = b32.load.rate / max(rows[BARE][32].load.rate, 1e-9)
    print(f"  share of the bare proxy (uvicorn + aiohttp) at 32 connections >= {TARGET_SHARE}: b/f {share:.2f} "
          f"{_status(share >= TARGET_SHARE)}")
    if quick:
        print(f"  CPU per forwarded send (b, 32 connections) <= {TARGET_CPU_US:.0f} µs: n/a in --quick NOT met")
    else:
        print(f"  CPU per forwarded send (b, 32 connections) <= {TARGET_CPU_US:.0f} µs: {b32.cpu_us:.0f} µs "
              f"{_status(b32.cpu_us <= TARGET_CPU_US)}")
    added_p50, added_p99 = e_fixed.p50_ms - nginx.p50_ms, e_fixed.p99_ms - nginx.p99_ms
    print(f"  added p50 at {FIXED_RATE} req/s, DNS per request (e) over nginx by IP (c), <= +{TARGET_P50_MS} ms: "
          f"{added_p50:+.2f} ms {_status(added_p50 <= TARGET_P50_MS)}")
    print(f"  added p99 at {FIXED_RATE} req/s, DNS per request (e) over nginx by IP (c), <= +{TARGET_P99_MS} ms: "
          f"{added_p99:+.2f} ms {_status(added_p99 <= TARGET_P99_MS)}")
    tail = b128.load.p99_ms / max(b128.load.p50_ms, 1e-9)
    print(f"  tail at 128 connections: p99 <= {TARGET_TAIL:.0f}x p50 with no errors: {tail:.1f}x, "
          f"{b128.load.errors} errors {_status(tail <= TARGET_TAIL and b128.load.errors == 0)}")
    if TWO in rows:
        print("  serve --workers N on one socket, req/s: "
              + "; ".join(f"c={c}: N=1 {rows[GATEWAY][c].load.rate:.0f}, N=2 {rows[TWO][c].load.rate:.0f}"
                          for c in CONNECTIONS)
              + f" (best N=2 vs one nginx worker: "
                f"{max(rows[TWO][c].load.rate / rows[NGINX][c].load.rate for c in CONNECTIONS):.2f}x); "
              + "workers' shares of N=2's CPU: "
              + "; ".join(f"c={c}: " + "/".join(f"{100 * part:.0f}%" for part in sorted(parts, reverse=True))
                          for c, parts in measured.split.items()))
    else:
        print(f"  serve --workers N, req/s: N=1 {b32.load.rate:.0f} at 32 connections; N=2 not run in --quick")
    warm_sends, warm_mib = samples[measured.memory.warm]
    last_sends, last_mib = samples[-1]
    growth = last_mib - warm_mib
    what = f"after {RSS_SENDS:,} sends" if last_sends >= RSS_SENDS else f"after {last_sends:,} sends (--quick)"
    print(f"  RSS of one gateway process {what}: {last_mib:.1f} MiB, {growth:+.1f} MiB since warm-up "
          f"({warm_sends:,} sends, every load shape run once); no growth (<= {RSS_GROWTH_MIB:g} MiB) "
          f"{_status(growth <= RSS_GROWTH_MIB)}")
    print(f"run took {elapsed:.0f} s")


def _ratio(x: Row, y: Row) -> str:
    return f"{x.load.rate / y.load.rate:.2f}" if y.load.rate else "n/a"


if __name__ == "__main__":
    raise SystemExit(main())

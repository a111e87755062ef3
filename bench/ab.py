"""`python -m bench.ab OTHER [--rounds N]`: this checkout's gateway against another's, in one run.

A change to the hot path is measured here before and after, side by side: one `aftm-gateway serve`
from this tree (A) and one from OTHER (B, e.g. `git archive HEAD~1 | tar -x -C /tmp/before`), both
on the same fast upstream, loaded in turns (A B B A ...), fresh processes each round, with the same
wrk run (32 connections, the bench's send). Per round it prints req/s and the gateway process's own
CPU per request (utime + stime from /proc, which other load on the machine blurs far less than
req/s), then the medians and B/A. `--dns` names the upstream, resolved per request by dnsmasq;
`--fixed` adds p50/p99 at 500 req/s.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from pathlib import Path

import uvloop

from bench.load import fixed_rate, run_wrk
from bench.run import tree_cpu_seconds
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("other", type=Path, help="another checkout of the repository (B)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--dns", action="store_true", help="upstream by name, resolved per request by dnsmasq")
    parser.add_argument("--fixed", action="store_true", help="also p50/p99 at a fixed 500 req/s (open loop)")
    args = parser.parse_args(argv)
    here = Path(__file__).resolve().parents[1]
    trees = {"A": here, "B": args.other.resolve()}
    cpu: dict[str, list[float]] = {"A": [], "B": []}
    rate: dict[str, list[float]] = {"A": [], "B": []}
    print(f"A = {trees['A']}\nB = {trees['B']}")
    print(f"{'round':<7}{'tree':<6}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'CPU µs/req':>12}")
    with sigterm_unwinds(), tempfile.TemporaryDirectory(prefix="aftm-ab-") as tmp, contextlib.ExitStack() as exits:
        stack = Stack(workdir=Path(tmp), stack=exits)
        certs = make_certificates(stack.workdir)
        upstream, _ = start_upstream(stack, certs)
        dns = start_dnsmasq(stack) if args.dns else None
        for number in range(args.rounds):
            # Fresh processes every round: one process runs a few % faster or slower than another of the
            # same code for its whole life (hash seed, memory layout), which a single pair would blur.
            with contextlib.ExitStack() as round_exits:
                round_stack = Stack(workdir=stack.workdir, stack=round_exits)
                gateways = {name: start_gateway(round_stack, certs, upstream, name=f"gw-{name}-{number}",
                                                dns_port=dns, root=tree) for name, tree in trees.items()}
                for name in ("A", "B") if number % 2 == 0 else ("B", "A"):
                    gateway = gateways[name]
                    url = f"http://127.0.0.1:{gateway.port}{SEND_PATH}"
                    run_wrk(url, connections=args.connections, seconds=1, token=gateway.token)  # warm-up
                    before = tree_cpu_seconds(gateway.pid)
                    result = run_wrk(url, connections=args.connections, seconds=args.seconds, token=gateway.token)
                    per_request = (tree_cpu_seconds(gateway.pid) - before) / max(result.requests, 1) * 1e6
                    cpu[name].append(per_request)
                    rate[name].append(result.rate)
                    print(f"{number + 1:<7}{name:<6}{result.rate:>8.0f}{result.p50_ms:>9.2f}{result.p99_ms:>9.2f}"
                          f"{result.errors:>8}{per_request:>12.0f}", flush=True)
        gateways = {name: start_gateway(stack, certs, upstream, name=f"gw-{name}", dns_port=dns, root=tree)
                    for name, tree in trees.items()} if args.fixed else {}
        fixed = {}
        if args.fixed:
            for name in ("A", "B", "B", "A"):
                gateway = gateways[name]
                fixed.setdefault(name, []).append(uvloop.run(fixed_rate(
                    "127.0.0.1", gateway.port, path=SEND_PATH, body=SEND_BODY, rate=500, seconds=5,
                    token=gateway.token)))
    a_cpu, b_cpu = statistics.median(cpu["A"]), statistics.median(cpu["B"])
    a_rate, b_rate = statistics.median(rate["A"]), statistics.median(rate["B"])
    print(f"median  A {a_rate:.0f} req/s {a_cpu:.0f} µs/req;  B {b_rate:.0f} req/s {b_cpu:.0f} µs/req;  "
          f"A-B {a_cpu - b_cpu:+.0f} µs/req, A/B req/s {a_rate / b_rate:.2f}")
    for name, results in fixed.items():
        print(f"500 req/s {name}: " + ", ".join(f"p50 {r.p50_ms:.2f} ms p99 {r.p99_ms:.2f} ms" for r in results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m bench.profile [--dns] [--seconds N]`: where the gateway's CPU goes under wrk load.

Starts the fast upstream (and dnsmasq with `--dns`) and one gateway process, loads it with wrk
(32 connections, the benchmark's small JSON send) and samples that process with py-spy
(`py-spy record --nonblocking --format raw`). Prints the top frames by self time and by inclusive
time, as a share of all samples, and keeps the collapsed stacks (flamegraph input) in `--out`.
Needs `py-spy` (PyPI, in the venv) and root or ptrace permission.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench.load import run_wrk
from bench.services import (
    SEND_PATH,
    Stack,
    make_certificates,
    sigterm_unwinds,
    start_dnsmasq,
    start_gateway,
    start_upstream,
)


def py_spy() -> str | None:
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


def top_frames(collapsed: str, limit: int = 25) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, top by self, top by inclusive) from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_short(frame) for frame in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return total, own.most_common(limit), inclusive.most_common(limit)


_REPO = str(Path(__file__).resolve().parents[1]) + "/"


def _short(frame: str) -> str:
    """'forward (gateway/edge/rest.py:104)' with site-packages paths cut to the package."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    if "site-packages/" in where:
        where = where.split("site-packages/", 1)[1]
    elif "/lib/python3" in where:
        where = "stdlib/" + where.split("/lib/python3", 1)[1].split("/", 1)[-1]
    elif where.startswith(_REPO):
        where = where[len(_REPO):]  # the project's own files, relative to the repository
    where = where.rsplit(":", 1)[0]  # the function, not the line
    return f"{name} ({where})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--dns", action="store_true", help="upstream by name, resolved per request by dnsmasq")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--variant", default=None, help="a bench.variants name instead of `aftm-gateway serve`")
    parser.add_argument("--out", type=Path, default=None, help="keep the collapsed stacks in this file")
    args = parser.parse_args(argv)
    spy = py_spy()
    if spy is None:
        print("py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    with sigterm_unwinds(), tempfile.TemporaryDirectory(prefix="aftm-profile-") as tmp, \
            contextlib.ExitStack() as exits:
        stack = Stack(workdir=Path(tmp), stack=exits)
        certs = make_certificates(stack.workdir)
        upstream, _ = start_upstream(stack, certs)
        dns = start_dnsmasq(stack) if args.dns else None
        gateway = start_gateway(stack, certs, upstream, name="gateway", dns_port=dns, variant=args.variant)
        url, token, pid = f"http://127.0.0.1:{gateway.port}{SEND_PATH}", gateway.token, gateway.pid
        result: list[object] = []
        load = threading.Thread(target=lambda: result.append(
            run_wrk(url, connections=args.connections, seconds=args.seconds + 2, token=token)))
        load.start()
        raw = stack.workdir / "profile.raw"
        subprocess.run([spy, "record", "--pid", str(pid), "--nonblocking", "--rate", "250", "--format", "raw",
                        "--duration", str(args.seconds), "--output", str(raw)],
                       check=True, capture_output=True, timeout=args.seconds + 60)
        load.join()
        collapsed = raw.read_text()
    if args.out is not None:
        args.out.write_text(collapsed)
    total, own, inclusive = top_frames(collapsed)
    print(f"wrk: {result[0]}")
    print(f"{total} samples" + (f"; collapsed stacks in {args.out}" if args.out else ""))
    print("\ntop by self time")
    for frame, count in own:
        print(f"{100 * count / total:6.1f}%  {frame}")
    print("\ntop by inclusive time")
    for frame, count in inclusive:
        print(f"{100 * count / total:6.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

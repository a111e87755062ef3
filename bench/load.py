"""Load generators: wrk for closed-loop throughput, a small open-loop client for fixed-rate latency.

wrk (Debian's, no fixed-rate mode) measures how much each target serves with N connections busy.
Latency at a fixed 500 req/s needs an open loop: requests are due on a schedule and each latency is
measured from when it was due, so a slow answer cannot hide the queue behind it (no coordinated
omission). The open-loop client speaks HTTP/1.1 keep-alive over raw asyncio streams to stay cheap.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

LUA = Path(__file__).with_name("post.lua")


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_wrk(url: str, *, connections: int, seconds: float, token: str | None = None) -> LoadResult:
    env = {**os.environ, "AFTM_TOKEN": token or ""}
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s", "-s", str(LUA), url],
        capture_output=True, text=True, env=env, timeout=seconds + 60, check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("AFTM-RESULT"))
    requests, errors, status_errors, duration_us, p50, p99, _ = line.split()[1:]
    return LoadResult(requests=int(requests), errors=int(errors) + int(status_errors),
                      seconds=int(duration_us) / 1e6, p50_ms=float(p50) / 1000, p99_ms=float(p99) / 1000)


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await self.reader.readexactly(length)
        return status


async def _open(host: str, port: int, context: ssl.SSLContext | None, server_name: str | None) -> _Connection:
    reader, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=server_name)
    return _Connection(reader, writer)


async def fixed_rate(host: str, port: int, *, path: str, body: bytes, rate: float, seconds: float,
                     token: str | None = None, context: ssl.SSLContext | None = None,
                     server_name: str | None = None, connections: int = 16) -> LoadResult:
    """Send `rate` requests per second for `seconds`; latency counts from each request's due time."""
    auth = f"Authorization: {token}\r\n" if token else ""
    request = (f"POST {path} HTTP/1.1\r\nHost: {server_name or host}\r\nContent-Type: application/json\r\n"
               f"{auth}Content-Length: {len(body)}\r\n\r\n").encode() + body
    pool: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await _open(host, port, context, server_name))
    latencies: list[float] = []
    errors = 0

    async def one(due: float) -> None:
        nonlocal errors
        connection = await pool.get()
        try:
            status = await connection.exchange(request)
            errors += status >= 400
            latencies.append(time.perf_counter() - due)
        except (OSError, asyncio.IncompleteReadError):
            errors += 1
            connection = await _open(host, port, context, server_name)
        finally:
            pool.put_nowait(connection)

    start = time.perf_counter()
    total = int(rate * seconds)
    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # the schedule itself: open-loop pacing, not synchronisation
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait().writer.close()
    ordered = sorted(latencies) or [0.0]
    return LoadResult(requests=len(latencies), errors=errors, seconds=elapsed,
                      p50_ms=statistics.median(ordered) * 1000,
                      p99_ms=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000)

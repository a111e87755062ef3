"""`python -m bench.layers`: the gateway's CPU per send, layer by layer, in one process.

Closed-loop load through wrk blurs where a request's CPU goes; here one process drives each layer of
the real gateway (`Runtime` and `build_app` from a bench config) with 32 concurrent sends to the
bench's fast upstream (nginx over TLS, by IP) and reads its own CPU time (getrusage) per send:

    aiohttp       one aiohttp POST and its body: the client alone (what the bare proxy pays)
    httpx         the same POST as an httpx.Request through the inner transport (gateway.upstreams.
                  transport) and read as an httpx.Response: + httpx's objects around aiohttp
    seam          Upstream.send of an httpx.Request: + address pinning, TLS facts, timeouts
    loop          Proxy.forward through the REST dialect: + failover, rate, session, policies, metrics
    sends         Sends.handle: + idempotency dispatch, counters, failure reports
    app           the ASGI app (middleware, target guard, REST route, auth, body, render), no socket
    app+listener  not here: uvicorn's HTTP parsing and writes come on top (bench.run's b row)

Each difference is what that layer adds. Rounds alternate the layers; the medians are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import uvloop
import yaml

from bench.services import SEND_BODY, SEND_PATH, Stack, make_certificates, sigterm_unwinds, start_upstream
from gateway.cli import tune_gc
from gateway.config import load_config
from gateway.core.loop import Call
from gateway.edge.app import build_app
from gateway.runtime import Runtime
from gateway.upstreams.transport import AiohttpTransport
from policies.tls import client_context

CONCURRENCY = 32


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _per_send(one: Callable[[], Awaitable[None]], sends: int) -> float:
    """CPU µs per send with CONCURRENCY sends in flight."""
    pending = iter(range(sends))

    async def worker() -> None:
        for _ in pending:
            await one()

    before = _cpu()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return (_cpu() - before) / sends * 1e6


async def _run(config_path: Path, ca_file: str, upstream: str, *, sends: int, rounds: int) -> dict[str, list[float]]:
    config = load_config(str(config_path))
    runtime = Runtime(config)
    app = build_app(config, runtime=runtime)
    await runtime.start()
    tune_gc()
    context = client_context(ca_bundle=ca_file, client_cert=None, client_key=None)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100, ssl=context, use_dns_cache=False),
                                    auto_decompress=False, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
                                    skip_auto_headers=("User-Agent",))
    token = runtime.credentials.issue("bench", "rest")
    account = config.accounts[0]
    upstream_session = await runtime.rest_sessions.session_for(account)
    url = httpx.URL(upstream + SEND_PATH)
    headers = [("content-type", "application/json"), ("x-request-id", "bench-0123456789")]

    async def client() -> None:
        async with session.post(str(url), data=SEND_BODY, headers=[*headers, ("Authorization", "t")]) as answer:
            await answer.read()

    async def seam() -> None:
        await runtime.upstream.send(httpx.Request("POST", url, content=SEND_BODY,
                                                  headers=[*headers, ("Authorization", upstream_session.token)]))

    inner = AiohttpTransport(ssl_context=context, max_connections=100)
    timeouts = runtime.upstream.timeout().as_dict()

    async def wrapped() -> None:
        request = httpx.Request("POST", url, content=SEND_BODY,
                                headers=[*headers, ("Authorization", upstream_session.token)])
        request.extensions["timeout"] = timeouts
        answer = await inner.handle_async_request(request)
        await answer.aread()
        await answer.aclose()

    def call() -> Call:
        return Call(protocol="rest", method="POST", path=SEND_PATH, headers=tuple(headers), body=SEND_BODY,
                    request_id="r", client="bench", is_send=True, correlation_id="bench-0123456789")

    async def loop() -> None:
        await runtime.proxy.forward(call(), runtime.rest_dialect, deadline=time.monotonic() + 30)

    async def sends_layer() -> None:
        await runtime.sends.handle(call(), runtime.rest_dialect)

    raw_headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                   (b"authorization", token.encode()), (b"content-length", str(len(SEND_BODY)).encode()),
                   (b"x-request-id", b"bench-0123456789")]

    async def asgi() -> None:
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 50000), "scheme": "http", "method": "POST",
            "root_path": "", "path": SEND_PATH, "raw_path": SEND_PATH.encode(), "query_string": b"",
            "headers": raw_headers, "state": {}}
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()
            sent = True
            return {"type": "http.request", "body": SEND_BODY, "more_body": False}

        status = 0

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope, receive, send)
        assert status == 200, status

    layers = {"aiohttp": client, "httpx": wrapped, "seam": seam, "loop": loop, "sends": sends_layer, "app": asgi}
    results: dict[str, list[float]] = {name: [] for name in layers}
    try:
        for one in layers.values():
            await _per_send(one, 500)  # warm-up: connections, caches
        for number in range(rounds):
            order = list(layers) if number % 2 == 0 else list(reversed(layers))
            for name in order:
                results[name].append(await _per_send(layers[name], sends))
    finally:
        await session.close()
        await inner.aclose()
        await runtime.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.layers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sends", type=int, default=5000, help="sends per layer per round")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    with sigterm_unwinds(), tempfile.TemporaryDirectory(prefix="aftm-layers-") as tmp, \
            contextlib.ExitStack() as exits:
        stack = Stack(workdir=Path(tmp), stack=exits)
        certs = make_certificates(stack.workdir)
        port, _ = start_upstream(stack, certs)
        upstream = f"https://127.0.0.1:{port}"
        config = {"listen": {"host": "127.0.0.1", "port": 8080}, "public_url": "http://127.0.0.1:8080",
                  "store": f"sqlite:///{stack.workdir / 'layers.db'}", "tls": {"ca_bundle": certs.ca_file},
                  "clients": [{"user_name": "bench", "password": "bench-password"}],
                  "accounts": [{"name": "bench", "login_url": upstream, "user_name": "api",
                                "password": "api-password"}]}
        path = stack.workdir / "layers.yaml"
        path.write_text(yaml.safe_dump(config))
        results = uvloop.run(_run(path, certs.ca_file, upstream, sends=args.sends, rounds=args.rounds))
    print(f"{'layer':<10}{'CPU µs/send':>12}{'adds':>8}   ({args.rounds} rounds of {args.sends} sends, "
          f"{CONCURRENCY} in flight; median)")
    previous = None
    for name, values in results.items():
        median = statistics.median(values)
        adds = "" if previous is None else f"{median - previous:+8.0f}"
        print(f"{name:<10}{median:>12.0f}{adds:>8}")
        previous = median
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

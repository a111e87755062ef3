"""`python -m bench.variants NAME CONFIG`: the real gateway with one hot-path change made from outside.

The benchmark uses these to measure an idea before anyone edits `gateway/`: each variant builds the
same `gateway.edge.app.build_app(config, runtime=...)` and serves it with uvicorn as `aftm-gateway serve`
does, changing one thing:

    stock          nothing (control: must match `aftm-gateway serve`)
    asyncio-loop   uvicorn on the stdlib asyncio loop instead of uvloop (what uvloop is worth)
    h11            uvicorn's pure-Python h11 parser instead of httptools (what httptools is worth)
    lean-transport a minimal HTTP/1.1 keep-alive client on asyncio streams behind the
                   `transport_factory` seam instead of aiohttp (what the inner client costs)
    raw-asgi       the REST send path answered by a plain ASGI callable in front of Starlette, using the
                   same Sends.handle (what Starlette's routing/Request/Response cost per call)
    combined       raw-asgi and lean-transport together
    raw-dns        gateway.upstreams.resolver's FreshSharedQueries kept (same freshness rule), but each query sent on
                   one persistent UDP socket with prebuilt wire bytes and the A records read with struct
                   (bench/dns_cost.py RawWireUDP) instead of dnspython's resolver
    all            combined + raw-dns

and, not the gateway at all, floors for what Python on this stack can do per request:

    floor-static   uvicorn answering the send with fixed JSON (no upstream): the ASGI server alone
    floor-aiohttp  a bare ASGI proxy: one aiohttp ClientSession POST to the upstream, answer relayed
    floor-lean     a bare ASGI proxy on the lean keep-alive client
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
import uvicorn

from gateway.cli import tune_gc
from gateway.config import load_config
from gateway.edge.app import build_app
from gateway.runtime import Runtime
from gateway.telemetry.logs import configure_logging

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def _read_body(receive: Receive) -> bytes:
    """The whole ASGI request body."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


class _LeanConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive over asyncio streams, Content-Length bodies only: a lower bound for any client."""

    def __init__(self, *, ssl_context: ssl.SSLContext, max_connections: int) -> None:
        self._ssl_context = ssl_context
        self._idle: dict[tuple[str, int, str | None], list[_LeanConnection]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        sni = request.extensions.get("sni_hostname")
        https = url.scheme == "https"
        port = url.port or (443 if https else 80)
        key = (url.host, port, sni)
        idle = self._idle.setdefault(key, [])
        if idle:
            connection = idle.pop()
        else:
            reader, writer = await asyncio.open_connection(
                url.host, port, ssl=self._ssl_context if https else None,
                server_hostname=(sni or url.host) if https else None)
            connection = _LeanConnection(reader, writer)
        body = await request.aread()
        target = url.raw_path.decode("ascii")
        head = [f"{request.method} {target} HTTP/1.1".encode()]
        for name, value in request.headers.raw:
            if name.lower() not in (b"content-length", b"transfer-encoding"):
                head.append(name + b": " + value)
        head.append(b"Content-Length: " + str(len(body)).encode())
        connection.writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        raw = await connection.reader.readuntil(b"\r\n\r\n")
        lines = raw[:-4].split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = [tuple(line.split(b": ", 1)) for line in lines[1:]]
        length = next((int(v) for k, v in headers if k.lower() == b"content-length"), 0)
        content = await connection.reader.readexactly(length)
        idle.append(connection)
        return httpx.Response(status, headers=headers, content=content, extensions={"http_version": b"HTTP/1.1"})

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.writer.close()
        self._idle.clear()


def raw_asgi(app: Any) -> Any:
    """REST sends handled without Starlette's router, Request and Response; everything else passes through."""
    from gateway.core.loop import Call
    from gateway.edge import rest as rest_api
    from gateway.edge.correlation import forwarded_headers, request_ids
    from gateway.protocols import responsys_rest as rest

    state: dict[str, Runtime] = {}

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            async def wrapped_send(message: Message) -> None:
                if message["type"] == "lifespan.startup.complete":
                    state["runtime"] = app.state.runtime
                await send(message)
            await app(scope, receive, wrapped_send)
            return
        path: str = scope["path"]
        if scope["type"] != "http" or scope["method"] != "POST" or rest.API_PATH.match(path) is None \
                or path.endswith("/auth/token") or scope["query_string"]:
            await app(scope, receive, send)
            return
        runtime = state["runtime"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        identity = await runtime.credentials.verify(headers.get("authorization"), "rest")
        if identity is None:
            await app(scope, receive, send)  # the real error answer
            return
        body = await _read_body(receive)
        ids = request_ids(headers.get("x-request-id"))
        call = Call(protocol="rest", method="POST", path=path,
                    headers=forwarded_headers(headers.items(), rest_api.FORWARDED_HEADERS, ids.correlation_id),
                    body=body, request_id=ids.request_id, correlation_id=ids.correlation_id,
                    client=identity.client, is_send=rest.is_send("POST", path),
                    idempotency_key=headers.get("idempotency-key"))
        result = await runtime.sends.handle(call, runtime.rest_dialect)
        response = rest_api.render(result, correlation_id=ids.correlation_id)
        await response(scope, receive, send)

    return asgi


def floor_app(kind: str, upstream: str, ca_bundle: str | None) -> Any:
    """A bare ASGI proxy (or a static answer): no auth, no policies, no httpx objects."""
    import aiohttp

    from policies.tls import client_context

    context = client_context(ca_bundle=ca_bundle, client_cert=None, client_key=None)
    lean = LeanTransport(ssl_context=context, max_connections=100)
    session: list[aiohttp.ClientSession] = []
    static = b'[{"errorMessage":null,"success":true,"recipientId":1}]'

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = await _read_body(receive)
        if kind == "floor-static":
            status, content = 200, static
        elif kind == "floor-aiohttp":
            if not session:
                session.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=100)))
            async with session[0].post(upstream + scope["path"], data=body,
                                       headers={"Content-Type": "application/json",
                                                "Authorization": "bench-token"}) as response:
                status, content = response.status, await response.read()
        else:
            answer = await lean.handle_async_request(httpx.Request(
                "POST", upstream + scope["path"], content=body,
                headers={"Content-Type": "application/json", "Authorization": "bench-token"}))
            status, content = answer.status_code, answer.content
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(content)).encode())]})
        await send({"type": "http.response.body", "body": content})

    return asgi


class RawDNSResolver:
    """gateway.upstreams.resolver.DNSResolver's contract (fresh shared queries, DNSFailure) on a raw UDP client."""

    def __init__(self, *, nameservers: list[str] | None = None, port: int = 53, timeout: float = 2.0) -> None:
        from gateway.upstreams.resolver import FreshSharedQueries

        self._server = ((nameservers or ["127.0.0.1"])[0], port)
        self._timeout = timeout
        self._clients: dict[str, Any] = {}
        self._endpoints: list[Any] = []
        self._shared = FreshSharedQueries(self._query)

    async def resolve(self, host: str) -> list[str]:
        return await self._shared.lookup(host.lower().rstrip("."))

    async def _query(self, name: str) -> list[str]:
        from bench.dns_cost import RawWireUDP
        from gateway.errors import DNSFailure

        client = self._clients.get(name)
        if client is None:
            transport, client = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: RawWireUDP(name), remote_addr=self._server)
            self._clients[name] = client
            self._endpoints.append(transport)
        try:
            addresses: list[str] = await asyncio.wait_for(client.resolve(name), self._timeout)
        except (TimeoutError, OSError) as exc:
            raise DNSFailure(f"no DNS answer for {name}: {exc}") from None
        if not addresses:
            raise DNSFailure(f"{name} has no A record")
        return addresses

    async def close(self) -> None:
        await self._shared.close()
        for transport in self._endpoints:
            transport.close()


def main(argv: list[str]) -> None:
    name, config_path = argv
    configure_logging(level="WARNING")
    config = load_config(config_path)
    loop, http = "auto", "auto"
    runtime: Runtime | None = None
    if name == "asyncio-loop":
        loop = "asyncio"
    elif name == "h11":
        http = "h11"
    if name in ("raw-dns", "all"):
        import gateway.runtime as runtime_module

        runtime_module.DNSResolver = RawDNSResolver  # type: ignore[misc, assignment]  # only in this bench process
        runtime = Runtime(config)
    if name in ("lean-transport", "combined", "all"):
        import gateway.runtime as runtime_module
        from gateway.upstreams.upstream import Upstream

        class LeanUpstream(Upstream):
            def __init__(self, **kwargs: Any) -> None:
                super().__init__(**kwargs, transport_factory=LeanTransport)

        runtime_module.Upstream = LeanUpstream  # type: ignore[misc]  # only in this bench process
        runtime = Runtime(config)  # (with raw-dns's resolver too when both are patched)
    elif name not in ("stock", "raw-asgi", "raw-dns") and not name.startswith("floor-"):
        raise SystemExit(f"unknown variant {name}")
    app: Any = build_app(config, runtime=runtime)
    if name in ("raw-asgi", "combined", "all"):
        app = raw_asgi(app)
    if name.startswith("floor-"):
        # the gateway app still answers the bench's login; sends go to the floor app
        floor = floor_app(name, config.accounts[0].login_url.rstrip("/"), config.tls.ca_bundle)
        gateway = app

        async def split(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and not scope["path"].endswith("/auth/token"):
                await floor(scope, receive, send)
            else:
                await gateway(scope, receive, send)

        app = split
    tune_gc()  # the process settings `aftm-gateway serve` runs with, for every variant and floor alike
    uvicorn.Server(uvicorn.Config(app, host=config.listen.host, port=config.listen.port, loop=loop, http=http,
                                  log_config=None, access_log=False, proxy_headers=False,
                                  server_header=False)).run()


if __name__ == "__main__":
    main(sys.argv[1:])

"""The gateway under test: built from a deployment's raw config, served on an ephemeral loopback port."""

from __future__ import annotations

from typing import Any

import trustme

from gateway.config import parse_config
from gateway.edge.app import build_app
from gateway.edge.listener import server_config
from gateway.runtime import Runtime
from gateway_tools.simulator.server import SimulatedAccount
from tests.support.servers import ServerThread, bind_socket
from tests.support.tls import server_context


class GatewayHost:
    """Mixin for test deployments: `raw_config(public_url)` in, running gateways (replicas) out."""

    gateway: ServerThread | None

    def raw_config(self, public_url: str) -> dict[str, Any]:
        raise NotImplementedError

    def start_replica(self) -> ServerThread:
        """Another gateway process-alike on the same config and store; the caller stops it."""
        sock = bind_socket("127.0.0.1", 0)
        config = parse_config(self.raw_config(f"http://127.0.0.1:{sock.getsockname()[1]}"), environ={})
        return ServerThread(build_app(config), sock=sock).start()

    def start_gateway(self) -> ServerThread:
        self.gateway = self.start_replica()
        return self.gateway

    def stop_gateway(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None

    @property
    def url(self) -> str:
        assert self.gateway is not None
        return self.gateway.url

    @property
    def runtime(self) -> Runtime:
        assert self.gateway is not None
        runtime: Runtime = self.gateway.app.state.runtime
        return runtime


def serve_as_cli(raw: dict[str, Any]) -> ServerThread:
    """The gateway as `aftm-gateway serve` runs it (the listener's protocol and limits), on an ephemeral port.

    `raw` is a config without `public_url`; the caller stops the server.
    """
    sock = bind_socket("127.0.0.1", 0)
    config = parse_config({**raw, "public_url": f"http://127.0.0.1:{sock.getsockname()[1]}"}, environ={})
    app = build_app(config)
    return ServerThread(app, sock=sock, settings=server_config(app, config)).start()


def start_account(ca: trustme.CA, *, name: str, host: str, hostname: str, port: int = 0,
                  password: str | None = None, **kwargs: Any) -> SimulatedAccount:
    """A simulated account `api_<name>` on `host`, serving TLS for `hostname` from the test CA; started."""
    return SimulatedAccount(
        name=name, user_name=f"api_{name}", password=password or f"{name}-password", host=host, port=port,
        ssl_context=kwargs.pop("ssl_context", None) or server_context(ca, hostname), **kwargs,
    ).start()


def merge_config(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` laid over it, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = value
    return merged

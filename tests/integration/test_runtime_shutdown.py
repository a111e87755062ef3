"""Shutdown with the store gone: every other part still stops (a real runtime on a real PostgreSQL)."""

from __future__ import annotations

import logging

import httpx
import pytest

from gateway.config import parse_config
from gateway.errors import UpstreamError
from gateway.runtime import Runtime
from tests.support.stores import connect_admin, postgres_schema


async def _rename_schema(schema: str, to: str) -> None:
    admin = await connect_admin()
    try:
        await admin.execute(f"ALTER SCHEMA {schema} RENAME TO {to}")
    finally:
        await admin.close()


async def test_a_store_down_at_shutdown_still_closes_the_upstream_pools_and_the_store(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    async with postgres_schema() as url:
        schema = url.rpartition("search_path=")[2]
        runtime = Runtime(parse_config({"store": url, "accounts": [
            {"name": "p", "login_url": "https://127.0.0.1:9", "user_name": "u", "password": "p"}]}, environ={}))
        await runtime.start()
        with pytest.raises(UpstreamError):  # the upstream seam now holds a connection pool to close
            await runtime.upstream.send(httpx.Request("GET", "https://127.0.0.1:9/"))
        closed: list[str] = []
        upstream_close, store_close = runtime.upstream.aclose, runtime.require_store().close

        async def close_upstream() -> None:
            closed.append("upstream")
            await upstream_close()

        async def close_store() -> None:
            closed.append("store")
            await store_close()

        monkeypatch.setattr(runtime.upstream, "aclose", close_upstream)
        monkeypatch.setattr(runtime.require_store(), "close", close_store)
        await _rename_schema(schema, schema + "_gone")  # the outbox table is gone: releasing leases fails
        try:
            with caplog.at_level(logging.ERROR, logger="aftm.runtime"):
                await runtime.close()
        finally:
            await _rename_schema(schema + "_gone", schema)
        assert closed == ["upstream", "store"]
        assert runtime.store is None
        assert any("outbox worker did not stop cleanly" in r.getMessage() for r in caplog.records)

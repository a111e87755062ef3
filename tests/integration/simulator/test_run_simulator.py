"""`run_simulator`, the entry point of `aftm-gateway simulate`, serves an account until it is stopped."""

from __future__ import annotations

import asyncio
import threading

import httpx

from gateway_tools.simulator.server import run_simulator
from tests.integration.simulator.conftest import rest_login
from tests.support.servers import answers, free_port, wait_until


def _refuses(url: str) -> bool:
    try:
        httpx.get(url, trust_env=False, timeout=1)
    except httpx.ConnectError:
        return True
    return False


def test_run_simulator_serves_the_account_and_its_control_api(http: httpx.Client) -> None:
    port, control_port = free_port(), free_port()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    finished = threading.Event()

    async def simulate() -> None:
        try:
            await run_simulator(host="127.0.0.1", port=port, control_port=control_port, name="demo",
                                user_name="api_demo", password="demo-password")
        finally:
            finished.set()

    running = asyncio.run_coroutine_threadsafe(simulate(), loop)
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{control_port}/health", timeout=1), message="the control API")
        token = rest_login(http, f"http://127.0.0.1:{port}", user="api_demo", password="demo-password")
        stats = http.get(f"http://127.0.0.1:{control_port}/stats").json()
    finally:
        running.cancel()
        assert finished.wait(timeout=15), "run_simulator did not stop after cancellation"
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()

    assert token
    assert _refuses(f"http://127.0.0.1:{port}/rest/api/ratelimit")
    assert (stats["account"], stats["rest_logins"]) == ("demo", 1)

"""SIGTERM: the gateway stops accepting, finishes the call in flight, then exits (a real process)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from gateway_tools.simulator.server import SimulatedAccount
from tests.e2e.conftest import ServeConfig
from tests.support.servers import answers, wait_until


def test_sigterm_finishes_the_call_in_flight(account: SimulatedAccount, serve_config: ServeConfig,
                                            tmp_path: Path) -> None:
    base = serve_config.base
    log = (tmp_path / "gw.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(serve_config.path)],
                               stdout=log, stderr=log)
    try:
        wait_until(lambda: answers(f"{base}/healthz"), timeout=20, message="the gateway to listen")
        token = httpx.post(f"{base}/rest/api/v1.3/auth/token", trust_env=False, data={
            "user_name": "app", "password": "pw", "auth_type": "password"}).json()["authToken"]
        account.latency(1500)
        results: list[int] = []
        body = {"recipientData": [{"recipient": {"emailAddress": "late@example.com", "listName": {
            "folderName": "F", "objectName": "L"}, "emailFormat": "HTML_FORMAT"}, "optionalData": []}]}

        def send() -> None:
            results.append(httpx.post(f"{base}/rest/api/v1.3/campaigns/c/email", json=body, trust_env=False,
                                      headers={"Authorization": token}, timeout=20).status_code)

        sender = threading.Thread(target=send)
        sender.start()
        # the app's call is in flight once the gateway has logged in upstream for it (each answer takes 1.5 s)
        wait_until(lambda: account.stats()["rest_logins"] == 1, timeout=10,
                   message="the upstream login of the call in flight")
        process.send_signal(signal.SIGTERM)
        sender.join(timeout=30)
        assert results == [200]  # the call in flight finished after SIGTERM
        process.wait(timeout=20)
        assert [d.recipient for d in account.deliveries()] == ["EMAIL_ADDRESS_:late@example.com"]
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/healthz", trust_env=False)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        log.close()

"""`aftm-gateway serve --workers 2`: worker processes share the socket, the store and app credentials."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from gateway_tools.simulator.server import SimulatedAccount
from tests.e2e.conftest import ServeConfig
from tests.support.servers import answers, wait_until


def test_two_workers_serve_one_port_and_accept_each_others_tokens(account: SimulatedAccount,
                                                                  serve_config: ServeConfig, tmp_path: Path) -> None:
    port = serve_config.port
    log = (tmp_path / "gw.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(serve_config.path),
                                "--workers", "2"], stdout=log, stderr=log)
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), timeout=20, message="the workers to listen")
        workers = [int(p) for p in subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True,
                                                  text=True).stdout.split()]
        assert len(workers) == 2
        body = {"recipientData": [{"recipient": {"emailAddress": "w@example.com", "listName": {
            "folderName": "F", "objectName": "L"}, "emailFormat": "HTML_FORMAT"}, "optionalData": []}]}
        statuses = []
        for _ in range(10):  # fresh connections: the kernel spreads them over both workers
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10) as client:
                token = client.post("/rest/api/v1.3/auth/token", data={
                    "user_name": "app", "password": "pw", "auth_type": "password"}).json()["authToken"]
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10) as client:
                statuses.append(client.post("/rest/api/v1.3/campaigns/c/email", json=body,
                                            headers={"Authorization": token}).status_code)
        assert statuses == [200] * 10
        assert len(account.deliveries()) == 10
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        log.close()
    assert all(not os.path.exists(f"/proc/{pid}") for pid in workers)

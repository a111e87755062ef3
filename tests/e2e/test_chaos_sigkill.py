"""Chaos: SIGKILL the gateway while sends are queued behind a throttling upstream, restart it, count.

Every send the gateway accepted (200 or 202) is delivered exactly once; a keyed send whose answer was
lost in the kill is retried by the app with the same key, as a real app would, and still arrives once.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import yaml

from gateway.simulator.server import SimulatedAccount
from tests.support.servers import free_port, wait_until

SENDS = 40




class Gateway:
    def __init__(self, tmp_path: Path, account: SimulatedAccount) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = {"listen": {"host": "127.0.0.1", "port": self.port}, "public_url": self.base,
                  "store": f"sqlite:///{tmp_path / 'gw.db'}", "session_secret": "chaos-secret",
                  "requests": {"deadline": 0.6}, "outbox": {"lease_seconds": 2.0},
                  "clients": [{"user_name": "app", "password": "pw"}],
                  "accounts": [{"name": "primary", "login_url": account.url, "user_name": "api_primary",
                                "password": "pw"}]}
        self.config_path = tmp_path / "gw.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log = (tmp_path / "gw.log").open("ab")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config",
                                         str(self.config_path)], stdout=self.log, stderr=self.log)
        wait_until(self._up, timeout=20, message="the gateway to listen")

    def _up(self) -> bool:
        try:
            return httpx.get(f"{self.base}/healthz", trust_env=False).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.log.close()


def test_sigkill_with_queued_sends_loses_nothing_and_sends_keyed_ones_once(account: SimulatedAccount,
                                                                          tmp_path: Path) -> None:
    gateway = Gateway(tmp_path, account)
    gateway.start()
    accepted: set[int] = set()

    def send(index: int) -> None:
        """One app send, retried with its key until the gateway accepts it (across the kill)."""
        body = {"recipientData": [{"recipient": {"emailAddress": f"chaos-{index}@example.com", "listName": {
            "folderName": "F", "objectName": "L"}, "emailFormat": "HTML_FORMAT"}, "optionalData": []}]}
        for _ in range(60):
            try:
                with httpx.Client(base_url=gateway.base, trust_env=False, timeout=10) as client:
                    token = client.post("/rest/api/v1.3/auth/token", data={
                        "user_name": "app", "password": "pw", "auth_type": "password"}).json()["authToken"]
                    response = client.post("/rest/api/v1.3/campaigns/c/email", json=body, headers={
                        "Authorization": token, "Idempotency-Key": f"chaos-{index}"})
                if response.status_code in (200, 202):
                    accepted.add(index)
                    return
            except (httpx.TransportError, ValueError):
                pass  # the gateway is down (killed): try again, as an app would
            wait_until(gateway._up, timeout=30, message="the gateway to come back")

    try:
        account.throttle(25, retry_after="1")  # most early sends are queued, then delivered later
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(send, i) for i in range(SENDS)]
            wait_until(lambda: len(accepted) >= SENDS // 3, timeout=30, message="a third of the sends accepted")
            gateway.kill()
            with contextlib.closing(sqlite3.connect(tmp_path / "gw.db")) as db:  # what the dead gateway left
                waiting = db.execute("SELECT count(*) FROM outbox WHERE status IN ('pending', 'leased')").fetchone()
            assert waiting[0] > 0  # the restart below really has queued sends to deliver
            gateway.start()
            for future in futures:
                future.result(timeout=120)
        assert accepted == set(range(SENDS))

        def delivered() -> Counter[str]:
            return Counter(d.recipient for d in account.deliveries() if "chaos-" in d.recipient)

        wait_until(lambda: len(delivered()) == SENDS, timeout=60, message="every accepted send delivered")
        counts = delivered()
        assert all(count == 1 for count in counts.values()), counts.most_common(3)
    finally:
        gateway.stop()

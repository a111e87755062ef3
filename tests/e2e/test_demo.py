"""`aftm-gateway demo` and `check-config` as a newcomer runs them: real processes."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).parents[2]


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", "--port", "0", "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    banner: list[str] = []
    try:
        lines = _lines(process)
        while True:
            line = lines.get(timeout=30)  # a deadline, not a sleep: raises queue.Empty if the demo hangs
            banner.append(line)
            if line.startswith("Ready: "):
                break
        yield line.split(" ", 1)[1].strip(), banner
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()
    assert process.returncode is not None


def test_demo_serves_a_send_from_an_app(demo: tuple[str, list[str]]) -> None:
    url, banner = demo
    login = re.search(r"user_name=(\S+) password=(\S+)", "".join(banner))
    assert login is not None
    with httpx.Client(base_url=url, trust_env=False, timeout=15) as client:
        token = client.post("/rest/api/v1.3/auth/token", data={
            "user_name": login.group(1), "password": login.group(2), "auth_type": "password"}).json()["authToken"]
        recipient = {"emailAddress": "demo@example.com", "listName": {"folderName": "F", "objectName": "L"},
                     "emailFormat": "HTML_FORMAT"}
        response = client.post("/rest/api/v1.3/campaigns/welcome/email", json={"recipientData": [
            {"recipient": recipient, "optionalData": []}]}, headers={"Authorization": token})
    assert response.status_code == 200 and response.json()[0]["success"] is True


def test_check_config_accepts_the_example_and_lists_problems(tmp_path: Path) -> None:
    env = {**os.environ, "PRIMARY_PASSWORD": "a", "FAILOVER_PASSWORD": "b", "APP_PASSWORD": "c",
           "ADMIN_TOKEN": "d", "SESSION_SECRET": "e"}
    ok = subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", str(ROOT / "examples/gateway.yaml")],
                        capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "ok (2 accounts" in ok.stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text("accounts:\n  - name: p\n    login_url: ftp://x\n    user_name: u\n    password_env: NOPE_PW\n"
                      "listen: {port: eighty}\n")
    bad = subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", str(broken)],
                         capture_output=True, text=True, env={k: v for k, v in env.items() if k != "NOPE_PW"},
                         timeout=60)
    assert bad.returncode == 2
    assert "accounts[0].password_env: NOPE_PW is not set" in bad.stderr
    assert "listen.port: must be a whole number" in bad.stderr

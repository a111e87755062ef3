"""`aftm-gateway demo` and `check-config` as a newcomer runs them: real processes."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import zeep

from tests.support.responsys_clients import merge_trigger_email_args, soap_session_header
from tests.support.servers import stop_process

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "gateway.yaml"
READY_WITHIN = 30.0  # seconds from start to the `Ready: ` line
STOP_WITHIN = 15.0  # seconds from SIGTERM to exit before SIGKILL


@dataclass
class DemoProcess:
    process: subprocess.Popen[str]
    stderr_path: Path
    banner: list[str] = field(default_factory=list)
    url: str = ""
    killed: bool = False
    reader: threading.Thread | None = None

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]


def _pump_lines(demo: DemoProcess) -> queue.Queue[str | None]:
    """Stdout lines on a queue, read by a thread (a blocking read cannot take a deadline); None at EOF."""
    lines: queue.Queue[str | None] = queue.Queue()
    stdout = demo.process.stdout
    assert stdout is not None

    def pump() -> None:
        for line in stdout:
            lines.put(line)
        lines.put(None)

    demo.reader = threading.Thread(target=pump, name="demo-stdout", daemon=True)
    demo.reader.start()
    return lines


def _read_banner(demo: DemoProcess, lines: queue.Queue[str | None]) -> None:
    deadline = time.monotonic() + READY_WITHIN
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no 'Ready: ' line within {READY_WITHIN}s; stderr:\n{demo.stderr()}")
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue  # the loop's deadline check fails the test
        if line is None:
            raise AssertionError(f"demo exited ({demo.process.wait()}) before 'Ready: '; stderr:\n{demo.stderr()}")
        demo.banner.append(line)
        if line.startswith("Ready: "):
            demo.url = line.removeprefix("Ready: ").strip()
            return


def _terminate(demo: DemoProcess) -> None:
    """SIGTERM, then wait with a deadline; SIGKILL only if it did not stop (and say so)."""
    process = demo.process
    demo.killed = demo.killed or not stop_process(process, grace=STOP_WITHIN)
    if demo.reader is not None:
        demo.reader.join(timeout=5)  # EOF follows the exit; close the pipe only once nobody reads it
    if process.stdout is not None and (demo.reader is None or not demo.reader.is_alive()):
        process.stdout.close()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoProcess]:
    data_dir = tmp_path / "data"
    stderr_path = tmp_path / "demo.stderr"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "demo", "--port", "0", "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=ROOT)
    running = DemoProcess(process=process, stderr_path=stderr_path)
    try:
        _read_banner(running, _pump_lines(running))
        yield running
    finally:
        _terminate(running)


def test_demo_serves_a_send_from_an_app_and_stops_on_sigterm(demo: DemoProcess, tmp_path: Path) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:[1-9][0-9]*", demo.url), demo.url
    assert demo.url.rsplit(":", 1)[1] != "0"  # --port 0 picked a real port
    login = re.search(r"user_name=(\S+) password=(\S+)", "".join(demo.banner))
    assert login is not None, demo.banner
    with httpx.Client(base_url=demo.url, trust_env=False, timeout=15) as client:
        answer = client.post("/rest/api/v1.3/auth/token", data={
            "user_name": login.group(1), "password": login.group(2), "auth_type": "password"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["endPoint"] == demo.url
        recipient = {"emailAddress": "demo@example.com", "listName": {"folderName": "F", "objectName": "L"},
                     "emailFormat": "HTML_FORMAT"}
        response = client.post("/rest/api/v1.3/campaigns/welcome/email", json={"recipientData": [
            {"recipient": recipient, "optionalData": []}]}, headers={"Authorization": answer.json()["authToken"]})
    assert response.status_code == 200, response.text
    assert response.json()[0]["success"] is True
    assert (tmp_path / "data" / "gateway.db").exists()  # the store went where --data-dir said

    _terminate(demo)
    assert demo.process.returncode is not None
    assert not demo.killed, f"the demo ignored SIGTERM for {STOP_WITHIN}s; stderr:\n{demo.stderr()}"
    # uvicorn shuts down gracefully, then re-raises the signal it captured: death by SIGTERM, or 0
    assert demo.process.returncode in (0, -signal.SIGTERM), (demo.process.returncode, demo.stderr())
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{demo.url}/healthz", trust_env=False, timeout=5)


def test_a_soap_app_keeps_sending_while_the_demo_runs_on_its_failover_account(demo: DemoProcess) -> None:
    """The demo's failover account is an AFTM secondary: SOAP sends go there as HaMergeTriggerEmail."""
    login = re.search(r"user_name=(\S+) password=(\S+)", "".join(demo.banner))
    admin_token = re.search(r"Authorization: Bearer ([0-9a-f]{64})'", "".join(demo.banner))
    assert login is not None and admin_token is not None, demo.banner
    with httpx.Client(base_url=demo.url, trust_env=False, timeout=15) as admin:
        admin.post("/admin/override", json={"account": "failover"},
                   headers={"Authorization": f"Bearer {admin_token.group(1)}"}).raise_for_status()
    client = zeep.Client(f"{demo.url}/webservices/wsdl/ResponsysWS_Level1.wsdl")
    session_id = client.service.login(username=login.group(1), password=login.group(2))
    merged = client.service.mergeTriggerEmail(**merge_trigger_email_args("soap-demo@example.com"),
                                              _soapheaders=soap_session_header(session_id))
    assert len(merged) == 1 and merged[0].success is True


def _env_names_in(config_text: str) -> list[str]:
    """The environment variables a config names: `<key>_env: NAME` values and `${NAME}` without a default."""
    code = "\n".join(line.split("#", 1)[0] for line in config_text.splitlines())  # comments show examples
    names = re.findall(r"^\s*\w+_env:\s*([A-Za-z_][A-Za-z0-9_]*)", code, flags=re.MULTILINE)
    names += re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", code)
    return sorted(set(names))


def _check_config(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", str(path)],
                          capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)


PROBLEM_LINE = re.compile(r"^  (?P<key>[A-Za-z_][\w.\[\]]*): (?P<why>\S.*)$")


def _problems(stderr: str) -> dict[str, str]:
    """`key: why` lines of check-config's stderr; any other line (but the heading) fails the test."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and lines[0] == "configuration problems:", stderr
    problems: dict[str, str] = {}
    for line in lines[1:]:
        match = PROBLEM_LINE.match(line)
        assert match is not None, f"not a `key: why` line: {line!r}"
        problems[match["key"]] = match["why"]
    return problems


def test_check_config_accepts_the_example_with_the_variables_it_names() -> None:
    names = _env_names_in(EXAMPLE.read_text())
    assert {"PRIMARY_PASSWORD", "FAILOVER_PASSWORD", "APP_PASSWORD"} <= set(names), names
    base = {k: v for k, v in os.environ.items() if k not in names}
    missing = _check_config(EXAMPLE, base)
    assert missing.returncode == 2, missing.stdout + missing.stderr
    unset = {why.split()[0] for why in _problems(missing.stderr).values() if why.endswith("is not set")}
    assert unset == set(names)  # every variable it names is required, and each is reported by name

    # secrets must be at least 32 bytes: every value here is longer
    ok = _check_config(EXAMPLE, {**base, **{name: f"value-of-{name.lower()}-{'0' * 32}" for name in names}})
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"{EXAMPLE}: ok (2 accounts: primary, failover; 1 clients)"


def test_check_config_lists_every_problem_as_key_and_why(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("accounts:\n  - name: p\n    login_url: ftp://x\n    user_name: u\n    password_env: NOPE_PW\n"
                      "listen: {port: eighty}\n")
    bad = _check_config(broken, {k: v for k, v in os.environ.items() if k != "NOPE_PW"})
    assert bad.returncode == 2
    assert bad.stdout == ""
    problems = _problems(bad.stderr)
    assert problems["accounts[0].password_env"] == "NOPE_PW is not set"
    assert problems["listen.port"] == "must be a whole number"
    assert "accounts[0].login_url" in problems and "http" in problems["accounts[0].login_url"]
    assert "Traceback" not in bad.stderr


def test_check_config_refuses_short_signing_keys_and_says_how_to_make_one(tmp_path: Path) -> None:
    weak = tmp_path / "weak.yaml"
    weak.write_text("accounts:\n  - name: p\n    login_url: https://login2.responsys.net\n    user_name: u\n"
                    "    password: pw\nsession_secret: x\nadmin:\n  token: '1'\n")
    bad = _check_config(weak, dict(os.environ))
    assert bad.returncode == 2, bad.stdout
    problems = _problems(bad.stderr)
    assert problems["session_secret"] == "must be at least 32 bytes (e.g. `openssl rand -hex 32`); got 1"
    assert problems["admin.token"] == "must be at least 32 bytes (e.g. `openssl rand -hex 32`); got 1"

"""What `aftm-gateway drill --chaos` breaks: gateway processes, a PostgreSQL server of its own, app load.

    GatewayProcess      one `aftm-gateway serve` process from a config dict; started, SIGKILLed, stopped
    DisposablePostgres  a PostgreSQL server in a temporary directory on a loopback port, stopped like a
                        crash (`pg_ctl stop -m immediate`) and started again without disturbing any
                        other server on the machine
    AppLoad             app threads sending REST sends through the gateways, each to its own recipient;
                        keyed sends are retried with their key until accepted, as a careful app does
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

from gateway_tools.harness import free_port, stop_process

APP_USER, APP_PASSWORD = "chaos-app", "chaos-app-password"
SEND_PATH = "/rest/api/v1.3/campaigns/chaos/email"
KEYED_PATIENCE = 90.0  # seconds past the load's end a keyed send keeps being retried until accepted
RETRY_PAUSE = 0.2  # seconds an app waits before retrying a keyed send that was not accepted


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `condition` until it holds; raise TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --- gateway processes ------------------------------------------------------------------------------


class GatewayProcess:
    """One `aftm-gateway serve` process on a loopback port, its output appended to a log file."""

    def __init__(self, *, directory: Path, name: str, store: str, account_url: str, session_secret: str) -> None:
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = {
            "listen": {"host": "127.0.0.1", "port": self.port}, "public_url": self.base, "store": store,
            "session_secret": session_secret, "requests": {"deadline": 0.6},
            "outbox": {"lease_seconds": 2.0},
            "clients": [{"user_name": APP_USER, "password": APP_PASSWORD}],
            "accounts": [{"name": "primary", "login_url": account_url, "user_name": "api_primary",
                          "password": "chaos-account-password"}],
        }
        self.config_path = directory / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = directory / f"{name}.log"
        self._log: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 30.0) -> None:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config_path)],
            stdout=self._log, stderr=subprocess.STDOUT)
        wait_for(self.healthy, timeout=timeout, what=f"gateway {self.name} to listen")

    def _get(self, path: str) -> int | None:
        try:
            return httpx.get(self.base + path, trust_env=False, timeout=2.0).status_code
        except httpx.TransportError:
            return None

    def healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"gateway {self.name} exited with {self.process.returncode}; see {self.log_path}")
        return self._get("/healthz") == 200

    def ready(self) -> bool:
        return self._get("/readyz") == 200

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, leases stay held until they expire."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self._close_log()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, grace=20)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


# --- PostgreSQL -------------------------------------------------------------------------------------


def postgres_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl (Debian keeps them off PATH), or None."""
    if (found := shutil.which("initdb")) is not None:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


class DisposablePostgres:
    """A PostgreSQL server of its own: trust auth on 127.0.0.1, data in a temporary directory.

    As root the server runs as the `postgres` user (initdb refuses root). `crash()` stops it the
    way a power cut would look to clients (`-m immediate`, recovery at the next start).
    """

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="aftm-chaos-pg-"))
        self.data = self.root / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres = os.geteuid() == 0

    def _run(self, *command: str, timeout: float = 60.0) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        subprocess.run([*prefix, *command], check=True, timeout=timeout, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)

    def create(self) -> DisposablePostgres:
        if self._as_postgres:
            shutil.chown(self.root, user="postgres", group="postgres")
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-instructions")
        self.start()
        return self

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c max_connections=100"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                  str(self.root / "server.log"), "-w", "start")

    def crash(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


# --- app load ---------------------------------------------------------------------------------------


@dataclass
class Send:
    index: int
    recipient: str
    key: str | None
    accepted: bool = False
    answers: list[str] = field(default_factory=list)  # status codes or "down", in order


class AppLoad:
    """`threads` app threads sending until `until` (monotonic); every other send carries a key.

    `repeats` > 1 sends each keyed request that many times with its key, whatever the answers, as
    an app that retries on every timeout would.
    """

    def __init__(self, *, scenario: str, run_id: str, targets: list[str], threads: int = 4,
                 pace: float = 0.05, repeats: int = 1) -> None:
        self.scenario, self.run_id, self.targets = scenario, run_id, targets
        self.threads, self.pace, self.repeats = threads, pace, repeats
        self.sends: list[Send] = []
        self._lock = threading.Lock()
        self._indexes = itertools.count()
        self._workers: list[threading.Thread] = []

    def start(self, until: float) -> None:
        for number in range(self.threads):
            worker = threading.Thread(target=self._run, args=(number, until), name=f"app-{number}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def join(self) -> None:
        for worker in self._workers:
            worker.join(timeout=KEYED_PATIENCE + 60)

    def accepted(self) -> int:
        with self._lock:
            return sum(send.accepted for send in self.sends)

    def answers(self) -> Counter[str]:
        with self._lock:
            return Counter(answer for send in self.sends for answer in send.answers)

    def _run(self, number: int, until: float) -> None:
        app = _App(self.targets, first=number)
        try:
            while time.monotonic() < until:
                index = next(self._indexes)
                keyed = index % 2 == 0
                send = Send(index=index, recipient=f"{self.scenario}-{index}@chaos.example",
                            key=f"{self.run_id}-{self.scenario}-{index}" if keyed else None)
                with self._lock:
                    self.sends.append(send)
                if keyed:
                    self._send_keyed(app, send, patience=until + KEYED_PATIENCE)
                else:
                    send.accepted = app.send(send) in ("200", "202")
                time.sleep(self.pace)
        finally:
            app.close()

    def _send_keyed(self, app: _App, send: Send, *, patience: float) -> None:
        tries = 0
        while time.monotonic() < patience:
            answer = app.send(send)
            tries += 1
            send.accepted = send.accepted or answer in ("200", "202")
            if send.accepted and tries >= self.repeats:
                return
            if not send.accepted:
                app.rotate()  # that gateway may be down: the next try goes to another
                time.sleep(RETRY_PAUSE)


class _App:
    """One app's HTTP connection and gateway token; talks to one of `targets` at a time."""

    def __init__(self, targets: list[str], *, first: int) -> None:
        self.targets = targets
        self.current = first % len(targets)
        self.client = httpx.Client(trust_env=False, timeout=10.0)
        self.token: str | None = None

    def rotate(self) -> None:
        self.current = (self.current + 1) % len(self.targets)
        self.token = None

    def close(self) -> None:
        self.client.close()

    def send(self, send: Send) -> str:
        """Post the send once; return the status code as text, or "down" when no answer came."""
        answer = self._send(send)
        send.answers.append(answer)
        return answer

    def _send(self, send: Send) -> str:
        base = self.targets[self.current]
        body: dict[str, Any] = {"recipientData": [{"recipient": {
            "emailAddress": send.recipient, "listName": {"folderName": "F", "objectName": "L"},
            "emailFormat": "HTML_FORMAT"}, "optionalData": []}]}
        headers = {"Idempotency-Key": send.key} if send.key else {}
        try:
            if self.token is None:
                login = self.client.post(base + "/rest/api/v1.3/auth/token", data={
                    "user_name": APP_USER, "password": APP_PASSWORD, "auth_type": "password"})
                if login.status_code != 200:
                    return str(login.status_code)
                self.token = str(login.json()["authToken"])
            response = self.client.post(base + SEND_PATH, json=body, headers={"Authorization": self.token, **headers})
        except (httpx.TransportError, ValueError, KeyError):
            self.token = None
            return "down"
        if response.status_code == 401:
            self.token = None
        return str(response.status_code)

"""A real `aftm-gateway serve` carries no tooling: no simulator, drill, chaos or demo, no test library.

The production image ships `gateway` and `policies` only; a serve path that imported `gateway_tools` (as
cli.py once did at module level for the chaos scenario names) would fail there. The check is Python's own
import log (PYTHONPROFILEIMPORTTIME) of a gateway that started, logged in upstream, forwarded a send and
stopped, so lazily imported modules of the send path are in it too.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.e2e.conftest import ServeConfig
from tests.support.servers import answers, wait_until

TOOLING = ("gateway_tools", "tests", "trustme", "dnslib", "pytest", "zeep", "responsysrest", "playwright",
           "kubernetes_validate", "mypy", "ruff")


def imported_modules(import_log: str) -> set[str]:
    """Module names from `-X importtime` lines: `import time:  self | cumulative | <indent>name`."""
    return {match.group(1) for match in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s+([\w.]+)\s*$",
                                                    import_log, flags=re.M)}


def test_serve_imports_no_tooling(serve_config: ServeConfig, tmp_path: Path) -> None:
    base = serve_config.base
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config",
                                    str(serve_config.path)], stdout=subprocess.DEVNULL, stderr=stderr,
                                   env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
        try:
            wait_until(lambda: answers(f"{base}/healthz"), timeout=20, message="the gateway to listen")
            token = httpx.post(f"{base}/rest/api/v1.3/auth/token", trust_env=False, data={
                "user_name": "app", "password": "pw", "auth_type": "password"}).json()["authToken"]
            body = {"recipientData": [{"recipient": {"emailAddress": "a@example.com", "listName": {
                "folderName": "F", "objectName": "L"}, "emailFormat": "HTML_FORMAT"}, "optionalData": []}]}
            sent = httpx.post(f"{base}/rest/api/v1.3/campaigns/c/email", json=body, trust_env=False,
                              headers={"Authorization": token}, timeout=20)
            assert sent.status_code == 200
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)  # uvicorn re-raises SIGTERM after its graceful shutdown
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5)
    modules = imported_modules(stderr_path.read_text(errors="replace"))
    assert {"gateway.core.loop", "gateway.edge.rest", "gateway.upstreams.upstream"} <= modules  # the log parsed
    tooling = sorted(name for name in modules if name.split(".")[0] in TOOLING)
    assert tooling == []

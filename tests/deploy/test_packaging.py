"""What the image installs: the wheel its build context makes, the dependencies it declares, the locks.

No Docker engine runs in CI, so the Dockerfile's build stage is replayed where it matters: the build
context is assembled from `.dockerignore`'s allow-list, the wheel is built from it with the locked
setuptools (as `pip wheel --no-build-isolation` does in the image) and read. It must hold `gateway` and
`policies` and nothing of `gateway_tools`, build without a warning, and run without the tools.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import starlette
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.deploy.test_dockerfile import DOCKERFILE, parse_stages

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
LOCKS = REPO / "requirements"
FIRST_PARTY = {"gateway", "gateway_tools", "policies", "tests", "bench"}


def _dockerignore() -> tuple[list[str], list[str]]:
    """(allowed paths, excluded patterns) of the allow-list `.dockerignore`."""
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*", ".dockerignore must start by excluding everything"
    allowed = [p[1:].rstrip("/") for p in patterns[1:] if p.startswith("!")]
    excluded = [p.removeprefix("**/") for p in patterns[1:] if not p.startswith("!")]
    return allowed, excluded


def build_context(into: Path) -> Path:
    """The files `docker build .` sends: the allowed paths less the excluded patterns."""
    allowed, excluded = _dockerignore()
    ignore = shutil.ignore_patterns(*excluded)
    for name in allowed:
        source, target = REPO / name, into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=ignore)
        else:
            shutil.copy2(source, target)
    return into


@pytest.fixture(scope="module")
def image_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel the Dockerfile's build stage makes, built from the build context with warnings as errors."""
    required = Requirement(PYPROJECT["build-system"]["requires"][0])
    installed = importlib.metadata.version("setuptools")
    if not required.specifier.contains(installed):
        pytest.fail(f"setuptools {installed} here does not satisfy the build requirement {required}: "
                    "run `bash scripts/setup` (it installs requirements/build.txt)")
    context = build_context(tmp_path_factory.mktemp("context"))
    out = tmp_path_factory.mktemp("wheel")
    build = ("import sys; from setuptools import build_meta; "
             "print(build_meta.build_wheel(sys.argv[1]))")
    result = subprocess.run([sys.executable, "-W", "error", "-c", build, str(out)], cwd=context,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"the wheel did not build cleanly:\n{result.stderr[-4000:]}"
    return out / result.stdout.strip().splitlines()[-1]


def test_every_copy_of_the_build_stage_is_in_the_build_context(tmp_path: Path) -> None:
    context = build_context(tmp_path)
    build_stage = parse_stages(DOCKERFILE.read_text(encoding="utf-8"))[0]
    sources = [source for i in build_stage if i.keyword == "COPY" and not i.arguments.startswith("--from=")
               for source in i.arguments.split()[:-1]]
    assert "gateway" in sources and "policies" in sources
    missing = [source for source in sources if not (context / source).exists()]
    assert missing == [], f"the build stage copies what .dockerignore keeps out of the context: {missing}"


def test_the_image_wheel_holds_the_gateway_and_policies_only(image_wheel: Path) -> None:
    names = zipfile.ZipFile(image_wheel).namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert top == {"gateway", "policies", "aftm_gateway-0.1.0.dist-info"}, sorted(top)
    assert not [n for n in names if "gateway_tools" in n or n.startswith("tests/")]
    for data in ("gateway/py.typed", "policies/py.typed", "gateway/edge/templates/login.html"):
        assert data in names, f"{data} is missing from the wheel"
    assert "aftm_gateway-0.1.0.dist-info/licenses/LICENSE" in names


def test_the_image_wheel_declares_its_license_as_spdx(image_wheel: Path) -> None:
    metadata = zipfile.ZipFile(image_wheel).read("aftm_gateway-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert "License-File: LICENSE" in metadata.splitlines()


def test_the_image_wheel_runs_without_the_tools(image_wheel: Path, tmp_path: Path) -> None:
    unpacked = tmp_path / "site"
    zipfile.ZipFile(image_wheel).extractall(unpacked)
    (tmp_path / "gw.yaml").write_text(
        "listen: {host: 127.0.0.1, port: 8080}\npublic_url: https://gateway.example\n"
        f"store: sqlite:///{tmp_path / 'gw.db'}\nclients: [{{user_name: app, password: pw}}]\n"
        "accounts: [{name: primary, login_url: 'https://login2.responsys.net', user_name: api, password: pw}]\n")
    # -I -S: no PYTHONPATH, no current directory, no .pth (the checkout's editable install maps
    # gateway_tools): the wheel's files and the third-party packages, as in the image.
    purelib = Path(starlette.__file__).parents[1]
    run = ("import sys; sys.path[:0] = [sys.argv[1]]; sys.path.append(sys.argv[2]); "
           "from gateway.cli import main; sys.exit(main(sys.argv[3:]))")

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-I", "-S", "-c", run, str(unpacked), str(purelib), *argv],
                              cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False)

    checked = cli("check-config", str(tmp_path / "gw.yaml"))
    assert checked.returncode == 0, checked.stderr
    demo = cli("demo", "--port", "0")
    assert demo.returncode == 2, demo.stderr
    assert "aftm-gateway demo: the tools (simulate, drill, demo) are not installed here" in demo.stderr
    assert "Traceback" not in demo.stderr


def _imports(root: Path) -> Iterator[str]:
    """Absolute module names imported under `root`: `import a.b` gives a.b, `from a import b, c` a.b and a.c."""
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                yield from (alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _origin(module: str) -> str | None:
    """The file that defines `module`, or (for a name imported from a module) the module's own file."""
    for name in filter(None, (module, module.rpartition(".")[0])):
        loaded = getattr(sys.modules.get(name), "__file__", None)
        if loaded is not None:  # already imported (its __spec__ may be gone: find_spec would refuse it)
            return str(loaded)
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:  # a class or function imported from a module, not a submodule
            continue
        if spec is not None and spec.origin is not None:
            return spec.origin
    return None


@functools.cache
def _file_owners() -> dict[str, str]:
    """{installed file: its distribution}, from every installed distribution's RECORD."""
    return {os.path.normpath(dist.locate_file(file)): canonicalize_name(dist.metadata["Name"])
            for dist in importlib.metadata.distributions() for file in dist.files or ()}


def _distributions_of(root: Path) -> dict[str, str]:
    """{distribution: a module it provides} for every third-party import under `root`."""
    owners = _file_owners()
    found: dict[str, str] = {}
    for module in sorted(set(_imports(root))):
        if module.split(".")[0] in FIRST_PARTY or module.split(".")[0] in sys.stdlib_module_names:
            continue
        origin = _origin(module)
        assert origin is not None, f"{root.name} imports {module}, which is not installed"
        owner = owners.get(os.path.normpath(origin))
        assert owner is not None, f"{module} ({origin}) belongs to no installed distribution"
        found.setdefault(owner, module)
    return found


def _declared(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def test_the_runtime_dependencies_are_exactly_what_the_gateway_imports() -> None:
    # A dependency only the tools (or tests) need must not be installed into the image; a module the
    # gateway imports must be declared, not arrive by chance as somebody else's dependency.
    runtime = _declared(PYPROJECT["project"]["dependencies"])
    imported = {**_distributions_of(REPO / "gateway"), **_distributions_of(REPO / "policies")}
    assert sorted(runtime - imported.keys()) == [], "declared for the runtime but imported only by tools or tests"
    assert {d: m for d, m in imported.items() if d not in runtime} == {}, "imported by the gateway, not declared"


def test_the_tools_need_nothing_the_runtime_does_not_declare() -> None:
    # Should the tools ever need a package of their own, it belongs to an optional extra, never the runtime.
    declared = _declared(PYPROJECT["project"]["dependencies"])
    for extra in PYPROJECT["project"].get("optional-dependencies", {}).values():
        declared |= _declared(extra)
    tools = _distributions_of(REPO / "gateway_tools")
    assert {d: m for d, m in tools.items() if d not in declared} == {}


def read_lock(name: str) -> dict[str, tuple[Version, int]]:
    """{package: (pinned version, number of hashes)} of a lock file in requirements/."""
    pins: dict[str, tuple[Version, int]] = {}
    text = (LOCKS / name).read_text(encoding="utf-8")
    for entry in re.split(r"\n(?=[A-Za-z0-9])", text):
        first = entry.split(";", 1)[0].split("\\", 1)[0].strip()
        if first.startswith("#") or not first:
            continue
        package, _, version = first.partition("==")
        assert version, f"requirements/{name}: {first!r} is not pinned with =="
        pins[canonicalize_name(package)] = (Version(version.strip()), entry.count("--hash=sha256:"))
    return pins


@pytest.mark.parametrize(("lock", "requirements"), [
    ("runtime.txt", PYPROJECT["project"]["dependencies"]),
    ("build.txt", PYPROJECT["build-system"]["requires"]),
    ("dev.txt", [*PYPROJECT["project"]["dependencies"], *PYPROJECT["build-system"]["requires"],
                 *PYPROJECT["project"]["optional-dependencies"]["test"]]),
])
def test_the_lock_pins_every_requirement_within_its_range(lock: str, requirements: list[str]) -> None:
    pins = read_lock(lock)
    assert [p for p, (_, hashes) in pins.items() if hashes == 0] == [], f"{lock}: pins without a hash"
    stale = [r for r in map(Requirement, requirements)
             if canonicalize_name(r.name) not in pins or not r.specifier.contains(pins[canonicalize_name(r.name)][0])]
    assert stale == [], f"requirements/{lock} does not satisfy pyproject.toml: run `bash scripts/lock`"


def test_ci_tests_the_versions_the_image_ships() -> None:
    dev = read_lock("dev.txt")
    for lock in ("runtime.txt", "build.txt"):
        differ = {p: (str(v), str(dev[p][0]) if p in dev else None) for p, (v, _) in read_lock(lock).items()
                  if p not in dev or dev[p][0] != v}
        assert differ == {}, f"requirements/{lock} and dev.txt pin these differently: run `bash scripts/lock`"


"""The helm chart: lint, render with the default and the full values, validate every manifest offline
against the Kubernetes schemas, check what the platform relies on, and prove that the gateway config
it renders passes `aftm-gateway check-config` with credentials that only come from the existing Secret.

Needs helm at .tools/helm/helm (`bash scripts/deploy-tools`); without it these tests fail, never skip.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.config import hash_password
from tests.deploy.test_dockerfile import DOCKERFILE, parse_stages
from tests.support.certificate_login import key_pair

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "aftm-gateway"
HELM = REPO / ".tools" / "helm" / "helm"
AFTM_GATEWAY = Path(sys.executable).parent / "aftm-gateway"
# The chart's kubeVersion floor and a current release: the manifests must be valid on both.
KUBERNETES_VERSIONS = ("1.25.0", "1.33.0")
# Custom resources have no schema in kubernetes-validate; their tests check them field by field.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
RELEASE, NAMESPACE = "aftm", "messaging"
VALUE_FILES = {"default": [], "full": [CHART / "ci" / "full-values.yaml"]}
# A Kubernetes env var or config key that holds a credential, and the gateway's own secret config keys.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|API_?KEY|PRIVATE_KEY|SERVER_KEY", re.IGNORECASE)
SECRET_CONFIG_KEYS = {"password", "password_hash", "token", "session_secret", "failure_post_secret", "private_key",
                      "server_key"}
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

MISSING_HELM = f"{HELM.relative_to(REPO)} is missing: run `bash scripts/deploy-tools` to install helm"

Helm = Callable[..., subprocess.CompletedProcess[str]]


def test_helm_is_installed() -> None:
    # Fails, never skips: a CI run that forgot scripts/deploy-tools must go red, not quietly pass.
    assert HELM.is_file(), MISSING_HELM


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """Run the repository's helm with its cache, config and data in a throwaway home."""
    if not HELM.is_file():
        pytest.fail(MISSING_HELM)
    home = tmp_path_factory.mktemp("helm-home")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}

    def run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(HELM), *map(str, args)], capture_output=True, text=True, env=env,
                                timeout=60, check=False)
        if check and result.returncode != 0:
            pytest.fail(f"helm {' '.join(map(str, args))} failed:\n{result.stdout}{result.stderr}")
        return result

    return run


@dataclass(frozen=True)
class Rendered:
    values: dict[str, Any]
    text: str
    documents: list[dict[str, Any]]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.documents if d["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        (document,) = self.all(kind)
        return document

    @property
    def pod(self) -> dict[str, Any]:
        return self.one("Deployment")["spec"]["template"]

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.pod["spec"]["containers"]
        return container

    @property
    def env(self) -> dict[str, dict[str, Any]]:
        return {e["name"]: e for e in self.container["env"]}

    @property
    def gateway_config_text(self) -> str:
        return self.one("ConfigMap")["data"]["gateway.yaml"]

    @property
    def gateway_config(self) -> dict[str, Any]:
        return yaml.safe_load(self.gateway_config_text)


def render(helm: Helm, *value_files: Path, sets: tuple[str, ...] = ()) -> Rendered:
    """`helm template` the chart; `values` are the chart's defaults merged with the files (not `sets`)."""
    args: list[str | Path] = ["template", RELEASE, CHART, "--namespace", NAMESPACE]
    for path in value_files:
        args += ["--values", path]
    for assignment in sets:
        args += ["--set", assignment]
    text = helm(*args).stdout
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    for path in value_files:
        values = _merged(values, yaml.safe_load(path.read_text(encoding="utf-8")))
    return Rendered(values, text, [d for d in yaml.safe_load_all(text) if d])


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    # Helm's rule: maps merge key by key, anything else (lists included) is replaced.
    result = copy.deepcopy(base)
    for key, value in override.items():
        result[key] = _merged(result[key], value) if isinstance(value, dict) and isinstance(
            result.get(key), dict) else value
    return result


@pytest.fixture(scope="session", params=sorted(VALUE_FILES))
def rendered(request: pytest.FixtureRequest, helm: Helm) -> Rendered:
    return render(helm, *VALUE_FILES[request.param])


@pytest.fixture(scope="session")
def default(helm: Helm) -> Rendered:
    return render(helm, *VALUE_FILES["default"])


@pytest.fixture(scope="session")
def full(helm: Helm) -> Rendered:
    return render(helm, *VALUE_FILES["full"])


def _secret_env(rendered: Rendered) -> dict[str, str]:
    """Every container variable filled from a Secret, with the Secret key it comes from."""
    refs = {name: e["valueFrom"]["secretKeyRef"] for name, e in rendered.env.items()
            if "secretKeyRef" in e.get("valueFrom", {})}
    existing = rendered.values["credentials"]["existingSecret"]
    assert {r["name"] for r in refs.values()} <= {existing}, f"a credential comes from another Secret: {refs}"
    return {name: ref["key"] for name, ref in refs.items()}


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")
    else:
        yield path, node


@pytest.mark.parametrize("values", sorted(VALUE_FILES))
def test_chart_lints_clean(helm: Helm, values: str) -> None:
    args: list[str | Path] = ["lint", "--strict", CHART]
    for path in VALUE_FILES[values]:
        args += ["--values", path]
    assert "0 chart(s) failed" in helm(*args).stdout


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_matches_the_kubernetes_schema(rendered: Rendered, version: str) -> None:
    kinds = {(d["apiVersion"], d["kind"]) for d in rendered.documents}
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount"} <= {kind for _, kind in kinds}
    for document in rendered.documents:
        if (document["apiVersion"], document["kind"]) in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(document, version, strict=True)


def test_schema_validation_catches_an_invalid_manifest(default: Rendered) -> None:
    deployment = copy.deepcopy(default.one("Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pth"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_probes_call_the_gateway_endpoints_on_its_port(rendered: Rendered) -> None:
    container = rendered.container
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": rendered.values["containerPort"], "protocol": "TCP"}
    listener = rendered.values["listener"]
    assert rendered.gateway_config["listen"] == {
        "host": "0.0.0.0", "port": port["containerPort"], "max_header_bytes": listener["maxHeaderBytes"],
        "max_headers": listener["maxHeaders"], "header_timeout": listener["headerTimeout"],
        "limit_concurrency": listener["limitConcurrency"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = rendered.one("Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"] == rendered.one("Deployment")["spec"]["selector"]["matchLabels"]


def test_pod_runs_as_the_images_non_root_user_on_a_read_only_root(rendered: Rendered) -> None:
    pod, container = rendered.pod["spec"], rendered.container
    image_user = next(i.arguments for i in reversed(parse_stages(DOCKERFILE.read_text(encoding="utf-8"))[-1])
                      if i.keyword == "USER")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == image_user.split(":")[0] != "0"
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # The only writable places: the data directory (the image's VOLUME) and /tmp.
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert {"/var/lib/aftm-gateway", "/tmp"} <= writable
    assert container["args"][:3] == ["serve", "--config", "/etc/aftm-gateway/gateway.yaml"]


def test_every_credential_in_the_config_comes_from_the_existing_secret(rendered: Rendered) -> None:
    config, values = rendered.gateway_config, rendered.values
    referenced = {v for k, v in _walk(config) if k.endswith("_env")}
    referenced |= {m for _, v in _walk(config) if isinstance(v, str) for m in ENV_REFERENCE.findall(v)}
    secret_env = _secret_env(rendered)
    assert referenced <= secret_env.keys(), f"config names variables no Secret fills: {referenced - secret_env.keys()}"
    keys = {values["credentials"].get(k, "") for k in ("sessionSecretKey", "adminTokenKey", "storePasswordKey",
                                                       "serverKeyKey", "serverCertificateKey")}
    keys |= {a.get("passwordKey") or a["privateKeyKey"] for a in values["accounts"]}
    keys |= {c.get("passwordKey") or c["passwordHashKey"] for c in values["clients"] if "certificate" not in c}
    keys |= {c["failurePostSecretKey"] for c in values["clients"] if c.get("failurePostSecretKey")}
    keys |= {u["passwordKey"] for u in values.get("sms", {}).get("upstreams", [])}
    assert set(secret_env.values()) == keys - {""}
    if values["credentials"]["storePasswordKey"]:
        assert "PGPASSWORD" in secret_env  # libpq's variable: the store URL carries no password


def test_no_credential_is_written_into_any_manifest(rendered: Rendered) -> None:
    for path, value in _walk(rendered.gateway_config):
        if path.rsplit(".", 1)[-1] in SECRET_CONFIG_KEYS:
            assert ENV_REFERENCE.fullmatch(str(value)), f"{path}: a literal credential in the config"
    for name, entry in rendered.env.items():
        if SECRET_NAME.search(name):
            assert "value" not in entry, f"env {name}: a literal credential"
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", rendered.text), "a URL with a password"
    assert not re.search(r"(?i)[?&]password=", rendered.text)
    assert not [d for d in rendered.documents if d["kind"] == "Secret"], "the chart must not create the Secret"


@pytest.mark.parametrize(("override", "refused_at"), [
    ({"accounts": [{"name": "primary", "login_url": "https://login2.responsys.net", "user_name": "api",
                    "password": "hunter2"}]}, "/accounts/0"),
    ({"accounts": [{"name": "primary", "login_url": "https://login2.responsys.net", "user_name": "api",
                    "passwordKey": "pw", "password_env": "PW"}]}, "/accounts/0"),
    ({"clients": [{"user_name": "app", "password_hash": "pbkdf2_sha256$1$00$00"}]}, "/clients/0"),
    ({"store": {"url": "postgresql://aftm:hunter2@postgresql:5432/aftm"}}, "/store/url"),
    ({"store": {"url": "postgresql://aftm@postgresql:5432/aftm?password=hunter2"}}, "/store/url"),
    ({"config": {"admin": {"token": "hunter2"}}}, "/config"),
])
def test_values_refuse_credential_literals(helm: Helm, tmp_path: Path, override: dict[str, Any],
                                           refused_at: str) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(override), encoding="utf-8")
    result = helm("template", RELEASE, CHART, "--values", values, check=False)
    assert result.returncode != 0
    assert f"at '{refused_at}'" in result.stderr, result.stderr


def test_rolling_update_keeps_capacity_and_pods_drain_before_they_stop(rendered: Rendered) -> None:
    deployment = rendered.one("Deployment")
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pause = rendered.values["drain"]["preStopSleepSeconds"]
    assert rendered.container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(pause)]
    grace = rendered.pod["spec"]["terminationGracePeriodSeconds"]
    assert grace == rendered.values["terminationGracePeriodSeconds"] > pause
    # a changed config must roll the pods
    assert re.fullmatch(r"[0-9a-f]{64}", rendered.pod["metadata"]["annotations"]["checksum/config"])


def test_a_grace_period_shorter_than_the_pre_stop_pause_is_refused(helm: Helm) -> None:
    result = helm("template", RELEASE, CHART, "--set", "terminationGracePeriodSeconds=5",
                  "--set", "drain.preStopSleepSeconds=10", check=False)
    assert result.returncode != 0
    assert "terminationGracePeriodSeconds must exceed drain.preStopSleepSeconds" in result.stderr


def test_config_change_changes_the_pod_template(helm: Helm, default: Rendered) -> None:
    changed = render(helm, sets=("config.retry.attempts=2",))
    assert changed.gateway_config["retry"] == {"attempts": 2}
    assert (changed.pod["metadata"]["annotations"]["checksum/config"]
            != default.pod["metadata"]["annotations"]["checksum/config"])


def test_autoscaler_owns_the_replica_count_and_disruptions_are_bounded(rendered: Rendered) -> None:
    deployment, autoscaling = rendered.one("Deployment"), rendered.values["autoscaling"]
    hpa = rendered.one("HorizontalPodAutoscaler")
    assert "replicas" not in deployment["spec"], "a fixed replica count would fight the autoscaler"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (
        autoscaling["minReplicas"], autoscaling["maxReplicas"])
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = rendered.one("PodDisruptionBudget")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    budget = rendered.values["podDisruptionBudget"]
    expected = ({"minAvailable": budget["minAvailable"]} if budget["minAvailable"] is not None
                else {"maxUnavailable": budget["maxUnavailable"]})
    assert {k: v for k, v in pdb["spec"].items() if k != "selector"} == expected


def test_without_autoscaling_the_deployment_sets_its_replicas(helm: Helm) -> None:
    rendered = render(helm, sets=("autoscaling.enabled=false", "replicaCount=3"))
    assert rendered.one("Deployment")["spec"]["replicas"] == 3
    assert rendered.all("HorizontalPodAutoscaler") == []


def test_service_monitor_and_network_policy_only_when_enabled(default: Rendered, full: Rendered) -> None:
    assert default.all("ServiceMonitor") == []
    assert default.all("NetworkPolicy") == []
    selector = full.one("Deployment")["spec"]["selector"]["matchLabels"]

    monitor = full.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= full.one("Service")["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s",
                                             "scrapeTimeout": "10s"}]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"

    policy = full.one("NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"] == selector
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert policy["ingress"][0]["from"] == full.values["networkPolicy"]["ingressFrom"]
    egress_ports = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert {(53, "UDP"), (443, "TCP"), (5432, "TCP")} <= egress_ports


def test_opentelemetry_is_configured_from_values(default: Rendered, full: Rendered) -> None:
    assert default.env["OTEL_SDK_DISABLED"]["value"] == "true"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in default.env
    otel = full.values["otel"]
    assert {name: full.env[name]["value"] for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_SERVICE_NAME", "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG")} == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otel["endpoint"], "OTEL_EXPORTER_OTLP_PROTOCOL": otel["protocol"],
        "OTEL_SERVICE_NAME": otel["serviceName"], "OTEL_TRACES_SAMPLER": otel["tracesSampler"],
        "OTEL_TRACES_SAMPLER_ARG": otel["tracesSamplerArg"]}
    assert "OTEL_SDK_DISABLED" not in full.env


def test_store_and_public_url_come_from_values(default: Rendered, full: Rendered) -> None:
    assert default.gateway_config["store"] == default.values["store"]["url"]
    assert full.gateway_config["store"] == full.values["store"]["url"]
    assert default.gateway_config["public_url"] == f"http://{RELEASE}-aftm-gateway.{NAMESPACE}.svc.cluster.local:8080"
    assert full.gateway_config["public_url"] == full.values["publicUrl"]


def _check_config(rendered: Rendered, tmp_path: Path, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if not AFTM_GATEWAY.is_file():
        pytest.fail(f"{AFTM_GATEWAY} is missing: install the project (bash scripts/setup)")
    config = tmp_path / "gateway.yaml"
    config.write_text(rendered.gateway_config_text, encoding="utf-8")
    return subprocess.run([str(AFTM_GATEWAY), "check-config", str(config)], capture_output=True, text=True,
                          env={"PATH": os.environ.get("PATH", ""), **_python_path(), **environ}, timeout=60,
                          check=False)


def _python_path() -> dict[str, str]:
    """The checkout under test, when PYTHONPATH points at one (the installed entry point imports it first)."""
    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}


def test_rendered_config_passes_check_config_with_the_secret_variables_set(rendered: Rendered,
                                                                            tmp_path: Path) -> None:
    # every value at least 32 bytes: check-config refuses shorter signing keys and admin tokens
    environ = {name: _secret_value(name, key) for name, key in _secret_env(rendered).items()}
    result = _check_config(rendered, tmp_path, environ)
    assert result.returncode == 0, result.stderr
    accounts, clients = len(rendered.values["accounts"]), len(rendered.values["clients"])
    assert f": ok ({accounts} accounts" in result.stdout
    assert f"{clients} clients)" in result.stdout


def _secret_value(name: str, key: str) -> str:
    """What the Secret would hold under `key`: a hash, a PEM key or certificate, or a long token."""
    if name.endswith("_HASH"):
        return hash_password("app-secret", iterations=1)
    if name.endswith("_PRIVATE_KEY"):
        return key_pair(name).key
    if name in ("AFTM_SERVER_KEY", "AFTM_SERVER_CERTIFICATE"):
        pair = key_pair("gateway-server")
        return pair.key if name == "AFTM_SERVER_KEY" else pair.certificate
    return f"value-of-{key}-{'0' * 32}"


def test_rendered_config_fails_check_config_without_the_secret_variables(rendered: Rendered, tmp_path: Path) -> None:
    result = _check_config(rendered, tmp_path, {})
    assert result.returncode == 2
    for name in _secret_env(rendered).keys() - {"PGPASSWORD"}:  # libpq reads PGPASSWORD, not the config
        assert f"{name} is not set" in result.stderr

"""Typed configuration: YAML in, frozen value objects out, every problem reported as `key: why`.

Any string value may name environment variables as `${VAR}` or `${VAR:-default}`, so every value can
come from the environment. Secrets (every `Secret` field: `password`, `token`, `session_secret`) come
from the key itself, `<key>_env` (a variable's name) or `<key>_file` (a file holding the secret, e.g. a
mounted Kubernetes Secret) and are kept in `Secret`, whose repr never shows the value.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import ipaddress
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from gateway.errors import ConfigError, PemError
from gateway.protocols import rsa_challenge


class Secret:
    """A secret value that never shows itself in logs, reprs or errors."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)


class Pem(str):
    """A PEM document (certificate) given inline, as `<key>_env` or as `<key>_file`, like a Secret."""


@dataclass(frozen=True)
class Listen:
    host: str = "127.0.0.1"
    port: int = 8080
    tls_cert: str | None = None  # when set with tls_key, the gateway serves HTTPS (TLS 1.2 floor)
    tls_key: str | None = None
    # Bounds on what a client may make the listener hold before any route or authentication runs
    # (gateway/edge/listener.py): request line plus headers, header count, seconds for the head to arrive,
    # and connections or requests open at once per process (beyond it: 503).
    max_header_bytes: int = 16_384
    max_headers: int = 100
    header_timeout: float = 10.0
    limit_concurrency: int = 1000


@dataclass(frozen=True)
class DNS:
    nameservers: list[str] = field(default_factory=list)  # empty: the system resolver configuration
    port: int = 53
    timeout: float = 2.0


@dataclass(frozen=True)
class TLS:
    ca_bundle: str | None = None  # PEM file of trusted CAs; default: the system store
    client_cert: str | None = None
    client_key: str | None = None


@dataclass(frozen=True)
class UpstreamSettings:
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_connections_per_host: int = 100
    wsdl_refresh: float = 900.0  # seconds between background refreshes of the vendor's WSDL (served cached)


@dataclass(frozen=True)
class Requests:
    deadline: float = 10.0  # seconds an app request may spend before a send is queued instead
    max_body_bytes: int = 1_048_576
    body_timeout: float = 10.0  # seconds a request body may take to arrive, in total (then 408)
    idempotency_window: float = 86_400.0


@dataclass(frozen=True)
class Failover:
    failure_threshold: int = 3
    window: float = 10.0
    hold_time: float = 30.0
    probe_interval: float = 5.0


@dataclass(frozen=True)
class RetrySettings:
    attempts: int = 6
    wait_initial: float = 0.1
    wait_max: float = 5.0
    retry_after_max: float = 120.0
    max_relogins: int = 2


@dataclass(frozen=True)
class Outbox:
    max_age: float = 86_400.0  # a queued send older than this is dead (recorded as a failure)
    lease_seconds: float = 30.0
    batch: int = 20
    callback_concurrency: int = 16  # app callback POSTs in flight at once, apart from the sends' 8 slots
    retention_days: float = 31.0  # delivered and dead items are purged after this (never before the
    purge_interval: float = 3600.0  # idempotency window, which their keys must outlive)


@dataclass(frozen=True)
class RateLimit:
    per_minute: int = 0  # 0: no client-side limit
    burst: int = 10
    from_vendor: bool = False  # at start, size per_minute from the account's GET /rest/api/ratelimit
    headroom: float = 0.9  # fraction of the vendor's limit the gateway allows itself


@dataclass(frozen=True)
class Client:
    """An app allowed to log in to the gateway (REST token or SOAP session)."""

    user_name: str
    password: Secret | None = None
    password_hash: str | None = None  # pbkdf2_sha256$ITERATIONS$SALT_HEX$HASH_HEX
    failure_post_url: str | None = None  # where this app's new failure entries are POSTed as FDXML
    failure_post_secret: Secret | None = None  # signs those POSTs (X-AFTM-Signature); unset: unsigned
    # The app's certificate (PEM): the app may log in with the vendor's certificate flow (REST
    # auth_type=server/client, SOAP authenticateServer/loginWithCertificate), proving its private key.
    certificate: Pem | None = None

    def check_password(self, candidate: str) -> bool:
        if self.password is not None:
            return hmac.compare_digest(self.password.reveal().encode(), candidate.encode())
        if self.password_hash is not None:
            return verify_password_hash(self.password_hash, candidate)
        return False


@dataclass(frozen=True)
class Account:
    """A Responsys account, in priority order: the first is the primary."""

    name: str
    login_url: str  # REST login base, e.g. https://login2.responsys.net
    user_name: str
    password: Secret | None = None  # unset: the API user logs in with its certificate (private_key)
    # Certificate login (the vendor's "Log in with username and certificates", REST and SOAP): the API
    # user's RSA key (PEM, unencrypted), the certificate uploaded for it (optional, checked against the
    # key) and the account's server certificate downloaded from Responsys, which the server must prove.
    private_key: Secret | None = None
    certificate: Pem | None = None
    server_certificate: Pem | None = None
    soap_url: str | None = None  # e.g. https://ws2.responsys.net/webservices/services/ResponsysWSService
    api_prefix: str | None = None  # e.g. /rest/haApi: app paths under /rest/api are rewritten to it
    rate_limit: RateLimit = field(default_factory=RateLimit)
    soap_sessions: int = 4  # upstream SOAP sessions kept per account, one call at a time on each
    soap_ha_operations: bool = False  # send trigger operations as their AFTM HA twins (HaMergeTriggerEmail)


@dataclass(frozen=True)
class Admin:
    token: Secret | None = None  # bearer token for /admin/*; unset: the admin endpoints answer 403


@dataclass(frozen=True)
class SmsUpstream:
    """An SMS aggregator speaking the plain MT API (`POST {url}/mt`, HTTP Basic), in priority order."""

    name: str
    url: str  # e.g. https://mt.example.net
    user_name: str
    password: Secret
    rate_limit: RateLimit = field(default_factory=RateLimit)


@dataclass(frozen=True)
class Sms:
    """SMS with alternate delivery; off while `upstreams` is empty."""

    upstreams: list[SmsUpstream] = field(default_factory=list)
    # short code -> long codes it may be re-sent from when the carrier fails it on the short code
    alternate_senders: dict[str, list[str]] = field(default_factory=dict)
    max_age: float = 3600.0  # a message no upstream took within this long is Failed


@dataclass(frozen=True)
class Callbacks:
    """POSTs to the apps' callback URLs (SMS delivery receipts)."""

    allow_networks: list[str] = field(default_factory=list)  # CIDRs allowed despite the default deny
    timeout: float = 5.0  # seconds for one callback POST in total, connect to the answer's last byte
    max_age: float = 86_400.0  # a callback not accepted within this long is recorded as failed (post-out)


@dataclass(frozen=True)
class Reporting:
    post_interval: float = 120.0  # seconds between FDXML posts to each client's failure_post_url
    retention_days: float = 31.0  # failure entries older than this are purged
    batch: int = 100  # entries per POST at most
    post_timeout: float = 30.0  # seconds for one FDXML POST in total, connect to the answer's last byte


@dataclass(frozen=True)
class Config:
    accounts: list[Account]
    public_url: str = "http://127.0.0.1:8080"
    listen: Listen = field(default_factory=Listen)
    store: str = "sqlite:///data/aftm-gateway.db"
    dns: DNS = field(default_factory=DNS)
    tls: TLS = field(default_factory=TLS)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    requests: Requests = field(default_factory=Requests)
    failover: Failover = field(default_factory=Failover)
    retry: RetrySettings = field(default_factory=RetrySettings)
    outbox: Outbox = field(default_factory=Outbox)
    clients: list[Client] = field(default_factory=list)
    admin: Admin = field(default_factory=Admin)
    # Signs the gateway's own app tokens and SOAP session ids. Set it (e.g. session_secret_env) so that
    # app sessions survive a restart and are accepted by every replica; unset: random per process.
    session_secret: Secret | None = None
    # The gateway's own key pair for apps' certificate logins: it proves `server_key` to apps, which
    # hold `server_certificate`. Required when any client has a certificate; every replica needs the same.
    server_key: Secret | None = None
    server_certificate: Pem | None = None
    sms: Sms = field(default_factory=Sms)
    callbacks: Callbacks = field(default_factory=Callbacks)
    reporting: Reporting = field(default_factory=Reporting)

    def client(self, user_name: str) -> Client | None:
        return self._clients_by_name.get(user_name)

    @functools.cached_property
    def _clients_by_name(self) -> dict[str, Client]:
        # checked on every app request: a lookup, not a scan
        return {c.user_name: c for c in self.clients if c is not None}

    def account(self, name: str) -> Account:
        return next(a for a in self.accounts if a.name == name)


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a YAML config file; raise ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from None
    return parse_config(data, environ=os.environ if environ is None else environ, base_dir=path.parent)


def parse_config(data: Any, *, environ: Mapping[str, str], base_dir: Path = Path()) -> Config:
    """Validate already-parsed YAML data; raise ConfigError listing every problem."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ConfigError(["(top level): must be a mapping of settings"])
    builder = _Builder(environ=environ, base_dir=base_dir, problems=problems)
    config: Config | None = builder.build(Config, data, "")
    if config is not None:
        _check_semantics(config, problems)
    if problems or config is None:
        raise ConfigError(problems or ["(top level): invalid configuration"])
    return config


def _check_semantics(config: Config, problems: list[str]) -> None:
    # Entries that failed to build are None here; their problems are already listed.
    if not config.accounts:
        problems.append("accounts: at least one account is required")
    names = [a.name for a in config.accounts if a is not None]
    for i, account in enumerate(config.accounts):
        if account is None:
            continue
        if names.count(account.name) > 1:
            problems.append(f"accounts[{i}].name: {account.name!r} is used by more than one account")
        for key in ("login_url", "soap_url"):
            value = getattr(account, key)
            if value is not None and not _is_http_url(value):
                problems.append(f"accounts[{i}].{key}: {value!r} is not an http(s) URL")
        if account.api_prefix is not None and not re.fullmatch(r"/rest/[A-Za-z]+", account.api_prefix):
            problems.append(f"accounts[{i}].api_prefix: must look like /rest/haApi")
        _check_account_login(f"accounts[{i}]", account, problems)
    if not _is_http_url(config.public_url):
        problems.append(f"public_url: {config.public_url!r} is not an http(s) URL")
    if (config.listen.tls_cert is None) != (config.listen.tls_key is None):
        problems.append("listen: tls_cert and tls_key go together")
    for i, client in enumerate(config.clients):
        if client is None:
            continue
        if client.password is None and client.password_hash is None and client.certificate is None:
            problems.append(f"clients[{i}]: needs password, password_env, password_file, password_hash or certificate")
        if client.certificate is not None:
            try:
                rsa_challenge.load_certificate_key(client.certificate)
            except PemError as exc:
                problems.append(f"clients[{i}].certificate: {exc}")
        if client.password_hash is not None and not _HASH_RE.fullmatch(client.password_hash):
            problems.append(f"clients[{i}].password_hash: expected pbkdf2_sha256$ITERATIONS$SALT$HASH")
        if client.failure_post_url is not None and not _is_http_url(client.failure_post_url):
            problems.append(f"clients[{i}].failure_post_url: expected an http:// or https:// URL")
        if not client.user_name.isprintable() or "|" in client.user_name:
            # the gateway's tokens are `kind|client|issued|...`: a `|` in the name would make none readable
            problems.append(f"clients[{i}].user_name: printable characters other than '|' only")
        if client.user_name == "admin" and config.admin.token is not None:
            problems.append(f"clients[{i}].user_name: 'admin' is the operator's portal login; choose another name")
        _check_secret_strength(f"clients[{i}].failure_post_secret", client.failure_post_secret, problems)
    _check_secret_strength("session_secret", config.session_secret, problems)
    _check_server_key_pair(config, problems)
    if config.admin is not None:
        _check_secret_strength("admin.token", config.admin.token, problems)
    if config.upstream.wsdl_refresh <= 0:
        problems.append("upstream.wsdl_refresh: must be positive")
    if config.outbox.callback_concurrency <= 0:
        problems.append("outbox.callback_concurrency: must be positive")
    reporting = config.reporting
    if min(reporting.post_interval, reporting.batch, reporting.retention_days, reporting.post_timeout) <= 0:
        problems.append("reporting: post_interval, batch, retention_days and post_timeout must be positive")
    if config.requests.max_body_bytes <= 0 or config.requests.body_timeout <= 0:
        problems.append("requests: max_body_bytes and body_timeout must be positive")
    if not 1 <= config.listen.port <= 65535 and config.listen.port != 0:
        problems.append("listen.port: must be between 0 and 65535")
    for key in ("max_header_bytes", "max_headers", "header_timeout", "limit_concurrency"):
        if not getattr(config.listen, key) > 0:
            problems.append(f"listen.{key}: must be positive")
    _check_sms(config, problems)


def _check_account_login(where: str, account: Account, problems: list[str]) -> None:
    """An account logs in with a password or a certificate; a certificate's PEMs must load and agree."""
    if account.password is None and account.private_key is None:
        problems.append(f"{where}: needs password (or password_env/_file) or private_key for certificate login")
    if account.private_key is None:
        if account.server_certificate is not None or account.certificate is not None:
            problems.append(f"{where}: certificate and server_certificate need private_key")
        return
    if account.server_certificate is None:
        problems.append(f"{where}.server_certificate: required with private_key (the account's Responsys "
                        "server certificate, which its answer is checked against)")
    try:
        key = rsa_challenge.load_private_key(account.private_key.reveal())
    except PemError as exc:
        problems.append(f"{where}.private_key: {exc}")
        return
    for name in ("certificate", "server_certificate"):
        pem = getattr(account, name)
        try:
            public = rsa_challenge.load_certificate_key(pem) if pem is not None else None
        except PemError as exc:
            problems.append(f"{where}.{name}: {exc}")
            continue
        mine = key.public_key().public_numbers()
        if name == "certificate" and public is not None and public.public_numbers() != mine:
            problems.append(f"{where}.certificate: is not the certificate of private_key")


def _check_server_key_pair(config: Config, problems: list[str]) -> None:
    """Apps' certificate logins need the gateway's key pair, given (never made at start: every replica
    must prove the same key, and apps must have downloaded its certificate beforehand)."""
    if config.server_key is None and config.server_certificate is None:
        if any(c is not None and c.certificate is not None for c in config.clients):
            problems.append("server_key: required (with server_certificate) when a client has a certificate")
        return
    if config.server_key is None or config.server_certificate is None:
        problems.append("server_key and server_certificate go together")
        return
    try:
        key = rsa_challenge.load_private_key(config.server_key.reveal())
        public = rsa_challenge.load_certificate_key(config.server_certificate)
    except PemError as exc:
        problems.append(f"server_key/server_certificate: {exc}")
        return
    if public.public_numbers() != key.public_key().public_numbers():
        problems.append("server_certificate: is not the certificate of server_key")


MIN_SECRET_BYTES = 32


def _check_secret_strength(key: str, secret: Secret | None, problems: list[str]) -> None:
    """Keys that sign or authorise must not be guessable offline.

    One gateway token (or one signed FDXML POST) is enough to brute-force a short HMAC key, and the
    admin token is the operator's password. The rule counts bytes of the configured text (UTF-8), as
    an operator sees it: `openssl rand -hex 32` gives 64; `secrets.token_hex(16)` gives exactly 32.
    """
    if secret is None:
        return
    size = len(secret.reveal().encode("utf-8", "surrogatepass"))
    if size < MIN_SECRET_BYTES:
        problems.append(f"{key}: must be at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`); "
                        f"got {size}")


_SHORT_CODE_RE = re.compile(r"[0-9]{3,8}")
_E164_RE = re.compile(r"\+[1-9][0-9]{6,14}")


def _check_sms(config: Config, problems: list[str]) -> None:
    sms = config.sms
    if sms is None:
        return
    names = [u.name for u in sms.upstreams if u is not None]
    for i, upstream in enumerate(sms.upstreams):
        if upstream is None:
            continue
        if names.count(upstream.name) > 1:
            problems.append(f"sms.upstreams[{i}].name: {upstream.name!r} is used by more than one upstream")
        if not _is_http_url(upstream.url):
            problems.append(f"sms.upstreams[{i}].url: {upstream.url!r} is not an http(s) URL")
    for short_code, long_codes in sms.alternate_senders.items():
        if not _SHORT_CODE_RE.fullmatch(short_code):
            problems.append(f"sms.alternate_senders.{short_code}: a short code is 3 to 8 digits")
        for j, long_code in enumerate(long_codes):
            if isinstance(long_code, str) and not _E164_RE.fullmatch(long_code):
                problems.append(f"sms.alternate_senders.{short_code}[{j}]: {long_code!r} is not an E.164 "
                                "long code such as \"+13125550100\" (quote it in YAML)")
    if config.callbacks is not None:
        for i, network in enumerate(config.callbacks.allow_networks):
            try:
                ipaddress.ip_network(str(network), strict=False)
            except ValueError:
                problems.append(f"callbacks.allow_networks[{i}]: {network!r} is not a network like 10.0.0.0/8")


_ADMIN_USER_RE = re.compile(r"admin(?:$|[@._-])", re.IGNORECASE)


def config_warnings(config: Config) -> list[str]:
    """What a valid config visibly does against the vendor's AFTM API-user rules, as `key: why`.

    The rules (Responsys AFTM guide, "API User management"): one API user per account, created by the
    account's primary administrator, user ids distinct in each pod, and never an administrator's id.
    Only what the config shows can be checked: a user id on two accounts, or one that reads as an admin.
    """
    warnings: list[str] = []
    first_of: dict[str, int] = {}
    for i, account in enumerate(config.accounts):
        user = account.user_name.strip().lower()
        if user in first_of:
            warnings.append(f"accounts[{i}].user_name: {account.user_name!r} is also the API user of "
                            f"accounts[{first_of[user]}]: AFTM needs a distinct user id in each pod (and account)")
        first_of.setdefault(user, i)
        if _ADMIN_USER_RE.match(user):
            warnings.append(f"accounts[{i}].user_name: {account.user_name!r} looks like an account administrator: "
                            "AFTM requests must use an API user, never an administrator's id")
    return warnings


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


_HASH_RE = re.compile(r"pbkdf2_sha256\$\d+\$[0-9a-f]+\$[0-9a-f]+")


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = 200_000) -> str:
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def verify_password_hash(encoded: str, candidate: str) -> bool:
    _, iterations, salt, expected = encoded.split("$")
    digest = hashlib.pbkdf2_hmac("sha256", candidate.encode(), bytes.fromhex(salt), int(iterations))
    return hmac.compare_digest(digest.hex(), expected)


_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class _Builder:
    """Builds dataclasses from plain data, collecting every problem with its key path."""

    environ: Mapping[str, str]
    base_dir: Path
    problems: list[str]

    def build(self, cls: type[Any], data: Any, path: str) -> Any:
        if not isinstance(data, dict):
            self.problems.append(f"{path or '(top level)'}: must be a mapping")
            return None
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        data = dict(data)
        for name, hint in hints.items():
            if hint is Secret or hint == Secret | None or hint == Pem | None:
                self._resolve_secret(data, name, path)
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            key_path = f"{path}.{key}" if path else str(key)
            if key not in fields:
                self.problems.append(f"{key_path}: unknown key (expected one of {', '.join(sorted(fields))})")
                continue
            kwargs[key] = self.convert(hints[key], value, key_path)
        for name, f in fields.items():
            missing = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if missing and name not in kwargs:
                self.problems.append(f"{path + '.' if path else ''}{name}: required")
        try:
            return cls(**kwargs)
        except TypeError:
            return None

    def _resolve_secret(self, data: dict[str, Any], name: str, path: str) -> None:
        prefix = f"{path}." if path else ""
        sources = [k for k in (name, f"{name}_env", f"{name}_file") if data.get(k) is not None]
        if len(sources) > 1:
            self.problems.append(f"{prefix}{name}: give only one of {', '.join(sources)}")
        env_name = data.pop(f"{name}_env", None)
        file_name = data.pop(f"{name}_file", None)
        if env_name is not None:
            value = self.environ.get(str(env_name))
            if value is None:
                self.problems.append(f"{prefix}{name}_env: {env_name} is not set")
            data[name] = value
        elif file_name is not None:
            secret_path = self.base_dir / self.expand(str(file_name))
            try:
                data[name] = secret_path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                self.problems.append(f"{prefix}{name}_file: cannot read {secret_path}: {exc.strerror}")
                data[name] = None

    def expand(self, value: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in self.environ:
                return self.environ[name]
            if default is not None:
                return default
            raise KeyError(name)

        return _VAR_RE.sub(substitute, value)

    def convert(self, hint: Any, value: Any, path: str) -> Any:
        origin = typing.get_origin(hint)
        if isinstance(value, str) and "${" in value:
            try:
                value = self.expand(value)
            except KeyError as exc:
                self.problems.append(f"{path}: environment variable {exc.args[0]} is not set")
                return None
            if hint in (int, float, bool) or hint == int | None or hint == float | None:
                value = yaml.safe_load(value)
        if origin in (types.UnionType, typing.Union):
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            if value is None:
                return None
            return self.convert(args[0], value, path)
        if hint is Pem:
            if not isinstance(value, str) or "-----BEGIN " not in value:
                self.problems.append(f"{path}: must be a PEM document (-----BEGIN ...)")
                return None
            return Pem(value)
        if hint is Secret:
            if value is None:
                return None
            if not isinstance(value, str) or not value:
                self.problems.append(f"{path}: must be a non-empty string")
                return None
            return Secret(value)
        if origin is dict:
            if not isinstance(value, dict):
                self.problems.append(f"{path}: must be a mapping")
                return {}
            _, item = typing.get_args(hint)
            # YAML reads an unquoted short code such as 98765 as a number: its text is the key meant.
            return {str(k): self.convert(item, v, f"{path}.{k}") for k, v in value.items()}
        if origin is list:
            if not isinstance(value, list):
                self.problems.append(f"{path}: must be a list")
                return []
            (item,) = typing.get_args(hint)
            return [self.convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        if origin is Literal:
            if value not in typing.get_args(hint):
                self.problems.append(f"{path}: must be one of {typing.get_args(hint)}")
            return value
        if dataclasses.is_dataclass(hint):
            return self.build(typing.cast(type[Any], hint), value, path)
        return self._scalar(hint, value, path)

    def _scalar(self, hint: Any, value: Any, path: str) -> Any:
        if hint is bool:
            if not isinstance(value, bool):
                self.problems.append(f"{path}: must be true or false")
            return value
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                self.problems.append(f"{path}: must be a whole number")
                return 0
            if value < 0:
                self.problems.append(f"{path}: must not be negative")
            return value
        if hint is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.problems.append(f"{path}: must be a number")
                return 0.0
            if value < 0:
                self.problems.append(f"{path}: must not be negative")
            return float(value)
        if hint is str:
            if not isinstance(value, str) or not value:
                self.problems.append(f"{path}: must be a non-empty string")
            return value
        raise TypeError(f"unsupported config type {hint!r} at {path}")

"""`python -m bench.hostile [--quick]`: what hostile clients can make one `aftm-gateway serve` hold.

Starts the real serve path (listener limits, bounded body reader, login thread pool) on 127.0.0.1
with a PBKDF2-hashed client, then attacks it over raw sockets and prints, per attack, the answer
and the measured bound: resident memory growth (peak, from /proc), how long a slow client kept its
connection, `/healthz` latency while wrong passwords hammer the login, and what a few malformed
requests were answered, and the same for a storm of certificate-login first steps (`auth_type=server`,
one RSA private-key operation each): `/healthz` latency, how long the first password login and a
certificate login took meanwhile, and what one address storming step 1 is answered. RELIABILITY.md
quotes a full run.

`--quick` (the smoke test) uses 1 s timeouts and a 30 MB body, so it takes seconds; its figures
show that every attack is answered, not how much a default deployment holds.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import select
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from bench.services import Stack, sigterm_unwinds
from gateway.config import hash_password
from gateway.protocols import rsa_challenge
from gateway_tools.harness import free_port

APP_USER, APP_PASSWORD = "hostile-bench", "the-right-password"
# Each logs in once around the certificate storms: a password the gateway has not checked (and remembered) yet.
LOGINS = 5  # first password logins (and certificate logins) timed per condition: a median, not one draw
LATE_USERS = tuple(f"hostile-{when}-{n}" for when in ("idle", "paced", "flat") for n in range(LOGINS))
LATE_PASSWORD = "another-right-password"  # noqa: S105 - the throwaway gateway's
STEP1_RATE = 80  # step 1s a second in the paced storm: below what the pure-Python RSA step could serve
CERT_USER = "hostile-cert"  # logs in with the vendor's certificate flow
LOGIN_PATH = "/rest/api/v1.3/auth/token"
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef0123"  # noqa: S105 - the throwaway gateway's, not a credential
MIB = 1 << 20


@dataclass(frozen=True)
class Settings:
    body_mib: int  # the declared size of the unauthenticated body
    header_timeout: float
    body_timeout: float
    drip_cap: float  # seconds a dripping client keeps trying before the bench gives up on it
    storm_seconds: float  # how long /healthz latency is sampled, idle and under the login storm


FULL = Settings(body_mib=300, header_timeout=10.0, body_timeout=10.0, drip_cap=40.0, storm_seconds=5.0)
QUICK = Settings(body_mib=30, header_timeout=1.0, body_timeout=1.0, drip_cap=8.0, storm_seconds=1.0)


@dataclass
class Target:
    port: int
    pid: int
    server_certificate: str  # what an app checks the gateway's step-1 answer against
    cert_key: str  # CERT_USER's private key (PEM)

    def memory_mib(self) -> tuple[float, float]:
        """(resident now, peak resident) of the gateway process."""
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    @contextlib.contextmanager
    def connection(self, source: str = "127.0.0.1") -> Iterator[socket.socket]:
        with socket.create_connection(("127.0.0.1", self.port), timeout=60, source_address=(source, 0)) as sock:
            yield sock


def start(stack: Stack, settings: Settings) -> Target:
    port = free_port()
    server_key, server_certificate = rsa_challenge.self_signed_pair("hostile-bench-gateway")
    cert_key, cert_certificate = rsa_challenge.self_signed_pair(CERT_USER)
    config = {
        "listen": {"host": "127.0.0.1", "port": port, "header_timeout": settings.header_timeout},
        "public_url": f"http://127.0.0.1:{port}",
        "store": f"sqlite:///{stack.workdir / 'hostile.db'}",
        "session_secret": "bench-session-secret-0123456789abcdef",
        "requests": {"body_timeout": settings.body_timeout},
        "admin": {"token": ADMIN_TOKEN},
        "clients": [{"user_name": APP_USER, "password_hash": hash_password(APP_PASSWORD)},
                    *({"user_name": user, "password_hash": hash_password(LATE_PASSWORD)} for user in LATE_USERS),
                    {"user_name": CERT_USER, "certificate": cert_certificate}],
        "server_key": server_key,
        "server_certificate": server_certificate,
        # no account answers: every attack here is stopped before anything would go upstream
        "accounts": [{"name": "unreachable", "login_url": "https://127.0.0.1:9", "user_name": "api",
                      "password": "api-password"}],
    }
    path = stack.workdir / "hostile.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {"AFTM_LOG_LEVEL": "WARNING", "PYTHONPATH": str(Path(__file__).parents[1])}
    process = stack.spawn("gateway", [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)],
                          port=port, env=env)
    return Target(port=port, pid=process.pid, server_certificate=server_certificate, cert_key=cert_key)


def status_line(sock: socket.socket) -> str:
    """The first line of the answer, or how the connection ended without one."""
    try:
        data = sock.recv(4096)
    except OSError as exc:
        return f"connection {type(exc).__name__}"
    return data.split(b"\r\n", 1)[0].decode("latin-1") if data else "closed without an answer"


def answered(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def big_body(target: Target, settings: Settings, path: str) -> list[str]:
    """One unauthenticated body of `body_mib` MiB, declared up front: how much was read, how much memory."""
    size = settings.body_mib * MIB
    before, _ = target.memory_mib()
    head = (f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {size}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n\r\n").encode()
    sent, block = 0, b"a" * MIB
    started = time.monotonic()
    with target.connection() as sock:
        sock.sendall(head)
        with contextlib.suppress(OSError):
            while sent < size and not answered(sock):
                sock.sendall(block)
                sent += len(block)
        answer = status_line(sock)
    elapsed = time.monotonic() - started
    _, peak = target.memory_mib()
    return [f"{settings.body_mib} MiB body to {path}", answer,
            f"{sent // MIB} MiB sent before the answer ({elapsed:.1f} s); peak RSS +{max(0.0, peak - before):.0f} MiB"]


def drip(target: Target, settings: Settings, head: bytes, rest: bytes, what: str) -> list[str]:
    """Send `head` at once, then `rest` one byte a second: how long until the gateway lets go."""
    started = time.monotonic()
    answer = "still open when the bench gave up"
    with target.connection() as sock:
        sock.sendall(head)
        for byte in rest:
            if answered(sock):
                answer = status_line(sock)
                break
            if time.monotonic() - started > settings.drip_cap:
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError as exc:
                answer = f"connection {type(exc).__name__}"
                break
            time.sleep(1.0)  # the attack itself is the slowness; nothing here waits on the gateway
    return [what, answer, f"held {time.monotonic() - started:.1f} s"]


def huge_header(target: Target, size: int) -> list[str]:
    sent = 0
    with target.connection() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Big: ")
        with contextlib.suppress(OSError):
            while sent < size and not answered(sock):
                sock.sendall(b"a" * 65536)
                sent += 65536
        answer = status_line(sock)
    return [f"{size // MIB} MB header line", answer, f"{sent / MIB:.1f} MiB sent before the answer"]


def many_headers(target: Target, count: int) -> list[str]:
    lines = b"".join(b"X-H%d: v\r\n" % i for i in range(count))
    with target.connection() as sock, contextlib.suppress(OSError):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n" + lines + b"\r\n")
        answer = status_line(sock)
    return [f"{count:,} headers", answer, ""]


def latency(client: httpx.Client, seconds: float) -> tuple[float, float]:
    """p50 and p99 of back-to-back `/healthz` requests for `seconds`."""
    times: list[float] = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        started = time.perf_counter()
        client.get("/healthz").raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[max(0, int(len(times) * 0.99) - 1)]


def login_storm(target: Target, settings: Settings) -> list[list[str]]:
    """4 clients send wrong passwords from ever new loopback addresses; /healthz and the real app meanwhile."""
    base = f"http://127.0.0.1:{target.port}"
    stop = threading.Event()
    answers: dict[int, int] = {}
    lock = threading.Lock()

    def hammer(n: int) -> None:
        k = 0
        while not stop.is_set():
            source = f"127.{n + 10}.{k // 250 % 250}.{k % 250 + 1}"
            with httpx.Client(base_url=base, trust_env=False,
                              transport=httpx.HTTPTransport(local_address=source)) as client:
                response = client.post("/rest/api/v1.3/auth/token", data={
                    "user_name": APP_USER, "password": f"guess-{k}", "auth_type": "password"})
            with lock:
                answers[response.status_code] = answers.get(response.status_code, 0) + 1
            k += 1

    def app_login() -> int:
        with httpx.Client(base_url=base, trust_env=False,
                          transport=httpx.HTTPTransport(local_address="127.200.0.1")) as client:
            return client.post("/rest/api/v1.3/auth/token", data={
                "user_name": APP_USER, "password": APP_PASSWORD, "auth_type": "password"}).status_code

    with httpx.Client(base_url=base, trust_env=False) as probe:
        idle = latency(probe, settings.storm_seconds)
        threads = [threading.Thread(target=hammer, args=(n,), daemon=True) for n in range(4)]
        for thread in threads:
            thread.start()
        try:
            while sum(answers.values()) < 4:  # the storm is on before anything is measured
                time.sleep(0.05)
            storm = latency(probe, settings.storm_seconds)
            app = app_login()
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
    seen = ", ".join(f"{code}: {count}" for code, count in sorted(answers.items()))
    return [
        ["/healthz, idle", "200", f"p50 {idle[0]:.1f} ms, p99 {idle[1]:.1f} ms"],
        ["/healthz, 4 clients guessing passwords", "200",
         f"p50 {storm[0]:.1f} ms, p99 {storm[1]:.1f} ms (guesses answered {seen})"],
        ["the real app logging in during the storm", str(app), "from its own address"],
    ]


def _step1(client: httpx.Client, user: str) -> httpx.Response:
    challenge = rsa_challenge.new_challenge()
    return client.post(LOGIN_PATH, data={"user_name": user, "auth_type": "server",
                                         "client_challenge": rsa_challenge.encode(challenge)})


def certificate_login(base: str, target: Target, source: str) -> tuple[int, float]:
    """The real app's certificate login (both steps, its RSA work included): (final status, seconds)."""
    started = time.perf_counter()
    with httpx.Client(base_url=base, trust_env=False, timeout=60,
                      transport=httpx.HTTPTransport(local_address=source)) as client:
        step = _step1(client, CERT_USER)
        if step.status_code != 200:
            return step.status_code, time.perf_counter() - started
        key = rsa_challenge.load_private_key(target.cert_key)
        server_challenge = rsa_challenge.decode(step.json()["serverChallenge"]) or b""
        answer = rsa_challenge.private_encrypt(key, server_challenge)
        final = client.post(LOGIN_PATH, headers={"Authorization": step.json()["authToken"]}, data={
            "user_name": CERT_USER, "auth_type": "client", "server_challenge": rsa_challenge.encode(answer)})
    return final.status_code, time.perf_counter() - started


@contextlib.contextmanager
def step_one_storm(base: str, rate: float | None, first_octet: int) -> Iterator[dict[int, int]]:
    """8 clients send certificate step 1 for the real certificate user (one RSA private-key operation each),
    from a new loopback address every 10 requests, `rate` a second in all (None: each as fast as answered).
    Yields the answers counted by status, once the storm is on."""
    stop = threading.Event()
    answers: dict[int, int] = {}
    lock = threading.Lock()

    def hammer(n: int) -> None:
        k, next_at = 0, time.monotonic()
        while not stop.is_set():
            source = f"127.{first_octet + n}.{k // 250 % 250}.{k % 250 + 1}"
            with httpx.Client(base_url=base, trust_env=False, timeout=60,
                              transport=httpx.HTTPTransport(local_address=source)) as client:
                for _ in range(10):
                    if rate is not None:  # paced: the attack's own rate, not the gateway's answers, sets it
                        next_at = max(next_at + 8 / rate, time.monotonic())
                        time.sleep(max(0.0, next_at - time.monotonic()))
                    status = _step1(client, CERT_USER).status_code
                    with lock:
                        answers[status] = answers.get(status, 0) + 1
                    if stop.is_set():
                        break
            k += 1

    threads = [threading.Thread(target=hammer, args=(n,), daemon=True) for n in range(8)]
    for thread in threads:
        thread.start()
    try:
        while sum(answers.values()) < 8:  # the storm is on before anything is measured
            time.sleep(0.05)
        yield answers
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)


def password_login(base: str, user: str, password: str, source: str) -> tuple[int, float]:
    """A login whose password the gateway has not checked before (one PBKDF2 run): (status, seconds)."""
    started = time.perf_counter()
    with httpx.Client(base_url=base, trust_env=False, timeout=60,
                      transport=httpx.HTTPTransport(local_address=source)) as client:
        status = client.post(LOGIN_PATH, data={"user_name": user, "password": password,
                                               "auth_type": "password"}).status_code
    return status, time.perf_counter() - started


def timed(logins: list[tuple[int, float]], extra: str = "") -> list[str]:
    """[statuses, "median .. ms, max .. ms"] of a few logins."""
    statuses = ", ".join(sorted({str(status) for status, _ in logins}))
    seconds = [s for _, s in logins]
    return [statuses, f"median {statistics.median(seconds) * 1000:.0f} ms, max {max(seconds) * 1000:.0f} ms "
                      f"({len(logins)} logins{extra})"]


def certificate_storm(target: Target, settings: Settings) -> list[list[str]]:
    """Certificate step 1s at a fixed rate, then as fast as answered: /healthz latency, first password
    logins and the real app's certificate logins meanwhile. Then one address alone sends 30 step 1s."""
    base = f"http://127.0.0.1:{target.port}"
    rows: list[list[str]] = []
    users = iter(LATE_USERS)

    def password_logins(octet: int) -> list[tuple[int, float]]:
        return [password_login(base, next(users), LATE_PASSWORD, f"127.201.{octet}.{n + 1}") for n in range(LOGINS)]

    with httpx.Client(base_url=base, trust_env=False) as probe:
        idle = latency(probe, settings.storm_seconds)
        rows += [["/healthz, idle (before the step-1 storms)", "200", f"p50 {idle[0]:.1f} ms, p99 {idle[1]:.1f} ms"],
                 ["first password login, idle", *timed(password_logins(0))]]
        for n, (what, rate) in enumerate(((f"{STEP1_RATE} step 1s/s", STEP1_RATE), ("step 1s flat out", None))):
            with step_one_storm(base, rate, 30 + 10 * n) as answers:
                storm = latency(probe, settings.storm_seconds)
                first = password_logins(n + 1)
                certificate = [certificate_login(base, target, f"127.201.{n + 1}.{100 + k}") for k in range(LOGINS)]
                seen = ", ".join(f"{code}: {count}" for code, count in sorted(answers.items()))
            rows += [[f"/healthz, {what}", "200", f"p50 {storm[0]:.1f} ms, p99 {storm[1]:.1f} ms (answered {seen})"],
                     [f"first password login, {what}", *timed(first)],
                     [f"certificate login, {what}", *timed(certificate, ", both steps")]]
    alone: dict[int, int] = {}
    retry_after = ""
    with httpx.Client(base_url=base, trust_env=False, timeout=60,
                      transport=httpx.HTTPTransport(local_address="127.202.0.1")) as attacker:
        for _ in range(30):
            response = _step1(attacker, CERT_USER)
            alone[response.status_code] = alone.get(response.status_code, 0) + 1
            retry_after = response.headers.get("retry-after", retry_after)
    after_status, _ = certificate_login(base, target, "127.202.0.2")
    alone_seen = ", ".join(f"{code}: {count}" for code, count in sorted(alone.items()))
    return [*rows,
            ["one address sending 30 cert step 1s", alone_seen,
             f"Retry-After {retry_after}" if retry_after else "never throttled"],
            ["certificate login from another address", str(after_status), "after that address's storm"]]


def malformed(target: Target) -> list[list[str]]:
    """A few requests that used to be a 500 or to leave the API: what they are answered now."""
    probes = [
        ("GET /rest/api/v1.3/../../../admin/secret", b"GET /rest/api/v1.3/../../../admin/secret HTTP/1.1\r\n"
         b"Host: bench\r\n\r\n"),
        ("GET /rest/haApi/..%2f..%2fwebservices/x", b"GET /rest/haApi/..%2f..%2fwebservices/x HTTP/1.1\r\n"
         b"Host: bench\r\n\r\n"),
        ("GET /api/failures?page=1e23", b"GET /api/failures?page=1e23 HTTP/1.1\r\nHost: bench\r\n"
         b"Authorization: Basic " + base64.b64encode(f"admin:{ADMIN_TOKEN}".encode()) + b"\r\n\r\n"),
    ]
    deep = b"[" * 5_000 + b"]" * 5_000
    probes.append(("POST /admin/override, JSON 5,000 deep", b"POST /admin/override HTTP/1.1\r\nHost: bench\r\n"
                   b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\nContent-Type: application/json\r\n"
                   b"Content-Length: " + str(len(deep)).encode() + b"\r\n\r\n" + deep))
    rows = []
    for what, request in probes:
        with target.connection() as sock:
            sock.sendall(request)
            rows.append([what, status_line(sock), ""])
    return rows


def run(settings: Settings, emit: Callable[[str], None] = print) -> None:
    with tempfile.TemporaryDirectory(prefix="aftm-hostile-") as workdir, contextlib.ExitStack() as exits:
        stack = Stack(Path(workdir), exits)
        target = start(stack, settings)
        rows: list[list[str]] = []
        rows.append(big_body(target, settings, "/portal/login"))
        rows.append(big_body(target, settings, "/admin/override"))
        rows.append(huge_header(target, 50 * MIB))
        rows.append(many_headers(target, 100_000))
        rows.append(drip(target, settings, b"", b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Slow: " + b"a" * 100,
                         "request head at 1 byte/s"))
        form = b"user_name=x&password=y&auth_type=password" + b"&pad=" + b"a" * 100
        rows.append(drip(target, settings, b"POST /rest/api/v1.3/auth/token HTTP/1.1\r\nHost: bench\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: "
                         + str(len(form)).encode() + b"\r\n\r\n", form, "login body at 1 byte/s"))
        rows.extend(login_storm(target, settings))
        rows.extend(certificate_storm(target, settings))
        rows.extend(malformed(target))
        now, peak = target.memory_mib()
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        emit(f"aftm-gateway serve under hostile clients (header_timeout {settings.header_timeout:g} s, "
             f"body_timeout {settings.body_timeout:g} s); RSS at the end {now:.0f} MiB, peak {peak:.0f} MiB")
        emit("  ".join(title.ljust(width) for title, width in zip(("attack", "answer", "bound"), widths, strict=True)))
        for row in rows:
            emit("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short timeouts and a 30 MB body (smoke test)")
    args = parser.parse_args(argv)
    with sigterm_unwinds():
        run(QUICK if args.quick else FULL)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`aftm-gateway demo --drill`: a scripted failover drill that counts every send, then exits.

On loopback it starts two simulated Responsys accounts behind TLS (a throwaway CA made at run time),
a second instance of the primary account on another address, a DNS server for the accounts' names and
the gateway on an embedded SQLite store. Several app clients (REST and SOAP) send steadily, each send
to its own recipient, while the script breaks things one phase at a time:

    baseline, primary refused, primary back, primary hanging, 503 storm, primary healthy,
    sessions invalidated, throttled with and without Retry-After, the primary's name moved by DNS to
    the account's second instance, the primary's return

and then sends one-time PINs by SMS to a short code whose carrier fails them all, which the gateway
must deliver from the long code with linked callbacks (`gateway_tools.drill.sms`).

Then it waits (bounded) for the outbox to drain and prints one table: per phase, what was sent, what
arrived once, twice or never, what was refused or queued, failovers, failbacks, upstream logins and
latency. It exits 1 when a send the gateway accepted (200 or 202) never arrived or a keyed send
arrived twice. A send the gateway answered with an error was never accepted: it is counted as
`refused`, never as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from gateway.config import parse_config
from gateway.edge.app import build_app
from gateway.telemetry.logs import JsonFormatter
from gateway_tools.drill.env import ThrowawayCA, drill_server, tls_available
from gateway_tools.drill.load import AppClient, SendRecord
from gateway_tools.drill.report import Snapshot, explain, render, tally
from gateway_tools.drill.sms import SMS_ADDRESS, SMS_NAME, SmsSetup, run_pins, sms_listeners
from gateway_tools.drill.sms import gateway_config as sms_config
from gateway_tools.harness import ServerThread, bind_socket
from gateway_tools.loopback_dns import LoopbackDNS
from gateway_tools.simulator.server import SimulatedAccount
from policies.tls import server_context

log = logging.getLogger("aftm.drill")

PRIMARY_NAME, FAILOVER_NAME = "primary.drill.test", "failover.drill.test"
PRIMARY_ADDRESS, MOVED_ADDRESS, FAILOVER_ADDRESS = "127.0.0.2", "127.0.0.4", "127.0.0.3"
SOAP_PATH = "/webservices/services/ResponsysWSService"
APP_USER = "drill-app"
REST_CLIENTS, SOAP_CLIENTS = 4, 2
PACE = 0.1  # seconds each app client pauses between sends
SETTLE = 0.3  # seconds for the last answers to land in the simulators' records


# --- the deployment -------------------------------------------------------------------------------


@dataclass
class Deployment:
    """Everything the drill started; the script breaks and mends it through these handles."""

    primary: SimulatedAccount
    moved: SimulatedAccount  # the primary account's second instance, on another address, same port
    failover: SimulatedAccount
    dns: LoopbackDNS
    gateway: ServerThread
    admin: httpx.AsyncClient
    app_password: str
    hold_time: float
    tls: bool
    sms: SmsSetup

    @property
    def accounts(self) -> tuple[SimulatedAccount, ...]:
        return self.primary, self.moved, self.failover

    async def status(self) -> dict[str, Any]:
        response = await self.admin.get("/admin/status")
        response.raise_for_status()
        status: dict[str, Any] = response.json()
        return status

    async def active(self) -> str:
        return str((await self.status())["active"])

    def deliveries(self) -> Counter[str]:
        """How often each recipient arrived, over every account instance."""
        return Counter(d.recipient for account in self.accounts for d in account.deliveries())

    def deliveries_by_key(self) -> Counter[str]:
        return Counter(d.idempotency_key for account in self.accounts for d in account.deliveries()
                       if d.idempotency_key)


async def _start_account(stack: contextlib.AsyncExitStack, **kwargs: Any) -> SimulatedAccount:
    account = SimulatedAccount(**kwargs)
    stack.push_async_callback(asyncio.to_thread, account.stop)  # stop() is a no-op if start failed
    await asyncio.to_thread(account.start)
    return account


def _gateway_config(*, port: int, data_dir: Path, dns: LoopbackDNS, ca_file: str | None, scheme: str,
                    primary: SimulatedAccount, failover: SimulatedAccount, passwords: dict[str, str],
                    admin_token: str, scale: float) -> dict[str, Any]:
    def account(name: str, host: str, sim: SimulatedAccount, **extra: Any) -> dict[str, Any]:
        origin = f"{scheme}://{host}:{sim.port}"
        return {"name": name, "login_url": origin, "soap_url": origin + SOAP_PATH,
                "user_name": sim.state.user_name, "password": passwords[name], **extra}

    return {
        "listen": {"host": "127.0.0.1", "port": port},
        "public_url": f"http://127.0.0.1:{port}",
        "store": f"sqlite:///{data_dir / 'drill.db'}",
        "session_secret": secrets.token_hex(16),
        "admin": {"token": admin_token},
        "dns": {"nameservers": [dns.host], "port": dns.port, "timeout": 1.0},
        "tls": {"ca_bundle": ca_file} if ca_file else {},
        "upstream": {"connect_timeout": 1.0, "read_timeout": 1.0},
        "requests": {"deadline": 2.0},
        "failover": {"failure_threshold": 3, "window": 10.0, "hold_time": _hold_time(scale),
                     "probe_interval": max(0.1, 0.5 * scale)},
        "retry": {"attempts": 8, "wait_initial": 0.05, "wait_max": 0.5},
        "outbox": {"max_age": 600.0},
        "clients": [{"user_name": APP_USER, "password": passwords["app"]}],
        "accounts": [
            account("primary", PRIMARY_NAME, primary),
            account("failover", FAILOVER_NAME, failover, api_prefix="/rest/haApi", soap_ha_operations=True),
        ],
    }


def _hold_time(scale: float) -> float:
    return max(0.5, 3.0 * scale)


def _fresh_store(data_dir: Path) -> None:
    """The drill counts from an empty outbox: remove the store a previous drill left here."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        (data_dir / f"drill.db{suffix}").unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def deploy(data_dir: Path, scale: float) -> AsyncIterator[Deployment]:
    """Start every listener on loopback; all of them are stopped on the way out, also on errors."""
    async with contextlib.AsyncExitStack() as stack:
        tls = tls_available()
        ca_file: str | None = None
        listener_tls = None
        if tls:
            ca = await asyncio.to_thread(ThrowawayCA, names=[PRIMARY_NAME, FAILOVER_NAME, SMS_NAME])
            ca_file, cert_file, key_file = await asyncio.to_thread(ca.write, data_dir / "drill-tls")
            listener_tls = server_context(cert_file=cert_file, key_file=key_file)
        passwords = {name: secrets.token_urlsafe(12) for name in ("primary", "failover", "app", "sms")}
        primary = await _start_account(stack, name="primary", user_name="api_primary", password=passwords["primary"],
                                       host=PRIMARY_ADDRESS, ssl_context=listener_tls)
        moved = await _start_account(stack, name="primary", user_name="api_primary", password=passwords["primary"],
                                     host=MOVED_ADDRESS, port=primary.port, ssl_context=listener_tls)
        failover = await _start_account(stack, name="failover", user_name="api_failover",
                                        password=passwords["failover"], host=FAILOVER_ADDRESS, secondary=True,
                                        ssl_context=listener_tls)
        dns = await asyncio.to_thread(LoopbackDNS().start)
        stack.callback(dns.stop)
        dns.set(PRIMARY_NAME, [PRIMARY_ADDRESS])
        dns.set(FAILOVER_NAME, [FAILOVER_ADDRESS])
        sms = await stack.enter_async_context(sms_listeners(password=passwords["sms"], ssl_context=listener_tls))
        dns.set(SMS_NAME, [SMS_ADDRESS])
        sock = bind_socket(backlog=256)
        admin_token = secrets.token_urlsafe(32)
        raw = _gateway_config(port=sock.getsockname()[1], data_dir=data_dir, dns=dns, ca_file=ca_file,
                              scheme="https" if tls else "http", primary=primary, failover=failover,
                              passwords=passwords, admin_token=admin_token, scale=scale)
        raw.update(sms_config(scheme="https" if tls else "http", aggregator=sms.aggregator, password=passwords["sms"]))
        gateway = drill_server(build_app(parse_config(raw, environ={})), sock)
        stack.push_async_callback(asyncio.to_thread, gateway.stop)
        await gateway.start_async()
        admin = httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {admin_token}"},
                                  timeout=10.0, trust_env=False)
        stack.push_async_callback(admin.aclose)
        yield Deployment(primary=primary, moved=moved, failover=failover, dns=dns, gateway=gateway, admin=admin,
                         app_password=passwords["app"], hold_time=_hold_time(scale), tls=tls, sms=sms)


# --- the script -----------------------------------------------------------------------------------

Action = Callable[[Deployment], Awaitable[None]]


@dataclass(frozen=True)
class Phase:
    """One step of the script: `enter` once, `repeat` every `repeat_every` seconds, for `seconds`.

    With `until_primary` the phase also lasts until traffic is back on the primary (bounded).
    """

    name: str
    seconds: float
    enter: Action
    repeat: Action | None = None
    repeat_every: float = 1.0
    until_primary: bool = False


async def _nothing(deployment: Deployment) -> None:
    return None


def _mode(mode: str) -> Action:
    async def set_mode(deployment: Deployment) -> None:
        await asyncio.to_thread(deployment.primary.set_mode, mode)

    return set_mode


async def _invalidate_everything(deployment: Deployment) -> None:
    for account in deployment.accounts:
        account.invalidate()


def _throttle(count: int, retry_after: str | None) -> Action:
    async def throttle(deployment: Deployment) -> None:
        for account in (deployment.primary, deployment.moved):
            account.throttle(count, retry_after=retry_after)

    return throttle


def _point_primary_at(address: str) -> Action:
    async def point(deployment: Deployment) -> None:
        deployment.dns.set(PRIMARY_NAME, [address])

    return point


def script() -> list[Phase]:
    """The drill's phases at scale 1.0 (about 70 s of traffic)."""
    return [
        Phase("baseline", 5, _nothing),
        Phase("primary refused", 6, _mode("refuse")),
        Phase("primary back", 5, _mode("ok"), until_primary=True),
        Phase("primary hanging", 6, _mode("hang")),
        # Straight from hang: the held requests are answered 503, so the primary never processes them.
        Phase("503 storm", 6, _mode("http503")),
        Phase("primary healthy", 5, _mode("ok"), until_primary=True),
        Phase("sessions invalidated", 5, _invalidate_everything, repeat=_invalidate_everything, repeat_every=2.5),
        Phase("throttled, Retry-After 1", 6, _throttle(15, "1"), repeat=_throttle(15, "1")),
        Phase("throttled, no Retry-After", 6, _throttle(15, None), repeat=_throttle(15, None)),
        Phase("DNS moved to 2nd primary", 6, _point_primary_at(MOVED_ADDRESS)),
        Phase("primary returns", 5, _point_primary_at(PRIMARY_ADDRESS), until_primary=True),
    ]


async def _snapshot(deployment: Deployment) -> Snapshot:
    status = await deployment.status()
    stats = [account.stats() for account in deployment.accounts]
    return Snapshot(switches=Counter(status.get("switches", {})),
                    rest_logins=sum(s["rest_logins"] for s in stats), soap_logins=sum(s["soap_logins"] for s in stats))


@dataclass
class PhaseCursor:
    index: int = 0


async def _play(deployment: Deployment, phases: list[Phase], scale: float, cursor: PhaseCursor) -> list[Snapshot]:
    """Run the script; returns the snapshot taken at the start of each phase and one at its end."""
    loop = asyncio.get_running_loop()
    snapshots: list[Snapshot] = []
    for index, phase in enumerate(phases):
        snapshots.append(await _snapshot(deployment))
        cursor.index = index
        log.info("drill phase %s", phase.name)
        await phase.enter(deployment)
        started = loop.time()
        end = started + phase.seconds * scale
        bound = end + deployment.hold_time + 10.0
        next_repeat = started + phase.repeat_every * scale
        while True:
            now = loop.time()
            if phase.repeat is not None and now >= next_repeat and now < end:
                await phase.repeat(deployment)
                next_repeat += phase.repeat_every * scale
            if now >= end and (not phase.until_primary or now >= bound or await deployment.active() == "primary"):
                break
            await asyncio.sleep(0.05)
    snapshots.append(await _snapshot(deployment))
    return snapshots


async def _drain(deployment: Deployment, within: float) -> tuple[int, float]:
    """Wait until the outbox holds nothing pending or leased; (depth left, seconds waited)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    depth = int((await deployment.status())["outbox"]["depth"])
    while depth and loop.time() - started < within:
        await asyncio.sleep(0.1)
        depth = int((await deployment.status())["outbox"]["depth"])
    await asyncio.sleep(SETTLE)
    return depth, loop.time() - started


# --- the run --------------------------------------------------------------------------------------


def _prepare(data_dir: Path) -> Path:
    """The data folder made, the previous drill's store removed; returns the log file's path."""
    data_dir.mkdir(parents=True, exist_ok=True)
    _fresh_store(data_dir)
    return data_dir / "drill.log"


@contextlib.contextmanager
def _logs_to(path: Path) -> Iterator[Counter[str]]:
    """Send the gateway's and the listeners' logs to `path` for the run; yields counts by level."""
    levels: Counter[str] = Counter()

    class _Counting(logging.FileHandler):
        def emit(self, record: logging.LogRecord) -> None:
            levels[record.levelname] += 1
            super().emit(record)

    # Append mode: uvicorn's dictConfig (run each time a simulator listener starts) closes every
    # handler in the process, and a FileHandler reopens only in append mode.
    path.write_bytes(b"")
    handler = _Counting(path, mode="a", encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    saved = []
    for name, level in (("aftm", logging.INFO), ("gateway", logging.INFO), ("uvicorn", logging.WARNING),
                        ("asyncio", logging.WARNING)):
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    try:
        yield levels
    finally:
        for logger, level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate
        handler.close()


async def _exercise(deployment: Deployment, scale: float, out: list[str]) -> int:
    phases = script()
    cursor = PhaseCursor()
    records: list[SendRecord] = []
    kinds: tuple[tuple[Literal["rest", "soap"], int], ...] = (("rest", REST_CLIENTS), ("soap", SOAP_CLIENTS))
    clients = [
        AppClient(name=f"{protocol}{i}", protocol=protocol, base_url=deployment.gateway.url, user=APP_USER,
                  password=deployment.app_password, phase=lambda: cursor.index, records=records, pace=PACE)
        for protocol, count in kinds for i in range(1, count + 1)
    ]
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        await asyncio.gather(*(client.login() for client in clients))
        tasks = [asyncio.create_task(client.run(stop), name=f"drill-{client.name}") for client in clients]
        snapshots = await _play(deployment, phases, scale, cursor)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60.0)
        cursor.index = len(phases)  # the drain: no new sends, only the outbox at work
        depth, drained_in = await _drain(deployment, within=max(10.0, 30.0 * scale))
        snapshots.append(await _snapshot(deployment))
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(client.aclose() for client in clients))
    arrived = deployment.deliveries()
    rows = tally(records, arrived, [p.name for p in phases] + ["outbox drain"], snapshots)
    table, total = render(rows)
    keys = deployment.deliveries_by_key()
    keyed_twice = sum(1 for n in keys.values() if n > 1)
    out.append(table)
    out.append(f"lost {total.lost}")
    out.append(f"keyed sends delivered twice: {max(total.keyed_duplicates, keyed_twice)}; unkeyed duplicates: "
               f"{total.duplicates - total.keyed_duplicates}; refused but delivered anyway: {total.refused_delivered}"
               f" (the app was told the send may have been processed)")
    out.append(f"outbox depth after the drain: {depth} (waited {drained_in:.1f} s); "
               f"queued sends: {total.queued}")
    out.extend(explain(records, arrived, [p.name for p in phases]))
    failed = total.lost > 0 or total.keyed_duplicates > 0 or keyed_twice > 0 or total.sent == 0
    return 1 if failed else 0


async def run_drill(*, data_dir: Path, duration_scale: float = 1.0) -> int:
    """Run the drill, print its table; 0 when nothing accepted was lost and no keyed send arrived twice.

    `duration_scale` stretches or shrinks every phase (0.2 gives a run of well under a minute).
    Returns 1 when the drill found loss or a keyed duplicate, 2 when the drill itself could not run.
    """
    if duration_scale <= 0:
        raise ValueError("duration_scale must be positive")
    log_path = _prepare(data_dir)
    started = time.monotonic()
    out: list[str] = []
    with _logs_to(log_path) as levels:
        try:
            async with deploy(data_dir, duration_scale) as deployment:
                tls = "TLS with a throwaway CA" if deployment.tls else \
                    "plain HTTP (install `cryptography` for TLS)"
                code = await _exercise(deployment, duration_scale, out)
                code = max(code, await run_pins(gateway_url=deployment.gateway.url, user=APP_USER,
                                                password=deployment.app_password, setup=deployment.sms,
                                                scale=duration_scale, out=out))
        except Exception as exc:
            log.exception("the drill could not run")
            print(f"the drill could not run: {type(exc).__name__}: {exc} (details in {log_path})", file=sys.stderr)
            return 2
    out.append(f"upstreams: {tls}; wall time {time.monotonic() - started:.1f} s; "
               f"log {log_path} ({levels['WARNING']} warnings, {levels['ERROR'] + levels['CRITICAL']} errors)")
    out.append("drill " + ("FAILED: an accepted send was lost, a keyed send arrived twice or a PIN was not "
                           "delivered by long code" if code else "passed"))
    print("\n".join(out), flush=True)
    return code

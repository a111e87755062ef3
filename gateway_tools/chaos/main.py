"""`aftm-gateway drill --chaos`: kill gateways and crash the database under load, count every send.

Each scenario runs real `aftm-gateway serve` processes on loopback in front of one simulated
Responsys account that throttles (so sends are queued in the outbox and delivered later), with app
threads sending steadily, each send to its own recipient:

    sigkill            one gateway on SQLite, SIGKILLed mid-run with sends queued, then restarted
    replica-kill       two replicas on one PostgreSQL, one SIGKILLed mid-run and left dead: the other
                       takes over its leases
    postgres-restart   two replicas on PostgreSQL; the server crashes mid-run (`pg_ctl stop -m
                       immediate`), `/readyz` must turn false on both, then it starts again
    key-retry          one gateway; every keyed request is sent 5 times with its Idempotency-Key

Half the sends carry an Idempotency-Key and are retried with it until accepted, as a careful app
does; the others are sent once. PostgreSQL scenarios use a server of their own in a temporary
directory, so a crash disturbs nobody else. Per scenario the table shows: sends, accepted (200 or
202), delivered once, duplicates (keyed / unkeyed), lost (accepted, never delivered) and refused
(the app was told no, or got no answer). It exits 1 when anything accepted was lost or a keyed send
arrived twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gateway.store import open_store
from gateway_tools.chaos.env import AppLoad, DisposablePostgres, GatewayProcess, postgres_bindir, wait_for
from gateway_tools.simulator.server import SimulatedAccount

SCENARIOS = ("sigkill", "replica-kill", "postgres-restart", "key-retry")
LOAD_SECONDS = 6.0  # per scenario at scale 1
DRAIN_TIMEOUT = 120.0  # seconds the outbox may take to empty after the load
THROTTLED_CALLS = 25  # upstream calls answered 429 (Retry-After: 1) at each scenario's start
OUTAGE_SECONDS = 2.0  # how long PostgreSQL stays down once both replicas report not ready


@dataclass
class Tally:
    scenario: str
    sends: int = 0
    accepted: int = 0
    once: int = 0
    keyed_duplicates: int = 0
    unkeyed_duplicates: int = 0
    lost: int = 0
    refused: int = 0
    keyed_refused: int = 0  # keyed sends never accepted although the app kept retrying them
    answers: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    facts: dict[str, float] = field(default_factory=dict)  # what the disruption measured, by name
    skipped: str | None = None  # why the scenario could not run here

    @property
    def passed(self) -> bool:
        return self.skipped is None and self.lost == 0 and self.keyed_duplicates == 0 and self.keyed_refused == 0


def tally(scenario: str, load: AppLoad, arrived: Counter[str]) -> Tally:
    """Each send is once, a duplicate or lost when accepted; refused otherwise (counted once if it arrived)."""
    result = Tally(scenario, answers=load.answers())
    for send in load.sends:
        result.sends += 1
        copies = arrived.get(send.recipient, 0)
        if not send.accepted:
            result.refused += 1
            result.keyed_refused += send.key is not None
        elif copies == 0:
            result.lost += 1
        if send.accepted:
            result.accepted += 1
        if copies == 1 and send.accepted:
            result.once += 1
        elif copies > 1 and send.key is not None:
            result.keyed_duplicates += 1
        elif copies > 1:
            result.unkeyed_duplicates += 1
    return result


def render(results: list[Tally]) -> str:
    head = ("scenario", "sends", "accepted", "delivered once", "dup keyed", "dup unkeyed", "lost", "refused")
    rows = [head]
    for r in results:
        if r.skipped is not None:
            rows.append((r.scenario, "not run", "", "", "", "", "", ""))
            continue
        rows.append((r.scenario, str(r.sends), str(r.accepted), str(r.once), str(r.keyed_duplicates),
                     str(r.unkeyed_duplicates), str(r.lost), str(r.refused)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                       for i, (cell, width) in enumerate(zip(row, widths, strict=True))) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    for r in results:
        notes = r.notes + ([f"{r.keyed_refused} keyed sends never accepted"] if r.keyed_refused else [])
        detail = "; ".join(notes) if r.skipped is None else f"not run: {r.skipped}"
        answers = ", ".join(f"{code}: {n}" for code, n in sorted(r.answers.items()))
        lines.append(f"{r.scenario}: {detail}" + (f" (app saw {answers})" if answers else ""))
    return "\n".join(lines)


# --- the scenarios ----------------------------------------------------------------------------------


@dataclass
class Stage:
    """What one scenario runs on: a throttling account, gateways, the store they share."""

    name: str
    directory: Path
    account: SimulatedAccount
    store: str
    gateways: list[GatewayProcess]
    facts: dict[str, float] = field(default_factory=dict)


def _waiting(store_url: str) -> int:
    """Sends waiting in the outbox (pending or leased), read from the store the gateways share."""

    async def depth() -> int:
        store = await open_store(store_url, migrate=False)
        try:
            return await store.depth()
        finally:
            await store.close()

    return asyncio.run(depth())


def _outbox_settled(store_url: str) -> bool:
    """True when nothing waits in the outbox: no later resend is possible."""
    try:
        return _waiting(store_url) == 0
    except Exception:  # the store is restarting: not settled yet
        return False


Disruption = Callable[[Stage], list[str]]  # breaks something mid-run; returns notes for the table


def run_scenario(stage: Stage, *, seconds: float, disrupt: Disruption, run_id: str, repeats: int = 1) -> Tally:
    """Load for `seconds`, disrupt once the first sends are in, wait for the outbox to drain, count."""
    stage.account.throttle(THROTTLED_CALLS, retry_after="1")
    load = AppLoad(scenario=stage.name, run_id=run_id, targets=[g.base for g in stage.gateways], repeats=repeats)
    load.start(until=time.monotonic() + seconds)
    wait_for(lambda: load.accepted() >= 10, timeout=30, what="the first sends to be accepted")
    notes = disrupt(stage)
    load.join()
    wait_for(lambda: _outbox_settled(stage.store), timeout=DRAIN_TIMEOUT, what="the outbox to drain",
             interval=0.25)
    # The simulator names a recipient by its identifying column: `EMAIL_ADDRESS_:<address>`.
    arrived = Counter(address for d in stage.account.deliveries()
                      if (address := d.recipient.partition(":")[2]).startswith(f"{stage.name}-"))
    result = tally(stage.name, load, arrived)
    result.notes, result.facts = notes, stage.facts
    return result


def kill_first_gateway(stage: Stage) -> list[str]:
    """SIGKILL the first gateway; restart it when it is the only one, else leave it dead."""
    victim = stage.gateways[0]
    victim.kill()
    stage.facts["queued_at_kill"] = waiting = _waiting(stage.store)
    notes = [f"SIGKILL {victim.name} with {waiting} sends queued"]
    if len(stage.gateways) == 1:
        victim.start()
        notes.append(f"{victim.name} restarted")
    else:
        notes.append(f"{victim.name} left dead; the other replica delivers its queue")
    return notes


def crash_postgres(server: DisposablePostgres) -> Disruption:
    def disrupt(stage: Stage) -> list[str]:
        server.crash()
        down = time.monotonic()
        wait_for(lambda: not any(g.ready() for g in stage.gateways), timeout=15,
                 what="/readyz to turn false on every replica while PostgreSQL is down")
        stage.facts["not_ready_after"] = seen = time.monotonic() - down
        time.sleep(OUTAGE_SECONDS)  # keep the database down while the apps go on sending
        server.start()
        up = time.monotonic()
        wait_for(lambda: all(g.ready() for g in stage.gateways), timeout=60,
                 what="every replica to be ready again")
        stage.facts["ready_again_after"] = time.monotonic() - up
        return [f"PostgreSQL crashed for {up - down:.1f} s; /readyz false on all replicas after {seen:.1f} s",
                f"ready again {stage.facts['ready_again_after']:.1f} s after restart"]

    return disrupt


def no_disruption(stage: Stage) -> list[str]:
    return []


@contextlib.contextmanager
def _stage(name: str, root: Path, *, store: str, replicas: int) -> Iterator[Stage]:
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(16)
    with SimulatedAccount(name="primary", user_name="api_primary", password="chaos-account-password") as account:
        gateways = [GatewayProcess(directory=directory, name=f"{name}-gw{n + 1}", store=store,
                                   account_url=account.url, session_secret=secret) for n in range(replicas)]
        try:
            for gateway in gateways:
                gateway.start()
            yield Stage(name, directory, account, store, gateways)
        finally:
            for gateway in gateways:
                gateway.stop()


def run_chaos(*, scale: float = 1.0, only: tuple[str, ...] = SCENARIOS, directory: Path | None = None,
              report: Callable[[str], None] = print) -> list[Tally]:
    """Run the chosen scenarios one after another; `report` gets a line as each one finishes."""
    root = directory or Path(tempfile.mkdtemp(prefix="aftm-chaos-"))
    seconds = LOAD_SECONDS * scale
    run_id = secrets.token_hex(4)
    results: list[Tally] = []
    postgres: DisposablePostgres | None = None
    try:
        for name in only:
            if name in ("replica-kill", "postgres-restart") and postgres is None:
                if (bindir := postgres_bindir()) is None:
                    results.append(Tally(name, skipped="no PostgreSQL server binaries (initdb, pg_ctl) here"))
                    continue
                postgres = DisposablePostgres(bindir).create()
            if name == "sigkill":
                with _stage(name, root, store=f"sqlite:///{root / name / 'gateway.db'}", replicas=1) as stage:
                    results.append(run_scenario(stage, seconds=seconds, disrupt=kill_first_gateway, run_id=run_id))
            elif name == "key-retry":
                with _stage(name, root, store=f"sqlite:///{root / name / 'gateway.db'}", replicas=1) as stage:
                    result = run_scenario(stage, seconds=seconds, disrupt=no_disruption, run_id=run_id, repeats=5)
                    result.notes.append("every keyed request sent 5 times with one key")
                    results.append(result)
            else:
                assert postgres is not None
                store = f"{postgres.url}?search_path=chaos_{name.replace('-', '_')}"
                _create_schema(postgres.url, f"chaos_{name.replace('-', '_')}")
                disrupt = kill_first_gateway if name == "replica-kill" else crash_postgres(postgres)
                with _stage(name, root, store=store, replicas=2) as stage:
                    results.append(run_scenario(stage, seconds=seconds, disrupt=disrupt, run_id=run_id))
            report(f"chaos: {name} done")
    finally:
        if postgres is not None:
            postgres.destroy()
    return results


def _create_schema(url: str, schema: str) -> None:
    import asyncpg

    async def create() -> None:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        finally:
            await connection.close()

    asyncio.run(create())


def main(*, scale: float, only: tuple[str, ...], directory: Path | None = None) -> int:
    results = run_chaos(scale=scale, only=only, directory=directory,
                        report=lambda line: print(line, file=sys.stderr, flush=True))
    print(render(results))
    return 0 if all(r.passed for r in results) else 1

"""Which account gets traffic: outlier detection, active health checks, hold time, manual override.

Accounts are given in priority order (index 0 is the primary). Each is `healthy`, `ejected`, or
`recovering` (healthy again after an ejection, but for less than `hold_time`). Real traffic ejects an
account (passive outlier detection, `record`); only a successful probe (`record_probe`) or a
successful last-resort call restores it. Traffic returns to a higher-priority account only once it
has been healthy for `hold_time`, so a flapping primary cannot drag traffic back and forth.

Times are in the units of the injected clock. A snapshot shared between replicas needs a clock they
agree on (`time.time`), not `time.monotonic`, whose origin is per process.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TypeAlias, TypedDict

from policies.outcome import Failure, Kind, Outcome

_SAFE_ELSEWHERE = frozenset(
    {Failure.CONNECT, Failure.TLS, Failure.DNS, Failure.CONNECT_TIMEOUT, Failure.UNAVAILABLE}
)


def may_retry_elsewhere(outcome: Outcome, *, idempotency_key: bool) -> bool:
    """True when the same call may be sent to another account within this app request.

    Only account failures qualify. A failure where the upstream may have processed the call
    (read timeout, 5xx, UNRECOVERABLE) is resent only when the app sent an Idempotency-Key, since
    otherwise the resend could deliver the message twice.
    """
    if outcome.kind is not Kind.ACCOUNT_FAILURE or outcome.failure is None:
        return False
    return outcome.failure in _SAFE_ELSEWHERE or (outcome.failure.ambiguous and idempotency_key)


@dataclass(frozen=True, slots=True, kw_only=True)
class FailoverSettings:
    """Outlier detection and health-check tuning; the defaults suit a primary/secondary pair."""

    failure_threshold: int = 3  # failures within `window` (with no success between) that eject
    window: float = 10.0
    eject_immediately_on: frozenset[Failure] = frozenset({Failure.CONNECT, Failure.TLS, Failure.DNS})
    hold_time: float = 30.0  # healthy this long before traffic returns to a higher-priority account
    probe_interval: float = 5.0
    unhealthy_threshold: int = 2  # consecutive failed probes that eject an account real traffic spares

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.unhealthy_threshold < 1:
            raise ValueError("failover: failure_threshold and unhealthy_threshold must be at least 1")
        if self.window <= 0 or self.probe_interval <= 0 or self.hold_time < 0:
            raise ValueError("failover: window and probe_interval must be > 0, hold_time >= 0")


class SwitchReason(enum.Enum):
    FAILOVER = "failover"  # the active account was ejected
    FAILBACK = "failback"  # a higher-priority account has been healthy for hold_time
    LAST_RESORT = "last_resort"  # no account is healthy; trying the least recently failed
    OVERRIDE = "override"  # an operator set or cleared the manual override


@dataclass(frozen=True, slots=True)
class Switched:
    from_: str
    to: str
    reason: SwitchReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class HealthChanged:
    account: str
    healthy: bool
    reason: str  # the failure that ejected it, or "probe"/"traffic" for what restored it


FailoverEvent: TypeAlias = Switched | HealthChanged


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountState:
    """One account's health as plain data: what `snapshot()` returns and `restore()` takes."""

    account: str
    healthy: bool = True
    healthy_since: float | None = None
    ejected_at: float | None = None  # last confirmed failure while ejected; orders last resorts
    failures: tuple[float, ...] = ()  # times of failures since the last success, pruned to the window
    failed_probes: int = 0
    last_failure: str | None = None
    last_failure_at: float | None = None
    next_probe_at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class FailoverSnapshot:
    accounts: tuple[AccountState, ...]
    current: str
    override: str | None = None


class AccountStatus(TypedDict):
    priority: int
    healthy: bool
    state: str  # healthy | ejected | recovering
    failures_in_window: int
    last_failure: str | None
    last_failure_at: float | None
    healthy_since: float | None
    ejected_at: float | None
    next_probe_at: float


class FailoverStatus(TypedDict):
    active: str
    override: str | None
    accounts: dict[str, AccountStatus]  # in priority order


@dataclass(eq=False, kw_only=True)
class FailoverPolicy:
    """The account state machine. Not thread-safe: use it from one event loop."""

    accounts: Sequence[str]
    settings: FailoverSettings = field(default_factory=FailoverSettings)
    clock: Callable[[], float] = time.monotonic
    _states: dict[str, AccountState] = field(init=False, repr=False)
    _current: str = field(init=False)
    _override: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not self.accounts or len(set(self.accounts)) != len(self.accounts):
            raise ValueError("failover: give at least one account, each name once")
        self.accounts = tuple(self.accounts)
        now = self.clock()  # first probes are due at once, so a dead secondary is known early
        self._states = {a: AccountState(account=a, healthy_since=now, next_probe_at=now)
                        for a in self.accounts}
        self._current = self.accounts[0]

    @property
    def active(self) -> str:
        """The account traffic goes to now (the override if set)."""
        return self._override if self._override is not None else self._choose(self.clock())

    def candidates(self) -> list[str]:
        """Accounts to try within one app request: active, other healthy ones, then ejected ones."""
        active = self.active
        healthy = [a for a in self.accounts if a != active and self._states[a].healthy]
        return [active, *healthy, *(a for a in self._by_oldest_ejection() if a != active)]

    def record(self, account: str, outcome: Outcome) -> FailoverEvent | None:
        """Passive detection from a real call; returns the most significant change, if any.

        THROTTLED, SESSION_INVALID and CLIENT_ERROR are not health signals: the account answered.
        """
        if outcome.kind is Kind.OK:
            return self._succeeded(account, via="traffic")
        state, now = self._state(account), self.clock()
        if outcome.kind is not Kind.ACCOUNT_FAILURE or outcome.failure is None:
            return None
        reason = outcome.failure.value + (f": {outcome.detail}" if outcome.detail else "")
        immediate = outcome.failure in self.settings.eject_immediately_on
        return self._failed(state, now, reason, count_it=True, eject_now=immediate)

    def record_probe(self, account: str, healthy: bool, detail: str = "") -> FailoverEvent | None:
        """Take an active health-check result; a success is the way back for an ejected account."""
        if healthy:
            return self._succeeded(account, via="probe")
        state, now = self._state(account), self.clock()
        failed_probes = state.failed_probes + 1
        state = replace(state, failed_probes=failed_probes, next_probe_at=now + self.settings.probe_interval)
        reason = "probe" + (f": {detail}" if detail else "")
        eject_now = failed_probes >= self.settings.unhealthy_threshold
        return self._failed(state, now, reason, count_it=False, eject_now=eject_now)

    def probe_due(self, account: str) -> bool:
        """True when the app should run a health check on `account` now."""
        return self.clock() >= self.next_probe_at(account)

    def next_probe_at(self, account: str) -> float:
        """Clock time of the next health check; a real success postpones it (traffic is a probe)."""
        return self._state(account).next_probe_at

    def set_override(self, account: str | None) -> FailoverEvent | None:
        """Pin traffic to `account` regardless of health, or return to automatic with None."""
        if account is not None:
            self._state(account)  # raises ValueError naming the known accounts
        before = self.active
        self._override = account
        # Clearing chooses afresh with the pinned account as current, so a recovering one cannot snatch
        # traffic back before its hold time.
        self._current = account if account is not None else self._choose(self.clock())
        after = self.active
        return Switched(before, after, SwitchReason.OVERRIDE) if before != after else None

    def status(self) -> FailoverStatus:
        """JSON-serialisable view for `/admin/status`."""
        now = self.clock()
        accounts: dict[str, AccountStatus] = {}
        for priority, name in enumerate(self.accounts):
            s = self._states[name]
            accounts[name] = AccountStatus(
                priority=priority, healthy=s.healthy,
                state="healthy" if self._settled(s, now) else "recovering" if s.healthy else "ejected",
                failures_in_window=len(_in_window(s.failures, now, self.settings.window)),
                last_failure=s.last_failure, last_failure_at=s.last_failure_at,
                healthy_since=s.healthy_since, ejected_at=s.ejected_at, next_probe_at=s.next_probe_at,
            )
        return FailoverStatus(active=self.active, override=self._override, accounts=accounts)

    def snapshot(self) -> FailoverSnapshot:
        """The whole state as frozen data (for a store shared by replicas)."""
        return FailoverSnapshot(accounts=tuple(self._states[a] for a in self.accounts),
                                current=self._current, override=self._override)

    def restore(self, snapshot: FailoverSnapshot) -> None:
        """Replace the state with `snapshot`, which must name the same accounts."""
        if tuple(s.account for s in snapshot.accounts) != self.accounts:
            raise ValueError(f"failover: snapshot accounts do not match {list(self.accounts)}")
        self._states = {s.account: s for s in snapshot.accounts}
        self._current, self._override = snapshot.current, snapshot.override

    def _state(self, account: str) -> AccountState:
        try:
            return self._states[account]
        except KeyError:
            raise ValueError(f"unknown account {account!r}: expected one of {list(self.accounts)}") from None

    def _succeeded(self, account: str, *, via: str) -> FailoverEvent | None:
        state, now = self._state(account), self.clock()
        # healthy_since restarts only on restoration: it is what the hold time is measured from.
        self._states[account] = replace(
            state, healthy=True, healthy_since=state.healthy_since if state.healthy else now, failures=(),
            failed_probes=0, next_probe_at=now + self.settings.probe_interval)
        return self._reconcile(now, None if state.healthy else HealthChanged(account, True, via))

    def _failed(self, state: AccountState, now: float, reason: str, *, count_it: bool,
                eject_now: bool) -> FailoverEvent | None:
        failures = _in_window(state.failures + ((now,) if count_it else ()), now, self.settings.window)
        state = replace(state, failures=failures, last_failure=reason, last_failure_at=now)
        if not state.healthy:  # a failed last resort or probe re-confirms the ejection
            self._states[state.account] = replace(state, ejected_at=now)
            return self._reconcile(now, None)
        if not (eject_now or len(failures) >= self.settings.failure_threshold):
            self._states[state.account] = state
            return None
        self._states[state.account] = replace(state, healthy=False, healthy_since=None, ejected_at=now,
                                              next_probe_at=now + self.settings.probe_interval)
        return self._reconcile(now, HealthChanged(state.account, False, reason))

    def _reconcile(self, now: float, event: FailoverEvent | None) -> FailoverEvent | None:
        """Move `_current` to the account the rules choose now; a switch outranks `event`."""
        if self._override is not None:
            return event
        before, after = self._current, self._choose(now)
        if before == after:
            return event
        self._current = after
        if not any(s.healthy for s in self._states.values()):
            reason = SwitchReason.LAST_RESORT
        elif self.accounts.index(after) < self.accounts.index(before) and self._states[before].healthy:
            reason = SwitchReason.FAILBACK
        else:
            reason = SwitchReason.FAILOVER
        detail = event.reason if isinstance(event, HealthChanged) and not event.healthy else ""
        return Switched(before, after, reason, detail)

    def _choose(self, now: float) -> str:
        healthy = [a for a in self.accounts if self._states[a].healthy]
        if not healthy:
            return self._by_oldest_ejection()[0]
        # The current account stays eligible; any other must have settled, so no flapping.
        settled = [a for a in healthy if a == self._current or self._settled(self._states[a], now)]
        return (settled or healthy)[0]

    def _settled(self, state: AccountState, now: float) -> bool:
        """Healthy and never ejected, or healthy again for at least hold_time."""
        since = state.healthy_since
        return state.healthy and since is not None and (
            state.ejected_at is None or now - since >= self.settings.hold_time)

    def _by_oldest_ejection(self) -> list[str]:
        ejected = [a for a in self.accounts if not self._states[a].healthy]
        return sorted(ejected, key=lambda a: (self._states[a].ejected_at or 0.0, self.accounts.index(a)))


def _in_window(failures: tuple[float, ...], now: float, window: float) -> tuple[float, ...]:
    return tuple(t for t in failures if t >= now - window)


def snapshot_to_json(snapshot: FailoverSnapshot) -> str:
    """The snapshot as JSON text, for a store shared by replicas (times must be epoch seconds)."""
    return json.dumps({"current": snapshot.current, "override": snapshot.override,
                       "accounts": [asdict(state) for state in snapshot.accounts]})


def snapshot_from_json(text: str) -> FailoverSnapshot:
    """The inverse of `snapshot_to_json`; raises ValueError on anything else."""
    try:
        data = json.loads(text)
        accounts = tuple(AccountState(**{**state, "failures": tuple(state["failures"])})
                         for state in data["accounts"])
        return FailoverSnapshot(accounts=accounts, current=str(data["current"]), override=data["override"])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a failover snapshot: {exc}") from None

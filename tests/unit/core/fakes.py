"""Fakes for unit tests of the forward loop and its dialects: an upstream that answers from a script."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

from gateway.config import Account
from gateway.core.loop import Call
from gateway.store import SharedValue
from gateway.telemetry.otel import Telemetry
from policies.outcome import Failure, Outcome
from tests.support.clock import FakeClock

# What an account answers: a status, a status with headers, a whole response, or a transport error.
Answer = int | tuple[int, dict[str, str]] | httpx.Response | Exception


@dataclass
class Sent:
    account: str
    read_timeout: float | None
    at: float
    request: httpx.Request


class FakeUpstream:
    """Answers per account from a script (then 200); records what was sent, when, with which timeout."""

    read_timeout = 30.0

    def __init__(self, clock: FakeClock) -> None:
        self.telemetry = Telemetry.disabled()
        self.script: dict[str, list[Answer]] = {}
        self.sent: list[Sent] = []
        self.body = b'{"ok": true}'  # of every answer scripted as a status
        self._clock = clock

    async def send(self, request: httpx.Request, *, read_timeout: float | None = None) -> httpx.Response:
        account = request.url.host.removesuffix(".test")
        self.sent.append(Sent(account, read_timeout, self._clock(), request))
        answers = self.script.get(account)
        answer: Answer = answers.pop(0) if answers else 200
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            answer.request = request
            return answer
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        return httpx.Response(status, headers=headers, content=self.body, request=request)

    @property
    def tried(self) -> list[str]:
        return [s.account for s in self.sent]


class FakeSharedStore:
    """The two store calls a cluster makes to share its failover state with other replicas."""

    def __init__(self) -> None:
        self.values: dict[str, SharedValue] = {}

    async def shared_get(self, key: str) -> SharedValue | None:
        return self.values.get(key)

    async def shared_put(self, key: str, value: str, *, updated_at: float, replica: str) -> None:
        current = self.values.get(key)
        if current is None or current.updated_at <= updated_at:
            self.values[key] = SharedValue(value=value, updated_at=updated_at, replica=replica)


class FakeLease:
    def __init__(self, account: str) -> None:
        self.account = account
        self.invalidated = False

    def invalidate(self) -> None:
        self.invalidated = True


@dataclass
class FakeDialect:
    """Sessions that can be refused per account; status codes classified as a vendor would."""

    login_errors: dict[str, list[Exception]] = field(default_factory=dict)
    leases: list[FakeLease] = field(default_factory=list)
    answered_by: list[str] = field(default_factory=list)
    unserved: set[str] = field(default_factory=set)  # accounts the protocol has no endpoint on

    def serves(self, account: Account) -> bool:
        return account.name not in self.unserved

    @contextlib.asynccontextmanager
    async def session(self, account: Account, *, within: float) -> AsyncIterator[FakeLease]:
        errors = self.login_errors.get(account.name)
        if errors:
            raise errors.pop(0)
        lease = FakeLease(account.name)
        self.leases.append(lease)
        yield lease

    def upstream_request(self, account: Account, call: Call, lease: FakeLease) -> httpx.Request:
        return httpx.Request(call.method, f"https://{account.name}.test{call.path}", content=call.body)

    def classify(self, response: httpx.Response, retry_after: float | None) -> Outcome:
        status = response.status_code
        if status < 400:
            return Outcome.ok()
        if status == 401:
            return Outcome.session_invalid("token expired")
        if status == 429:
            return Outcome.throttled(retry_after, detail="HTTP 429")
        if status in (502, 503, 504):
            return Outcome.account_failure(Failure.UNAVAILABLE, detail=f"HTTP {status}")
        if status >= 500:
            return Outcome.account_failure(Failure.SERVER_ERROR, detail=f"HTTP {status}")
        return Outcome.client_error(f"HTTP {status}")

    def answer(self, account: Account, call: Call, response: httpx.Response) -> httpx.Response:
        self.answered_by.append(account.name)
        return httpx.Response(response.status_code, headers={"x-answered-by": account.name},
                              content=response.content)

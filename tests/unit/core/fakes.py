"""Fakes for unit tests of the forward loop and its dialects: an upstream that answers from a script."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from gateway.store import SharedValue
from gateway.telemetry.otel import Telemetry
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

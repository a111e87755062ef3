"""What the gateway does per app call to Responsys: keyed idempotency, forward, enqueue, failure reports.

`Sends.handle(call, dialect)` is the one entry of the REST and SOAP routes: a call without an
Idempotency-Key goes through the forward loop, a send it cannot deliver in time into the durable
outbox (the app gets 202); a keyed call is sent at most once per key (the first answer replayed, a
queued send named). `QueuedSends` delivers what the outbox holds through the same loop.

Refusals that are nobody's outcome are exceptions, for the route to answer in its vendor's shape:

    KeyReused   the key was used for a different request (nothing sent)
    KeyInFlight             the same key is still being sent, here or on another replica: retry shortly
    StoreUnavailable        the store cannot claim the key or queue the send: nothing was accepted
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Literal

import httpx

from gateway.config import Account
from gateway.core import idempotency
from gateway.core.loop import Call, Dialect, Proxy, Result
from gateway.core.outbox import Delivered, DeliveryResult, FailedPermanently, Retry, RetryAfter
from gateway.core.reports import FailureReports, summary
from gateway.errors import KeyInFlight, KeyReused, StoreUnavailable, UnsafeTarget
from gateway.reporting.codes import FailureKind
from gateway.store import IdempotencyRecord, OutboxItem, Store, StoreError, scoped_key
from gateway.telemetry.otel import Telemetry
from policies.outcome import Kind

log = logging.getLogger("aftm.runtime")

IN_PROGRESS = 0  # status_code of an idempotency record that is a claim, not an answer yet
CLAIM_MARGIN = 5.0  # seconds a claim outlives its request's deadline
CLAIM_POLL = 0.05  # seconds between looks at a claim held by another request


class Sends:
    """Per-call work of the REST and SOAP routes (see the module docstring)."""

    def __init__(self, *, loop: Proxy[Account], store: Callable[[], Store], reports: FailureReports,
                 telemetry: Telemetry, deadline: float, idempotency_window: float, outbox_max_age: float,
                 kick: Callable[[], None]) -> None:
        self.loop = loop
        self._store = store
        self._reports = reports
        self._telemetry = telemetry
        self._deadline = deadline
        self._idempotency_window = idempotency_window
        self._outbox_max_age = outbox_max_age
        self._kick = kick

    async def handle(self, call: Call, dialect: Dialect[Account]) -> Result:
        """Forward an app call with idempotency and the outbox as the last resort for sends.

        A repeated Idempotency-Key gets the first answer again, or `queued` while the first is still
        in the outbox, and nothing is sent again. While the first is still in flight (on any replica), a
        repeat waits for its answer; past the deadline it raises KeyInFlight. A key reused for a different
        request raises KeyReused (recorded as a malformed send): nothing is sent. StoreUnavailable
        when the store could not take the claim or the queued send.
        """
        deadline = time.monotonic() + self._deadline
        try:
            if call.idempotency_key is None:
                result = await self.loop.forward(call, dialect, deadline=deadline, enqueue=self._enqueue)
            else:
                result = await self._handle_keyed(call, call.idempotency_key, dialect, deadline)
        except KeyReused as exc:
            if call.is_send:
                self._reports.report(FailureKind.MALFORMED_REQUEST, client=call.client, error=f"Not Sent: {exc}",
                                     send_id=call.request_id, correlation_id=call.correlation_id, path=call.path,
                                     body=call.body, protocol=call.protocol)
            raise
        except KeyInFlight:
            self._count(call, None, "failed")
            raise
        except StoreError as exc:
            # Nothing was accepted: the send could not be queued or its key claimed. The app retries.
            log.warning("store unavailable; request not accepted: %s", exc, extra={"request_id": call.request_id})
            self._count(call, None, "failed")
            raise StoreUnavailable() from exc
        self._count(call, result.account, result.status)
        if call.is_send:
            self._reports.report_send(call, result)
        return result

    def _count(self, call: Call, account: str | None, status: str) -> None:
        self._telemetry.metrics.requests.labels(call.protocol, account or "", status).inc()

    async def _handle_keyed(self, call: Call, key: str, dialect: Dialect[Account], deadline: float) -> Result:
        """A keyed request: the first answer replayed, the queued send named, or this one sent once.

        Raises KeyReused when the key was used for a different request (gateway.core.idempotency).
        """
        store = self._store()
        scoped, claim = scoped_key(call.client, key), secrets.token_hex(16).encode()
        request = idempotency.fingerprint(call.protocol, call.method, call.path, call.body)
        while True:
            if (replay := await self.replay(call.client, key, call.request_id, request)) is not None:
                return replay
            if (queued := await self._queued(call.client, key, request)) is not None:
                return queued
            # A claim is a record "in progress" (status 0) that expires soon after this request's deadline,
            # so a replica that dies holding one does not block the key for long.
            record = await store.idempotency_put(scoped, IN_PROGRESS, (), claim,
                                                 time.time() + self._deadline + CLAIM_MARGIN, fingerprint=request)
            if not idempotency.same_request(record.fingerprint, request):
                raise KeyReused()
            if record.status_code != IN_PROGRESS:
                return _replayed(record, call.request_id)
            if record.body == claim:
                # The request that held the key before this claim may have queued the send and then let
                # go of its claim after our look at the outbox: look again, now that no one else can.
                if (queued := await self._queued(call.client, key, request)) is not None:
                    await store.idempotency_settle(scoped, claim, status_code=None)
                    return queued
                break
            if time.monotonic() > deadline:
                raise KeyInFlight()
            await asyncio.sleep(CLAIM_POLL)
        settled = False
        try:
            result = await self.loop.forward(call, dialect, deadline=deadline, enqueue=self._enqueue)
            if result.status == "answered" and result.response is not None:
                try:
                    settled = await store.idempotency_settle(
                        scoped, claim, status_code=result.response.status_code,
                        headers=_content_type(result.response), body=result.response.content,
                        expires_at=time.time() + self._idempotency_window)
                except StoreError as exc:  # the account answered: the app gets that answer regardless
                    log.warning("could not record the answer to an Idempotency-Key: %s", exc,
                                extra={"request_id": call.request_id})
            return result
        finally:
            if not settled:  # queued, failed or cancelled: free the key (the outbox item holds it if queued)
                with contextlib.suppress(Exception):
                    await store.idempotency_settle(scoped, claim, status_code=None)

    async def replay(self, client: str, key: str, request_id: str, request: str | None = None) -> Result | None:
        """The recorded answer to a client's key; KeyReused if it answered another request than `request`."""
        record = await self._store().idempotency_get(scoped_key(client, key))
        if record is None or record.status_code == IN_PROGRESS:
            return None
        if request is not None and not idempotency.same_request(record.fingerprint, request):
            raise KeyReused()
        return _replayed(record, request_id)

    async def _queued(self, client: str, key: str, request: str) -> Result | None:
        """The queued (or delivered) send holding a client's key; KeyReused if it is another request."""
        item = await self._store().find_by_key(client, key)
        if item is None:
            return None
        if not idempotency.same_request(item.fingerprint, request):
            raise KeyReused()
        return Result("queued", request_id=item.id)

    async def remember(self, item: OutboxItem, response: httpx.Response) -> None:
        """Record a queued keyed send's answer, so a repeat of its key replays it."""
        assert item.idempotency_key is not None
        await self._store().idempotency_put(
            scoped_key(item.client, item.idempotency_key), response.status_code, _content_type(response),
            response.content, time.time() + self._idempotency_window, fingerprint=item.fingerprint)

    async def _enqueue(self, call: Call) -> str:
        """Commit a send to the outbox; returns only once it is durable (the app then gets 202)."""
        trace_context: dict[str, str] = {}
        self._telemetry.inject(trace_context)  # the delivery's span links back to this request's
        item = OutboxItem.new(
            protocol=call.protocol, method=call.method, path=call.path,
            headers=call.headers + tuple(trace_context.items()), body=call.body,
            client=call.client, now=time.time(), max_age=self._outbox_max_age,
            idempotency_key=call.idempotency_key, request_id=call.request_id, correlation_id=call.correlation_id,
            fingerprint=None if call.idempotency_key is None else idempotency.fingerprint(
                call.protocol, call.method, call.path, call.body))
        item_id = await self._store().enqueue(item)
        self._kick()
        return item_id


class QueuedSends:
    """The outbox's handler of queued REST or SOAP sends: each try one resubmission through the same loop."""

    def __init__(self, *, sends: Sends, dialect: Dialect[Account], protocol: Literal["rest", "soap"],
                 reports: FailureReports, deadline: float,
                 check_path: Callable[[str], str] | None = None) -> None:
        """`check_path(path)` returns the path a queued item may be sent to, or raises UnsafeTarget."""
        self._sends = sends
        self._dialect = dialect
        self._protocol: Literal["rest", "soap"] = protocol
        self._reports = reports
        self._deadline = deadline
        self._check_path = check_path

    async def deliver(self, item: OutboxItem) -> DeliveryResult:
        """One resubmission of a queued send through the same forward loop (never re-queued)."""
        if item.idempotency_key is not None:
            replay = await self._sends.replay(item.client, item.idempotency_key, item.id)
            if replay is not None and replay.response is not None:
                return Delivered(status_code=replay.response.status_code)
        path = item.path
        if self._check_path is not None:
            try:  # never send a queued target unchecked (an older gateway queued decoded paths)
                path = self._check_path(item.path)
            except UnsafeTarget as exc:
                return FailedPermanently(f"the queued path was refused: {exc}")
        call = Call(protocol=self._protocol, method=item.method, path=path, headers=item.headers,
                    body=item.body, request_id=item.id, client=item.client, is_send=True,
                    idempotency_key=item.idempotency_key, correlation_id=item.correlation_id or item.id)
        result = await self._sends.loop.forward(call, self._dialect, deadline=time.monotonic() + self._deadline)
        outcome = result.outcome
        if result.status == "answered" and result.response is not None:
            if item.idempotency_key is not None:
                await self._sends.remember(item, result.response)
            if outcome is not None and outcome.kind is Kind.CLIENT_ERROR:
                return FailedPermanently(f"the account rejected the send: {outcome.detail}")
            return Delivered(status_code=result.response.status_code, body=result.response.content[:2048],
                             account=result.account)
        if outcome is not None and outcome.kind is Kind.THROTTLED and outcome.retry_after is not None:
            return RetryAfter(outcome.retry_after)
        # An ambiguous failure of a queued send is retried: the app was told "accepted", and losing
        # the send is worse than a possible duplicate of an unkeyed one.
        return Retry(outcome.detail if outcome is not None else "no account could take the send")

    async def on_dead(self, item: OutboxItem, reason: str) -> None:
        """A queued send the outbox gave up on: the app's failure entry."""
        keyword, numbers = summary(self._protocol, item.path, item.body)
        await self._reports.recorder.record(FailureKind.OUTBOX_DEAD, client=item.client, error=f"Not Sent: {reason}",
                                            keyword=keyword, numbers=numbers, send_id=item.id,
                                            correlation_id=item.correlation_id or "")


def _replayed(record: IdempotencyRecord, request_id: str) -> Result:
    response = httpx.Response(record.status_code, headers=list(record.headers), content=record.body)
    return Result("answered", response=response, request_id=request_id)


def _content_type(response: httpx.Response) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in response.headers.items() if k.lower() == "content-type")

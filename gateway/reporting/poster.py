"""POSTing new failure entries to each client's server as FDXML, every `reporting.post_interval`.

Per client with a `failure_post_url`: every interval, one replica (the one holding the client's poster
lease in the store) takes the entries not yet posted, oldest first, in batches of at most
`reporting.batch`, and POSTs each batch as the form variable FDXML. An entry counts as posted only
after the server answered 2xx, and only in the revision that was posted: an entry updated meanwhile
(delivery data arrived) stays due and is posted again, as an update. A server that is down gets the
backlog later; nothing is skipped and nothing posted twice (unless the server took a POST and the
answer was lost, which no HTTP poster can tell from a failure).

Each POST goes through `gateway.upstreams.outbound`, like the apps' callbacks: the customer's URL is connected
to only at addresses `policies.callbacks` allows (the operator's `callbacks.allow_networks` opens
private ones), pinned, its answer read at most a few KB and never inflated, the whole POST bounded by
`reporting.post_timeout` (a batch is larger than a callback and the customer's server may parse it
before answering, hence a separate, longer default than `callbacks.timeout`).

With `failure_post_secret` set, each POST carries `X-AFTM-Signature: t=<unix time>,v1=<hex>` where
hex is HMAC-SHA256(secret, "<t>.<body>"), so the receiver can check origin and freshness.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.config import Client
from gateway.errors import GatewayError
from gateway.reporting.fdxml import FailEntry, form_body
from gateway.store import FailureRecord, Store
from gateway.tasks import cancel_and_wait
from gateway.upstreams.outbound import OutboundPoster

log = logging.getLogger("aftm.reporting")

MAX_BATCHES_PER_ROUND = 10  # a large backlog drains over a few rounds rather than in one burst
SIGNATURE_HEADER = "X-AFTM-Signature"


@dataclass(frozen=True)
class PostResult:
    posted: int
    error: str | None = None


def fail_entry(record: FailureRecord) -> FailEntry:
    return FailEntry(id=record.id, keyword=record.keyword, fail_code=record.code, numbers=record.numbers,
                     send_id=record.send_id, primary_fail_date=record.primary_at,
                     primary_error=record.primary_error, secondary_fail_date=record.secondary_at,
                     secondary_error=record.secondary_error)


def signature(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


class FailurePoster:
    def __init__(self, *, store: Store, clients: Sequence[Client], outbound: OutboundPoster, owner: str,
                 interval: float = 120.0, batch: int = 100, timeout: float = 30.0,
                 on_result: Callable[[str], None] = lambda r: None, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clients = [c for c in clients if c.failure_post_url]
        self._outbound = outbound
        self._timeout = timeout
        self._owner = owner
        self._interval = interval
        self._batch = batch
        self._on_result = on_result
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._clients and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="fdxml-poster")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.post_all()

    async def post_all(self) -> dict[str, PostResult]:
        results = {}
        for client in self._clients:
            try:
                results[client.user_name] = await self.post_client(client)
            except Exception as exc:  # the store is down: try again next round
                log.warning("could not post failures: %s", exc, extra={"client": client.user_name})
                results[client.user_name] = PostResult(0, str(exc))
        return results

    async def post_client(self, client: Client) -> PostResult:
        """Post what is due for one client, if this replica gets the client's poster lease."""
        lease = max(60.0, self._interval)
        if not await self._store.lease_poster(client.user_name, self._owner, self._clock(), lease):
            return PostResult(0, "another replica is posting")
        posted = 0
        try:
            for _ in range(MAX_BATCHES_PER_ROUND):
                due = await self._store.failures_to_post(client.user_name, self._batch)
                if not due:
                    break
                error = await self._post(client, due)
                self._on_result("ok" if error is None else "error")
                if error is not None:
                    log.warning("failure post refused: %s", error, extra={"client": client.user_name})
                    return PostResult(posted, error)
                await self._store.mark_failures_posted([(r.id, r.revision) for r in due])
                posted += len(due)
                if len(due) < self._batch:
                    break
            return PostResult(posted)
        finally:
            await self._store.release_poster(client.user_name, self._owner)

    async def _post(self, client: Client, due: Sequence[FailureRecord]) -> str | None:
        assert client.failure_post_url is not None
        body = form_body([fail_entry(r) for r in due])
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if client.failure_post_secret is not None:
            headers[SIGNATURE_HEADER] = signature(client.failure_post_secret.reveal(), body, int(self._clock()))
        try:
            response = await self._outbound.post(client.failure_post_url, headers=headers.items(), content=body,
                                                 total_timeout=self._timeout)
        except GatewayError as exc:  # refused address, DNS, connect, TLS, timeout: the backlog waits
            return f"{type(exc).__name__}: {exc}"[:300]
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

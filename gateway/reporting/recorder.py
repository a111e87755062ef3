"""Recording failures: one call per failure the gateway sees, never in the way of sending.

`FailureReporter.record(kind, ...)` writes an entry with the kind's code (gateway.reporting.codes);
`delivery_failed(...)` joins a failure that only becomes known later (a carrier's failed receipt) to
the entry of the same send when there is one, filling in its secondary (delivery) data, and appends a
snippet of the message to PrimaryError as the seed asks. Recording never raises: a store that cannot
take the entry is logged, and the send or callback that failed carries on as it would have.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from gateway.reporting.codes import FailureKind, code_of
from gateway.store import NewFailure, Store

log = logging.getLogger("aftm.reporting")

SNIPPET_CHARS = 40
ERROR_CHARS = 1000  # error texts come from outside: keep entries bounded


def snippet(text: str) -> str:
    """`Message: "first 40 characters…"`, what the seed appends to PrimaryError for delivery errors."""
    flat = " ".join(text.split())
    return f'Message: "{flat[:SNIPPET_CHARS]}{"…" if len(flat) > SNIPPET_CHARS else ""}"'


class FailureReporter:
    def __init__(self, *, store: Callable[[], Store], clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    async def record(self, kind: FailureKind, *, client: str, error: str, account: str | None = None,
                     keyword: str = "", numbers: str = "", send_id: str = "", correlation_id: str = "") -> None:
        failure = NewFailure(kind=kind.value, code=int(code_of(kind)), client=client, account=account,
                             keyword=keyword, numbers=numbers, send_id=send_id, primary_at=self._clock(),
                             primary_error=error[:ERROR_CHARS], correlation_id=correlation_id)
        try:
            await self._store().record_failure(failure)
        except Exception:  # reporting must never break sending
            log.exception("could not record a failure", extra={"request_id": send_id, "reason": kind.value})

    async def delivery_failed(self, kind: FailureKind, *, client: str, send_id: str, error: str, text: str,
                              account: str | None = None, keyword: str = "", numbers: str = "") -> None:
        """A later delivery failure: joined to the send's entry if it has one, else a new entry."""
        now = self._clock()
        fallback = NewFailure(kind=kind.value, code=int(code_of(kind)), client=client, account=account,
                              keyword=keyword, numbers=numbers, send_id=send_id, primary_at=now,
                              primary_error="", secondary_at=now, secondary_error=error[:ERROR_CHARS])
        try:
            await self._store().add_delivery_failure(fallback, snippet=snippet(text))
        except Exception:
            log.exception("could not record a delivery failure", extra={"request_id": send_id, "reason": kind.value})

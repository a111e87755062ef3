"""Which id is which: the gateway's request id is a send's identity, the app's X-Request-Id a label.

- `request_id` is made by the gateway for every app request (`gateway.store.new_request_id`). It is the
  send's identity: the outbox item's key, the `requestId` of a 202 answer, what `outbox retry/drop`
  take, the failure entry's send id. No app value ever becomes a key: two apps, or one app twice,
  sending the same X-Request-Id make two sends (only an `Idempotency-Key`, scoped per client, makes
  two requests one).
- `correlation_id` is the app's `X-Request-Id`, echoed in the answer's `X-Request-Id`, forwarded
  upstream, kept beside the outbox item and the failure entry, and logged, so the app can follow its
  call. When the app sent none, the gateway's request id stands in.

An unusable X-Request-Id (empty, longer than MAX_LENGTH, or not printable ASCII) is replaced by the
gateway's request id rather than refused with a 400: the header is not part of the vendor's API, and
refusing a send over a diagnostic label would turn a harmless header into a lost send; replacing it
keeps control characters and megabyte labels out of logs, traces, the store and upstream requests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.errors import BadInput
from gateway.protocols.inputs import is_label
from gateway.store import new_request_id

HEADER = "x-request-id"
MAX_LENGTH = 128  # a UUID is 36, a W3C trace id 32: room for any sane label, none for a payload


@dataclass(frozen=True, slots=True)
class RequestIds:
    request_id: str  # the gateway's: the identity of the send
    correlation_id: str  # the app's X-Request-Id when usable, else `request_id`


def request_ids(app_value: str | None) -> RequestIds:
    """A fresh gateway request id, and the correlation id the app's header value allows."""
    request_id = new_request_id()
    usable = app_value is not None and is_label(app_value, max_length=MAX_LENGTH)
    return RequestIds(request_id=request_id, correlation_id=app_value if usable and app_value else request_id)


def forwarded_headers(headers: Iterable[tuple[str, str]], names: Iterable[str],
                      correlation_id: str) -> tuple[tuple[str, str], ...]:
    """The app's headers named in `names` (lower-case), with X-Request-Id replaced by `correlation_id`.

    BadInput when a kept value is not printable ASCII: the upstream client sends header values as
    ASCII, so a Content-Type of raw 0xFF bytes would fail there, mid-forward (after a send may have
    been queued), as a 500.
    """
    wanted = frozenset(names) - {HEADER}
    kept = tuple((k, v) for k, v in headers if k in wanted)
    for name, value in kept:
        if not value.isascii() or not value.isprintable():
            raise BadInput(f"the {name} header may hold only printable ASCII")
    return (*kept, (HEADER, correlation_id))

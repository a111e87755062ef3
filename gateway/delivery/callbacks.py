"""Delivery receipts for the apps: the callback documents, and their POSTs under the callback-URL rule.

A callback is an outbox item (`protocol="callback"`) made in the same transaction as the status change
it reports, so a crash never loses one, and the outbox retries it with backoff (in its own lane, so
slow receivers never take the slots of sends). Each POST goes through `gateway.upstreams.outbound`: the host
resolved afresh, only addresses `policies.callbacks` allows connected to (pinned), the answer read at
most a few KB and never inflated, the whole POST bounded by `callbacks.timeout`.

    2xx                      delivered
    408, 425, 429, 5xx       tried again later (Retry-After honoured)
    connect / DNS / timeout  tried again later
    other 4xx                failed: the app's endpoint refuses it, resending cannot help
    refused address          failed: the URL leads somewhere the gateway may not call
"""

from __future__ import annotations

import datetime
import time
import uuid

import httpx

from gateway.core.outbox import Delivered, DeliveryResult, FailedPermanently, Retry, RetryAfter
from gateway.errors import OutboundRefused, UpstreamError
from gateway.protocols import sms
from gateway.store import MessageRecord, OutboxItem
from gateway.upstreams.outbound import OutboundPoster
from gateway.upstreams.resolver import Resolver
from gateway.upstreams.upstream import Upstream
from policies.backoff import parse_retry_after
from policies.callbacks import CallbackPolicy

MESSAGE_ID_HEADER = "x-aftm-message-id"
_RETRYABLE = frozenset({408, 425, 429})


def receipt_date(epoch: float) -> str:
    """`2011-04-19T15:10:08.320+00:00`: ISO 8601 with milliseconds and offset, as the vendor writes it."""
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC).isoformat(timespec="milliseconds")


def callback_item(message: MessageRecord, *, at: float, type_: str, is_error: bool, description: str,
                  error_code: str | None, max_age: float, fwd_to: str | None = None,
                  internal_error_code: str | None = None) -> OutboxItem:
    """The outbox item that POSTs one receipt about `message` to its app's callback URL."""
    assert message.callback_url is not None
    document = sms.render_callback(sms.Callback(
        message_id=message.id, submitter_message_id=message.submitter_id, receipt_date=receipt_date(at),
        type=type_, is_error=is_error, description=description, error_code=error_code,
        fwd_to_message_id=fwd_to or message.fwd_to, fwd_from_message_id=message.fwd_from,
        internal_error_code=internal_error_code, transaction_id=message.transaction_id))
    return OutboxItem.new(
        protocol="callback", method="POST", path=message.callback_url,
        headers=(("content-type", f"{sms.XML_TYPE}; charset=utf-8"), (MESSAGE_ID_HEADER, message.id)),
        body=document, client=message.client, now=at, max_age=max_age, request_id=f"cb-{uuid.uuid4().hex}")


def message_id_of(item: OutboxItem) -> str | None:
    return next((value for name, value in item.headers if name == MESSAGE_ID_HEADER), None)


class CallbackPoster:
    """POSTs callback items to the apps, connecting only to allowed addresses."""

    def __init__(self, *, policy: CallbackPolicy, resolver: Resolver, upstream: Upstream, timeout: float) -> None:
        self.policy = policy
        self._outbound = OutboundPoster(policy=policy, resolver=resolver, upstream=upstream)
        self._timeout = timeout

    async def post(self, item: OutboxItem) -> DeliveryResult:
        try:
            response = await self._outbound.post(item.path, headers=item.headers, content=item.body,
                                                 total_timeout=self._timeout)
        except OutboundRefused as exc:  # an unusable URL or refused addresses: no resend can help
            return FailedPermanently(f"callback host {exc}")
        except UpstreamError as exc:
            return Retry(f"callback to {httpx.URL(item.path).host}: {exc}")
        host = httpx.URL(item.path).host
        status = response.status_code
        if 200 <= status < 300:
            return Delivered(status_code=status, body=response.content[:256])
        if status in _RETRYABLE or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"), time.time())
            reason = f"callback to {host} answered HTTP {status}"
            return RetryAfter(retry_after, error=reason) if retry_after is not None else Retry(reason)
        return FailedPermanently(f"callback to {host} answered HTTP {status}")

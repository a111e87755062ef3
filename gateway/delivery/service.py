"""The SMS flows: accept a message, send it, take its receipts, forward it at most once, notify the app.

Every step is durable before anyone is told: a message is stored with its send (an outbox item) in one
transaction before the app gets 201; a status change is stored with the callbacks it causes and, for a
forward, with the alternate message and its send, in one conditional transaction
(`Store.message_change`). So a crash or restart between a failure receipt and the alternate's send
loses nothing (the outbox sends it after the restart), and of two receipts or two replicas racing on
one failure only one forwards.

Receipt URLs end in a per-message token (`secrets.token_urlsafe`), of which the store keeps only a
SHA-256 hash; the token itself is written once, in the send's outbox item, which renders the URL at
send time (so a changed `public_url` applies to messages still waiting), and the store empties that
item's body once it is finished (`SECRET_BODY_PROTOCOLS`). Neither the token nor an upstream password
is ever logged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.config import Config
from gateway.core.dialects.sms import Accepted, NotSent, Refused, SendResult, SmsSender
from gateway.core.outbox import Delivered, DeliveryResult, FailedPermanently, Retry, RetryAfter
from gateway.delivery import messages
from gateway.delivery.callbacks import CallbackPoster, callback_item, message_id_of, receipt_date
from gateway.errors import InvalidMessage, ReceiptRefused, StoreError
from gateway.protocols import sms
from gateway.reporting.codes import FailureKind
from gateway.reporting.recorder import FailureReporter
from gateway.store import MessageChange, MessageEvent, MessageRecord, MessageStatus, OutboxItem, Store
from gateway.upstreams.resolver import Resolver
from gateway.upstreams.upstream import Upstream
from policies.callbacks import CallbackPolicy, CallbackRefused

log = logging.getLogger("aftm.sms")

E164 = re.compile(r"\+[1-9][0-9]{6,14}")
RECEIPT_PATH = "/sms/v1/receipts"
GATEWAY = "Gateway"  # the `type` of a report the gateway itself made (not the carrier's)


@dataclass(frozen=True, slots=True)
class ReceiptTaken:
    """The receipt was acknowledged; `changed` says whether it moved the message on."""

    changed: bool
    note: str


class SmsService:
    """Everything SMS: the routes get it when they are built; the outbox delivers its items through
    `send_handler` (SMS sends) and `callback_handler` (app callbacks)."""

    def __init__(self, *, config: Config, store: Callable[[], Store], upstream: Upstream, resolver: Resolver,
                 sender: SmsSender, kick: Callable[[], None], reporter: FailureReporter | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """`store` gives the open store (the service is built before the lifespan opens it)."""
        self.config = config
        self._reporter = reporter or FailureReporter(store=store, clock=clock)
        self._telemetry = upstream.telemetry
        self.senders = config.sms.alternate_senders
        self._turns = messages.LongCodeTurns()
        self._store = store
        self._kick = kick
        self._clock = clock
        self.sender = sender
        self.callbacks = CallbackPoster(policy=CallbackPolicy.from_config(config.callbacks.allow_networks),
                                        resolver=resolver, upstream=upstream, timeout=config.callbacks.timeout)

    # --- the app's side -------------------------------------------------------------------------

    async def submit(self, client: str, message: sms.MtMessage) -> MessageRecord:
        """Validate and store the message with its send; returns once both are durable."""
        self._validate(message)
        now = self._clock()
        record, token = self._new_record(
            client=client, submitter_id=message.submitter_message_id, source=message.source,
            destination=message.destination, destination_carrier=message.destination_carrier, text=message.text,
            alternate=message.alternate_delivery, receipt_level=message.receipt_level,
            callback_url=message.callback_url if message.receipt_level != "NONE" else None, now=now,
            transaction_id=message.transaction_id, destination_type=message.destination_type,
            source_type=message.source_type)
        event = MessageEvent(message_id=record.id, at=now, kind="status", status=MessageStatus.ACCEPTED,
                             description="accepted" + (" with alternate delivery" if record.alternate else ""))
        await self._store().message_create(record, event=event, enqueue=(self._send_item(record, token, now),))
        self._kick()
        return record

    def _validate(self, message: sms.MtMessage) -> None:
        if not E164.fullmatch(message.destination):
            raise InvalidMessage("destination address must be an E.164 number such as +18475551212")
        if not messages.is_known_sender(message.source, self.senders):
            raise InvalidMessage(f"source address {message.source} is not a short code or long code "
                                 "configured on this gateway")
        if not message.text.strip():
            raise InvalidMessage("text must not be empty")
        if len(message.text) > sms.MAX_TEXT:
            raise InvalidMessage(f"text is longer than {sms.MAX_TEXT} characters")
        if message.receipt_level != "NONE":
            if message.callback_url is None:
                raise InvalidMessage(f"receiptOption {message.receipt_level} needs a callbackUrl")
            try:
                self.callbacks.policy.check_callback_url(message.callback_url)
            except CallbackRefused as exc:
                raise InvalidMessage(str(exc)) from None

    def warnings(self, message: sms.MtMessage) -> tuple[str, ...]:
        """What of an accepted message the gateway will not do, for the app's answer."""
        return messages.submission_warnings(text=message.text, alternate=message.alternate_delivery,
                                            source=message.source, alternate_senders=self.senders)

    async def view(self, client: str, message_id: str) -> dict[str, Any] | None:
        """The message as the status API shows it, or None when the client has no such message."""
        record = await self._store().message_get(message_id)
        if record is None or record.client != client:
            return None
        return await self._view(record)

    async def find(self, client: str, submitter_id: str) -> list[dict[str, Any]]:
        return [await self._view(record) for record in await self._store().message_find(client, submitter_id)]

    async def _view(self, record: MessageRecord) -> dict[str, Any]:
        history = [{"time": receipt_date(e.at), "kind": e.kind, "status": None if e.status is None else e.status.value,
                    "description": e.description, "errorCode": e.error_code}
                   for e in await self._store().message_events(record.id)]
        return {
            "messageId": record.id, "submitterMessageId": record.submitter_id,
            "source": {"address": record.source, "type": self._source_type(record)},
            "destination": {"address": record.destination, "carrier": record.destination_carrier,
                            "type": record.destination_type or "MDN"},
            "transactionId": record.transaction_id,
            "status": record.status.value, "alternateDelivery": record.alternate,
            "fwdToMessageId": record.fwd_to, "fwdFromMessageId": record.fwd_from,
            "receiptOption": record.receipt_level, "upstream": record.upstream,
            "createdAt": receipt_date(record.created_at), "updatedAt": receipt_date(record.updated_at),
            "history": history,
        }

    # --- the upstream's side: receipts ----------------------------------------------------------

    async def take_receipt(self, message_id: str, token: str, body: bytes) -> ReceiptTaken:
        """Apply a delivery receipt posted to a message's receipt URL.

        Raises ReceiptRefused for a URL the gateway did not hand out (nothing changes), and
        BadMessage for a body that is no mtMessageResponse. Receipts about another upstream
        messageId, or for a message already final, are recorded and change nothing; so a duplicate
        is harmless.
        """
        record = await self._store().message_get(message_id)
        if record is None or not hmac.compare_digest(_token_hash(token), record.receipt_token_hash):
            raise ReceiptRefused("no such receipt URL")
        receipt = sms.parse_response(body)
        now = self._clock()
        what = f"receipt for {receipt.message_id or 'an unnamed message'}"
        if record.upstream_message_id and receipt.message_id and receipt.message_id != record.upstream_message_id:
            return await self._ignored(record, now, f"{what} ignored: this message is "
                                                    f"{record.upstream_message_id} upstream")
        if record.status not in messages.OPEN:
            return await self._ignored(record, now, f"{what} ignored: the message is already {record.status.value}")
        if receipt.is_error is None:
            return await self._ignored(record, now, f"{what} without a status ignored")
        if receipt.is_error:
            changed = await self._carrier_failed(record, now, description=receipt.description or "Failed",
                                                 error_code=receipt.error_code, upstream_message_id=receipt.message_id,
                                                 by_receipt=True, internal_error_code=receipt.internal_error_code)
        else:
            changed = await self._delivered(record, now, receipt)
        if not changed:  # another receipt or replica moved it first
            return await self._ignored(record, now, f"{what} ignored: the message changed meanwhile")
        return ReceiptTaken(True, "applied")

    async def _ignored(self, record: MessageRecord, now: float, note: str) -> ReceiptTaken:
        await self._store().message_note(MessageEvent(message_id=record.id, at=now, kind="receipt", description=note))
        log.info("SMS receipt ignored", extra={"message_id": record.id, "reason": note})
        return ReceiptTaken(False, note)

    async def _delivered(self, record: MessageRecord, now: float, receipt: sms.MtResponse) -> bool:
        description = receipt.description or "Delivered"
        callbacks = self._callbacks(record, now, final=True, is_error=False, type_=receipt.type or sms.CARRIER,
                                    description=description, error_code=None)
        return await self._change(MessageChange(
            message_id=record.id, from_statuses=messages.OPEN, status=MessageStatus.DELIVERED,
            upstream_message_id=receipt.message_id, enqueue=callbacks,
            event=MessageEvent(message_id=record.id, at=now, kind="status", status=MessageStatus.DELIVERED,
                               description=description)))

    async def _carrier_failed(self, record: MessageRecord, now: float, *, description: str, error_code: str | None,
                              upstream_message_id: str | None = None, upstream: str | None = None,
                              by_receipt: bool = False, internal_error_code: str | None = None) -> bool:
        """The carrier refused or failed `record`: forward it (at most once) or fail it, notify, report."""
        decision = messages.after_carrier_failure(record, self.senders)
        if isinstance(decision, messages.Fail):
            full = description if decision.why_not_forwarded is None else f"{description}; {decision.why_not_forwarded}"
            changed = await self._change(MessageChange(
                message_id=record.id, from_statuses=messages.OPEN, status=MessageStatus.FAILED, upstream=upstream,
                upstream_message_id=upstream_message_id,
                enqueue=self._callbacks(record, now, final=True, is_error=True, type_=sms.CARRIER, description=full,
                                        error_code=error_code, internal_error_code=internal_error_code),
                event=MessageEvent(message_id=record.id, at=now, kind="status", status=MessageStatus.FAILED,
                                   description=full, error_code=error_code)))
            if changed:
                await self._report_carrier(record, full, error_code, by_receipt=by_receipt, upstream=upstream)
            return changed
        long_code = self._turns.order(record.source, decision.long_codes)[0]
        alternate, token = self._new_record(
            client=record.client, submitter_id=record.submitter_id, source=long_code,
            destination=record.destination, destination_carrier=record.destination_carrier, text=record.text,
            alternate=record.alternate, receipt_level=record.receipt_level, callback_url=record.callback_url, now=now,
            fwd_from=record.id, transaction_id=record.transaction_id, destination_type=record.destination_type)
        forwarded = f"{description}; re-sent from long code {long_code} as {alternate.id}"
        callbacks = self._callbacks(record, now, final=False, is_error=True, type_=sms.CARRIER,
                                    description=description, error_code=error_code, fwd_to=alternate.id,
                                    internal_error_code=internal_error_code)
        changed = await self._change(MessageChange(
            message_id=record.id, from_statuses=messages.OPEN, status=MessageStatus.FORWARDED, upstream=upstream,
            upstream_message_id=upstream_message_id, fwd_to=alternate.id,
            event=MessageEvent(message_id=record.id, at=now, kind="status", status=MessageStatus.FORWARDED,
                               description=forwarded, error_code=error_code),
            insert=alternate,
            insert_event=MessageEvent(message_id=alternate.id, at=now, kind="status", status=MessageStatus.ACCEPTED,
                                      description=f"alternate of {record.id} after a carrier failure on "
                                                  f"{record.source}"),
            enqueue=(self._send_item(alternate, token, now), *callbacks)))
        if changed:
            log.info("SMS forwarded to a long code", extra={"message_id": record.id, "alternate": alternate.id})
            await self._report_carrier(record, forwarded, error_code, by_receipt=by_receipt, upstream=upstream)
        return changed

    async def _report_carrier(self, record: MessageRecord, description: str, error_code: str | None, *,
                              by_receipt: bool, upstream: str | None) -> None:
        """A carrier failure as a failure entry: refused at submission, or reported later by receipt."""
        error = f"{description} (error {error_code})" if error_code else description
        account = upstream or record.upstream
        if by_receipt:
            kind = FailureKind.ALTERNATE_DELIVERY_FAILED if record.fwd_from else FailureKind.DELIVERY_FAILED
            await self._reporter.delivery_failed(kind, client=record.client, send_id=record.id, error=error,
                                                 text=record.text, account=account, keyword=record.source,
                                                 numbers=record.destination)
        else:
            kind = FailureKind.ALTERNATE_REFUSED if record.fwd_from else FailureKind.CARRIER_REFUSED
            await self._reporter.record(kind, client=record.client, send_id=record.id, error=error, account=account,
                                        keyword=record.source, numbers=record.destination)

    async def _change(self, change: MessageChange) -> bool:
        changed = await self._store().message_change(change)
        if changed and change.enqueue:
            self._kick()
        return changed

    def _callbacks(self, record: MessageRecord, now: float, *, final: bool, is_error: bool, type_: str,
                   description: str, error_code: str | None, fwd_to: str | None = None,
                   internal_error_code: str | None = None) -> tuple[OutboxItem, ...]:
        if record.callback_url is None or not messages.wants_callback(record.receipt_level, final=final,
                                                                      is_error=is_error):
            return ()
        return (callback_item(record, at=now, type_=type_, is_error=is_error, description=description,
                              error_code=error_code, max_age=self.config.callbacks.max_age, fwd_to=fwd_to,
                              internal_error_code=internal_error_code),)

    # --- the outbox's side ----------------------------------------------------------------------

    async def post_callback(self, item: OutboxItem) -> DeliveryResult:
        """One try of an app callback (`protocol="callback"`), its fate noted in the message's history."""
        result = await self.callbacks.post(item)
        self._telemetry.metrics.callback_posts.labels(type(result).__name__.lower()).inc()
        if isinstance(result, Delivered) and (message_id := message_id_of(item)) is not None:
            await self._note_quietly(MessageEvent(
                message_id=message_id, at=self._clock(), kind="callback",
                description=f"callback delivered (HTTP {result.status_code})"))
        return result

    async def send(self, item: OutboxItem) -> DeliveryResult:
        """One try of an SMS send (`protocol="sms"`): from each long code of an alternate in turn."""
        record = await self._store().message_get(_message_id_of_send(item))
        if record is None:
            return FailedPermanently("the message no longer exists (purged)")
        if record.status is not MessageStatus.ACCEPTED:
            return Delivered(status_code=200, body=b"already sent")  # a resend after a lost lease: done
        result, source = await self._send_from_each(record, self.receipt_url(record.id, item.body.decode("ascii")),
                                                    request_id=item.id)
        if source != record.source:
            record = dataclasses.replace(record, source=source)
        now = self._clock()
        if isinstance(result, NotSent):
            return RetryAfter(result.retry_after, error=result.reason) if result.retry_after is not None \
                else Retry(result.reason)
        if isinstance(result, Accepted):
            await self._sent(record, now, result)
            return Delivered(status_code=200, account=result.upstream)
        await self._refused(record, now, result)
        return Delivered(status_code=result.status_code, account=result.upstream)

    async def _send_from_each(self, record: MessageRecord, receipt_url: str, *,
                              request_id: str) -> tuple[SendResult, str]:
        """Send `record`; an alternate one long code refuses goes out from the next (each once per try).

        Returns the result and the source it was sent from. An original has only its own source.
        """
        sources: tuple[str, ...] = (record.source,)
        if record.fwd_from is not None:
            codes = next((tuple(c) for c in self.senders.values() if record.source in c), ())
            if record.source in codes:
                at = codes.index(record.source)
                sources = (*codes[at:], *codes[:at])
        result: SendResult = NotSent("no source to send from")
        for source, following in zip(sources, (*sources[1:], None), strict=True):
            document = sms.render_upstream_message(
                submitter_message_id=record.id, destination=record.destination,
                destination_carrier=record.destination_carrier, source=source,
                source_type=self._source_type(dataclasses.replace(record, source=source)), text=record.text,
                receipt_url=receipt_url, destination_type=record.destination_type,
                transaction_id=record.transaction_id)
            result = await self.sender.send(document, request_id=request_id, client=record.client)
            if not isinstance(result, Refused) or following is None:
                return result, source
            log.info("SMS alternate refused on a long code; trying the next",
                     extra={"message_id": record.id, "long_code": source, "upstream": result.upstream})
            note = MessageEvent(
                message_id=record.id, at=self._clock(), kind="note",
                description=f"refused from long code {source} by {result.upstream}: "
                            f"{(result.answer.description if result.answer else None) or result.status_code}; "
                            "trying the next long code")
            # The next long code is the message's source before it is sent from there: its receipt may
            # come back before this try records the send, and must find the message under that source.
            moved = await self._store().message_change(MessageChange(
                message_id=record.id, from_statuses=frozenset({MessageStatus.ACCEPTED}),
                status=MessageStatus.ACCEPTED, source=following, event=note))
            if not moved:
                await self._store().message_note(note)
        return result, sources[-1]

    def _source_type(self, record: MessageRecord) -> str:
        """The app's own `source@type` for its original; `LC` for an alternate; else from the configuration."""
        if record.source_type is not None and record.fwd_from is None:
            return record.source_type
        return messages.source_type(record.source, self.senders)

    async def _sent(self, record: MessageRecord, now: float, result: Accepted) -> None:
        description = f"sent through {result.upstream}"
        changed = await self._change(MessageChange(
            message_id=record.id, from_statuses=frozenset({MessageStatus.ACCEPTED}), status=MessageStatus.SENT,
            upstream=result.upstream, upstream_message_id=result.upstream_message_id, source=record.source,
            event=MessageEvent(message_id=record.id, at=now, kind="status", status=MessageStatus.SENT,
                               description=description)))
        if changed:
            return
        # Its receipt was quicker than this answer: the status has moved on, but the message must still
        # name the upstream it went through (and the history say so), without moving the status back.
        note = MessageEvent(message_id=record.id, at=now, kind="note", description=description)
        current = await self._store().message_get(record.id)
        if current is None or not await self._change(MessageChange(
                message_id=record.id, from_statuses=frozenset({current.status}), status=current.status,
                upstream=result.upstream, upstream_message_id=current.upstream_message_id or result.upstream_message_id,
                event=note)):
            await self._store().message_note(note)

    async def _refused(self, record: MessageRecord, now: float, result: Refused) -> None:
        answer = result.answer
        description = (answer.description if answer else None) or f"HTTP {result.status_code}"
        error_code = answer.error_code if answer else None
        if result.by_carrier:
            await self._carrier_failed(record, now, description=description, error_code=error_code,
                                       upstream=result.upstream,
                                       internal_error_code=answer.internal_error_code if answer else None)
            return
        full = f"rejected by {result.upstream}: {description}"
        await self._reporter.record(FailureKind.UPSTREAM_REJECTED, client=record.client, send_id=record.id,
                                    numbers=record.destination, keyword=record.source, account=result.upstream,
                                    error=f"Not Sent: {full}" + (f" (error {error_code})" if error_code else ""))
        await self._change(MessageChange(
            message_id=record.id, from_statuses=frozenset({MessageStatus.ACCEPTED}), status=MessageStatus.REJECTED,
            upstream=result.upstream,
            enqueue=self._callbacks(record, now, final=True, is_error=True, type_=(answer.type if answer else None)
                                    or GATEWAY, description=full, error_code=error_code),
            event=MessageEvent(message_id=record.id, at=now, kind="status", status=MessageStatus.REJECTED,
                               description=full, error_code=error_code)))

    async def callback_dead(self, item: OutboxItem, reason: str) -> None:
        """A callback the outbox gave up on: noted in the message's history, reported as a post-out."""
        message_id = message_id_of(item)
        if message_id is not None:
            await self._note_quietly(MessageEvent(
                message_id=message_id, at=self._clock(), kind="callback", error_code="post-out",
                description=f"callback failed permanently: {reason}"))
        log.warning("SMS callback failed permanently (post-out)", extra={"message_id": message_id})
        message = await self._store().message_get(message_id) if message_id is not None else None
        await self._reporter.record(FailureKind.CALLBACK_FAILED, client=item.client, send_id=message_id or "",
                                    numbers=message.destination if message else "",
                                    keyword=message.source if message else "",
                                    error=f"Post Out: callback to the app failed: {reason}")

    async def send_dead(self, item: OutboxItem, reason: str) -> None:
        """An SMS send the outbox gave up on: the message fails, the app is told and it is reported."""
        now = self._clock()
        record = await self._store().message_get(_message_id_of_send(item))
        if record is None:
            return
        full = f"no SMS upstream took the message: {reason}"
        await self._reporter.record(FailureKind.OUTBOX_DEAD, client=record.client, send_id=record.id,
                                    numbers=record.destination, keyword=record.source, error=f"Not Sent: {full}")
        await self._change(MessageChange(
            message_id=record.id, from_statuses=frozenset({MessageStatus.ACCEPTED}), status=MessageStatus.FAILED,
            enqueue=self._callbacks(record, now, final=True, is_error=True, type_=GATEWAY, description=full,
                                    error_code=None),
            event=MessageEvent(message_id=record.id, at=now, kind="status", status=MessageStatus.FAILED,
                               description=full)))

    # --- helpers --------------------------------------------------------------------------------

    async def _note_quietly(self, event: MessageEvent) -> None:
        """Record a callback's fate; losing that line must not make the outbox send the callback again."""
        try:
            await self._store().message_note(event)
        except StoreError as exc:  # the store is down, or the message was purged meanwhile
            log.warning("could not record a callback's fate: %s", exc, extra={"message_id": event.message_id})

    def receipt_url(self, message_id: str, token: str) -> str:
        return f"{self.config.public_url.rstrip('/')}{RECEIPT_PATH}/{message_id}/{token}"

    def _new_record(self, *, client: str, submitter_id: str | None, source: str, destination: str,
                    destination_carrier: str | None, text: str, alternate: bool, receipt_level: str,
                    callback_url: str | None, now: float, fwd_from: str | None = None,
                    transaction_id: str | None = None, destination_type: str | None = None,
                    source_type: str | None = None) -> tuple[MessageRecord, str]:
        token = secrets.token_urlsafe(32)
        record = MessageRecord(
            id=str(uuid.uuid4()), channel="sms", client=client, submitter_id=submitter_id, source=source,
            destination=destination, destination_carrier=destination_carrier, text=text,
            status=MessageStatus.ACCEPTED, alternate=alternate, receipt_level=receipt_level,
            callback_url=callback_url, receipt_token_hash=_token_hash(token), created_at=now, updated_at=now,
            fwd_from=fwd_from, transaction_id=transaction_id, destination_type=destination_type,
            source_type=source_type)
        return record, token

    def _send_item(self, record: MessageRecord, token: str, now: float) -> OutboxItem:
        # The token rides in the item's body until the send renders the receipt URL from it.
        trace_context: dict[str, str] = {}
        self._telemetry.inject(trace_context)  # the send's delivery span links back to what caused it
        return OutboxItem.new(protocol="sms", method="POST", path=f"/sms/v1/messages/{record.id}",
                              headers=tuple(trace_context.items()),
                              body=token.encode("ascii"), client=record.client, now=now,
                              max_age=self.config.sms.max_age, request_id=f"sms-{record.id}")


class SendHandler:
    """The outbox's handler of SMS sends (`protocol="sms"`)."""

    def __init__(self, service: SmsService) -> None:
        self._service = service

    async def deliver(self, item: OutboxItem) -> DeliveryResult:
        return await self._service.send(item)

    async def on_dead(self, item: OutboxItem, reason: str) -> None:
        await self._service.send_dead(item, reason)


class CallbackHandler:
    """The outbox's handler of app callbacks (`protocol="callback"`)."""

    def __init__(self, service: SmsService) -> None:
        self._service = service

    async def deliver(self, item: OutboxItem) -> DeliveryResult:
        return await self._service.post_callback(item)

    async def on_dead(self, item: OutboxItem, reason: str) -> None:
        await self._service.callback_dead(item, reason)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _message_id_of_send(item: OutboxItem) -> str:
    return item.path.rsplit("/", 1)[-1]

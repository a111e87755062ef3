"""A simulated SMS aggregator speaking the plain MT API, with failure injection per destination and sender.

    POST /mt      HTTP Basic, an `mtMessage`; answers 200 `<mtMessageResponse messageId="SIM-..."/>`, or for
                  an injected immediate refusal 400 `<mtMessageResponse><type>Carrier</type><status
                  isError="true"><description/><errorCode/></status></mtMessageResponse>`. Later it POSTs a
                  delivery receipt (`mtMessageResponse` with its messageId, `<type>Carrier</type>` and a
                  status) to the message's `receiptOption@callbackUrl`.

What happens to a message is decided by the most specific rule matching its destination and sender
(a rule naming both beats one naming either; the latest added wins a tie), else by the default:

    deliver      200, then a "Delivered" receipt after `after_ms`        (the default)
    fail         200, then a failed receipt after `after_ms`
    refuse       an immediate carrier refusal (400), no receipt
    no_receipt   200 and silence

A repeated `submitterMessageId` is answered with the first messageId and not sent again (how a
client's resend after a lost answer stays one SMS). Receipts are retried a few times when the
callback URL does not answer 2xx, and can be held and released to stage races. The API sits behind
the Responsys simulator's fault gate, so the modes (`refuse`, `http503`, `hang`, `reset`), throttling
and latency of the common control API work here too. SMS control routes (on the control port):

    POST   /sms/rules          {"action", "destination"?, "source"?, "after_ms"?, "error_code"?, "description"?,
                                 "answer_after_receipt"?: the MT answer waits until its receipt was posted}
    DELETE /sms/rules
    GET    /sms/messages | DELETE /sms/messages     messages taken (and refused), oldest first
    GET    /sms/counts         accepted messages per destination and per sender
    GET    /sms/receipts       receipts posted, with the callback's HTTP status
    POST   /sms/receipts/hold | POST /sms/receipts/release

The simulator keeps its own copy of the wire format on purpose: it is the yardstick the gateway's
adapter (`gateway.protocols.sms`) is measured against. Reading untrusted XML safely is not wire format:
that is the gateway's one `parse_untrusted`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime
import enum
import itertools
import json
import logging
import secrets
import signal
import ssl
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from gateway.protocols.xml import XmlRefused, parse_untrusted
from gateway_tools.simulator.faults import FaultGate
from gateway_tools.simulator.server import SimulatedAccount
from gateway_tools.simulator.state import AccountState, Mode

logger = logging.getLogger(__name__)

XML_TYPE = "application/xml"
RECEIPT_TRIES = 5
RECEIPT_RETRY_BASE = 0.2  # seconds; doubled per try
_HOLD_POLL = 0.01


class Action(enum.Enum):
    DELIVER = "deliver"
    FAIL = "fail"
    REFUSE = "refuse"
    NO_RECEIPT = "no_receipt"


@dataclass(frozen=True, slots=True)
class Rule:
    action: Action
    destination: str | None = None
    source: str | None = None
    after_ms: int = 0
    error_code: str = "1001"
    description: str | None = None
    internal_error_code: str | None = None  # the aggregator's own code, beside the carrier's
    answer_after_receipt: bool = False  # hold the MT answer until its receipt was posted (a slow answer)

    def matches(self, source: str, destination: str) -> bool:
        return self.destination in (None, destination) and self.source in (None, source)

    @property
    def specificity(self) -> int:
        return (self.destination is not None) + (self.source is not None)


@dataclass(frozen=True, slots=True)
class MtRecord:
    """One message as the aggregator took it (or refused it)."""

    message_id: str | None  # None when refused
    submitter_message_id: str | None
    source: str
    destination: str
    text: str
    callback_url: str | None
    action: str
    at: float
    transaction_id: str | None = None
    source_type: str | None = None
    destination_type: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ReceiptRecord:
    message_id: str
    is_error: bool
    callback_url: str
    status_code: int | None  # None: the callback URL never answered
    at: float


@dataclass(slots=True)
class _Memory:
    rules: list[Rule] = field(default_factory=list)
    messages: list[MtRecord] = field(default_factory=list)
    by_submitter: dict[str, str] = field(default_factory=dict)
    receipts: list[ReceiptRecord] = field(default_factory=list)


class SmsAggregatorState:
    """What the aggregator remembers; every method is thread-safe (tests drive it from their thread)."""

    def __init__(self, *, default_after_ms: int = 0) -> None:
        self.default_after_ms = default_after_ms
        self._lock = threading.Lock()
        self._memory = _Memory()
        self._ids = itertools.count(1)
        self._held = threading.Event()

    def add_rule(self, rule: Rule) -> None:
        with self._lock:
            self._memory.rules.append(rule)

    def clear_rules(self) -> None:
        with self._lock:
            self._memory.rules.clear()

    def rule_for(self, source: str, destination: str) -> Rule:
        with self._lock:
            matching = [(rule.specificity, n, rule) for n, rule in enumerate(self._memory.rules)
                        if rule.matches(source, destination)]
        if not matching:
            return Rule(Action.DELIVER, after_ms=self.default_after_ms)
        return max(matching, key=lambda entry: (entry[0], entry[1]))[2]

    def take(self, *, submitter_message_id: str | None, source: str, destination: str, text: str,
             callback_url: str | None, action: Action, transaction_id: str | None = None,
             source_type: str | None = None, destination_type: str | None = None) -> tuple[str | None, bool]:
        """Record a message; returns (messageId, new). A known submitterMessageId gets its first id again."""
        with self._lock:
            if submitter_message_id is not None and submitter_message_id in self._memory.by_submitter:
                return self._memory.by_submitter[submitter_message_id], False
            message_id = None if action is Action.REFUSE else f"SIM-{next(self._ids):06d}-{secrets.token_hex(4)}"
            if message_id is not None and submitter_message_id is not None:
                self._memory.by_submitter[submitter_message_id] = message_id
            self._memory.messages.append(MtRecord(
                message_id=message_id, submitter_message_id=submitter_message_id, source=source,
                destination=destination, text=text, callback_url=callback_url, action=action.value, at=time.time(),
                transaction_id=transaction_id, source_type=source_type, destination_type=destination_type))
            return message_id, True

    def messages(self) -> list[MtRecord]:
        with self._lock:
            return list(self._memory.messages)

    def counts(self) -> dict[str, dict[str, int]]:
        """Accepted messages (not refused ones) per destination and per sender."""
        taken = [m for m in self.messages() if m.message_id is not None]
        return {"by_destination": dict(Counter(m.destination for m in taken)),
                "by_sender": dict(Counter(m.source for m in taken))}

    def record_receipt(self, receipt: ReceiptRecord) -> None:
        with self._lock:
            self._memory.receipts.append(receipt)

    def receipts(self) -> list[ReceiptRecord]:
        with self._lock:
            return list(self._memory.receipts)

    def hold_receipts(self) -> None:
        self._held.set()

    def release_receipts(self) -> None:
        self._held.clear()

    @property
    def receipts_held(self) -> bool:
        return self._held.is_set()

    def clear_messages(self) -> None:
        with self._lock:
            self._memory.messages.clear()
            self._memory.receipts.clear()

    def reset(self) -> None:
        with self._lock:
            self._memory = _Memory()
        self._held.clear()


# --- the wire format, the simulator's own copy ------------------------------------------------------

class _BadRequest(ValueError):
    pass


def _parse(body: bytes) -> etree._Element:
    try:
        return parse_untrusted(body)
    except XmlRefused as exc:
        raise _BadRequest(str(exc)) from None


def _response(*, message_id: str | None = None, type_: str | None = None, is_error: bool | None = None,
              description: str | None = None, error_code: str | None = None, receipt_date: bool = False,
              internal_error_code: str | None = None) -> bytes:
    root = etree.Element("mtMessageResponse")
    if message_id is not None:
        root.set("messageId", message_id)
    if receipt_date:
        root.set("receiptDate", datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"))
    if type_ is not None:
        etree.SubElement(root, "type").text = type_
    if is_error is not None:
        status = etree.SubElement(root, "status", isError="true" if is_error else "false")
        etree.SubElement(status, "description").text = description or ""
        if error_code is not None:
            etree.SubElement(status, "errorCode").text = error_code
        if internal_error_code is not None:
            etree.SubElement(status, "internalErrorCode").text = internal_error_code
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _error(status: int, description: str, *, type_: str = "Request", error_code: str | None = None,
           headers: dict[str, str] | None = None, internal_error_code: str | None = None) -> Response:
    body = _response(type_=type_, is_error=True, description=description, error_code=error_code,
                     internal_error_code=internal_error_code)
    return Response(body, status_code=status, media_type=XML_TYPE, headers=headers)


class _MtApi:
    def __init__(self, account: AccountState, sms: SmsAggregatorState,
                 receipt_context: ssl.SSLContext | None) -> None:
        self._account = account
        self._sms = sms
        self._receipt_context = receipt_context
        self._tasks: set[asyncio.Task[None]] = set()

    async def mt(self, request: Request) -> Response:
        if not self._authorized(request.headers.get("authorization", "")):
            return _error(401, "authentication failed", headers={"WWW-Authenticate": 'Basic realm="mt"'})
        try:
            root = _parse(await request.body())
            message = _read_message(root)
        except _BadRequest as exc:
            return _error(400, str(exc))
        rule = self._sms.rule_for(message["source"], message["destination"])
        message_id, new = self._sms.take(action=rule.action, **message)
        if rule.action is Action.REFUSE:
            return _error(400, rule.description or "Carrier rejected the message", type_="Carrier",
                          error_code=rule.error_code, internal_error_code=rule.internal_error_code)
        assert message_id is not None
        callback = message["callback_url"]
        if new and callback is not None and rule.action is not Action.NO_RECEIPT:
            task = asyncio.create_task(self._send_receipt(message_id, callback, rule))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            if rule.answer_after_receipt:  # the receipt beats the answer, as a slow aggregator's can
                await asyncio.wait({task}, timeout=10)
        return Response(_response(message_id=message_id), media_type=XML_TYPE)

    def _authorized(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return self._account.credentials_match(user, password)

    async def _send_receipt(self, message_id: str, callback_url: str, rule: Rule) -> None:
        await asyncio.sleep(rule.after_ms / 1000)
        while self._sms.receipts_held:  # noqa: ASYNC110 (the test releases it from another thread)
            await asyncio.sleep(_HOLD_POLL)
        failed = rule.action is Action.FAIL
        body = _response(message_id=message_id, type_="Carrier", is_error=failed, receipt_date=True,
                         description=(rule.description or "Carrier failure") if failed else "Delivered",
                         error_code=rule.error_code if failed else None,
                         internal_error_code=rule.internal_error_code if failed else None)
        status: int | None = None
        for attempt in range(RECEIPT_TRIES):
            status = await self._post(callback_url, body)
            if status is not None and status < 500 and status != 429:
                break
            await asyncio.sleep(RECEIPT_RETRY_BASE * 2**attempt)
        self._sms.record_receipt(ReceiptRecord(message_id=message_id, is_error=failed, callback_url=callback_url,
                                               status_code=status, at=time.time()))

    async def _post(self, url: str, body: bytes) -> int | None:
        verify: ssl.SSLContext | bool = self._receipt_context if self._receipt_context is not None else True
        try:
            async with httpx.AsyncClient(trust_env=False, verify=verify, timeout=5.0) as client:
                response = await client.post(url, content=body, headers={"Content-Type": XML_TYPE})
        except httpx.HTTPError as exc:
            logger.info("receipt to the callback URL failed: %s", type(exc).__name__)
            return None
        return response.status_code


def _read_message(root: etree._Element) -> dict[str, Any]:
    if root.tag != "mtMessage":
        raise _BadRequest("expected an <mtMessage> document")
    destination, source = root.find("destination"), root.find("source")
    text = root.findtext("text") or ""
    if destination is None or not destination.get("address") or source is None or not source.get("address"):
        raise _BadRequest("mtMessage needs destination and source addresses")
    if not text:
        raise _BadRequest("mtMessage needs a text")
    receipt, transaction = root.find("receiptOption"), root.find("transaction")
    return {"submitter_message_id": root.get("submitterMessageId"), "source": source.get("address"),
            "destination": destination.get("address"), "text": text,
            "callback_url": None if receipt is None else receipt.get("callbackUrl"),
            "transaction_id": None if transaction is None else transaction.get("id"),
            "source_type": source.get("type"), "destination_type": destination.get("type")}


def build_sms_api(account: AccountState, sms: SmsAggregatorState,
                  receipt_context: ssl.SSLContext | None = None) -> ASGIApp:
    """The aggregator's MT API behind the fault gate (modes, throttling, latency)."""
    api = _MtApi(account, sms, receipt_context)
    return FaultGate(Starlette(routes=[Route("/mt", api.mt, methods=["POST"])]), state=account)


# --- control -------------------------------------------------------------------------------------

def sms_control_routes(sms: SmsAggregatorState) -> list[Route]:
    async def rules(request: Request) -> Response:
        if request.method == "DELETE":
            sms.clear_rules()
            return JSONResponse({"rules": 0})
        try:
            body = json.loads(await request.body() or b"{}")
            sms.add_rule(rule_from_json(body))
        except (ValueError, TypeError, AttributeError) as exc:
            return JSONResponse({"error": f"a rule is {{action, destination?, source?, after_ms?, error_code?, "
                                          f"description?}}: {exc}"}, status_code=400)
        return JSONResponse({"added": body})

    async def messages(request: Request) -> Response:
        if request.method == "DELETE":
            sms.clear_messages()
        return JSONResponse([m.as_json() for m in sms.messages()])

    async def counts(request: Request) -> Response:
        return JSONResponse(sms.counts())

    async def receipts(request: Request) -> Response:
        return JSONResponse([asdict(r) for r in sms.receipts()])

    async def hold(request: Request) -> Response:
        sms.hold_receipts()
        return JSONResponse({"held": True})

    async def release(request: Request) -> Response:
        sms.release_receipts()
        return JSONResponse({"held": False})

    return [Route("/sms/rules", rules, methods=["POST", "DELETE"]),
            Route("/sms/messages", messages, methods=["GET", "DELETE"]),
            Route("/sms/counts", counts, methods=["GET"]),
            Route("/sms/receipts", receipts, methods=["GET"]),
            Route("/sms/receipts/hold", hold, methods=["POST"]),
            Route("/sms/receipts/release", release, methods=["POST"])]


def rule_from_json(body: dict[str, Any]) -> Rule:
    after_ms = body.get("after_ms", 0)
    if not isinstance(after_ms, int) or isinstance(after_ms, bool) or after_ms < 0:
        raise ValueError("after_ms must be a non-negative integer")
    return Rule(action=Action(body.get("action")), destination=body.get("destination"), source=body.get("source"),
                after_ms=after_ms, error_code=str(body.get("error_code", "1001")), description=body.get("description"),
                internal_error_code=body.get("internal_error_code"),
                answer_after_receipt=body.get("answer_after_receipt") is True)


# --- the aggregator as a whole ------------------------------------------------------------------------

class SimulatedSmsAggregator(SimulatedAccount):
    """The SMS aggregator for tests, the demo and the drill: MT API, receipts, fault and SMS control.

    Runs like a simulated account (`with aggregator:` or `.start()`/`.stop()` on a background thread,
    or `await serve_forever()`); `url` and `control_url` give the ports chosen. `receipt_context`
    verifies https callback URLs (default: the system's trust store).
    """

    def __init__(self, *, name: str = "sms", user_name: str, password: str, host: str = "127.0.0.1", port: int = 0,
                 control_port: int = 0, tls_cert: str | None = None, tls_key: str | None = None,
                 ssl_context: ssl.SSLContext | None = None, receipt_context: ssl.SSLContext | None = None,
                 default_after_ms: int = 0) -> None:
        self.sms = SmsAggregatorState(default_after_ms=default_after_ms)
        super().__init__(name=name, user_name=user_name, password=password, host=host, port=port,
                         control_port=control_port, tls_cert=tls_cert, tls_key=tls_key, ssl_context=ssl_context,
                         build_api=lambda state: build_sms_api(state, self.sms, receipt_context),
                         control_routes=sms_control_routes(self.sms))

    async def reset_async(self) -> None:
        await super().reset_async()
        self.sms.reset()

    # --- thread-safe conveniences for tests and the drill ---

    def rule(self, action: Action | str, *, destination: str | None = None, source: str | None = None,
             after_ms: int = 0, error_code: str = "1001", description: str | None = None,
             internal_error_code: str | None = None, answer_after_receipt: bool = False) -> None:
        self.sms.add_rule(Rule(Action(action), destination=destination, source=source, after_ms=after_ms,
                               error_code=error_code, description=description,
                               internal_error_code=internal_error_code, answer_after_receipt=answer_after_receipt))

    def messages(self) -> list[MtRecord]:
        return self.sms.messages()

    def counts(self) -> dict[str, dict[str, int]]:
        return self.sms.counts()

    def receipts(self) -> list[ReceiptRecord]:
        return self.sms.receipts()


async def run_sms_simulator(*, host: str, port: int, control_port: int, name: str, user_name: str, password: str,
                            tls_cert: str | None = None, tls_key: str | None = None,
                            default_after_ms: int = 0) -> None:
    """Serve the SMS aggregator until SIGINT or SIGTERM (`aftm-gateway simulate --sms`)."""
    aggregator = SimulatedSmsAggregator(name=name, user_name=user_name, password=password, host=host, port=port,
                                        control_port=control_port, tls_cert=tls_cert, tls_key=tls_key,
                                        default_after_ms=default_after_ms)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, aggregator.request_stop)
    await aggregator.serve_forever()


__all__ = ["Action", "Mode", "MtRecord", "ReceiptRecord", "Rule", "SimulatedSmsAggregator", "SmsAggregatorState",
           "build_sms_api", "run_sms_simulator", "sms_control_routes"]

"""SMS MT messages in the Vibes-style wire format: `mtMessage` in, `mtMessageResponse` out.

Vendor facts (Vibes "Alternate Delivery", the MT API and its delivery receipts):
- An app submits `<mtMessage submitterMessageId alternateDelivery>` with `destination@address` (E.164),
  `destination@carrier`, `source@address` (a short code `SC` or a long code `LC`), `text`,
  `receiptOption@callbackUrl` holding the level (`ALL`, `FINAL`, `ERROR`, `NONE`) and `transaction@id`.
- Answers and delivery receipts are `<mtMessageResponse messageId>`; an error carries `<type>`
  (`Carrier` when the carrier refused or failed it) and `<status isError><description><errorCode>`,
  with `<internalErrorCode>` after `errorCode` when the aggregator gives one.
- The gateway echoes the app's `transaction@id` as `<transaction id>` in its answer and in every
  callback about the message, and passes it, with the app's `destination@type`, to the aggregator.
- Callbacks for an original that was re-sent carry `fwdToMessageId`; those for the alternate carry
  `fwdFromMessageId`. Both messages share the `submitterMessageId`.
- Alternate delivery is not supported for concatenated messages: more than one segment, i.e. over
  160 GSM-7 characters (extension characters count twice) or over 70 UCS-2 code units.

The aggregator behind the gateway speaks the same format (`POST {url}/mt`, HTTP Basic): a 200 answer
names its messageId, a 4xx with `<type>Carrier</type>` is an immediate carrier refusal, and receipts
arrive later at the `callbackUrl` the gateway gave it. XML from outside is parsed with the project's
hardened parser (no DTD, no entity expansion, no network).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

from lxml import etree

from gateway.errors import BadInput, BadMessage
from gateway.protocols.inputs import loads_json
from gateway.protocols.xml import XmlRefused, parse_untrusted
from policies.outcome import Failure, Outcome

ReceiptLevel = Literal["ALL", "FINAL", "ERROR", "NONE"]
RECEIPT_LEVELS: tuple[str, ...] = get_args(ReceiptLevel)
UPSTREAM_PATH = "/mt"
CARRIER = "Carrier"
XML_TYPE = "application/xml"
JSON_TYPE = "application/json"

MAX_TEXT = 1600  # characters an app may submit (ten segments of GSM-7)
_MAX_ANSWER_BODY = 65_536  # bytes of an upstream answer worth parsing
_MAX_FIELD = 256  # characters in an id, address or carrier

# GSM 03.38 default alphabet (one septet each) and its extension table (escape + char: two septets).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")


@dataclass(frozen=True, slots=True, kw_only=True)
class MtMessage:
    """An app's MT submission, as read from XML or JSON (not yet validated against the config)."""

    text: str
    destination: str
    source: str
    submitter_message_id: str | None = None
    alternate_delivery: bool = False
    destination_carrier: str | None = None
    destination_type: str | None = None
    source_type: str | None = None
    callback_url: str | None = None
    receipt_level: ReceiptLevel = "NONE"
    transaction_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MtResponse:
    """An `mtMessageResponse` from the aggregator: a send's answer or a delivery receipt."""

    message_id: str | None
    type: str | None = None
    is_error: bool | None = None  # None: no <status> element
    description: str | None = None
    error_code: str | None = None
    internal_error_code: str | None = None

    @property
    def carrier_failure(self) -> bool:
        return self.is_error is True and (self.type or "").lower() == CARRIER.lower()


# --- segments -----------------------------------------------------------------------------------

def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def segment_count(text: str) -> int:
    """How many SMS segments `text` needs: 160/153 septets in GSM-7, else 70/67 UTF-16 code units."""
    if is_gsm7(text):
        units, single, part = sum(2 if ch in GSM7_EXTENSION else 1 for ch in text), 160, 153
    else:
        units, single, part = len(text.encode("utf-16-le")) // 2, 70, 67
    return 1 if units <= single else math.ceil(units / part)


# --- app submissions ----------------------------------------------------------------------------

def parse_mt_message_xml(body: bytes) -> MtMessage:
    """Read an app's `<mtMessage>`; raises BadMessage saying what is wrong."""
    try:
        root = parse_untrusted(body)
    except XmlRefused as exc:
        raise BadMessage(str(exc)) from None
    if root.tag != "mtMessage":
        raise BadMessage("expected an <mtMessage> document")
    destination, source = root.find("destination"), root.find("source")
    if destination is None or source is None:
        raise BadMessage("mtMessage needs <destination address> and <source address>")
    receipt = root.find("receiptOption")
    transaction = root.find("transaction")
    return MtMessage(
        submitter_message_id=_field(root.get("submitterMessageId"), "submitterMessageId"),
        alternate_delivery=_flag(root.get("alternateDelivery")),
        destination=_required(destination.get("address"), "destination address"),
        destination_carrier=_field(destination.get("carrier"), "destination carrier"),
        destination_type=_field(destination.get("type"), "destination type"),
        source=_required(source.get("address"), "source address"),
        source_type=_field(source.get("type"), "source type"),
        text=root.findtext("text") or "",
        callback_url=None if receipt is None else (receipt.get("callbackUrl") or None),
        receipt_level=_level(None if receipt is None else (receipt.text or "").strip() or None),
        transaction_id=None if transaction is None else _field(transaction.get("id"), "transaction id"),
    )


def parse_mt_message_json(body: bytes) -> MtMessage:
    """Read the JSON twin of `<mtMessage>`; raises BadMessage saying what is wrong."""
    try:
        data = loads_json(body)
    except BadInput as exc:
        raise BadMessage(str(exc)) from None
    if not isinstance(data, dict):
        raise BadMessage("the body must be a JSON object")
    destination, source = _object(data, "destination"), _object(data, "source")
    receipt, transaction = _object(data, "receiptOption", optional=True), _object(data, "transaction", optional=True)
    text = data.get("text", "")
    if not isinstance(text, str):
        raise BadMessage("text must be a string")
    _xml_safe(text, "text")
    callback = receipt.get("callbackUrl")
    if callback is not None and not isinstance(callback, str):
        raise BadMessage("receiptOption.callbackUrl must be a string")
    _xml_safe(callback or "", "receiptOption.callbackUrl")
    return MtMessage(
        submitter_message_id=_field(_string(data, "submitterMessageId"), "submitterMessageId"),
        alternate_delivery=_flag(data.get("alternateDelivery")),
        destination=_required(_string(destination, "address"), "destination address"),
        destination_carrier=_field(_string(destination, "carrier"), "destination carrier"),
        destination_type=_field(_string(destination, "type"), "destination type"),
        source=_required(_string(source, "address"), "source address"),
        source_type=_field(_string(source, "type"), "source type"),
        text=text,
        callback_url=callback or None,
        receipt_level=_level(_string(receipt, "level")),
        transaction_id=_field(_string(transaction, "id"), "transaction id"),
    )


def _object(data: dict[str, Any], key: str, *, optional: bool = False) -> dict[str, Any]:
    value = data.get(key)
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        raise BadMessage(f"{key} must be an object")
    return value


def _string(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # a numeric id or carrier is as good as its text
    raise BadMessage(f"{key} must be a string")


def _field(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    if len(value) > _MAX_FIELD:
        raise BadMessage(f"{what} is longer than {_MAX_FIELD} characters")
    return _xml_safe(value, what).strip() or None


# Characters XML 1.0 cannot carry (C0 controls but tab, newline and return; surrogates; U+FFFE/U+FFFF):
# JSON can spell them, and they could never reach the aggregator.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_safe(value: str, what: str) -> str:
    if _NOT_XML.search(value):
        raise BadMessage(f"{what} contains characters that XML cannot carry")
    return value


def _required(value: str | None, what: str) -> str:
    checked = _field(value, what)
    if not checked:
        raise BadMessage(f"{what} is required")
    return checked


def _flag(value: object) -> bool:
    if value is None or value is False or value == "false":
        return False
    if value is True or value == "true":
        return True
    raise BadMessage("alternateDelivery must be true or false")


def _level(value: str | None) -> ReceiptLevel:
    if value is None:
        return "NONE"
    level = value.strip().upper()
    if level not in RECEIPT_LEVELS:
        raise BadMessage(f"receiptOption must be one of {', '.join(RECEIPT_LEVELS)}")
    return level  # type: ignore[return-value]  # checked against the Literal's values just above


# --- answers to the app -------------------------------------------------------------------------

def render_accepted(message_id: str, submitter_message_id: str | None, *, as_json: bool,
                    transaction_id: str | None = None, warnings: tuple[str, ...] = ()) -> bytes:
    """The 201 answer; `warnings` say what of the request the gateway will not do (`<warning>` each)."""
    if as_json:
        answer: dict[str, Any] = {"messageId": message_id, "submitterMessageId": submitter_message_id}
        if transaction_id is not None:
            answer["transaction"] = {"id": transaction_id}
        if warnings:
            answer["warnings"] = list(warnings)
        return json.dumps(answer).encode()
    root = etree.Element("mtMessageResponse", messageId=message_id)
    _set(root, "submitterMessageId", submitter_message_id)
    _transaction(root, transaction_id)
    for warning in warnings:
        etree.SubElement(root, "warning").text = warning
    return _xml(root)


def render_error(description: str, *, submitter_message_id: str | None = None, as_json: bool) -> bytes:
    """The vendor's error shape: `<mtMessageResponse><status isError="true"><description>`."""
    if as_json:
        return json.dumps({"submitterMessageId": submitter_message_id,
                           "status": {"isError": True, "description": description}}).encode()
    root = etree.Element("mtMessageResponse")
    _set(root, "submitterMessageId", submitter_message_id)
    status = etree.SubElement(root, "status", isError="true")
    etree.SubElement(status, "description").text = description
    return _xml(root)


@dataclass(frozen=True, slots=True, kw_only=True)
class Callback:
    """One delivery receipt for the app, about the gateway's own message."""

    message_id: str
    submitter_message_id: str | None
    receipt_date: str  # ISO 8601 with milliseconds and offset, e.g. 2011-04-19T15:10:08.320-05:00
    type: str
    is_error: bool
    description: str
    error_code: str | None = None
    fwd_to_message_id: str | None = None
    fwd_from_message_id: str | None = None
    internal_error_code: str | None = None
    transaction_id: str | None = None


def render_callback(callback: Callback) -> bytes:
    root = etree.Element("mtMessageResponse", messageId=callback.message_id)
    _set(root, "submitterMessageId", callback.submitter_message_id)
    _set(root, "fwdToMessageId", callback.fwd_to_message_id)
    _set(root, "fwdFromMessageId", callback.fwd_from_message_id)
    root.set("receiptDate", callback.receipt_date)
    etree.SubElement(root, "type").text = callback.type
    status = etree.SubElement(root, "status", isError="true" if callback.is_error else "false")
    etree.SubElement(status, "description").text = callback.description
    if callback.error_code is not None:
        etree.SubElement(status, "errorCode").text = callback.error_code
    if callback.internal_error_code is not None:
        etree.SubElement(status, "internalErrorCode").text = callback.internal_error_code
    _transaction(root, callback.transaction_id)
    return _xml(root)


def render_status_xml(views: list[dict[str, Any]], *, single: bool) -> bytes:
    """Message status views (as the JSON API gives them) as XML: `<mtMessageStatus>` or a list of them."""
    elements = [_status_element(view) for view in views]
    if single:
        return _xml(elements[0])
    root = etree.Element("mtMessageStatusList")
    root.extend(elements)
    return _xml(root)


def _status_element(view: dict[str, Any]) -> etree._Element:
    root = etree.Element("mtMessageStatus", messageId=view["messageId"])
    for key in ("submitterMessageId", "fwdToMessageId", "fwdFromMessageId"):
        _set(root, key, view.get(key))
    root.set("alternateDelivery", "true" if view.get("alternateDelivery") else "false")
    for key in ("source", "destination"):
        node = etree.SubElement(root, key)
        for name, value in view[key].items():
            _set(node, name, value)
    etree.SubElement(root, "status").text = view["status"]
    history = etree.SubElement(root, "history")
    for entry in view["history"]:
        event = etree.SubElement(history, "event", time=entry["time"], kind=entry["kind"])
        _set(event, "status", entry.get("status"))
        etree.SubElement(event, "description").text = entry.get("description") or ""
        if entry.get("errorCode") is not None:
            etree.SubElement(event, "errorCode").text = entry["errorCode"]
    return root


# --- the upstream aggregator --------------------------------------------------------------------

def render_upstream_message(*, submitter_message_id: str, destination: str, destination_carrier: str | None,
                            source: str, source_type: str, text: str, receipt_url: str,
                            destination_type: str | None = None, transaction_id: str | None = None) -> bytes:
    """The `mtMessage` the aggregator gets: no alternateDelivery (the gateway does that), receipts ALL."""
    root = etree.Element("mtMessage", submitterMessageId=submitter_message_id)
    destination_node = etree.SubElement(root, "destination", address=destination, type=destination_type or "MDN")
    _set(destination_node, "carrier", destination_carrier)
    etree.SubElement(root, "source", address=source, type=source_type)
    etree.SubElement(root, "text").text = text
    etree.SubElement(root, "receiptOption", callbackUrl=receipt_url).text = "ALL"
    _transaction(root, transaction_id)
    return _xml(root)


def parse_response(body: bytes) -> MtResponse:
    """Read an aggregator's `<mtMessageResponse>` (a send's answer or a receipt); raises BadMessage."""
    if len(body) > _MAX_ANSWER_BODY:
        raise BadMessage("the mtMessageResponse is too large")
    try:
        root = parse_untrusted(body)
    except XmlRefused as exc:
        raise BadMessage(str(exc)) from None
    if root.tag != "mtMessageResponse":
        raise BadMessage("expected an <mtMessageResponse> document")
    status = root.find("status")
    is_error: bool | None = None
    if status is not None:
        flag = (status.get("isError") or "").strip().lower()
        if flag not in ("true", "false"):
            raise BadMessage('status needs isError="true" or "false"')
        is_error = flag == "true"
    return MtResponse(
        message_id=_field(root.get("messageId"), "messageId"),
        type=_field(root.findtext("type"), "type"),
        is_error=is_error,
        description=None if status is None else (status.findtext("description") or "").strip() or None,
        error_code=None if status is None else _field(status.findtext("errorCode"), "errorCode"),
        internal_error_code=None if status is None else _field(status.findtext("internalErrorCode"),
                                                               "internalErrorCode"),
    )


def classify(status: int, body: bytes, *, retry_after: float | None) -> Outcome:
    """Turn the aggregator's answer to `POST /mt` into an Outcome.

    401/403 mean the gateway's own credentials for that upstream were refused: nothing was sent, so
    another upstream may take the message. Any other 4xx is about the message itself (a carrier
    refusal or a rejection) and is final for it.
    """
    if status < 400:
        return Outcome.ok()
    if status == 429:
        return Outcome.throttled(retry_after, detail="HTTP 429")
    if status in (401, 403):
        return Outcome.account_failure(Failure.UNAVAILABLE, detail=f"HTTP {status}: credentials refused")
    if status in (502, 503, 504):
        return Outcome.account_failure(Failure.UNAVAILABLE, detail=f"HTTP {status}")
    if status >= 500:
        return Outcome.account_failure(Failure.SERVER_ERROR, detail=f"HTTP {status}")
    try:
        answer = parse_response(body)
    except BadMessage:
        return Outcome.client_error(f"HTTP {status}")
    kind = "carrier refused" if answer.carrier_failure else "rejected"
    return Outcome.client_error(f"{kind}: {answer.description or f'HTTP {status}'}")


# --- helpers ------------------------------------------------------------------------------------

def _set(element: etree._Element, name: str, value: object) -> None:
    if value is not None:
        element.set(name, str(value))


def _transaction(root: etree._Element, transaction_id: str | None) -> None:
    if transaction_id is not None:
        etree.SubElement(root, "transaction", id=transaction_id)


def _xml(root: etree._Element) -> bytes:
    # The declaration spelled as the vendor's examples spell it (lxml would use single quotes).
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(root, encoding="UTF-8")

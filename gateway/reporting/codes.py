"""The failure codes: the seed's bit flags, and the one table mapping every failure kind to them.

TextPower's failure reporting gives every failure an integer with one bit per failure type; flags
combine (a failed alternate delivery reported by the carrier is Redirect | Carrier = 2112). The
gateway records each failure it sees under exactly one `FailureKind`; `CODES` says which flags that
kind carries. The README's failure-code table is generated from `TABLE` (one place per fact).

Credential errors are never recorded: a caller whose credentials failed cannot be attributed to a
client, and recording them would let anyone write into a client's failure data. They are counted in
the `aftm_credential_failures_total` metric instead.
"""

from __future__ import annotations

import enum


class FailCode(enum.IntFlag):
    REQUEST = 1  # errors on an API submission (the request itself is wrong)
    NOT_SENT_DIRECT = 2  # errors that prevent a direct send ("Not Sent: ...")
    NOT_SENT_BULK = 4  # errors that prevent one send of a bulk send
    POST_OUT = 8  # posting out to the customer failed (callbacks)
    VOICE = 16  # a voice send failed (no voice channel here; kept for the customer's decoder)
    CARRIER_SUBMISSION_DIRECT = 32  # immediate carrier errors on a direct send
    CARRIER_SUBMISSION_REDIRECT = 64  # immediate carrier errors on a redirected (alternate) send
    CARRIER_SUBMISSION_QUEUED = 128  # a queued send could not be submitted
    CARRIER_SUBMISSION_BULK = 256  # immediate carrier errors on a bulk send
    CARRIER_DEFERRED = 512  # immediate carrier errors on a deferred send
    CARRIER = 2048  # delivery errors the carrier reports later
    OTHER = 32768  # errors that fit no specific category


class FailureKind(enum.Enum):
    MALFORMED_REQUEST = "malformed_request"
    UPSTREAM_REJECTED = "upstream_rejected"
    UPSTREAM_REJECTED_RECIPIENT = "upstream_rejected_recipient"
    RETRIES_EXHAUSTED = "retries_exhausted"
    OUTBOX_DEAD = "outbox_dead"
    CALLBACK_FAILED = "callback_failed"
    CARRIER_REFUSED = "carrier_refused"
    DELIVERY_FAILED = "delivery_failed"
    ALTERNATE_REFUSED = "alternate_refused"
    ALTERNATE_DELIVERY_FAILED = "alternate_delivery_failed"
    OTHER = "other"


# kind -> (code, what it means); the README's table is this table.
TABLE: dict[FailureKind, tuple[FailCode, str]] = {
    FailureKind.MALFORMED_REQUEST: (
        FailCode.REQUEST, "the app's request was refused as malformed or invalid (400/413/422), nothing sent"),
    FailureKind.UPSTREAM_REJECTED: (
        FailCode.NOT_SENT_DIRECT, "the account or aggregator rejected the send itself (a 4xx), not sent"),
    FailureKind.UPSTREAM_REJECTED_RECIPIENT: (
        FailCode.NOT_SENT_BULK, "one recipient of a multi-recipient send was rejected, the others were sent"),
    FailureKind.RETRIES_EXHAUSTED: (
        FailCode.NOT_SENT_DIRECT, "no account could take the send before its deadline and it was not queued"),
    FailureKind.OUTBOX_DEAD: (
        FailCode.CARRIER_SUBMISSION_QUEUED, "a queued send was given up on (older than outbox.max_age, or "
                                            "rejected on resubmission)"),
    FailureKind.CALLBACK_FAILED: (
        FailCode.POST_OUT, "a callback POST to the app's callbackUrl failed after every retry"),
    FailureKind.CARRIER_REFUSED: (
        FailCode.CARRIER_SUBMISSION_DIRECT, "the carrier refused an SMS at submission"),
    FailureKind.DELIVERY_FAILED: (
        FailCode.CARRIER, "the carrier reported later that an SMS was not delivered (failed receipt)"),
    FailureKind.ALTERNATE_REFUSED: (
        FailCode.CARRIER_SUBMISSION_REDIRECT, "the carrier refused the alternate (long code) SMS at submission"),
    FailureKind.ALTERNATE_DELIVERY_FAILED: (
        FailCode.CARRIER_SUBMISSION_REDIRECT | FailCode.CARRIER,
        "the alternate (long code) SMS was reported undelivered by the carrier"),
    FailureKind.OTHER: (FailCode.OTHER, "anything else the gateway could not deliver"),
}


def code_of(kind: FailureKind) -> FailCode:
    return TABLE[kind][0]


def flag_names(code: int) -> list[str]:
    """The names of the flags set in `code`, lowest first (unknown bits as numbers)."""
    names = [flag.name or str(flag.value) for flag in FailCode if code & flag.value]
    unknown = code & ~sum(flag.value for flag in FailCode)
    return names + ([str(unknown)] if unknown else [])


def markdown_table() -> str:
    """The README's failure-code table."""
    rows = ["| failure | code | flags | meaning |", "|---|---|---|---|"]
    for kind, (code, meaning) in TABLE.items():
        rows.append(f"| `{kind.value}` | {int(code)} | {' + '.join(flag_names(code))} | {meaning} |")
    return "\n".join(rows)

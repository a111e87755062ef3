"""The SMS message state machine, as pure functions of a message record and what just happened.

    Accepted ──upstream took it──▶ Sent ──receipt: delivered──▶ Delivered
        │                            │
        ├──rejected (not carrier)──▶ Rejected
        └──────┬─────────────────────┘
               └──carrier failure (immediate answer or failed receipt)──▶ Forwarded  (alternate created)
                                                                     └──▶ Failed     (no alternate)

A carrier failure forwards only an original (never an alternate) whose app asked for alternate
delivery, whose short code has a long code, and that fits in one segment: the vendor does not
alternate-deliver concatenated messages (the app is warned when it submits one). The long codes of
a short code take turns (`LongCodeTurns`); an alternate one of them refuses is sent from the next.
Final statuses (Delivered, Failed, Forwarded, Rejected) never change again; receipts for them are recorded and ignored.

Callbacks follow the receipt level the app chose: `ALL` gets every report (the original's failure
that led to a forward included), `FINAL` only final reports, `ERROR` only final reports of an
error, `NONE` nothing. A forwarded original's failure is not final: the alternate's report is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.protocols import sms
from gateway.store import MessageRecord, MessageStatus

# The statuses a send's answer or a receipt may still change.
OPEN = frozenset({MessageStatus.ACCEPTED, MessageStatus.SENT})


@dataclass(frozen=True, slots=True)
class Forward:
    """Re-send the message from `long_code` as a new, alternate message."""

    long_codes: tuple[str, ...]  # every long code of the short code, the one to use first first


@dataclass(frozen=True, slots=True)
class Fail:
    """The failure is final; `why_not_forwarded` explains a refused alternate delivery, if one was asked for."""

    why_not_forwarded: str | None = None


def after_carrier_failure(message: MessageRecord, alternate_senders: Mapping[str, Sequence[str]]) -> Forward | Fail:
    """What a carrier failure of `message` leads to: an alternate from a long code, or a final failure."""
    if message.fwd_from is not None or not message.alternate:
        return Fail()  # an alternate is never re-sent, and the app did not ask for one
    long_codes = alternate_senders.get(message.source) or ()
    if not long_codes:
        return Fail(f"alternate delivery is not possible: short code {message.source} has no long code")
    segments = sms.segment_count(message.text)
    if segments > 1:
        return Fail(f"alternate delivery is not supported for concatenated messages ({segments} segments)")
    return Forward(tuple(long_codes))


class LongCodeTurns:
    """Which long code of a short code an alternate leaves from next: each in turn (per replica)."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def order(self, short_code: str, long_codes: Sequence[str]) -> tuple[str, ...]:
        """All of `long_codes`, starting with the one whose turn it is; the next call starts one later."""
        if not long_codes:
            return ()
        start = self._next.get(short_code, 0) % len(long_codes)
        self._next[short_code] = start + 1
        return (*long_codes[start:], *long_codes[:start])


def submission_warnings(*, text: str, alternate: bool, source: str,
                        alternate_senders: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """What the app asked for that the gateway will not do, said in the 201 answer rather than later."""
    segments = sms.segment_count(text)
    if alternate and segments > 1 and source in alternate_senders:
        return (f"alternate delivery is not supported for concatenated messages ({segments} segments): "
                "the message is sent without it",)
    return ()


def wants_callback(level: str, *, final: bool, is_error: bool) -> bool:
    """Whether the app's receipt level asks for a callback about this report."""
    if level == "ALL":
        return True
    if level == "FINAL":
        return final
    if level == "ERROR":
        return final and is_error
    return False


def source_type(address: str, alternate_senders: Mapping[str, Sequence[str]]) -> str:
    """`SC` for a configured short code, `LC` for a long code (what the aggregator is told)."""
    return "SC" if address in alternate_senders else "LC"


def is_known_sender(address: str, alternate_senders: Mapping[str, Sequence[str]]) -> bool:
    """A configured short code, or one of the long codes configured for one."""
    return address in alternate_senders or any(address in codes for codes in alternate_senders.values())

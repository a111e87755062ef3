from __future__ import annotations

import pytest

from gateway.delivery.messages import (
    Fail,
    Forward,
    LongCodeTurns,
    after_carrier_failure,
    is_known_sender,
    source_type,
    wants_callback,
)
from gateway.store import MessageRecord, MessageStatus

SENDERS = {"98765": ["+13125550100", "+13125550101"], "55555": []}


def message(*, text: str = "123857AB12", alternate: bool = True, source: str = "98765",
            fwd_from: str | None = None) -> MessageRecord:
    return MessageRecord(id="m-1", channel="sms", client="app", submitter_id="s", source=source,
                         destination="+18475551212", destination_carrier=None, text=text,
                         status=MessageStatus.SENT, alternate=alternate, receipt_level="ALL", callback_url=None,
                         receipt_token_hash="h", created_at=0.0, updated_at=0.0, fwd_from=fwd_from)


def test_a_single_segment_original_with_the_flag_is_forwarded_to_its_long_codes() -> None:
    assert after_carrier_failure(message(), SENDERS) == Forward(("+13125550100", "+13125550101"))


def test_long_codes_take_turns_per_short_code() -> None:
    turns = LongCodeTurns()
    codes = SENDERS["98765"]
    assert [turns.order("98765", codes)[0] for _ in range(3)] == [codes[0], codes[1], codes[0]]
    assert turns.order("98765", codes) == (codes[1], codes[0])  # the rest follow, for failover
    assert turns.order("11111", ["+13125550199"]) == ("+13125550199",)


def test_no_forward_without_the_flag_or_for_an_alternate() -> None:
    assert after_carrier_failure(message(alternate=False), SENDERS) == Fail()
    assert after_carrier_failure(message(fwd_from="m-0", source="+13125550100"), SENDERS) == Fail()


def test_no_forward_without_a_long_code_and_the_reason_says_so() -> None:
    decision = after_carrier_failure(message(source="55555"), SENDERS)
    assert isinstance(decision, Fail) and "no long code" in (decision.why_not_forwarded or "")


@pytest.mark.parametrize(("text", "forwarded"), [
    ("A" * 160, True), ("A" * 161, False), ("€" * 80, True), ("€" * 81, False),
    ("é" * 160, True), ("Ж" * 70, True), ("Ж" * 71, False), ("😀" * 35, True), ("😀" * 36, False),
])
def test_concatenated_messages_are_not_forwarded(text: str, forwarded: bool) -> None:
    decision = after_carrier_failure(message(text=text), SENDERS)
    if forwarded:
        assert isinstance(decision, Forward)
    else:
        assert isinstance(decision, Fail) and "concatenated" in (decision.why_not_forwarded or "")


@pytest.mark.parametrize(("level", "final", "is_error", "expected"), [
    ("ALL", False, True, True), ("ALL", True, False, True), ("ALL", True, True, True),
    ("FINAL", False, True, False), ("FINAL", True, False, True), ("FINAL", True, True, True),
    ("ERROR", False, True, False), ("ERROR", True, False, False), ("ERROR", True, True, True),
    ("NONE", True, True, False), ("NONE", False, True, False),
])
def test_receipt_levels(level: str, final: bool, is_error: bool, expected: bool) -> None:
    assert wants_callback(level, final=final, is_error=is_error) is expected


def test_senders() -> None:
    assert source_type("98765", SENDERS) == "SC" and source_type("+13125550100", SENDERS) == "LC"
    assert is_known_sender("55555", SENDERS) and is_known_sender("+13125550101", SENDERS)
    assert not is_known_sender("11111", SENDERS) and not is_known_sender("+19999999999", SENDERS)

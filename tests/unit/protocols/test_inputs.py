"""App-chosen labels (X-Request-Id, Idempotency-Key): what the gateway will log, store and forward."""

from __future__ import annotations

import pytest

from gateway.protocols.inputs import is_label


@pytest.mark.parametrize("value", ["a", "ab", "order 42", "x" * 8, "~!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}"])
def test_printable_ascii_within_the_limit_is_a_label(value: str) -> None:
    assert is_label(value, max_length=8 if value == "x" * 8 else 64)


@pytest.mark.parametrize("value", ["", " ", " a", "a ", "a\tb", "a\nb", "caf\u00e9", "a\x7fb", "x" * 9])
def test_empty_padded_control_non_ascii_or_too_long_is_not(value: str) -> None:
    assert not is_label(value, max_length=8)

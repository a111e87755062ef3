"""The one parser for XML from outside: what it refuses and why, and the charset it reads by."""

from __future__ import annotations

import pytest

from gateway.protocols.xml import XmlRefused, parse_untrusted


@pytest.mark.parametrize(("hostile", "reason"), [
    (b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>', "DOCTYPE"),
    (b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]><x>&b;</x>', "DOCTYPE"),
    (b"<!DOCTYPE x><x/>", "DOCTYPE"),  # declares nothing, refused all the same
    (b"<not-closed>", "not well-formed"),
    (b"<x>&undeclared;</x>", "not well-formed"),
    (b"<x>" * 300 + b"</x>" * 300, "not well-formed"),  # past libxml2's depth limit (256)
])
def test_hostile_or_malformed_documents_are_refused_with_the_reason(hostile: bytes, reason: str) -> None:
    with pytest.raises(XmlRefused, match=reason):
        parse_untrusted(hostile)


def test_the_content_type_charset_decides_over_the_declaration() -> None:
    latin1 = '<?xml version="1.0" encoding="UTF-8"?><x>caf\u00e9</x>'.encode("iso-8859-1")
    assert parse_untrusted(latin1, charset="ISO-8859-1").text == "caf\u00e9"


def test_an_unknown_charset_is_refused() -> None:
    with pytest.raises(XmlRefused, match="unknown charset 'x-no-such'"):
        parse_untrusted(b"<x/>", charset="x-no-such")

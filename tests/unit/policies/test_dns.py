from __future__ import annotations

import pytest

from policies.dns import is_ip_literal, next_address, peer_still_valid


@pytest.mark.parametrize("host", ["127.0.0.2", "::1", "[::1]", "2001:db8::7"])
def test_ip_literals_skip_dns(host: str) -> None:
    assert is_ip_literal(host)


@pytest.mark.parametrize("host", ["localhost", "primary.test", "127.0.0.2.nip.io", ""])
def test_names_go_to_dns_localhost_included(host: str) -> None:
    assert not is_ip_literal(host)


def test_first_answered_address_goes_first() -> None:
    assert next_address(["10.0.0.1", "10.0.0.2"]) == "10.0.0.1"


def test_failed_addresses_are_skipped_in_answer_order() -> None:
    assert next_address(["10.0.0.1", "10.0.0.2", "10.0.0.3"], failed={"10.0.0.1"}) == "10.0.0.2"


def test_no_address_left_when_all_failed() -> None:
    assert next_address(["10.0.0.1", "10.0.0.2"], failed=["10.0.0.2", "10.0.0.1"]) is None
    assert next_address([]) is None


def test_last_peer_is_kept_while_the_answer_still_lists_it() -> None:
    assert next_address(["10.0.0.1", "10.0.0.2"], preferred="10.0.0.2") == "10.0.0.2"


def test_last_peer_is_left_when_the_answer_drops_it() -> None:
    assert next_address(["10.0.0.3", "10.0.0.1"], preferred="10.0.0.2") == "10.0.0.3"


def test_last_peer_that_failed_in_this_request_is_not_retried() -> None:
    assert next_address(["10.0.0.1", "10.0.0.2"], failed={"10.0.0.2"}, preferred="10.0.0.2") == "10.0.0.1"


def test_pooled_peer_is_valid_only_while_in_the_fresh_answer() -> None:
    assert peer_still_valid("10.0.0.1", ["10.0.0.1"])
    assert not peer_still_valid("10.0.0.1", ["10.0.0.2"])
    assert not peer_still_valid(None, ["10.0.0.2"])

from __future__ import annotations

import re

import pytest

from policies.callbacks import CallbackPolicy, CallbackRefused, parse_networks

DEFAULT = CallbackPolicy()


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "::1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "169.254.1.1",
    "fe80::1", "fc00::1", "fd00:ec2::254", "100.64.0.1", "100.100.100.200", "0.0.0.0", "::", "224.0.0.1",
    "255.255.255.255", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "not-an-address",
])
def test_inward_addresses_are_refused_by_default(address: str) -> None:
    assert not DEFAULT.address_allowed(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:93.184.216.34"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert DEFAULT.address_allowed(address)


def test_allow_networks_open_exactly_their_ranges() -> None:
    policy = CallbackPolicy.from_config(["127.0.0.0/8", "10.1.0.0/16", "fd12::/16"])
    assert policy.address_allowed("127.0.0.1") and policy.address_allowed("::ffff:127.0.0.5")
    assert policy.address_allowed("10.1.200.3") and not policy.address_allowed("10.2.0.1")
    assert policy.address_allowed("fd12::7") and not policy.address_allowed("::1")
    assert policy.allowed_addresses(["10.2.0.1", "10.1.0.9", "127.0.0.1"]) == ["10.1.0.9", "127.0.0.1"]


@pytest.mark.parametrize(("url", "why"), [
    ("http://127.0.0.1:8080/cb", "refused address"),
    ("http://[::1]/cb", "refused address"),
    ("http://10.0.0.5/cb", "refused address"),
    ("http://169.254.169.254/latest/meta-data/", "refused address"),
    ("http://localhost/cb", "localhost"),
    ("http://api.localhost./cb", "localhost"),
    ("ftp://example.com/cb", "http or https"),
    ("https:///nohost", "http or https"),
    ("https://user:secret@example.com/cb", "credentials"),
    ("https://example.com:99999/cb", "not a valid URL"),
    ("https://example.com/" + "a" * 3000, "longer than"),
])
def test_urls_refused_at_acceptance(url: str, why: str) -> None:
    with pytest.raises(CallbackRefused, match=why):
        DEFAULT.check_callback_url(url)


def test_names_are_left_to_connect_time_and_allowed_literals_pass() -> None:
    assert DEFAULT.check_callback_url("https://hooks.example.com/sms?x=1") == "hooks.example.com"
    local = CallbackPolicy.from_config(["127.0.0.0/8"])
    assert local.check_callback_url("http://127.0.0.1:8080/cb") == "127.0.0.1"
    assert local.check_callback_url("http://localhost:8080/cb") == "localhost"


def test_bad_networks_are_named() -> None:
    with pytest.raises(ValueError, match=re.escape("'10.0.0.0/33'")):
        parse_networks(["127.0.0.0/8", "10.0.0.0/33"])
    assert [str(n) for n in parse_networks(["10.1.2.3/8", "::1"])] == ["10.0.0.0/8", "::1/128"]

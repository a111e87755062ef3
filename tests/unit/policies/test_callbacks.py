from __future__ import annotations

import ipaddress
import re

import pytest

from policies.callbacks import CallbackPolicy, CallbackRefused, embedded_ipv4, parse_networks

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


def _teredo(server: str, client: str) -> str:
    """A Teredo address (RFC 4380): 2001:0000, the server's IPv4, flags and port, the client's IPv4 inverted."""
    value = (0x20010000 << 96) | (int(ipaddress.IPv4Address(server)) << 64) | (0x8000 << 48) | (0x63BF << 32)
    return str(ipaddress.IPv6Address(value | (int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF)))


def _nat64_local(v4: str, prefix_length: int) -> str:
    """64:ff9b:1::/48 with `v4` placed as RFC 6052 places it for a NAT64 prefix of `prefix_length`."""
    bits = int(ipaddress.IPv4Address(v4))
    base = int(ipaddress.IPv6Address("64:ff9b:1::"))
    if prefix_length == 48:
        value = base | ((bits >> 16) << 64) | ((bits & 0xFFFF) << 40)
    elif prefix_length == 56:
        value = base | ((bits >> 24) << 64) | ((bits & 0xFFFFFF) << 32)
    elif prefix_length == 64:
        value = base | (bits << 24)
    else:
        value = base | bits
    return str(ipaddress.IPv6Address(value))


INWARD_V4 = {"private": "10.1.2.3", "loopback": "127.0.0.1", "link-local": "169.254.1.1",
             "metadata": "169.254.169.254", "shared": "100.100.100.200"}
PUBLIC_V4 = "93.184.216.34"

# Every way an IPv6 address can carry an IPv4 destination, as a function of that IPv4 address, and the
# allow entry that names the prefix (a local-use NAT64 entry's length says where the IPv4 sits).
PREFIX_OF = {"ipv4-compatible": "::/96", "nat64": "64:ff9b::/96", "6to4": "2002::/16", "teredo-client": "2001::/32",
             "teredo-server": "2001::/32", "nat64-local/48": "64:ff9b:1::/48"}
CARRIERS = {
    "ipv4-compatible": lambda v4: f"::{v4}",
    "nat64": lambda v4: f"64:ff9b::{v4}",
    "nat64-local/48": lambda v4: _nat64_local(v4, 48),
    "nat64-local/56": lambda v4: _nat64_local(v4, 56),
    "nat64-local/64": lambda v4: _nat64_local(v4, 64),
    "nat64-local/96": lambda v4: _nat64_local(v4, 96),
    "6to4": lambda v4: str(ipaddress.IPv6Address((0x2002 << 112) | (int(ipaddress.IPv4Address(v4)) << 80) | 1)),
    "teredo-client": lambda v4: _teredo(PUBLIC_V4, v4),
    "teredo-server": lambda v4: _teredo(v4, PUBLIC_V4),
}


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("inner", INWARD_V4)
def test_an_ipv6_address_carrying_an_inward_ipv4_address_is_refused(carrier: str, inner: str) -> None:
    address = CARRIERS[carrier](INWARD_V4[inner])
    assert not DEFAULT.address_allowed(address)
    # Allowing the translation prefix still does not reach the inward IPv4 host behind it.
    assert not CallbackPolicy.from_config([_prefix(carrier, address)]).address_allowed(address)


@pytest.mark.parametrize("carrier", CARRIERS)
def test_translation_prefixes_are_refused_even_for_public_ipv4_unless_allowed(carrier: str) -> None:
    address = CARRIERS[carrier](PUBLIC_V4)
    assert not DEFAULT.address_allowed(address)
    assert CallbackPolicy.from_config([_prefix(carrier, address)]).address_allowed(address)


def _prefix(carrier: str, address: str) -> str:
    """The allow entry an operator writes for `carrier`: a local-use NAT64 one names its own length."""
    if carrier in PREFIX_OF:
        return PREFIX_OF[carrier]
    length = int(carrier.rsplit("/", 1)[1])
    return str(ipaddress.ip_network(f"{address}/{length}", strict=False))


def test_an_allowed_inward_ipv4_network_is_reachable_through_an_allowed_prefix_only() -> None:
    both = CallbackPolicy.from_config(["2002::/16", "127.0.0.0/8"])
    assert both.address_allowed("2002:7f00:1::")  # 6to4 of 127.0.0.1: the operator allowed both
    assert not CallbackPolicy.from_config(["127.0.0.0/8"]).address_allowed("2002:7f00:1::")
    assert not CallbackPolicy.from_config(["127.0.0.0/8"]).address_allowed("::127.0.0.1")


@pytest.mark.parametrize(("address", "carried"), [
    ("::a9fe:a9fe", ["169.254.169.254"]), ("::127.0.0.1", ["127.0.0.1"]), ("64:ff9b::10.0.0.1", ["10.0.0.1"]),
    ("2002:7f00:1::", ["127.0.0.1"]), ("2001:0:4136:e378:8000:63bf:3fff:fdd2", ["65.54.227.120", "192.0.2.45"]),
    ("::1", None), ("::", None), ("2606:4700:4700::1111", None), ("::ffff:127.0.0.1", None),
])
def test_embedded_ipv4_reads_each_prefix_as_its_rfc_says(address: str, carried: list[str] | None) -> None:
    found = embedded_ipv4(ipaddress.IPv6Address(address))
    assert (None if found is None else [str(a) for a in found]) == carried


@pytest.mark.parametrize("length", [48, 56, 64, 96])
def test_nat64_local_use_is_read_at_the_rfc_6052_position_of_its_prefix_length(length: int) -> None:
    address = ipaddress.IPv6Address(_nat64_local("10.1.2.3", length))
    assert embedded_ipv4(address, nat64_prefix_length=length) == (ipaddress.IPv4Address("10.1.2.3"),)

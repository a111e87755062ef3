"""Which callback URLs the gateway may call: pure checks of a URL and of the addresses it resolves to.

An app names its own callback URL, so without a rule the gateway would POST wherever it is told:
to its own admin port on loopback, to a database on the private network, to a cloud metadata
service. The rule, applied twice:

- when a message is accepted (`check_callback_url`): an http(s) URL with a host; a literal address
  or a `localhost` name must be allowed (below);
- at connect time (`allowed_addresses`): every address the name resolves to *now* is checked, and
  only allowed ones are connected to, so a name that later resolves inward (DNS rebinding) gets
  nothing.

An address is allowed when it is globally routable and not a metadata endpoint, or when it lies in
one of the operator's `allow_networks` (e.g. `127.0.0.0/8` for a test receiver). Refused otherwise:
loopback, link-local (169.254/16, fe80::/10), private (10/8, 172.16/12, 192.168/16, fc00::/7),
shared (100.64/10), reserved, multicast and unspecified addresses. IPv4-mapped IPv6 addresses are
judged as the IPv4 address they carry.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud instance metadata services that are globally routable, so `is_global` alone would pass them.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset({
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack (also link-local)
    ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
    ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
})

MAX_URL_LENGTH = 2048


class CallbackRefused(ValueError):
    """The callback URL or the address it resolves to is not one the gateway may call."""


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDRs from configuration (`10.0.0.0/8`, `::1/128`, a bare address); raises ValueError naming the bad one."""
    networks: list[IPNetwork] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not a network in CIDR notation") from None
    return tuple(networks)


@dataclass(frozen=True, slots=True)
class CallbackPolicy:
    """The callback rule with the operator's exceptions; build with `CallbackPolicy.from_config`."""

    allow_networks: tuple[IPNetwork, ...] = field(default=())

    @classmethod
    def from_config(cls, allow_networks: Iterable[str]) -> CallbackPolicy:
        return cls(allow_networks=parse_networks(allow_networks))

    def address_allowed(self, address: str | IPAddress) -> bool:
        """True when the gateway may connect to `address`."""
        try:
            ip = ipaddress.ip_address(address.strip("[]") if isinstance(address, str) else address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in network for network in self.allow_networks):
            return True
        return ip.is_global and not ip.is_multicast and ip not in METADATA_ADDRESSES

    def check_callback_url(self, url: str) -> str:
        """The URL's host when the URL may be accepted; raises CallbackRefused saying why not.

        Names other than `localhost` are judged at connect time, by what they resolve to then.
        """
        if len(url) > MAX_URL_LENGTH:
            raise CallbackRefused(f"the callback URL is longer than {MAX_URL_LENGTH} characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise CallbackRefused("the callback URL is not a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CallbackRefused("the callback URL must be an http or https URL with a host")
        if parts.username is not None or parts.password is not None:
            raise CallbackRefused("the callback URL must not carry credentials")
        if port == 0:
            raise CallbackRefused("the callback URL names port 0")
        host = parts.hostname
        if _is_localhost_name(host):
            if not self.address_allowed("127.0.0.1"):
                raise CallbackRefused("the callback URL names this machine (localhost), which is not allowed")
            return host
        if is_address(host) and not self.address_allowed(host):
            raise CallbackRefused(f"the callback URL names a refused address {host} "
                                  "(loopback, link-local, private or metadata)")
        return host

    def allowed_addresses(self, answer: Sequence[str]) -> list[str]:
        """The resolved addresses the gateway may connect to, in the answer's order (may be empty)."""
        return [address for address in answer if self.address_allowed(address)]


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _is_localhost_name(host: str) -> bool:
    # RFC 6761: localhost and every name under it resolve to loopback, whatever DNS would say.
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")

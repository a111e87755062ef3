"""Which outbound URLs the gateway may call: pure checks of a URL and of the addresses it resolves to.

Apps name their callback URLs and customers their FDXML post URLs, so without a rule the gateway
would POST wherever it is told: to its own admin port on loopback, to a database on the private
network, to a cloud metadata service. This module is the one rule for every URL the gateway did not
choose itself; `gateway.upstreams.outbound` applies it to each POST. Applied twice:

- when a URL is accepted (`check_callback_url`): an http(s) URL with a host; a literal address
  or a `localhost` name must be allowed (below);
- at connect time (`allowed_addresses`): every address the name resolves to *now* is checked, and
  only allowed ones are connected to, so a name that later resolves inward (DNS rebinding) gets
  nothing.

An address is allowed when it is globally routable and not a metadata endpoint, or when it lies in
one of the operator's `allow_networks` (e.g. `127.0.0.0/8` for a test receiver). Refused otherwise:
loopback, link-local (169.254/16, fe80::/10), private (10/8, 172.16/12, 192.168/16, fc00::/7),
shared (100.64/10), reserved, multicast and unspecified addresses.

IPv6 addresses that carry an IPv4 address reach that IPv4 host, so the IPv4 address decides:

- IPv4-mapped (`::ffff:0:0/96`): the socket connects over IPv4, so the address is judged exactly as
  the IPv4 address it carries (`allow_networks: [127.0.0.0/8]` allows `::ffff:127.0.0.1`).
- Translation prefixes: IPv4-compatible (`::/96`, but not `::` and `::1`), NAT64 (`64:ff9b::/96`,
  RFC 6052, and the local-use `64:ff9b:1::/48`, RFC 8215), 6to4 (`2002::/16`, the IPv4 in bits
  16-47) and Teredo (`2001::/32`: server IPv4 in bits 32-63, client IPv4 in the last 32 bits
  inverted). A translator or relay, not the address's owner, decides where such a packet lands, and
  Python calls most of these ranges global. So an address in them is refused outright unless a
  network in `allow_networks` contains it, AND, even then, every IPv4 address it may carry must be
  allowed on its own. Allowing `2002::/16` reaches public 6to4 hosts, never `2002:7f00:1::`
  (127.0.0.1) unless `127.0.0.0/8` is allowed too. A local-use NAT64 prefix may be any RFC 6052
  length from /48 to /96: the allow entry that names it gives the length, hence where the IPv4 sits
  (allowing `64:ff9b:1::/48` reads the /48 layout; name your /96 to have the /96 layout read).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from policies.dns import is_ip_literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud instance metadata services that are globally routable, so `is_global` alone would pass them.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset({
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack (also link-local)
    ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
    ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
})

# Prefixes whose addresses carry an IPv4 address a translator or relay delivers to (module docstring).
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
TEREDO = ipaddress.IPv6Network("2001::/32")
TRANSLATION_PREFIXES = (IPV4_COMPATIBLE, NAT64, NAT64_LOCAL, SIX_TO_FOUR, TEREDO)
_NOT_COMPATIBLE = ipaddress.IPv6Network("::/127")  # `::` and `::1` are themselves, not IPv4-compatible
# RFC 6052 §2.2: where the IPv4 bits sit for each NAT64 prefix length (bits 64-71 are always zero).
_RFC6052_SPANS = {48: ((48, 64), (72, 88)), 56: ((56, 64), (72, 96)), 64: ((72, 104),), 96: ((96, 128),)}

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
        """True when the gateway may connect to `address` (the module docstring states the rule)."""
        try:
            ip = ipaddress.ip_address(address.strip("[]") if isinstance(address, str) else address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                return self._plain_allowed(ip.ipv4_mapped)
            covering = [network.prefixlen for network in self.allow_networks if ip in network]
            carried = embedded_ipv4(ip, nat64_prefix_length=max(covering, default=96))
            if carried is not None:
                return bool(covering) and all(self._plain_allowed(v4) for v4 in carried)
        return self._plain_allowed(ip)

    def _plain_allowed(self, ip: IPAddress) -> bool:
        if self._in_allow_networks(ip):
            return True
        return ip.is_global and not ip.is_multicast and ip not in METADATA_ADDRESSES

    def _in_allow_networks(self, ip: IPAddress) -> bool:
        return any(ip in network for network in self.allow_networks)

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


def embedded_ipv4(ip: ipaddress.IPv6Address, *,
                  nat64_prefix_length: int = 96) -> tuple[ipaddress.IPv4Address, ...] | None:
    """The IPv4 addresses `ip` carries when it lies in a translation prefix; None when it does not.

    A local-use NAT64 address (64:ff9b:1::/48) is read where RFC 6052 puts the IPv4 bits for a NAT64
    prefix of `nat64_prefix_length` (the longest of /48, /56, /64, /96 not longer than it; /96 below
    /48). IPv4-mapped addresses are not translation addresses (they are IPv4 on the wire).
    """
    value = int(ip)
    if ip in TEREDO:
        assert ip.teredo is not None
        return ip.teredo  # (server, client), the client's bits already inverted back
    if ip in SIX_TO_FOUR:
        assert ip.sixtofour is not None
        return (ip.sixtofour,)
    if ip in NAT64_LOCAL:
        length = max((n for n in _RFC6052_SPANS if n <= nat64_prefix_length), default=96)
        return (ipaddress.IPv4Address(_bits(value, _RFC6052_SPANS[length])),)
    if ip in NAT64 or (ip in IPV4_COMPATIBLE and ip not in _NOT_COMPATIBLE):
        return (ipaddress.IPv4Address(value & 0xFFFFFFFF),)
    return None


def _bits(value: int, spans: tuple[tuple[int, int], ...]) -> int:
    """The bits of a 128-bit `value` in the [start, end) spans (bit 0 the most significant), joined."""
    joined = 0
    for start, end in spans:
        width = end - start
        joined = (joined << width) | ((value >> (128 - end)) & ((1 << width) - 1))
    return joined


is_address = is_ip_literal  # a host given as an address (brackets allowed) is judged as that address


def _is_localhost_name(host: str) -> bool:
    # RFC 6761: localhost and every name under it resolve to loopback, whatever DNS would say.
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")

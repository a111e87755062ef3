"""The request target an app sent, confined before any of it goes upstream.

The gateway forwards `/rest/...` calls to an account with that account's own token, so the path an
app names must stay a path under the API it was checked against. Decoded paths lie: `%2e%2e` decodes
to a dot segment that the upstream URL builder (httpx) then removes, `%2f` adds a segment, `%3f` and
`%23` become a query and a fragment, and Java servers read `..;` as `..`. So the check reads the RAW
target (ASGI `raw_path` and `query_string`, as they were on the request line) and the gateway sends
exactly those bytes: `upstream_url` builds the account's URL from them and verifies that the URL the
transport will put on the request line is byte for byte what was checked.

Refused in the path: dot segments (plain, percent-encoded in any case or mix, or with `;params`),
encoded `/`, `\\`, `?`, `#` and control characters, an encoded `%` that a second decoding would turn
into an escape (`%252e`), raw `\\`, anything outside printable ASCII, a `%` that does not start a valid
escape, and escapes that are not UTF-8 (overlong `%c0%ae` is `.` to a lenient decoder). Legitimate
escapes (`%20`, `%C3%A9`, `%2B`, `50%25off`) pass unchanged. The query is forwarded as sent, and
refused when it has a `#`, a control or non-ASCII byte, or an invalid escape.
"""

from __future__ import annotations

import functools
import re
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import httpx

from gateway.errors import UnsafeTarget

# Printable ASCII but space (0x21-0x7e): anything else on the request line is refused. uvicorn drops a
# raw `#` and what follows, so a raw fragment never reaches the gateway (nor, therefore, upstream).
_PRINTABLE = re.compile(rb"^[\x21-\x7e]*$")
_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")  # a % that does not start %XX
# Encoded octets that would change the target's structure once a server decodes it: `/`, `\`, `?`,
# `#`, `;` (path parameters), controls, DEL and NUL; and `%` where it would start an escape once
# decoded (`%252e` is `%2e` to a server that decodes twice). `50%25off` stays a campaign name.
_STRUCTURAL = re.compile(rb"%(?:2[Ff]|5[Cc]|3[Ff]|23|25(?=[0-9A-Fa-f]{2})|3[Bb]|[01][0-9A-Fa-f]|7[Ff])")
_DOT = re.compile(rb"^(?:\.|%2[Ee]){1,2}$")


def checked_path(raw_path: bytes) -> str:
    """The raw path, as text, once it is known to name exactly the resource it seems to; else UnsafeTarget."""
    if not raw_path.startswith(b"/"):
        raise UnsafeTarget("the path must start with /")
    if _PRINTABLE.match(raw_path) is None:
        raise UnsafeTarget("the path may hold only printable ASCII; percent-encode anything else")
    if b"\\" in raw_path:
        raise UnsafeTarget("the path may not contain a backslash")
    if _ESCAPE.search(raw_path) is not None:
        raise UnsafeTarget("the path has a % that does not start a valid %XX escape")
    if (structural := _STRUCTURAL.search(raw_path)) is not None:
        raise UnsafeTarget(f"the path may not contain the encoded character {structural.group().decode()}")
    for segment in raw_path.split(b"/"):
        if _DOT.match(segment.split(b";", 1)[0]) is not None:
            raise UnsafeTarget("the path may not contain . or .. segments")
    try:  # overlong forms (`%c0%ae` is `.` to a lenient decoder) and stray bytes are not UTF-8
        unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafeTarget("the path must percent-encode UTF-8 text") from None
    return raw_path.decode("ascii")


def checked_query(query: bytes) -> str:
    """The raw query string, as text, when it carries no fragment, control byte or broken escape."""
    if _PRINTABLE.match(query) is None or b"#" in query:
        raise UnsafeTarget("the query may hold only printable ASCII without #; percent-encode anything else")
    if _ESCAPE.search(query) is not None:
        raise UnsafeTarget("the query has a % that does not start a valid %XX escape")
    return query.decode("ascii")


def checked_target(raw_path: bytes, query: bytes) -> str:
    """`path[?query]` from a request's raw parts, both checked."""
    path = checked_path(raw_path)
    return f"{path}?{checked_query(query)}" if query else path


_SCOPE_KEY = "aftm.checked_target"


def target_of(scope: MutableMapping[str, Any]) -> str:
    """The request's checked raw target, `path[?query]`, checked once per request and kept in its scope.

    The target guard checks every request before routing; the REST route reads the same result.
    Raises UnsafeTarget when the target is refused.
    """
    target = scope.get(_SCOPE_KEY)
    if target is None:
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        target = scope[_SCOPE_KEY] = checked_target(raw_path, scope["query_string"])
    return str(target)


@functools.lru_cache(maxsize=1024)
def upstream_url(origin: str, target: str) -> httpx.URL:
    """`origin` (an account's endPoint) with `target` as its request target, exactly as given.

    Raises UnsafeTarget when the target is not one `checked_target` passes (a queued call stored by an
    older gateway) or when the URL would put anything else on the request line.

    A pure function of its two strings, kept for the last 1024 pairs: building and verifying the URL
    (two parses by httpx) cost ~30 µs a call, and a gateway sends to few endPoints and targets. A
    refusal is raised again each time (exceptions are not cached); httpx.URL is immutable.
    """
    path, _, query = target.partition("?")
    try:
        checked = checked_target(path.encode("ascii"), query.encode("ascii")).encode("ascii")
    except UnicodeEncodeError:
        raise UnsafeTarget("the path may hold only printable ASCII; percent-encode anything else") from None
    base = httpx.URL(origin)
    expected = base.raw_path.split(b"?", 1)[0].rstrip(b"/") + checked  # an endPoint with a path keeps it
    url = base.copy_with(raw_path=expected)
    if url.raw_path != expected:
        raise UnsafeTarget("the upstream URL would not carry the checked path unchanged")
    return url


# What httpx left unencoded in a path: a decoded path queued by an older gateway is encoded the same way.
_PATH_SAFE = "/!$&'()*+,;=:@~"


def queued_target(stored: str) -> str:
    """A queued REST call's target, checked again before it goes upstream.

    Gateways before store migration 6 queued the DECODED path (`wel come`), which the upstream client
    percent-encoded when it sent it; such a path is encoded the same way here, so a send accepted
    then is delivered now. Either way the result passes `checked_target` or raises UnsafeTarget: a
    decoded `..` stays refused.
    """
    path, _, query = stored.partition("?")
    try:
        return checked_target(path.encode("ascii"), query.encode("ascii"))
    except (UnsafeTarget, UnicodeEncodeError):
        requoted = quote(path, safe=_PATH_SAFE).encode("ascii")
        try:
            return checked_target(requoted, query.encode("ascii"))
        except UnicodeEncodeError:
            raise UnsafeTarget("the query may hold only printable ASCII") from None

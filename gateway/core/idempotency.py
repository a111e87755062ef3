"""What makes two app requests one send: the same Idempotency-Key for the same request.

The key is the app's promise "this is a repeat". The gateway holds it to that promise instead of
trusting it: each key is remembered with a fingerprint of the request it was first used for (surface,
method, target and body), and a request that reuses the key for anything else is refused
(`KeyReused`: REST 422, a SOAP client fault) rather than answered with the first send's outcome,
which told the app that a send that never left the gateway had gone out. This is the IETF draft
"The Idempotency-Key HTTP Header Field" (section 2.7: "422 Unprocessable Content" for a reused key).

A key the gateway cannot hold anyone to (empty, as an unset template variable gives; over
MAX_LENGTH; two different values on one request) is refused with a 400 (`BadInput`): an empty key
used to make every send of a client after the first a replay of the first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from gateway.errors import BadInput
from gateway.protocols.inputs import is_label

HEADER = "idempotency-key"
MAX_LENGTH = 255  # a UUID is 36; Stripe's keys are at most 255


def key_of(values: Sequence[str]) -> str | None:
    """The request's Idempotency-Key (`values`: every value of the header), None when it sent none.

    BadInput when the key is unusable: empty, longer than MAX_LENGTH, not printable ASCII, or two
    different values (the same value repeated is one key).
    """
    distinct = set(values)
    if not distinct:
        return None
    if len(distinct) > 1:
        raise BadInput("send one Idempotency-Key per request, not several different ones")
    (key,) = distinct
    if not is_label(key, max_length=MAX_LENGTH):
        raise BadInput(f"the Idempotency-Key must be 1 to {MAX_LENGTH} printable ASCII characters")
    return key


def fingerprint(protocol: str, method: str, target: str, body: bytes) -> str:
    """What a key was first used for: SHA-256 over the surface, method, raw target and body."""
    digest = hashlib.sha256()
    for part in (protocol.encode(), method.upper().encode(), target.encode("utf-8", "surrogateescape")):
        digest.update(len(part).to_bytes(8, "big") + part)
    digest.update(body)
    return digest.hexdigest()


def same_request(recorded: str | None, fingerprint_now: str) -> bool:
    """Whether a record's fingerprint allows this request (a record from before fingerprints does)."""
    return recorded is None or recorded == fingerprint_now

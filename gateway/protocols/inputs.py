"""Values apps send, parsed with bounds: JSON of bounded nesting, finite numbers within a range.

`json.loads` of 100,000 nested brackets raises RecursionError (not ValueError), and `int("9" * 30)`
or `float("inf")` parse fine and then overflow whatever uses them (SQLite, datetime, the chart), so
each of those ended as a 500. Every place that reads app JSON or a numeric query parameter goes
through here and gets `BadInput`, a ValueError whose message says what to send instead.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from gateway.errors import BadInput

MAX_JSON_DEPTH = 64  # a Responsys send or an mtMessage nests 5 deep; nothing real comes close
_LABEL = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")  # printable ASCII, spaces inside only


def loads_json(body: bytes | str) -> Any:
    """Parse app JSON nested at most MAX_JSON_DEPTH deep; BadInput when invalid or deeper."""
    opening = body.count(b"[") + body.count(b"{") if isinstance(body, bytes) else body.count("[") + body.count("{")
    try:
        value = json.loads(body)
    except RecursionError:
        raise BadInput(f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise BadInput(f"the body is not valid JSON: {exc}") from None
    if opening > MAX_JSON_DEPTH and _deeper_than(value, MAX_JSON_DEPTH):  # fewer brackets: cannot be deeper
        raise BadInput(f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return False


def bounded_int(text: str, *, name: str, low: int, high: int) -> int:
    """`text` as a whole number in [low, high]; BadInput otherwise (never an overflow later)."""
    stripped = text.strip()
    if not stripped.lstrip("+-").isdigit() or len(stripped) > 20:
        raise BadInput(f"{name} must be a whole number between {low} and {high}")
    number = int(stripped)
    if not low <= number <= high:
        raise BadInput(f"{name} must be a whole number between {low} and {high}")
    return number


def finite_float(text: str, *, name: str, low: float, high: float) -> float:
    """`text` as a finite number in [low, high] (no nan, no inf); BadInput otherwise."""
    try:
        number = float(text)
    except ValueError:
        raise BadInput(f"{name} must be a number between {low:g} and {high:g}") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise BadInput(f"{name} must be a number between {low:g} and {high:g}")
    return number


def is_label(value: str, *, max_length: int) -> bool:
    """True for 1 to `max_length` printable ASCII characters, with no space at either end.

    What an app-chosen header label (X-Request-Id, Idempotency-Key) must be before the gateway logs,
    stores or forwards it: no control characters, nothing that is not ASCII, no payload-sized value.
    """
    return 0 < len(value) <= max_length and _LABEL.fullmatch(value) is not None

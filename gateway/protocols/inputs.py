"""Values apps send, parsed with bounds: JSON of bounded nesting, finite numbers within a range.

`json.loads` of 100,000 nested brackets raises RecursionError (not ValueError), and `int("9" * 30)`
or `float("inf")` parse fine and then overflow whatever uses them (SQLite, datetime, the chart), so
each of those ended as a 500. Every place that reads app JSON or a numeric query parameter goes
through here and gets `BadInput`, a ValueError whose message says what to send instead.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_JSON_DEPTH = 64  # a Responsys send or an mtMessage nests 5 deep; nothing real comes close


class BadInput(ValueError):
    """The app sent a value the gateway will not use; the message is a sentence for the app."""


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

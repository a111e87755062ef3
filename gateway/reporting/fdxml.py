"""The FDXML document posted to customers: `<FailData Entries="N"><FailEntry .../>...</FailData>`.

Exactly the seed's shape: one `FailEntry` element per failure with the attributes ID, Keyword,
FailCode, Numbers, SendID, PrimaryFailDate, PrimaryError, SecondaryFailDate, SecondaryError, in that
order; dates as `8/4/2013 1:23:01 PM` (the gateway writes UTC); an empty string for what is unknown.
Attribute values are escaped for XML (`&`, `<`, `>`, `"`, and newlines and tabs as character
references so a parser gives them back unchanged); characters XML 1.0 cannot carry are dropped.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

FORM_FIELD = "FDXML"
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
_ESCAPE = re.compile("[&<>\"\n\r\t]")


@dataclass(frozen=True, slots=True)
class FailEntry:
    id: int
    keyword: str
    fail_code: int
    numbers: str
    send_id: str
    primary_fail_date: float | None
    primary_error: str
    secondary_fail_date: float | None
    secondary_error: str


def fail_date(epoch: float | None) -> str:
    """`8/4/2013 1:23:01 PM` in UTC; "" for no date."""
    if epoch is None:
        return ""
    t = time.gmtime(epoch)
    hour = t.tm_hour % 12 or 12
    return f"{t.tm_mon}/{t.tm_mday}/{t.tm_year} {hour}:{t.tm_min:02d}:{t.tm_sec:02d} {'AM' if t.tm_hour < 12 else 'PM'}"


def attribute(value: object) -> str:
    text = _NOT_XML.sub("", str(value))
    return _ESCAPE.sub(lambda m: _ESCAPES[m.group()], text)


def render(entries: Sequence[FailEntry]) -> str:
    lines = [f'<FailData Entries="{len(entries)}">']
    for e in entries:
        fields = (("ID", e.id), ("Keyword", e.keyword), ("FailCode", e.fail_code), ("Numbers", e.numbers),
                  ("SendID", e.send_id), ("PrimaryFailDate", fail_date(e.primary_fail_date)),
                  ("PrimaryError", e.primary_error), ("SecondaryFailDate", fail_date(e.secondary_fail_date)),
                  ("SecondaryError", e.secondary_error))
        lines.append("<FailEntry " + " ".join(f'{name}="{attribute(value)}"' for name, value in fields) + " />")
    lines.append("</FailData>")
    return "\n".join(lines)


def form_body(entries: Sequence[FailEntry]) -> bytes:
    """The POST body: `FDXML=<FailData ...>` as application/x-www-form-urlencoded."""
    return urlencode({FORM_FIELD: render(entries)}).encode("ascii")

"""The drill's arithmetic: which sends arrived once, twice or never, per phase, and the printed table.

Each send lands in exactly one of `once`, `duplicates`, `lost` (the gateway accepted it: 200 or 202)
or `refused` (the gateway answered an error, so the app knows it was not taken). Failovers, failbacks
and upstream logins are differences of counters read at phase boundaries.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from gateway_tools.drill.load import SendRecord


@dataclass(frozen=True)
class Snapshot:
    """Counters read at a phase boundary; a phase's numbers are the difference of two."""

    switches: Counter[str]
    rest_logins: int
    soap_logins: int


@dataclass
class Row:
    name: str
    sent: int = 0
    once: int = 0
    duplicates: int = 0
    keyed_duplicates: int = 0
    lost: int = 0
    refused: int = 0
    refused_delivered: int = 0
    queued: int = 0
    failovers: int = 0
    failbacks: int = 0
    rest_logins: int = 0
    soap_logins: int = 0
    latencies: list[float] = field(default_factory=list)

    def add(self, other: Row) -> None:
        for name in ("sent", "once", "duplicates", "keyed_duplicates", "lost", "refused", "refused_delivered",
                     "queued", "failovers", "failbacks", "rest_logins", "soap_logins"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latencies.extend(other.latencies)


def tally(records: list[SendRecord], arrived: Counter[str], names: list[str],
          snapshots: list[Snapshot]) -> list[Row]:
    """One row per phase (plus the drain) from the app's records and the accounts' deliveries.

    Each send lands in exactly one of: once, duplicates, lost (accepted sends) or refused.
    """
    rows = [Row(name) for name in names]
    for record in records:
        row = rows[record.phase]
        row.sent += 1
        row.latencies.append(record.latency)
        count = arrived.get(record.recipient, 0)
        if not record.accepted:
            row.refused += 1
            row.refused_delivered += count > 0
            continue
        row.queued += record.queued
        if count == 0:
            row.lost += 1
        elif count == 1:
            row.once += 1
        else:
            row.duplicates += 1
            row.keyed_duplicates += record.keyed
    for row, before, after in zip(rows, snapshots, snapshots[1:], strict=False):
        switched = after.switches - before.switches
        row.failovers = switched["failover"] + switched["last_resort"]
        row.failbacks = switched["failback"]
        row.rest_logins = after.rest_logins - before.rest_logins
        row.soap_logins = after.soap_logins - before.soap_logins
    return rows


def _percentile(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000:.0f}"


_COLUMNS = ("phase", "sent", "once", "dup", "lost", "refused", "queued", "failover", "failback", "logins R+S",
            "p50 ms", "p99 ms")
_WIDTHS = (27, 6, 6, 5, 5, 8, 7, 9, 9, 11, 7, 7)


def _line(cells: tuple[object, ...]) -> str:
    first, *rest = (str(c) for c in cells)
    return first.ljust(_WIDTHS[0]) + "".join(c.rjust(w) for c, w in zip(rest, _WIDTHS[1:], strict=True))


def _cells(row: Row) -> tuple[object, ...]:
    return (row.name, row.sent, row.once, row.duplicates, row.lost, row.refused, row.queued, row.failovers,
            row.failbacks, f"{row.rest_logins}+{row.soap_logins}", _percentile(row.latencies, 0.5),
            _percentile(row.latencies, 0.99))


def render(rows: list[Row]) -> tuple[str, Row]:
    total = Row("total")
    for row in rows:
        total.add(row)
    rule = "-" * sum(_WIDTHS)
    lines = [_line(_COLUMNS), rule, *(_line(_cells(row)) for row in rows), rule, _line(_cells(total))]
    return "\n".join(lines), total


def explain(records: list[SendRecord], arrived: Counter[str], phases: list[str]) -> list[str]:
    """A few examples of each kind of trouble, so a failing drill names its sends."""
    lines: list[str] = []
    refusals = Counter(r.detail or f"HTTP {r.status}" for r in records if not r.accepted)
    if refusals:
        lines.append("refusals: " + "; ".join(f"{n} x {why}" for why, n in refusals.most_common(4)))
    accepted = [r for r in records if r.accepted]
    for label, found in (("lost", [r for r in accepted if arrived.get(r.recipient, 0) == 0]),
                         ("duplicate", [r for r in accepted if arrived.get(r.recipient, 0) > 1])):
        for r in found[:5]:
            lines.append(f"  {label}: {r.recipient} ({r.protocol}, {'keyed' if r.keyed else 'unkeyed'}, "
                         f"phase '{phases[r.phase]}', answered {r.status}, "
                         f"arrived {arrived.get(r.recipient, 0)}x)")
    return lines

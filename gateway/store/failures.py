"""Failure entries as the store keeps them, and the SQL both backends share to query them.

An entry is one failure the gateway recorded (see `gateway.reporting`). `revision` grows on every
change (a delivery failure joined to it later); `posted_revision` is the revision the client's server
last acknowledged with a 2xx, so an entry is due for posting while `revision > posted_revision`, and an
entry updated after it was posted is due again, as an update.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.store.base import Row

FAILURE_COLUMNS = ("kind", "code", "client", "account", "keyword", "numbers", "send_id", "primary_at",
                   "primary_error", "secondary_at", "secondary_error", "revision", "posted_revision", "updated_at",
                   "correlation_id")


@dataclass(frozen=True, slots=True, kw_only=True)
class NewFailure:
    kind: str  # gateway.reporting.codes.FailureKind value
    code: int  # the seed's bit flags
    client: str
    account: str | None = None
    keyword: str = ""  # campaign, event or SMS keyword
    numbers: str = ""  # recipients: phone numbers or addresses
    send_id: str = ""  # the gateway's request or message id
    correlation_id: str = ""  # the app's X-Request-Id, when it sent one: a label, never a key
    primary_at: float
    primary_error: str = ""
    secondary_at: float | None = None  # delivery (secondary) data, when a failure became known later
    secondary_error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureRecord(NewFailure):
    id: int
    revision: int = 1
    posted_revision: int = 0
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class FailureQuery:
    """Filters for listing entries; every one optional. Newest first."""

    since: float | None = None
    until: float | None = None
    code_mask: int = 0  # entries with any of these flags; 0: every code
    client: str | None = None
    account: str | None = None
    recipient: str | None = None  # a part of `numbers`
    limit: int = 50
    offset: int = 0


def failure_values(failure: NewFailure, *, now: float) -> tuple[Any, ...]:
    """Values for FAILURE_COLUMNS of a new entry (revision 1, never posted)."""
    return (failure.kind, failure.code, failure.client, failure.account, failure.keyword, failure.numbers,
            failure.send_id, failure.primary_at, failure.primary_error, failure.secondary_at,
            failure.secondary_error, 1, 0, now, failure.correlation_id)


def failure_from_row(row: Row) -> FailureRecord:
    return FailureRecord(
        id=int(row["id"]), kind=row["kind"], code=int(row["code"]), client=row["client"], account=row["account"],
        keyword=row["keyword"], numbers=row["numbers"], send_id=row["send_id"], primary_at=float(row["primary_at"]),
        primary_error=row["primary_error"],
        secondary_at=float(row["secondary_at"]) if row["secondary_at"] is not None else None,
        secondary_error=row["secondary_error"], revision=int(row["revision"]),
        posted_revision=int(row["posted_revision"]), updated_at=float(row["updated_at"]),
        correlation_id=row["correlation_id"])


def where(query: FailureQuery, placeholder: Callable[[int], str]) -> tuple[str, list[Any]]:
    """`WHERE ...` for a query and its arguments; `placeholder(n)` spells the n-th (1-based) parameter."""
    clauses: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return placeholder(len(args))

    if query.since is not None:
        clauses.append(f"primary_at >= {arg(query.since)}")
    if query.until is not None:
        clauses.append(f"primary_at < {arg(query.until)}")
    if query.code_mask:
        clauses.append(f"(code & {arg(query.code_mask)}) <> 0")
    if query.client is not None:
        clauses.append(f"client = {arg(query.client)}")
    if query.account is not None:
        clauses.append(f"account = {arg(query.account)}")
    if query.recipient:
        escaped = query.recipient.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append(f"numbers LIKE {arg('%' + escaped + '%')} ESCAPE '\\'")
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", args


def appended(primary_error: str, snippet: str) -> str:
    """The seed: a delivery error's message snippet goes in PrimaryError, after what is there."""
    return f"{primary_error}; {snippet}" if primary_error else snippet

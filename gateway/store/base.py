"""The Store protocol and its records: what the gateway keeps that must outlive a process.

Callers depend only on `Store` and the frozen records here; a backend (SQLite today, PostgreSQL
next) implements them. Times are epoch seconds (`time.time()`). Worker decisions take `now` from the
caller, so workers and tests control the clock; bookkeeping stamps, admin actions and idempotency
expiry use the clock the store was opened with.

Errors are `gateway.errors.StoreError` and its `ItemNotFound` and `LeaseLost` (drawn in that module's
tree); each backend translates its driver's errors into them at one boundary.

Identity: an outbox item's `id` is always the gateway's own (`new_request_id()`, or an id the gateway
derived from its own message ids); what an app sent as `X-Request-Id` is only its `correlation_id`,
never a key, so two apps (or one app twice) reusing a value never make two sends one. The only
client-supplied value that may make two requests one is the `Idempotency-Key`, scoped by client
(`scoped_key`).
"""

from __future__ import annotations

import builtins
import enum
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

if TYPE_CHECKING:
    from gateway.store.failures import FailureQuery, FailureRecord, NewFailure

# Defensive: the caller strips the app's credentials, but a replayed send must never carry one, and
# the outbox file must never hold one, whatever the caller forgot.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})

# Enough of an upstream answer to explain a delivery in the admin view, not a copy of it.
RESULT_SNIPPET_BYTES = 2048

Headers = tuple[tuple[str, str], ...]
# What an outbox item carries: a forwarded Responsys call (rest, soap), an SMS for an aggregator (sms)
# or a delivery receipt for an app's callback URL (callback). The worker's owner dispatches on it.
OutboxProtocol = Literal["rest", "soap", "sms", "callback"]
OUTBOX_PROTOCOLS: tuple[str, ...] = ("rest", "soap", "sms", "callback")


class OutboxStatus(enum.Enum):
    PENDING = "pending"  # waiting for `next_attempt_at`
    LEASED = "leased"  # a worker is delivering it until `lease_until`
    DELIVERED = "delivered"  # an account accepted it; `result` says how
    DEAD = "dead"  # given up: permanent failure or older than its deadline


# The protocols whose item body is a credential (an SMS send's body is its receipt token): the store
# empties it once the item is finished (delivered or dead), so the token lives no longer than needed.
SECRET_BODY_PROTOCOLS: tuple[str, ...] = ("sms",)


# Items whose idempotency key is reserved: a second enqueue with the key returns the first id.
KEY_HOLDING_STATUSES = (OutboxStatus.PENDING, OutboxStatus.LEASED, OutboxStatus.DELIVERED)


@dataclass(frozen=True, slots=True)
class Delivered:
    """How an account answered a delivered send; `body` is kept up to RESULT_SNIPPET_BYTES."""

    status_code: int
    body: bytes = b""
    account: str | None = None


@dataclass(frozen=True, slots=True)
class Lane:
    """Which outbox items a lease may take: those of the `only` protocols, else any protocol but `excluding`.

    A worker leases each lane within its own concurrency, so slow kinds of items (app callbacks)
    cannot take the delivery slots of the others. `Lane()` is every item.
    """

    only: tuple[OutboxProtocol, ...] | None = None
    excluding: tuple[OutboxProtocol, ...] = ()

    def admits(self, protocol: str) -> bool:
        return (self.only is None or protocol in self.only) and protocol not in self.excluding


ALL_ITEMS = Lane()


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxItem:
    """A send accepted with 202 and not yet given up on.

    Build new ones with `OutboxItem.new(...)`; the state fields (status, attempts, lease_*, result)
    are the store's to change. `attempts` counts leases granted, so a delivery cut short by a crash
    still counts. `idempotency_key` is unique per `client` among pending, leased and delivered items.
    """

    id: str
    protocol: OutboxProtocol
    method: str
    path: str  # app-facing path with query string
    headers: Headers  # only the ones to replay, never credentials
    body: bytes
    client: str  # the app identity that sent it
    created_at: float
    next_attempt_at: float
    expires_at: float  # past this the send is dead rather than late
    account_preference: str | None = None
    idempotency_key: str | None = None
    status: OutboxStatus = OutboxStatus.PENDING
    attempts: int = 0
    last_error: str | None = None
    lease_owner: str | None = None
    lease_until: float | None = None
    updated_at: float | None = None
    result: Delivered | None = None
    correlation_id: str | None = None
    fingerprint: str | None = None  # of the keyed request it was queued for (gateway.core.idempotency); else None

    @classmethod
    def new(
        cls, *, protocol: OutboxProtocol, method: str, path: str, headers: Iterable[tuple[str, str]],
        body: bytes, client: str, now: float, max_age: float, idempotency_key: str | None = None,
        account_preference: str | None = None, request_id: str | None = None,
        correlation_id: str | None = None, fingerprint: str | None = None,
    ) -> OutboxItem:
        """A pending item due now.

        `request_id` becomes its id (a fresh one when omitted): it must be the gateway's own, never a
        value an app chose, or two sends could become one. `correlation_id` is the app's value, if any.
        """
        return cls(
            id=request_id or new_request_id(), protocol=protocol, method=method, path=path,
            headers=replayable_headers(headers), body=body, client=client, created_at=now,
            next_attempt_at=now, expires_at=now + max_age, account_preference=account_preference,
            idempotency_key=idempotency_key, correlation_id=correlation_id, fingerprint=fingerprint,
        )


def new_request_id() -> str:
    """A fresh gateway request id (128 random bits, hex): the identity of one send."""
    return uuid.uuid4().hex


def scoped_key(client: str, key: str) -> str:
    """The store key of a client's Idempotency-Key: `<len(client)>:<client>:<key>`.

    The length prefix makes the split unambiguous whatever either part contains, so no two
    (client, key) pairs share a record (a plain `client:key` let `a:b` + `c` meet `a` + `b:c`).
    """
    return f"{len(client)}:{client}:{key}"


@dataclass(frozen=True, slots=True, kw_only=True)
class IdempotencyRecord:
    """The first outcome of a keyed request, returned again for every repeat until `expires_at`."""

    key: str
    status_code: int
    headers: Headers
    body: bytes
    created_at: float
    expires_at: float
    fingerprint: str | None = None  # of the request the key was first used for (gateway.core.idempotency)


@dataclass(frozen=True, slots=True)
class SharedValue:
    value: str
    updated_at: float
    replica: str


@dataclass(frozen=True, slots=True)
class PurgeCount:
    idempotency_records: int = 0
    outbox_items: int = 0
    messages: int = 0
    failures: int = 0
    revocations: int = 0


class MessageStatus(enum.Enum):
    """An SMS message's state, in the vendor's words (see `gateway.delivery.messages`)."""

    ACCEPTED = "Accepted"  # stored, its send waits in the outbox
    SENT = "Sent"  # an upstream took it; its delivery receipt is awaited
    DELIVERED = "Delivered"  # final: the carrier delivered it
    FAILED = "Failed"  # final: the carrier failed it and no alternate was sent
    FORWARDED = "Forwarded"  # final for this message: it failed and its alternate was created
    REJECTED = "Rejected"  # final: refused before reaching a carrier


FINAL_MESSAGE_STATUSES = frozenset({MessageStatus.DELIVERED, MessageStatus.FAILED, MessageStatus.FORWARDED,
                                    MessageStatus.REJECTED})


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageRecord:
    """One message the gateway accepted (an original or the alternate created for it).

    Only a hash of the receipt token is kept: the token itself travels once, in the receipt URL.
    """

    id: str
    channel: str  # "sms"
    client: str  # the app that sent it (or whose message it re-sends)
    submitter_id: str | None
    source: str
    destination: str
    destination_carrier: str | None
    text: str
    status: MessageStatus
    alternate: bool  # the app asked for alternate delivery
    receipt_level: str  # ALL | FINAL | ERROR | NONE
    callback_url: str | None
    receipt_token_hash: str
    created_at: float
    updated_at: float
    upstream: str | None = None
    upstream_message_id: str | None = None
    fwd_to: str | None = None
    fwd_from: str | None = None
    transaction_id: str | None = None  # the app's `transaction@id`, echoed in every callback
    destination_type: str | None = None  # the app's `destination@type` (MDN when it gave none)
    source_type: str | None = None  # the app's `source@type` (None: SC or LC from the configuration)


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageEvent:
    """One line of a message's history: a status change, a receipt, a callback's fate, a note."""

    message_id: str
    at: float
    kind: str  # status | receipt | callback | note
    status: MessageStatus | None = None
    description: str | None = None
    error_code: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageChange:
    """A conditional status change of one message, applied with everything that must go with it.

    It happens only while the message's status is one of `from_statuses`; then, in one transaction,
    the message gets `status` (and the set fields), `event` is recorded, `insert` (a new message, the
    alternate) is stored with `insert_event`, and `enqueue` items join the outbox. So a forward, its
    alternate's send and the app's callback either all exist or none does.
    """

    message_id: str
    from_statuses: frozenset[MessageStatus]
    status: MessageStatus
    event: MessageEvent
    upstream: str | None = None
    upstream_message_id: str | None = None
    fwd_to: str | None = None
    source: str | None = None  # an alternate re-sent from another long code
    insert: MessageRecord | None = None
    insert_event: MessageEvent | None = None
    enqueue: tuple[OutboxItem, ...] = ()


def replayable_headers(headers: Iterable[tuple[str, str]]) -> Headers:
    """The headers without credentials, names lower-cased (HTTP names are case-insensitive)."""
    return tuple((name.lower(), value) for name, value in headers if name.lower() not in SECRET_HEADERS)


class Store(Protocol):
    """Shared gateway state: the durable outbox and idempotency records.

    Every write has committed durably when its coroutine returns. Methods taking `owner` act only
    on items that owner leased. Open one with `gateway.store.open_store(url)`.
    """

    async def close(self) -> None:
        """Close connections; the store is unusable afterwards. Safe to call twice."""

    async def ping(self) -> None:
        """Raise if the store cannot answer a trivial query (readiness)."""

    async def migrate(self) -> builtins.list[int]:
        """Apply missing schema migrations; return the versions applied (empty when up to date)."""

    # --- outbox -------------------------------------------------------------------------------

    async def enqueue(self, item: OutboxItem) -> str:
        """Store `item` as pending; return its id, or the live item's id if its key is taken."""

    async def lease_due(self, owner: str, now: float, lease_seconds: float, limit: int,
                        lane: Lane = ALL_ITEMS) -> builtins.list[OutboxItem]:
        """Atomically lease up to `limit` due items of `lane`: pending ones and those whose lease expired.

        Each leased item's `attempts` is incremented. Concurrent callers never get the same item.
        """

    async def mark_delivered(self, item_id: str, owner: str, result: Delivered) -> None:
        """Record the delivery of a pending or leased item, whoever holds the lease now.

        A delivery is a fact: a worker whose lease expired mid-call still records it, so the item is
        not sent again. A no-op if already delivered; ItemNotFound if dropped; LeaseLost if dead.
        """

    async def reschedule(self, item_id: str, owner: str, next_attempt_at: float, error: str) -> None:
        """Return a leased item to pending until `next_attempt_at`; raises LeaseLost if not `owner`'s."""

    async def mark_dead(self, item_id: str, owner: str, reason: str) -> None:
        """Give up on a leased item; raises LeaseLost if not `owner`'s."""

    async def release_leases(self, owner: str) -> int:
        """Return every item `owner` holds to pending (due at once); return how many."""

    async def get(self, item_id: str) -> OutboxItem | None: ...

    async def find_by_key(self, client: str, idempotency_key: str) -> OutboxItem | None:
        """The live (pending, leased or delivered) item holding a client's idempotency key."""

    async def list(self, status: OutboxStatus | None = None, limit: int = 100) -> builtins.list[OutboxItem]:
        """Items oldest first, optionally of one status."""

    async def retry_now(self, item_id: str) -> bool:
        """Make a pending or dead item due now; a dead one gets its original lifetime again.

        Returns False if there is no such item or it is leased or delivered.
        """

    async def drop(self, item_id: str) -> bool:
        """Delete an item whatever its state; return whether it existed."""

    async def depth(self) -> int:
        """How many items are pending or leased."""

    async def oldest_pending_age(self, now: float) -> float | None:
        """Seconds since the oldest pending or leased item was accepted; None when there is none."""

    async def next_due(self, lane: Lane = ALL_ITEMS) -> float | None:
        """When the next item of `lane` may be leased (a pending item's time or an expiring lease), or None."""

    # --- idempotency --------------------------------------------------------------------------

    async def idempotency_get(self, key: str) -> IdempotencyRecord | None:
        """The record for `key` unless it has expired (by the store's clock)."""

    async def idempotency_put(
        self, key: str, status_code: int, headers: Headers, body: bytes, expires_at: float, *,
        fingerprint: str | None = None,
    ) -> IdempotencyRecord:
        """Store the outcome unless a live record exists; return the record that holds (first writer wins).

        Callers scope `key` by client with `scoped_key`, so two apps never see each other's answers.
        `fingerprint` names the request the key is used for; settling a claim keeps it.
        """

    async def idempotency_settle(self, key: str, claim: bytes, *, status_code: int | None, headers: Headers = (),
                                 body: bytes = b"", expires_at: float = 0.0) -> bool:
        """Turn a claim (a record with status_code 0 and body `claim`) into the final record, or drop it
        when `status_code` is None. False when the claim is no longer there (expired and taken over)."""

    # --- revoked credentials ------------------------------------------------------------------

    async def revoke(self, token_hash: str, expires_at: float) -> None:
        """Record a logged-out credential (by hash, never raw) until `expires_at`, for every replica."""

    async def is_revoked(self, token_hash: str) -> bool:
        """Whether a credential with this hash was revoked and its revocation has not expired."""

    async def spend(self, token_hash: str, expires_at: float) -> bool:
        """Record a single-use credential as spent until `expires_at`; True for exactly one caller on every
        replica (an atomic insert: a check-then-revoke let concurrent uses all pass)."""

    async def shared_get(self, key: str) -> SharedValue | None:
        """A fact shared by all replicas (e.g. the failover state), with who wrote it when."""

    async def shared_put(self, key: str, value: str, *, updated_at: float, replica: str) -> None:
        """Write a shared fact; the latest `updated_at` wins when replicas race."""

    async def purge_expired(self, now: float, *, finished_before: float | None = None) -> PurgeCount:
        """Delete expired idempotency records and revocations, and delivered or dead items finished before
        `finished_before`.

        Keep finished items at least as long as the idempotency window: a purged item frees its key.
        Messages last changed before `finished_before` go too, with their history.
        """

    # --- messages (SMS) -----------------------------------------------------------------------

    async def message_create(self, message: MessageRecord, *, event: MessageEvent,
                             enqueue: tuple[OutboxItem, ...] = ()) -> None:
        """Store a new message, its first event and its outbox items, in one transaction."""

    async def message_get(self, message_id: str) -> MessageRecord | None: ...

    async def message_find(self, client: str, submitter_id: str) -> builtins.list[MessageRecord]:
        """A client's messages with this submitterMessageId (an original and its alternate), oldest first."""

    async def message_events(self, message_id: str) -> builtins.list[MessageEvent]:
        """A message's history, oldest first."""

    async def message_change(self, change: MessageChange) -> bool:
        """Apply `change` atomically if the message's status allows it; False (nothing done) otherwise.

        Two replicas applying changes to one message never both succeed from the same status, and a
        message gets at most one alternate (`fwd_from` is unique), so it is forwarded at most once.
        """

    async def message_note(self, event: MessageEvent) -> None:
        """Record an event that changes nothing (an ignored receipt, a callback's fate)."""


# --- rows, as both backends store them --------------------------------------------------------------

    # --- failure entries (gateway.reporting) --------------------------------------------------

    async def record_failure(self, failure: NewFailure) -> FailureRecord:
        """Store a new failure entry; it gets the next entry id and is due for posting."""

    async def add_delivery_failure(self, failure: NewFailure, *, snippet: str) -> FailureRecord:
        """Join a later delivery failure to the newest entry of the same client and send id.

        That entry gets the secondary (delivery) date and error, `failure.code`'s flags added, the
        message snippet appended to its primary error, and a new revision (due for posting again).
        Without such an entry, `failure` is stored with the snippet as its primary error.
        """

    async def failure(self, entry_id: int) -> FailureRecord | None: ...

    async def failures(self, query: FailureQuery) -> builtins.list[FailureRecord]:
        """Entries matching the query, newest first, `query.limit` from `query.offset`."""

    async def count_failures(self, query: FailureQuery) -> int:
        """How many entries match the query (ignoring its limit and offset)."""

    async def failure_hours(self, query: FailureQuery) -> builtins.list[tuple[float, int, int]]:
        """(hour start, code, count) for the matching entries, for the portal's chart."""

    async def failures_to_post(self, client: str, limit: int) -> builtins.list[FailureRecord]:
        """A client's entries whose current revision its server has not acknowledged, oldest first."""

    async def mark_failures_posted(self, posted: Sequence[tuple[int, int]]) -> None:
        """Record (entry id, revision) pairs as acknowledged; a newer revision stays due."""

    async def lease_poster(self, client: str, owner: str, now: float, seconds: float) -> bool:
        """Become the one replica posting a client's failures until `now + seconds`, if no other is."""

    async def release_poster(self, client: str, owner: str) -> None: ...

    async def purge_failures(self, before: float) -> int:
        """Delete entries first recorded before `before`; return how many."""

class Row(Protocol):
    """A database row read by column name (sqlite3.Row and asyncpg.Record both are)."""

    def __getitem__(self, key: str) -> Any: ...


def dump_headers(headers: Headers) -> str:
    return json.dumps([list(pair) for pair in headers])


def load_headers(text: str) -> Headers:
    return tuple((str(name), str(value)) for name, value in json.loads(text))


def item_from_row(row: Row) -> OutboxItem:
    result = None
    if row["result_status"] is not None:
        result = Delivered(status_code=row["result_status"], body=bytes(row["result_body"] or b""),
                           account=row["result_account"])
    return OutboxItem(
        id=row["id"], protocol=cast(OutboxProtocol, row["protocol"]), method=row["method"],
        path=row["path"], headers=load_headers(row["headers"]), body=bytes(row["body"]), client=row["client"],
        created_at=row["created_at"], next_attempt_at=row["next_attempt_at"], expires_at=row["expires_at"],
        account_preference=row["account_preference"], idempotency_key=row["idempotency_key"],
        status=OutboxStatus(row["status"]), attempts=row["attempts"], last_error=row["last_error"],
        lease_owner=row["lease_owner"], lease_until=row["lease_until"], updated_at=row["updated_at"],
        result=result, correlation_id=row["correlation_id"], fingerprint=row["fingerprint"],
    )


def message_from_row(row: Row) -> MessageRecord:
    return MessageRecord(
        id=row["id"], channel=row["channel"], client=row["client"], submitter_id=row["submitter_id"],
        source=row["source"], destination=row["destination"], destination_carrier=row["destination_carrier"],
        text=row["text"], status=MessageStatus(row["status"]), alternate=bool(row["alternate"]),
        receipt_level=row["receipt_level"], callback_url=row["callback_url"],
        receipt_token_hash=row["receipt_token_hash"], created_at=row["created_at"], updated_at=row["updated_at"],
        upstream=row["upstream"], upstream_message_id=row["upstream_message_id"], fwd_to=row["fwd_to"],
        fwd_from=row["fwd_from"], transaction_id=row["transaction_id"], destination_type=row["destination_type"],
        source_type=row["source_type"],
    )


def event_from_row(row: Row) -> MessageEvent:
    status = row["status"]
    return MessageEvent(message_id=row["message_id"], at=row["at"], kind=row["kind"],
                        status=None if status is None else MessageStatus(status), description=row["description"],
                        error_code=row["error_code"])


MESSAGE_COLUMNS = ("id", "channel", "client", "submitter_id", "source", "destination", "destination_carrier", "text",
                   "status", "alternate", "receipt_level", "callback_url", "receipt_token_hash", "created_at",
                   "updated_at", "upstream", "upstream_message_id", "fwd_to", "fwd_from", "transaction_id",
                   "destination_type", "source_type")


def message_values(message: MessageRecord) -> tuple[Any, ...]:
    """The record's values in MESSAGE_COLUMNS order, as both backends insert them."""
    return (message.id, message.channel, message.client, message.submitter_id, message.source, message.destination,
            message.destination_carrier, message.text, message.status.value, message.alternate,
            message.receipt_level, message.callback_url, message.receipt_token_hash, message.created_at,
            message.updated_at, message.upstream, message.upstream_message_id, message.fwd_to, message.fwd_from,
            message.transaction_id, message.destination_type, message.source_type)


def event_values(event: MessageEvent) -> tuple[Any, ...]:
    """(message_id, at, kind, status, description, error_code), as both backends insert them."""
    return (event.message_id, event.at, event.kind, None if event.status is None else event.status.value,
            event.description, event.error_code)


def record_from_row(row: Row) -> IdempotencyRecord:
    return IdempotencyRecord(key=row["key"], status_code=row["status_code"],
                             headers=load_headers(row["headers"]), body=bytes(row["body"]),
                             created_at=row["created_at"], expires_at=row["expires_at"],
                             fingerprint=row["fingerprint"])

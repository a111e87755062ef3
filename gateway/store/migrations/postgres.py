"""The PostgreSQL schema, as ordered migrations (see `gateway.store.migrations`).

Versions mean the same step as in `migrations/sqlite.py`, so `schema_version` reads alike on both
backends. Times are epoch seconds in `double precision`, exactly the floats the `Store` protocol
passes (a fake clock's value round-trips unchanged). Ids and keys use the "C" collation: they are
opaque tokens, so byte order is the right order and makes their indexes cheaper than a locale's.
"""

from __future__ import annotations

from gateway.store.migrations import Migration

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "outbox", (
        """
        CREATE TABLE outbox (
            id                 text COLLATE "C" PRIMARY KEY,
            protocol           text NOT NULL CHECK (protocol IN ('rest', 'soap')),
            method             text NOT NULL,
            path               text NOT NULL,
            headers            jsonb NOT NULL,  -- array of [name, value] pairs, order kept
            body               bytea NOT NULL,
            client             text COLLATE "C" NOT NULL,
            account_preference text,
            idempotency_key    text COLLATE "C",
            status             text NOT NULL CHECK (status IN ('pending', 'leased', 'delivered', 'dead')),
            attempts           integer NOT NULL DEFAULT 0,
            created_at         double precision NOT NULL,
            next_attempt_at    double precision NOT NULL,
            expires_at         double precision NOT NULL,
            updated_at         double precision NOT NULL,
            last_error         text,
            lease_owner        text,
            lease_until        double precision,
            result_status      integer,
            result_body        bytea,
            result_account     text
        )
        """,
        # Partial indexes: a queue's rows are mostly finished, and the worker only ever looks for
        # the few pending or leased ones.
        "CREATE INDEX outbox_due ON outbox (next_attempt_at, created_at) WHERE status = 'pending'",
        "CREATE INDEX outbox_lease ON outbox (lease_until) WHERE status = 'leased'",
        "CREATE INDEX outbox_created ON outbox (created_at, id)",
        "CREATE INDEX outbox_finished ON outbox (updated_at) WHERE status IN ('delivered', 'dead')",
        # The database, not a read-then-write in Python, guarantees one live item per key: it holds
        # across connections and replicas. Dead items free the key so the app may send again.
        """
        CREATE UNIQUE INDEX outbox_idempotency ON outbox (client, idempotency_key)
        WHERE idempotency_key IS NOT NULL AND status IN ('pending', 'leased', 'delivered')
        """,
    )),
    Migration(2, "idempotency", (
        """
        CREATE TABLE idempotency (
            key         text COLLATE "C" PRIMARY KEY,
            status_code integer NOT NULL,
            headers     jsonb NOT NULL,  -- array of [name, value] pairs, order kept
            body        bytea NOT NULL,
            created_at  double precision NOT NULL,
            expires_at  double precision NOT NULL
        )
        """,
        "CREATE INDEX idempotency_expiry ON idempotency (expires_at)",
    )),
    Migration(3, "shared_state", (
        # Small facts every replica must agree on (the failover state), last writer wins.
        """
        CREATE TABLE shared_state (
            key        text COLLATE "C" PRIMARY KEY,
            value      text NOT NULL,
            updated_at double precision NOT NULL,
            replica    text NOT NULL
        )
        """,
    )),
)

"""The SQLite schema, as ordered migrations (see `gateway.store.migrations`)."""

from __future__ import annotations

from gateway.store.migrations import Migration

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "outbox", (
        """
        CREATE TABLE outbox (
            id                 TEXT PRIMARY KEY,
            protocol           TEXT NOT NULL CHECK (protocol IN ('rest', 'soap')),
            method             TEXT NOT NULL,
            path               TEXT NOT NULL,
            headers            TEXT NOT NULL,  -- JSON array of [name, value] pairs
            body               BLOB NOT NULL,
            client             TEXT NOT NULL,
            account_preference TEXT,
            idempotency_key    TEXT,
            status             TEXT NOT NULL CHECK (status IN ('pending', 'leased', 'delivered', 'dead')),
            attempts           INTEGER NOT NULL DEFAULT 0,
            created_at         REAL NOT NULL,
            next_attempt_at    REAL NOT NULL,
            expires_at         REAL NOT NULL,
            updated_at         REAL NOT NULL,
            last_error         TEXT,
            lease_owner        TEXT,
            lease_until        REAL,
            result_status      INTEGER,
            result_body        BLOB,
            result_account     TEXT
        )
        """,
        "CREATE INDEX outbox_due ON outbox (status, next_attempt_at)",
        "CREATE INDEX outbox_lease ON outbox (status, lease_until)",
        "CREATE INDEX outbox_created ON outbox (created_at)",
        # The database, not a read-then-write in Python, guarantees one live item per key: it holds
        # across connections and processes. Dead items free the key so the app may send again.
        """
        CREATE UNIQUE INDEX outbox_idempotency ON outbox (client, idempotency_key)
        WHERE idempotency_key IS NOT NULL AND status IN ('pending', 'leased', 'delivered')
        """,
    )),
    Migration(2, "idempotency", (
        """
        CREATE TABLE idempotency (
            key         TEXT PRIMARY KEY,
            status_code INTEGER NOT NULL,
            headers     TEXT NOT NULL,  -- JSON array of [name, value] pairs
            body        BLOB NOT NULL,
            created_at  REAL NOT NULL,
            expires_at  REAL NOT NULL
        )
        """,
        "CREATE INDEX idempotency_expiry ON idempotency (expires_at)",
    )),
    Migration(3, "shared_state", (
        # Small facts every replica must agree on (the failover state), last writer wins.
        """
        CREATE TABLE shared_state (
            key        TEXT PRIMARY KEY,
            value      TEXT NOT NULL,
            updated_at REAL NOT NULL,
            replica    TEXT NOT NULL
        )
        """,
    )),
)

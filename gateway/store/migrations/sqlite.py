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
    Migration(4, "messages", (
        # SQLite cannot alter a CHECK constraint: the outbox is rebuilt with the new protocols (sms,
        # callback), its rows copied in the same transaction, and its indexes made again.
        """
        CREATE TABLE outbox_v4 (
            id                 TEXT PRIMARY KEY,
            protocol           TEXT NOT NULL CHECK (protocol IN ('rest', 'soap', 'sms', 'callback')),
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
        """
        INSERT INTO outbox_v4 (id, protocol, method, path, headers, body, client, account_preference,
            idempotency_key, status, attempts, created_at, next_attempt_at, expires_at, updated_at, last_error,
            lease_owner, lease_until, result_status, result_body, result_account)
        SELECT id, protocol, method, path, headers, body, client, account_preference,
            idempotency_key, status, attempts, created_at, next_attempt_at, expires_at, updated_at, last_error,
            lease_owner, lease_until, result_status, result_body, result_account
        FROM outbox
        """,
        "DROP TABLE outbox",
        "ALTER TABLE outbox_v4 RENAME TO outbox",
        "CREATE INDEX outbox_due ON outbox (status, next_attempt_at)",
        "CREATE INDEX outbox_lease ON outbox (status, lease_until)",
        "CREATE INDEX outbox_created ON outbox (created_at)",
        """
        CREATE UNIQUE INDEX outbox_idempotency ON outbox (client, idempotency_key)
        WHERE idempotency_key IS NOT NULL AND status IN ('pending', 'leased', 'delivered')
        """,
        """
        CREATE TABLE messages (
            id                  TEXT PRIMARY KEY,
            channel             TEXT NOT NULL CHECK (channel IN ('sms')),
            client              TEXT NOT NULL,
            submitter_id        TEXT,
            source              TEXT NOT NULL,
            destination         TEXT NOT NULL,
            destination_carrier TEXT,
            text                TEXT NOT NULL,
            status              TEXT NOT NULL CHECK (status IN ('Accepted', 'Sent', 'Delivered', 'Failed',
                                                                'Forwarded', 'Rejected')),
            alternate           INTEGER NOT NULL,  -- 0/1: the app asked for alternate delivery
            receipt_level       TEXT NOT NULL CHECK (receipt_level IN ('ALL', 'FINAL', 'ERROR', 'NONE')),
            callback_url        TEXT,
            receipt_token_hash  TEXT NOT NULL,
            upstream            TEXT,
            upstream_message_id TEXT,
            fwd_to              TEXT,
            fwd_from            TEXT,
            created_at          REAL NOT NULL,
            updated_at          REAL NOT NULL
        )
        """,
        # The database, not a read-then-write in Python, keeps a message to one alternate.
        "CREATE UNIQUE INDEX messages_forwarded_once ON messages (fwd_from) WHERE fwd_from IS NOT NULL",
        "CREATE INDEX messages_submitter ON messages (client, submitter_id)",
        "CREATE INDEX messages_updated ON messages (updated_at)",
        """
        CREATE TABLE message_events (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            message_id  TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
            at          REAL NOT NULL,
            kind        TEXT NOT NULL,
            status      TEXT,
            description TEXT,
            error_code  TEXT
        )
        """,
        "CREATE INDEX message_events_message ON message_events (message_id, id)",
    )),
    Migration(5, "failures", (
        """
        CREATE TABLE failures (
            id              INTEGER PRIMARY KEY AUTOINCREMENT,  -- the FDXML entry ID: never reused
            kind            TEXT NOT NULL,
            code            INTEGER NOT NULL,
            client          TEXT NOT NULL,
            account         TEXT,
            keyword         TEXT NOT NULL DEFAULT '',
            numbers         TEXT NOT NULL DEFAULT '',
            send_id         TEXT NOT NULL DEFAULT '',
            primary_at      REAL NOT NULL,
            primary_error   TEXT NOT NULL DEFAULT '',
            secondary_at    REAL,
            secondary_error TEXT NOT NULL DEFAULT '',
            revision        INTEGER NOT NULL DEFAULT 1,
            posted_revision INTEGER NOT NULL DEFAULT 0,
            updated_at      REAL NOT NULL
        )
        """,
        "CREATE INDEX failures_time ON failures (primary_at)",
        "CREATE INDEX failures_client_time ON failures (client, primary_at)",
        "CREATE INDEX failures_send ON failures (client, send_id)",
        "CREATE INDEX failures_due ON failures (client, id) WHERE revision > posted_revision",
        """
        CREATE TABLE failure_posters (
            client      TEXT PRIMARY KEY,
            owner       TEXT NOT NULL,
            lease_until REAL NOT NULL
        )
        """,
    )),
    Migration(6, "identity", (
        # An item's id is the gateway's own requestId; the app's X-Request-Id is only a label beside it.
        # Items queued before this step were keyed by that label (or a generated id): it stays theirs.
        "ALTER TABLE outbox ADD COLUMN correlation_id TEXT",
        "UPDATE outbox SET correlation_id = id WHERE protocol IN ('rest', 'soap')",
        "ALTER TABLE failures ADD COLUMN correlation_id TEXT NOT NULL DEFAULT ''",
        # Idempotency records were keyed `client:key`, ambiguous when either part holds ':'. Rewritten to
        # `<len(client)>:client:key`, splitting at the first ':': exact unless a client's name holds one,
        # and then the record only misses (it expires within the idempotency window).
        """
        UPDATE idempotency SET key = length(substr(key, 1, instr(key, ':') - 1)) || ':' || key
        WHERE instr(key, ':') > 0
        """,
        # A finished SMS send no longer needs its receipt token (its body); older rows kept it.
        "UPDATE outbox SET body = X'' WHERE protocol = 'sms' AND status IN ('delivered', 'dead')",
        # Logged-out SOAP sessions and portal cookies, by SHA-256 of the credential, shared by replicas
        # and kept until the credential would have expired anyway.
        """
        CREATE TABLE revocations (
            token_hash TEXT PRIMARY KEY,
            expires_at REAL NOT NULL
        )
        """,
        "CREATE INDEX revocations_expiry ON revocations (expires_at)",
    )),
    Migration(7, "idempotency fingerprints", (
        # What each Idempotency-Key was first used for (gateway.core.idempotency), on its record and on the
        # queued send holding it: a reuse of the key for another request is refused instead of answered
        # with the first send's outcome. Rows from before this step have none and match any request (a
        # path queued decoded by an older gateway cannot be compared with the raw target of a retry).
        "ALTER TABLE idempotency ADD COLUMN fingerprint TEXT",
        "ALTER TABLE outbox ADD COLUMN fingerprint TEXT",
    )),
    Migration(8, "vibes message fields", (
        # What the app said that the gateway echoes (transaction id in every callback) or passes on to
        # the aggregator (destination and source types). Messages from before this step have none.
        "ALTER TABLE messages ADD COLUMN transaction_id TEXT",
        "ALTER TABLE messages ADD COLUMN destination_type TEXT",
        "ALTER TABLE messages ADD COLUMN source_type TEXT",
    )),
)

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
    Migration(4, "messages", (
        # The outbox also carries SMS sends and app callbacks now.
        "ALTER TABLE outbox DROP CONSTRAINT outbox_protocol_check",
        "ALTER TABLE outbox ADD CONSTRAINT outbox_protocol_check "
        "CHECK (protocol IN ('rest', 'soap', 'sms', 'callback'))",
        """
        CREATE TABLE messages (
            id                  text COLLATE "C" PRIMARY KEY,
            channel             text NOT NULL CHECK (channel IN ('sms')),
            client              text COLLATE "C" NOT NULL,
            submitter_id        text COLLATE "C",
            source              text NOT NULL,
            destination         text NOT NULL,
            destination_carrier text,
            text                text NOT NULL,
            status              text NOT NULL CHECK (status IN ('Accepted', 'Sent', 'Delivered', 'Failed',
                                                                'Forwarded', 'Rejected')),
            alternate           boolean NOT NULL,
            receipt_level       text NOT NULL CHECK (receipt_level IN ('ALL', 'FINAL', 'ERROR', 'NONE')),
            callback_url        text,
            receipt_token_hash  text NOT NULL,
            upstream            text,
            upstream_message_id text,
            fwd_to              text COLLATE "C",
            fwd_from            text COLLATE "C",
            created_at          double precision NOT NULL,
            updated_at          double precision NOT NULL
        )
        """,
        # The database, not a read-then-write in Python, keeps a message to one alternate, whichever
        # replica saw its failure first.
        "CREATE UNIQUE INDEX messages_forwarded_once ON messages (fwd_from) WHERE fwd_from IS NOT NULL",
        "CREATE INDEX messages_submitter ON messages (client, submitter_id)",
        "CREATE INDEX messages_updated ON messages (updated_at)",
        """
        CREATE TABLE message_events (
            id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            message_id  text COLLATE "C" NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
            at          double precision NOT NULL,
            kind        text NOT NULL,
            status      text,
            description text,
            error_code  text
        )
        """,
        "CREATE INDEX message_events_message ON message_events (message_id, id)",
    )),
    Migration(5, "failures", (
        """
        CREATE TABLE failures (
            id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- the FDXML entry ID
            kind            text NOT NULL,
            code            integer NOT NULL,
            client          text NOT NULL,
            account         text,
            keyword         text NOT NULL DEFAULT '',
            numbers         text NOT NULL DEFAULT '',
            send_id         text NOT NULL DEFAULT '',
            primary_at      double precision NOT NULL,
            primary_error   text NOT NULL DEFAULT '',
            secondary_at    double precision,
            secondary_error text NOT NULL DEFAULT '',
            revision        integer NOT NULL DEFAULT 1,
            posted_revision integer NOT NULL DEFAULT 0,
            updated_at      double precision NOT NULL
        )
        """,
        "CREATE INDEX failures_time ON failures (primary_at)",
        "CREATE INDEX failures_client_time ON failures (client, primary_at)",
        "CREATE INDEX failures_send ON failures (client, send_id)",
        "CREATE INDEX failures_due ON failures (client, id) WHERE revision > posted_revision",
        """
        CREATE TABLE failure_posters (
            client      text PRIMARY KEY,
            owner       text NOT NULL,
            lease_until double precision NOT NULL
        )
        """,
    )),
    Migration(6, "identity", (
        # An item's id is the gateway's own requestId; the app's X-Request-Id is only a label beside it.
        # Items queued before this step were keyed by that label (or a generated id): it stays theirs.
        "ALTER TABLE outbox ADD COLUMN correlation_id text",
        "UPDATE outbox SET correlation_id = id WHERE protocol IN ('rest', 'soap')",
        "ALTER TABLE failures ADD COLUMN correlation_id text NOT NULL DEFAULT ''",
        # Idempotency records were keyed `client:key`, ambiguous when either part holds ':'. Rewritten to
        # `<len(client)>:client:key`, splitting at the first ':': exact unless a client's name holds one,
        # and then the record only misses (it expires within the idempotency window).
        """
        UPDATE idempotency SET key = length(split_part(key, ':', 1)) || ':' || key
        WHERE strpos(key, ':') > 0
        """,
        # A finished SMS send no longer needs its receipt token (its body); older rows kept it.
        "UPDATE outbox SET body = '' WHERE protocol = 'sms' AND status IN ('delivered', 'dead')",
        # Logged-out SOAP sessions and portal cookies, by SHA-256 of the credential, shared by replicas
        # and kept until the credential would have expired anyway.
        """
        CREATE TABLE revocations (
            token_hash text COLLATE "C" PRIMARY KEY,
            expires_at double precision NOT NULL
        )
        """,
        "CREATE INDEX revocations_expiry ON revocations (expires_at)",
    )),
    Migration(7, "idempotency fingerprints", (
        # What each Idempotency-Key was first used for (gateway.core.idempotency), on its record and on the
        # queued send holding it: a reuse of the key for another request is refused instead of answered
        # with the first send's outcome. Rows from before this step have none and match any request (a
        # path queued decoded by an older gateway cannot be compared with the raw target of a retry).
        "ALTER TABLE idempotency ADD COLUMN fingerprint text",
        "ALTER TABLE outbox ADD COLUMN fingerprint text",
    )),
    Migration(8, "vibes message fields", (
        # What the app said that the gateway echoes (transaction id in every callback) or passes on to
        # the aggregator (destination and source types). Messages from before this step have none.
        "ALTER TABLE messages ADD COLUMN transaction_id text",
        "ALTER TABLE messages ADD COLUMN destination_type text",
        "ALTER TABLE messages ADD COLUMN source_type text",
    )),
)

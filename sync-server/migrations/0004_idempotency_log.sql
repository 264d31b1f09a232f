-- First answers to idempotent writes, version 4: an append-only log. Clients'
-- keys are random, so a B-tree keyed by them took a random page write per
-- request; the writer now finds keys in memory (loaded from here at start)
-- and the log only grows at its end.
DROP TABLE idempotency;

CREATE TABLE idempotency_log (
    id           INTEGER PRIMARY KEY,
    key_hash     BLOB NOT NULL,      -- first 16 bytes of SHA-256(key)
    request_hash BLOB NOT NULL,
    status       INTEGER NOT NULL,
    body         TEXT NOT NULL,
    created_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX idempotency_log_by_time ON idempotency_log (created_at);

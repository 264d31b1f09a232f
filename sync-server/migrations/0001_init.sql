-- Tessera sync server schema, version 1.
-- Instants are INTEGER Unix milliseconds (UTC); slot ids are local
-- "YYYY-MM-DDTHH:MM" in the museum's zone; ids are UUIDv7 text.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- Ed25519 keys that sign tickets: the server's own (with its secret) and the
-- certified public keys of counters.
CREATE TABLE signing_keys (
    key_id      INTEGER PRIMARY KEY,
    owner       TEXT NOT NULL,
    device_id   TEXT,
    public_key  BLOB NOT NULL,
    secret_seed BLOB,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
) STRICT;

CREATE TABLE slots (
    slot_id        TEXT PRIMARY KEY,
    date           TEXT NOT NULL,
    starts_at      INTEGER NOT NULL,
    ends_at        INTEGER NOT NULL,
    window_minutes INTEGER NOT NULL,
    capacity       INTEGER NOT NULL CHECK (capacity >= 0),
    sold_online    INTEGER NOT NULL DEFAULT 0 CHECK (sold_online >= 0)
) STRICT;
CREATE INDEX slots_by_date ON slots (date);

CREATE TABLE holds (
    hold_id     TEXT PRIMARY KEY,
    slot_id     TEXT NOT NULL REFERENCES slots (slot_id),
    admissions  INTEGER NOT NULL CHECK (admissions > 0),
    lines       TEXT NOT NULL,           -- priced lines, JSON
    total       INTEGER NOT NULL,
    currency    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('held', 'confirmed', 'cancelled', 'expired'))
) STRICT;
CREATE INDEX holds_open ON holds (status, expires_at);

CREATE TABLE orders (
    order_id          TEXT PRIMARY KEY,
    hold_id           TEXT NOT NULL UNIQUE REFERENCES holds (hold_id),
    slot_id           TEXT NOT NULL REFERENCES slots (slot_id),
    admissions        INTEGER NOT NULL,
    total             INTEGER NOT NULL,
    currency          TEXT NOT NULL,
    lines             TEXT NOT NULL,
    payment_reference TEXT NOT NULL,
    email             TEXT,
    created_at        INTEGER NOT NULL
) STRICT;
CREATE INDEX orders_by_slot ON orders (slot_id);

-- Every ticket the server knows: online ones it signed, counter ones uploaded.
CREATE TABLE tickets (
    ticket_id  TEXT PRIMARY KEY,
    slot_id    TEXT NOT NULL,
    product_id TEXT NOT NULL,
    admits     INTEGER NOT NULL,
    code       TEXT NOT NULL,
    channel    TEXT NOT NULL CHECK (channel IN ('online', 'counter')),
    order_id   TEXT,
    sale_id    TEXT,
    key_id     INTEGER NOT NULL,
    voided_at  INTEGER
) STRICT;
CREATE INDEX tickets_by_slot ON tickets (slot_id);

CREATE TABLE redemptions (
    ticket_id  TEXT PRIMARY KEY,
    slot_id    TEXT NOT NULL,
    admits     INTEGER NOT NULL,
    redeemed_at INTEGER NOT NULL,
    gate_device TEXT NOT NULL,
    gate_name   TEXT NOT NULL,
    mode        TEXT NOT NULL CHECK (mode IN ('online', 'offline')),
    scan_id     TEXT
) STRICT;

CREATE TABLE devices (
    device_id   TEXT PRIMARY KEY,
    role        TEXT NOT NULL CHECK (role IN ('counter', 'gate', 'supervisor')),
    name        TEXT NOT NULL,
    token_hash  BLOB NOT NULL UNIQUE,
    key_id      INTEGER,
    enrolled_at INTEGER NOT NULL,
    revoked_at  INTEGER
) STRICT;

CREATE TABLE enrolment_codes (
    code_hash  BLOB PRIMARY KEY,
    role       TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    device_id  TEXT
) STRICT;

-- First answers to idempotent writes, replayed on retry.
CREATE TABLE idempotency (
    key          TEXT PRIMARY KEY,
    request_hash BLOB NOT NULL,
    status       INTEGER NOT NULL,
    body         TEXT NOT NULL,
    created_at   INTEGER NOT NULL
) STRICT;

-- Capacity escrowed to counters. escrow = granted_total - released_total,
-- or, once revoked, what had been sold when it was revoked.
CREATE TABLE leases (
    lease_id        TEXT PRIMARY KEY,
    device_id       TEXT NOT NULL REFERENCES devices (device_id),
    slot_id         TEXT NOT NULL REFERENCES slots (slot_id),
    granted_total   INTEGER NOT NULL,
    released_total  INTEGER NOT NULL,
    sold            INTEGER NOT NULL DEFAULT 0,
    unused_reported INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    revoked_at      INTEGER,
    revoked_escrow  INTEGER,
    UNIQUE (device_id, slot_id)
) STRICT;

-- Who changed what, outside the normal flow of sales (capacity, revocations).
CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
) STRICT;

-- Live sales tallies: per slot, the CRDT state (grow-only counters per
-- actor, JSON), merged on every sync, never summed.
CREATE TABLE tallies (
    slot_id TEXT PRIMARY KEY,
    state   TEXT NOT NULL
) STRICT;

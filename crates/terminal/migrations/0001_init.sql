-- Tessera counter/gate local replica, version 1. Instants are INTEGER Unix
-- milliseconds; ids UUIDv7 text; slot ids local "YYYY-MM-DDTHH:MM".

-- Identity, cached server data (catalogue, staff, keys, tallies) and sync
-- progress, as key/value JSON.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- Slots as of the last sync (live figures from the server).
CREATE TABLE slots (
    slot_id        TEXT PRIMARY KEY,
    starts_at      INTEGER NOT NULL,
    ends_at        INTEGER NOT NULL,
    window_minutes INTEGER NOT NULL,
    capacity       INTEGER NOT NULL,
    available      INTEGER NOT NULL,
    sold           INTEGER NOT NULL,
    as_of          INTEGER NOT NULL
) STRICT;

-- Capacity escrowed to this counter. What it can sell is
-- granted_total - released_total - sold, and nothing once revoked.
CREATE TABLE leases (
    lease_id       TEXT PRIMARY KEY,
    slot_id        TEXT NOT NULL UNIQUE,
    granted_total  INTEGER NOT NULL,
    released_total INTEGER NOT NULL,
    sold           INTEGER NOT NULL DEFAULT 0 CHECK (sold >= 0),
    revoked        INTEGER NOT NULL DEFAULT 0,
    CHECK (sold + released_total <= granted_total OR revoked = 1)
) STRICT;

-- Places a waiting sale needs, asked for at the next sync.
CREATE TABLE wants (
    slot_id    TEXT PRIMARY KEY,
    need       INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE shifts (
    shift_id  TEXT PRIMARY KEY,
    cashier   TEXT NOT NULL,
    opened_at INTEGER NOT NULL,
    float     INTEGER NOT NULL,
    closed_at INTEGER,
    counted   INTEGER,
    report    TEXT,            -- the Z report, JSON
    uploaded  INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE UNIQUE INDEX one_open_shift ON shifts ((closed_at IS NULL)) WHERE closed_at IS NULL;

-- The sales log. Sales with terminal_seq above the server's acknowledged seq
-- are the outbox.
CREATE TABLE sales (
    sale_id        TEXT PRIMARY KEY,
    terminal_seq   INTEGER NOT NULL UNIQUE CHECK (terminal_seq > 0),
    lease_id       TEXT NOT NULL REFERENCES leases (lease_id),
    slot_id        TEXT NOT NULL,
    shift_id       TEXT NOT NULL REFERENCES shifts (shift_id),
    cashier        TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    lines          TEXT NOT NULL,
    total          INTEGER NOT NULL,
    currency       TEXT NOT NULL,
    admissions     INTEGER NOT NULL,
    payment_method TEXT NOT NULL CHECK (payment_method IN ('cash', 'card')),
    tendered       INTEGER,
    change         INTEGER,
    voided         INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE tickets (
    ticket_id  TEXT PRIMARY KEY,
    sale_id    TEXT NOT NULL REFERENCES sales (sale_id),
    slot_id    TEXT NOT NULL,
    product_id TEXT NOT NULL,
    admits     INTEGER NOT NULL,
    code       TEXT NOT NULL
) STRICT;
CREATE INDEX tickets_by_sale ON tickets (sale_id);

CREATE TABLE voids (
    void_id           TEXT PRIMARY KEY,
    sale_id           TEXT NOT NULL UNIQUE REFERENCES sales (sale_id),
    after_seq         INTEGER NOT NULL,
    at                INTEGER NOT NULL,
    shift_id          TEXT,
    approved_by       TEXT NOT NULL,
    reason            TEXT NOT NULL,
    returned_to_lease INTEGER NOT NULL,
    refund            INTEGER NOT NULL,
    refund_method     TEXT NOT NULL,
    uploaded          INTEGER NOT NULL DEFAULT 0
) STRICT;

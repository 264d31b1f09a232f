-- Counter sales, voids, shifts and per-device sync progress (version 2).

CREATE TABLE staff (
    name     TEXT PRIMARY KEY,
    role     TEXT NOT NULL CHECK (role IN ('cashier', 'supervisor')),
    pin_salt TEXT NOT NULL,
    pin_hash TEXT NOT NULL
) STRICT;

CREATE TABLE sales (
    sale_id        TEXT PRIMARY KEY,
    device_id      TEXT NOT NULL REFERENCES devices (device_id),
    terminal_seq   INTEGER NOT NULL CHECK (terminal_seq > 0),
    lease_id       TEXT NOT NULL REFERENCES leases (lease_id),
    slot_id        TEXT NOT NULL REFERENCES slots (slot_id),
    shift_id       TEXT NOT NULL,
    cashier        TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    received_at    INTEGER NOT NULL,
    lines          TEXT NOT NULL,
    total          INTEGER NOT NULL,
    currency       TEXT NOT NULL,
    admissions     INTEGER NOT NULL,
    payment_method TEXT NOT NULL CHECK (payment_method IN ('cash', 'card')),
    tendered       INTEGER,
    change         INTEGER,
    -- Admissions of this sale beyond its lease's escrow (a revoked lease):
    -- accepted, never lost, and reported.
    over_capacity  INTEGER NOT NULL DEFAULT 0,
    voided_at      INTEGER,
    UNIQUE (device_id, terminal_seq)
) STRICT;
CREATE INDEX sales_by_slot ON sales (slot_id);
CREATE INDEX sales_by_device ON sales (device_id, terminal_seq);

CREATE TABLE counter_voids (
    void_id           TEXT PRIMARY KEY,
    sale_id           TEXT NOT NULL UNIQUE REFERENCES sales (sale_id),
    device_id         TEXT NOT NULL,
    after_seq         INTEGER NOT NULL,
    at                INTEGER NOT NULL,
    shift_id          TEXT,
    approved_by       TEXT NOT NULL,
    reason            TEXT NOT NULL,
    returned_to_lease INTEGER NOT NULL,
    refund            INTEGER NOT NULL,
    refund_method     TEXT NOT NULL,
    received_at       INTEGER NOT NULL
) STRICT;

CREATE TABLE shifts (
    shift_id      TEXT PRIMARY KEY,
    device_id     TEXT NOT NULL,
    cashier       TEXT NOT NULL,
    opened_at     INTEGER NOT NULL,
    closed_at     INTEGER NOT NULL,
    float         INTEGER NOT NULL,
    cash_sales    INTEGER NOT NULL,
    card_sales    INTEGER NOT NULL,
    cash_refunds  INTEGER NOT NULL,
    card_refunds  INTEGER NOT NULL,
    expected_cash INTEGER NOT NULL,
    counted_cash  INTEGER NOT NULL,
    first_seq     INTEGER,
    last_seq      INTEGER,
    sales_count   INTEGER NOT NULL,
    voids_count   INTEGER NOT NULL,
    received_at   INTEGER NOT NULL
) STRICT;

CREATE TABLE device_sync (
    device_id    TEXT PRIMARY KEY,
    acked_seq    INTEGER NOT NULL DEFAULT 0,
    max_seq      INTEGER NOT NULL DEFAULT 0,
    last_sync_at INTEGER NOT NULL
) STRICT;

-- Gate scans, double-admission conflicts, and what counters say about
-- themselves for the day report (version 3).

-- Every admission a gate made, online or offline. scan_id is the gate's
-- nonce, so an upload sent twice is stored once.
CREATE TABLE scans (
    scan_id     TEXT PRIMARY KEY,
    ticket_id   TEXT NOT NULL,
    slot_id     TEXT NOT NULL,
    product_id  TEXT NOT NULL,
    admits      INTEGER NOT NULL,
    key_id      INTEGER NOT NULL,
    gate_device TEXT NOT NULL,
    gate_name   TEXT NOT NULL,
    scanned_at  INTEGER NOT NULL,
    mode        TEXT NOT NULL CHECK (mode IN ('online', 'offline')),
    received_at INTEGER NOT NULL
) STRICT;
CREATE INDEX scans_by_ticket ON scans (ticket_id);
CREATE INDEX scans_by_slot ON scans (slot_id);

-- One ticket admitted more than once (offline gates): never dropped.
CREATE TABLE gate_conflicts (
    ticket_id    TEXT NOT NULL,
    slot_id      TEXT NOT NULL,
    first_scan   TEXT NOT NULL,
    first_gate   TEXT NOT NULL,
    first_at     INTEGER NOT NULL,
    second_scan  TEXT NOT NULL,
    second_gate  TEXT NOT NULL,
    second_at    INTEGER NOT NULL,
    detected_at  INTEGER NOT NULL,
    PRIMARY KEY (ticket_id, second_scan)
) STRICT;

-- The counter's own highest seq and open shift, as of its last sync.
ALTER TABLE device_sync ADD COLUMN reported_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE device_sync ADD COLUMN open_shift TEXT;

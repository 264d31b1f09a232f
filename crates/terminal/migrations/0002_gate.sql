-- Gate mode (version 2): the scans this device made, and the tickets it must
-- refuse because their sale was voided.

CREATE TABLE scans (
    scan_id    TEXT PRIMARY KEY,
    ticket_id  TEXT NOT NULL,
    slot_id    TEXT NOT NULL,
    product_id TEXT NOT NULL,
    admits     INTEGER NOT NULL,
    code       TEXT NOT NULL,
    scanned_at INTEGER NOT NULL,
    -- 'online': the server recorded it; 'offline': to upload.
    mode       TEXT NOT NULL CHECK (mode IN ('online', 'offline')),
    uploaded   INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE UNIQUE INDEX scans_once_per_ticket ON scans (ticket_id);
CREATE INDEX scans_by_time ON scans (scanned_at);

CREATE TABLE voided_tickets (
    ticket_id TEXT PRIMARY KEY
) STRICT;

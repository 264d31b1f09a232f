-- Uploads the server could not accept as they are, the history sales are
-- judged against, and what the server decided about voids (version 5).

-- A counter's sale, void or closed shift kept aside with its reason for a
-- supervisor: never dropped, and acknowledged so the uploads behind it go on.
CREATE TABLE quarantine (
    item_id      TEXT PRIMARY KEY,       -- the sale's, void's or shift's id
    kind         TEXT NOT NULL CHECK (kind IN ('sale', 'void', 'shift')),
    device_id    TEXT NOT NULL,
    terminal_seq INTEGER,                -- the sale's seq (a void: its sale's)
    slot_id      TEXT,
    reason       TEXT NOT NULL,
    body         TEXT NOT NULL,          -- the upload as received, JSON
    device_at    INTEGER,                -- when the counter says it happened
    received_at  INTEGER NOT NULL,
    resolved_at  INTEGER
) STRICT;
CREATE INDEX quarantine_by_device ON quarantine (device_id, kind, terminal_seq);
CREATE INDEX quarantine_by_received ON quarantine (received_at);

-- A lease's totals as its counter knew them from just after `after_seq` on:
-- each uploaded sale is judged against the lease as it stood at its seq.
CREATE TABLE lease_history (
    lease_id       TEXT NOT NULL,
    after_seq      INTEGER NOT NULL,
    granted_total  INTEGER NOT NULL,
    released_total INTEGER NOT NULL
) STRICT;
CREATE INDEX lease_history_by_lease ON lease_history (lease_id, after_seq);
INSERT INTO lease_history (lease_id, after_seq, granted_total, released_total)
    SELECT lease_id, 0, granted_total, released_total FROM leases;

-- Every catalogue version sales may name (the current one is also in meta).
CREATE TABLE catalogue_versions (
    version   INTEGER PRIMARY KEY,
    catalogue TEXT NOT NULL
) STRICT;
INSERT INTO catalogue_versions (version, catalogue)
    SELECT CAST(v.value AS INTEGER), c.value FROM meta c, meta v
    WHERE c.key = 'catalogue' AND v.key = 'catalogue_version';

-- Places a counter put back in its lease by a void the server did not let
-- return them (the slot had started by the server's clock, or a gate had
-- admitted the ticket): kept out of sale on the slot.
ALTER TABLE leases ADD COLUMN kept INTEGER NOT NULL DEFAULT 0;

-- Whether the server let the void return its places (its own decision; the
-- counter's claim stays in returned_to_lease, its clock in `at`, and the
-- server's in received_at).
ALTER TABLE counter_voids ADD COLUMN places_returned INTEGER NOT NULL DEFAULT 0;
UPDATE counter_voids SET places_returned = returned_to_lease;

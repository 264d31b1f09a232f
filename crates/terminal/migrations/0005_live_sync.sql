-- A sync carries only what is live, however long the counter has sold.

-- A lease the server confirmed settled, and this counter agreed: its slot is
-- over, nothing is left to give back, every sale from it was acknowledged.
-- It is no longer reported at sync.
ALTER TABLE leases ADD COLUMN settled INTEGER NOT NULL DEFAULT 0;
CREATE INDEX leases_unsettled ON leases (slot_id) WHERE settled = 0;

-- Own tallies are summed for today's and later slots only, and a lease's
-- unacknowledged sales are looked up by lease.
CREATE INDEX sales_by_slot ON sales (slot_id);
CREATE INDEX sales_by_lease ON sales (lease_id, terminal_seq);

-- Voids still to upload.
CREATE INDEX voids_unsent ON voids (after_seq) WHERE uploaded = 0;

-- What counters' sync needs beyond V3.
--
-- A counter's open shift is kept as the counter reported it (JSON: id,
-- cashier, opening time, float), as the SQLite backend keeps it, so the day
-- report can list a shift that has no Z report yet with its cashier and
-- float. V3 had only its id; nothing wrote the column before this step.
ALTER TABLE device_sync ALTER COLUMN open_shift TYPE text USING NULL;

-- A lease's steps in the order they were recorded (SQLite orders by rowid):
-- two steps of one lease may carry the same after_seq (two syncs with no
-- new sale between them), and the newer one is the lease as it stands.
ALTER TABLE lease_history ADD COLUMN step bigserial;
CREATE INDEX lease_history_last ON lease_history (lease_id, after_seq DESC, step DESC);

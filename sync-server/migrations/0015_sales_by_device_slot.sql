-- A counter's tally of a slot, derived from its uploads at every sync
-- (`tally_of` in src/sqlite/sync.rs: `sales WHERE device_id = ? AND
-- slot_id = ?`, for each of today's and later slots the counter reports).
-- With only (device_id, terminal_seq), (device_id, created_at) and
-- (slot_id) to choose from, SQLite's planner took a device index and read
-- every sale the counter ever made, once per slot: a sync cost grew with
-- the counter's history (the year-of-history benchmark: 23 ms on day 1,
-- 758 ms on day 320). With both columns the lookup reads that slot's sales
-- of that counter only.
CREATE INDEX sales_by_device_slot ON sales (device_id, slot_id);

-- Work per request independent of history: every query a request, a report
-- or the writer's start-up makes is bounded by the day or the slot it asks
-- for, and each gets an index that serves exactly that bound, so a museum
-- with a year behind it answers as fast as on its first day.

-- A slot's leases (sizing, the day report's leases held, reloading a slot on
-- demand). Leases had only a (device_id, slot_id) key.
CREATE INDEX leases_by_slot ON leases (slot_id);

-- Leases the writer keeps in memory after their day: not revoked and not
-- yet settled by their counter. Same condition as `UNSETTLED_SQL` in
-- src/sqlite/state.rs; the index stays as small as the leases it lists.
CREATE INDEX leases_unsettled ON leases (slot_id)
    WHERE revoked_escrow IS NULL AND (granted_total - released_total > sold OR unused_reported > 0);

-- Day report, per counter: its sales and voids of the day, its shifts'
-- cash, and what its voids cancel.
CREATE INDEX sales_by_device_time ON sales (device_id, created_at);
CREATE INDEX sales_by_shift ON sales (shift_id);
CREATE INDEX counter_voids_by_device_time ON counter_voids (device_id, at);
CREATE INDEX counter_voids_by_shift ON counter_voids (shift_id);
CREATE INDEX shifts_by_closed ON shifts (closed_at);
CREATE INDEX shifts_by_opened ON shifts (opened_at);

-- Day report, online: the day's cancellations and refunds.
CREATE INDEX tickets_cancelled ON tickets (cancelled_at) WHERE cancelled_at IS NOT NULL;
CREATE INDEX refunds_by_created ON refunds (created_at);

-- Day report, per slot of the day.
CREATE INDEX redemptions_by_slot ON redemptions (slot_id);
CREATE INDEX gate_conflicts_by_slot ON gate_conflicts (slot_id);
CREATE INDEX waitlist_by_slot ON waitlist (slot_id);
CREATE INDEX quarantine_by_slot ON quarantine (slot_id);

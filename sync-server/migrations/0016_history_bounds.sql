-- More of "work per request independent of history" (issue 11): lookups
-- that still read a share of a table that grows with the days behind the
-- museum, found on a year-of-history database with EXPLAIN QUERY PLAN.

-- Start-up looks for older slots that still have an unsettled lease. 0014's
-- `leases_unsettled` has the right condition, but written `granted_total -
-- released_total > sold`, which SQLite's planner rewrites (`sold < …`)
-- before it matches a partial index, so it never used it and read every
-- lease of every past slot instead (a year: 15,366 leases, some 12 ms of CPU
-- per start). Same condition, written the way the planner recognises it; the
-- query is `OLDER_UNSETTLED_SLOTS_SQL` in src/sqlite/state.rs.
DROP INDEX leases_unsettled;
CREATE INDEX leases_unsettled_by_slot ON leases (slot_id)
    WHERE revoked_escrow IS NULL AND (sold < granted_total - released_total OR unused_reported > 0);

-- A void on a revoked lease re-derives that lease's over-capacity flags
-- (`reflag` in src/sqlite/sync.rs: `sales WHERE lease_id = ? AND
-- over_capacity > 0`). Sales had no index by lease, so this read every sale
-- ever stored. Only flagged sales are indexed: a handful, if any.
CREATE INDEX sales_over_capacity ON sales (lease_id, terminal_seq) WHERE over_capacity > 0;

-- Every gate sync (a counter makes one at each of its syncs too) lists the
-- voided tickets of today and later (`gate_sync` in src/sqlite/gate.rs:
-- `tickets WHERE voided_at IS NOT NULL AND slot_id >= ?`). Through
-- `tickets_by_slot` that read every ticket already sold for the days ahead
-- to keep the few voided ones; this index holds the voided ones only.
CREATE INDEX tickets_voided_by_slot ON tickets (slot_id) WHERE voided_at IS NOT NULL;

-- Hourly housekeeping (and the first run, right after start-up) forgets
-- "my booking" tokens nobody came back for: `payments WHERE booking_token
-- IS NOT NULL AND COALESCE(paid_at, created_at) <= ?` read every payment
-- ever made. Indexed: the payments whose token is still kept, by that time.
CREATE INDEX payments_token_kept ON payments (COALESCE(paid_at, created_at))
    WHERE booking_token IS NOT NULL;

-- The same housekeeping drops the client tag of ended waiting-list entries
-- (`waitlist WHERE client_tag IS NOT NULL AND state NOT IN (…)`), which read
-- the whole list; tags are kept only while an entry waits or is offered.
CREATE INDEX waitlist_tagged ON waitlist (state) WHERE client_tag IS NOT NULL;

-- Work per request independent of history (issue 11), on PostgreSQL: the
-- lookups below read a share of a table that grows with the days behind
-- the museum, found with EXPLAIN on a database with months of history
-- (tests/pg_plans.rs checks every history-bounded query's plan). The same
-- gaps the SQLite backend closed in its migrations 0015 and 0016.
--
-- V3's `leases_unsettled` needs nothing: PostgreSQL matches a partial
-- index's condition against the query's clauses as written, so
-- `granted_total - released_total > sold` (UNSETTLED_SQL, word for word)
-- is recognised, unlike on SQLite; a round's own-lease load reads it in a
-- BitmapOr with the (device_id, slot_id) key.

-- A counter's tally of the slots it reports, at every sync (`TALLY_SQL`
-- in src/postgres/sync/apply.rs: `sales WHERE device_id = $1 AND slot_id
-- = ANY($2)`). Without statistics the planner took `sales_by_device_time`
-- and read every sale the counter ever made; with them, `sales_by_slot`
-- and every counter's sales of those slots. Both columns: that counter's
-- sales of those slots only.
CREATE INDEX sales_by_device_slot ON sales (device_id, slot_id);

-- Every gate sync lists the tickets of today and later that gates must
-- refuse (`VOIDED_TICKETS_SQL` in src/postgres/gate.rs: `tickets WHERE
-- (voided_at IS NOT NULL OR cancelled_at IS NOT NULL) AND slot_id >= $1`).
-- Through `tickets_by_slot` that read every ticket sold for the days ahead
-- to keep the few refused ones; this index holds those only. Its condition
-- is the query's, word for word.
CREATE INDEX tickets_refused_by_slot ON tickets (slot_id)
    WHERE voided_at IS NOT NULL OR cancelled_at IS NOT NULL;

-- Every day report lists the refunds the provider refused, whatever their
-- day (`FAILED_REFUNDS_SQL` in src/postgres/report.rs: `refunds WHERE
-- status = 'failed'`): a sequential scan of every refund ever made, as no
-- index had the status. Only failed ones are indexed: a handful, if any.
CREATE INDEX refunds_failed ON refunds (created_at) WHERE status = 'failed';

-- Every counter sync lists the counter's unresolved quarantined uploads
-- (src/postgres/sync/answer.rs: `quarantine WHERE device_id = $1 AND
-- resolved_at IS NULL ORDER BY received_at, terminal_seq`), which read
-- every item the counter ever had quarantined, resolved ones included.
CREATE INDEX quarantine_open_by_device ON quarantine (device_id, received_at, terminal_seq)
    WHERE resolved_at IS NULL;

-- Hourly housekeeping (and its first run, right after start-up) forgets
-- "my booking" tokens nobody came back for (`FORGET_TOKENS_SQL` in
-- src/postgres/checkout.rs: `payments WHERE booking_token IS NOT NULL AND
-- COALESCE(paid_at, created_at) <= $1`): a sequential scan of every payment
-- ever made. Indexed: the payments whose token is still kept, by that time
-- (SQLite's 0016 `payments_token_kept`).
CREATE INDEX payments_token_kept ON payments (COALESCE(paid_at, created_at))
    WHERE booking_token IS NOT NULL;

-- The waiting list's sweep drops the client tag of ended entries
-- (`DROP_ENDED_TAGS_SQL` in src/postgres/waitlist.rs: `waitlist WHERE
-- client_tag IS NOT NULL AND state NOT IN (…)`), a sequential scan of the
-- whole list; tags are kept only while an entry waits or is offered
-- (SQLite's 0016 `waitlist_tagged`).
CREATE INDEX waitlist_tagged ON waitlist (state) WHERE client_tag IS NOT NULL;

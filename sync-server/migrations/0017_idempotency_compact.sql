-- How an idempotency record's `body` is to be read (see sqlite/idempotency.rs):
-- 0 the answer's JSON text (every record written before this migration);
-- 1 a hold's id, its answer rebuilt from the `holds` row;
-- 2 an order's id, its answer rebuilt from the `orders` and `tickets` rows.
ALTER TABLE idempotency_log ADD COLUMN form INTEGER NOT NULL DEFAULT 0;

-- The database functions of V2 (redefined in V5) decided holds and
-- confirmations in SQL: hold expiry, "slot over", the slot's counts. Since
-- the writer's fallback runs each job through the same batch code as the
-- batch itself (one job per savepoint), core's ledger decides on every path
-- and nothing calls them. Dropped, so that no second copy of the inventory
-- rules stays in the database for a later change to call by mistake.
DROP FUNCTION IF EXISTS tessera_confirm_hold;
DROP FUNCTION IF EXISTS tessera_take_hold;
DROP FUNCTION IF EXISTS tessera_release_hold;
DROP FUNCTION IF EXISTS tessera_slot_answer;
DROP FUNCTION IF EXISTS tessera_claim_key;
DROP TYPE IF EXISTS tessera_job_answer;

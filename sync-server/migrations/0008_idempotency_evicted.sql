-- Idempotency keys the writer no longer keeps in memory (it keeps a bounded
-- number of recent ones). Filled in bulk, in key order, when the writer
-- evicts, so the append-only log keeps its cheap writes; a retry with an
-- evicted key is found here and answered from the log.
CREATE TABLE idempotency_evicted (
    key_hash BLOB PRIMARY KEY,       -- as idempotency_log.key_hash
    log_id   INTEGER NOT NULL        -- idempotency_log.id of its first answer
) STRICT, WITHOUT ROWID;

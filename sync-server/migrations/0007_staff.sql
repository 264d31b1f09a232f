-- Staff secrets (version 7): argon2id PIN verifiers, a supervisor-PIN
-- lockout that survives restarts, and server-issued approvals.

-- PHC string ($argon2id$…). Rows from before have none: their fast SHA-256
-- hashes are wiped below, and such a member cannot sign in until their PIN
-- is set again (the server names them in its log at start).
ALTER TABLE staff ADD COLUMN pin_verifier TEXT;
UPDATE staff SET pin_salt = '', pin_hash = '';

-- Supervisor-PIN attempts per device. An attempt is counted when it starts;
-- the fifth in a row locks the device until locked_until.
CREATE TABLE pin_attempts (
    device_id    TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL CHECK (failures >= 0),
    last_at      INTEGER NOT NULL,
    locked_until INTEGER NOT NULL DEFAULT 0
) STRICT;

-- A supervisor's approval of one action on one thing, issued to one device.
-- used_by: the void that carried it (an approval serves one void).
CREATE TABLE approvals (
    approval_id TEXT PRIMARY KEY,
    device_id   TEXT NOT NULL,
    action      TEXT NOT NULL CHECK (action IN ('void')),
    subject     TEXT NOT NULL,
    approved_by TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    used_by     TEXT
) STRICT;
CREATE INDEX approvals_by_subject ON approvals (action, subject);

-- Staff secrets (version 4): a void carries the server's approval of it
-- (supervisor PINs are checked by the server, never here), and the staff
-- list cached from before (fast SHA-256 hashes of every PIN, supervisors'
-- included) is dropped; the next sync brings cashiers' argon2id verifiers.
ALTER TABLE voids ADD COLUMN approval_id TEXT;
DELETE FROM meta WHERE key = 'staff';

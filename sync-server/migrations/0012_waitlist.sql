-- The waiting lists of sold-out entry times. `seq` is the line's order
-- (strict first come); an entry waits, is offered places (a hold with no
-- lines, `offer_hold_id`, which counts against capacity like any hold and
-- expires with it), and ends taken (turned into a checkout hold), expired
-- (offer unused; the places went to the next in line) or removed.
CREATE TABLE waitlist (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_id         TEXT NOT NULL UNIQUE,
    slot_id          TEXT NOT NULL REFERENCES slots (slot_id),
    email            TEXT NOT NULL,
    party            INTEGER NOT NULL CHECK (party > 0),
    language         TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    state            TEXT NOT NULL DEFAULT 'waiting'
                     CHECK (state IN ('waiting', 'offered', 'taken', 'expired', 'removed')),
    -- SHA-256 of the offer link's token; the token itself is only mailed.
    offer_token_hash BLOB UNIQUE,
    offer_hold_id    TEXT,
    offered_at       INTEGER,
    offer_expires_at INTEGER,
    -- The checkout hold the offer became.
    taken_hold_id    TEXT
) STRICT;
-- One place in a line per address (ASCII case aside): joining again returns
-- the same entry.
CREATE UNIQUE INDEX waitlist_one_per_email
    ON waitlist (slot_id, lower(email)) WHERE state IN ('waiting', 'offered');
-- A slot's line, in order, when places come back to it.
CREATE INDEX waitlist_line ON waitlist (slot_id, seq) WHERE state = 'waiting';
-- Offers whose time is up, looked for before and after every batch.
CREATE INDEX waitlist_offers_due ON waitlist (offer_expires_at) WHERE state = 'offered';

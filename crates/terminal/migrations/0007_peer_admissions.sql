-- Gate peers (version 7): today's admissions shared by the gates of one
-- museum over the LAN (this device's own included), as the signed messages
-- that carry them, so a restart keeps the merged set.

CREATE TABLE peer_admissions (
    ticket_id   TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    admitted_at INTEGER NOT NULL,
    -- The signed admission (JSON), verified before it was stored.
    message     TEXT NOT NULL,
    PRIMARY KEY (ticket_id, device_id)
) STRICT;
CREATE INDEX peer_admissions_by_time ON peer_admissions (admitted_at);

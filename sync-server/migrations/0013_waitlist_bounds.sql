-- Bounds on the waiting list (issue: one client filling lines with made-up
-- addresses). `client_tag` is a SHA-256 of the joining client (its IP
-- address, an IPv6 /64), kept while the entry waits or is offered and
-- cleared by housekeeping once it ends.
ALTER TABLE waitlist ADD COLUMN client_tag BLOB;
-- Active entries of one client, and of one address across all entry times.
CREATE INDEX waitlist_by_client ON waitlist (client_tag) WHERE state IN ('waiting', 'offered');
CREATE INDEX waitlist_by_email ON waitlist (lower(email)) WHERE state IN ('waiting', 'offered');

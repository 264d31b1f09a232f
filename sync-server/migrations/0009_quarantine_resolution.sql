-- A supervisor's word on a quarantined upload (version 9): who resolved it and
-- how, kept beside the upload; resolved items leave the counter's "need a
-- supervisor" count and the day report's open list.
ALTER TABLE quarantine ADD COLUMN resolved_by TEXT;
ALTER TABLE quarantine ADD COLUMN resolution TEXT;

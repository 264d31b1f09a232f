-- A sync reads what is still to upload, however long the counter or gate
-- has worked (issue 11). Closed shifts and gate scans stay in the file for
-- good; without these, every sync read all of them to find the unsent few
-- (a counter: a shift a day, each with its Z report; a gate: every scan).
CREATE INDEX shifts_unsent ON shifts (closed_at) WHERE uploaded = 0;
CREATE INDEX scans_unsent ON scans (scanned_at) WHERE uploaded = 0;

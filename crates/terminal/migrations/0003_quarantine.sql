-- Version 3: the catalogue version each sale was priced with (the server
-- re-derives prices from it), and this counter's uploads the server holds in
-- quarantine for a supervisor, as of the last sync.
ALTER TABLE sales ADD COLUMN catalogue_version INTEGER NOT NULL DEFAULT 0;

CREATE TABLE quarantined (
    item_id      TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    terminal_seq INTEGER,
    reason       TEXT NOT NULL
) STRICT;

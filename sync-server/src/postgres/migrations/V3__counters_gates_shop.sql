-- Everything the online inventory path (V1, V2) did not need: devices and
-- staff, counters' leases and uploads, gates, web payments and refunds, the
-- mail outbox and the waiting list. One migration so that every part finds
-- the tables it reads (a counter's void asks whether a gate admitted its
-- tickets; the day report reads all of them).
--
-- The tables mirror the SQLite backend's (sync-server/migrations) in name and
-- meaning, so that a rule loads the same facts from either; ids are `uuid`,
-- times are milliseconds since the Unix epoch (bigint), JSON is `jsonb` where
-- PostgreSQL reads into it and `text` where it is only kept.

-- ---- devices and staff -------------------------------------------------

CREATE TABLE devices (
    device_id   uuid    PRIMARY KEY,
    role        text    NOT NULL CHECK (role IN ('counter', 'gate', 'supervisor')),
    name        text    NOT NULL,
    token_hash  bytea   NOT NULL UNIQUE,
    -- The counter's certified signing key (signing_keys.key_id).
    key_id      integer,
    enrolled_at bigint  NOT NULL,
    revoked_at  bigint
);

CREATE TABLE enrolment_codes (
    code_hash  bytea   PRIMARY KEY,
    role       text    NOT NULL CHECK (role IN ('counter', 'gate', 'supervisor')),
    name       text    NOT NULL,
    created_at bigint  NOT NULL,
    expires_at bigint  NOT NULL,
    used_at    bigint,
    device_id  uuid
);

-- PIN verifiers (Argon2 PHC strings); never sent to a device.
CREATE TABLE staff (
    name         text PRIMARY KEY,
    role         text NOT NULL CHECK (role IN ('cashier', 'supervisor')),
    pin_verifier text NOT NULL
);

CREATE TABLE pin_attempts (
    device_id    uuid    PRIMARY KEY,
    failures     integer NOT NULL CHECK (failures >= 0),
    last_at      bigint  NOT NULL,
    locked_until bigint  NOT NULL DEFAULT 0
);

CREATE TABLE approvals (
    approval_id uuid   PRIMARY KEY,
    device_id   uuid   NOT NULL,
    action      text   NOT NULL CHECK (action IN ('void')),
    subject     text   NOT NULL,
    approved_by text   NOT NULL,
    created_at  bigint NOT NULL,
    used_by     text
);
CREATE INDEX approvals_by_subject ON approvals (action, subject);

-- ---- counters ------------------------------------------------------------

-- Capacity escrowed to counters: escrow = granted_total - released_total, or,
-- once revoked, what had been sold when it was revoked. A lease's changes to
-- its slot's `leased` column are made in the same transaction, with the slot
-- row locked, so two processes never size the same slot at once.
CREATE TABLE leases (
    lease_id        uuid    PRIMARY KEY,
    device_id       uuid    NOT NULL REFERENCES devices,
    slot_id         text    NOT NULL REFERENCES slots,
    granted_total   integer NOT NULL CHECK (granted_total >= 0),
    released_total  integer NOT NULL CHECK (released_total >= 0),
    sold            integer NOT NULL DEFAULT 0 CHECK (sold >= 0),
    unused_reported integer NOT NULL DEFAULT 0 CHECK (unused_reported >= 0),
    kept            integer NOT NULL DEFAULT 0,
    created_at      bigint  NOT NULL,
    revoked_at      bigint,
    revoked_escrow  integer,
    UNIQUE (device_id, slot_id)
);
CREATE INDEX leases_by_slot ON leases (slot_id);
CREATE INDEX leases_unsettled ON leases (slot_id)
    WHERE revoked_escrow IS NULL AND (granted_total - released_total > sold OR unused_reported > 0);

-- A lease's totals after each seq of its counter, so that an upload is judged
-- against the lease as it stood when the sale was made.
CREATE TABLE lease_history (
    lease_id       uuid    NOT NULL,
    after_seq      bigint  NOT NULL,
    granted_total  integer NOT NULL,
    released_total integer NOT NULL
);
CREATE INDEX lease_history_by_lease ON lease_history (lease_id, after_seq);

-- Every catalogue a counter may have sold from, by version.
CREATE TABLE catalogue_versions (
    version   bigint PRIMARY KEY,
    catalogue text   NOT NULL
);
INSERT INTO catalogue_versions (version, catalogue)
    SELECT v.value::bigint, c.value FROM meta c, meta v
    WHERE c.key = 'catalogue' AND v.key = 'catalogue_version';

-- Live sales tallies: per slot, the CRDT state (JSON), merged, never summed.
CREATE TABLE tallies (
    slot_id text PRIMARY KEY,
    state   text NOT NULL
);

CREATE TABLE sales (
    sale_id        uuid    PRIMARY KEY,
    device_id      uuid    NOT NULL REFERENCES devices,
    terminal_seq   bigint  NOT NULL CHECK (terminal_seq > 0),
    lease_id       uuid    NOT NULL REFERENCES leases,
    slot_id        text    NOT NULL REFERENCES slots,
    shift_id       uuid    NOT NULL,
    cashier        text    NOT NULL,
    created_at     bigint  NOT NULL,
    received_at    bigint  NOT NULL,
    lines          text    NOT NULL,
    total          bigint  NOT NULL,
    currency       text    NOT NULL,
    admissions     integer NOT NULL,
    payment_method text    NOT NULL CHECK (payment_method IN ('cash', 'card')),
    tendered       bigint,
    change         bigint,
    -- Admissions of this sale beyond its lease's escrow (a revoked lease):
    -- accepted, never lost, and reported.
    over_capacity  integer NOT NULL DEFAULT 0,
    voided_at      bigint,
    UNIQUE (device_id, terminal_seq)
);
CREATE INDEX sales_by_slot ON sales (slot_id);
CREATE INDEX sales_by_lease ON sales (lease_id);
CREATE INDEX sales_by_device_time ON sales (device_id, created_at);
CREATE INDEX sales_by_shift ON sales (shift_id);
CREATE INDEX sales_by_created ON sales (created_at);

CREATE TABLE counter_voids (
    void_id           uuid    PRIMARY KEY,
    sale_id           uuid    NOT NULL UNIQUE REFERENCES sales,
    device_id         uuid    NOT NULL,
    after_seq         bigint  NOT NULL,
    at                bigint  NOT NULL,
    shift_id          uuid,
    approved_by       text    NOT NULL,
    reason            text    NOT NULL,
    returned_to_lease integer NOT NULL,
    places_returned   integer NOT NULL DEFAULT 0,
    refund            bigint  NOT NULL,
    refund_method     text    NOT NULL,
    received_at       bigint  NOT NULL
);
CREATE INDEX counter_voids_by_device_time ON counter_voids (device_id, at);
CREATE INDEX counter_voids_by_shift ON counter_voids (shift_id);

CREATE TABLE shifts (
    shift_id      uuid    PRIMARY KEY,
    device_id     uuid    NOT NULL,
    cashier       text    NOT NULL,
    opened_at     bigint  NOT NULL,
    closed_at     bigint  NOT NULL,
    float         bigint  NOT NULL,
    cash_sales    bigint  NOT NULL,
    card_sales    bigint  NOT NULL,
    cash_refunds  bigint  NOT NULL,
    card_refunds  bigint  NOT NULL,
    expected_cash bigint  NOT NULL,
    counted_cash  bigint  NOT NULL,
    first_seq     bigint,
    last_seq      bigint,
    sales_count   integer NOT NULL,
    voids_count   integer NOT NULL,
    received_at   bigint  NOT NULL
);
CREATE INDEX shifts_by_closed ON shifts (closed_at);
CREATE INDEX shifts_by_opened ON shifts (opened_at);

-- A counter's sync progress. The row is locked (FOR UPDATE) by its sync, so
-- one counter's uploads are judged one round at a time even when its rounds
-- reach different processes.
CREATE TABLE device_sync (
    device_id    uuid   PRIMARY KEY,
    acked_seq    bigint NOT NULL DEFAULT 0,
    max_seq      bigint NOT NULL DEFAULT 0,
    reported_seq bigint NOT NULL DEFAULT 0,
    open_shift   uuid,
    last_sync_at bigint NOT NULL
);

-- Uploads set aside for a supervisor, with their reason; acknowledged to the
-- counter so they never hold back the uploads behind them.
CREATE TABLE quarantine (
    item_id      uuid   PRIMARY KEY,
    kind         text   NOT NULL CHECK (kind IN ('sale', 'void', 'shift')),
    device_id    uuid   NOT NULL,
    terminal_seq bigint,
    slot_id      text,
    reason       text   NOT NULL,
    body         text   NOT NULL,
    device_at    bigint,
    received_at  bigint NOT NULL,
    resolved_at  bigint,
    resolved_by  text,
    resolution   text
);
CREATE INDEX quarantine_by_device ON quarantine (device_id, kind, terminal_seq);
CREATE INDEX quarantine_by_received ON quarantine (received_at);
CREATE INDEX quarantine_by_slot ON quarantine (slot_id);

-- ---- tickets of every channel -----------------------------------------------

-- Counter tickets belong to a sale, online ones to an order.
ALTER TABLE tickets ALTER COLUMN order_id DROP NOT NULL;
ALTER TABLE tickets ADD COLUMN sale_id uuid;
ALTER TABLE tickets ADD COLUMN voided_at bigint;
ALTER TABLE tickets ADD COLUMN cancelled_at bigint;
ALTER TABLE tickets ALTER COLUMN price DROP NOT NULL;
ALTER TABLE tickets ALTER COLUMN vat_bp DROP NOT NULL;
ALTER TABLE tickets ADD CONSTRAINT tickets_of_one_sale_or_order
    CHECK (num_nonnulls(order_id, sale_id) = 1);
CREATE INDEX tickets_by_slot ON tickets (slot_id);
CREATE INDEX tickets_by_sale ON tickets (sale_id);
CREATE INDEX tickets_cancelled ON tickets (cancelled_at) WHERE cancelled_at IS NOT NULL;

-- ---- gates -------------------------------------------------------------------

CREATE TABLE redemptions (
    ticket_id   uuid    PRIMARY KEY,
    slot_id     text    NOT NULL,
    admits      integer NOT NULL,
    redeemed_at bigint  NOT NULL,
    device_at   bigint,
    received_at bigint,
    gate_device uuid    NOT NULL,
    gate_name   text    NOT NULL,
    mode        text    NOT NULL CHECK (mode IN ('online', 'offline')),
    scan_id     uuid
);
CREATE INDEX redemptions_by_slot ON redemptions (slot_id);

CREATE TABLE scans (
    scan_id     uuid    PRIMARY KEY,
    ticket_id   uuid    NOT NULL,
    slot_id     text    NOT NULL,
    product_id  text    NOT NULL,
    admits      integer NOT NULL,
    key_id      integer NOT NULL,
    gate_device uuid    NOT NULL,
    gate_name   text    NOT NULL,
    scanned_at  bigint  NOT NULL,
    device_at   bigint,
    mode        text    NOT NULL CHECK (mode IN ('online', 'offline')),
    received_at bigint  NOT NULL
);
CREATE INDEX scans_by_ticket ON scans (ticket_id);
CREATE INDEX scans_by_slot ON scans (slot_id);

CREATE TABLE gate_conflicts (
    ticket_id        uuid   NOT NULL,
    slot_id          text   NOT NULL,
    first_scan       uuid   NOT NULL,
    first_gate       text   NOT NULL,
    first_at         bigint NOT NULL,
    first_device_at  bigint,
    second_scan      uuid   NOT NULL,
    second_gate      text   NOT NULL,
    second_at        bigint NOT NULL,
    second_device_at bigint,
    detected_at      bigint NOT NULL,
    PRIMARY KEY (ticket_id, second_scan)
);
CREATE INDEX gate_conflicts_by_slot ON gate_conflicts (slot_id);

-- ---- web payments, bookings and refunds ----------------------------------------

ALTER TABLE orders ADD COLUMN name text;
ALTER TABLE orders ADD COLUMN language text;
ALTER TABLE orders ADD COLUMN payment_id text;
ALTER TABLE orders ADD COLUMN booking_token_hash bytea;
ALTER TABLE orders ADD COLUMN refunded bigint NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX orders_by_booking_token ON orders (booking_token_hash);
CREATE UNIQUE INDEX orders_by_payment ON orders (payment_id);
CREATE UNIQUE INDEX orders_by_reference ON orders (reference);

CREATE TABLE payments (
    payment_id    text    PRIMARY KEY,
    checkout_id   text    NOT NULL UNIQUE,
    hold_id       uuid    NOT NULL REFERENCES holds,
    provider      text    NOT NULL,
    provider_ref  text,
    redirect_url  text,
    refund_ref    text,
    amount        bigint  NOT NULL,
    currency      text    NOT NULL,
    status        text    NOT NULL CHECK (status IN ('pending', 'paid', 'failed', 'refunding', 'refunded')),
    visitor_name  text    NOT NULL,
    email         text    NOT NULL,
    language      text    NOT NULL,
    order_id      uuid,
    booking_token text,
    created_at    bigint  NOT NULL,
    paid_at       bigint
);
CREATE INDEX payments_by_hold ON payments (hold_id);

CREATE TABLE webhook_events (
    provider    text   NOT NULL,
    event_id    text   NOT NULL,
    payment_id  text,
    kind        text   NOT NULL,
    outcome     text   NOT NULL,
    received_at bigint NOT NULL,
    PRIMARY KEY (provider, event_id)
);

CREATE TABLE refunds (
    refund_id          uuid    PRIMARY KEY,
    payment_id         text    NOT NULL REFERENCES payments,
    order_id           uuid,
    amount             bigint  NOT NULL CHECK (amount > 0),
    currency           text    NOT NULL,
    reason             text    NOT NULL,
    idempotency_key    text    NOT NULL UNIQUE,
    status             text    NOT NULL CHECK (status IN ('queued', 'done', 'failed')),
    attempts           integer NOT NULL DEFAULT 0,
    next_attempt_at    bigint  NOT NULL,
    provider_refund_id text,
    last_error         text,
    link               text,
    created_at         bigint  NOT NULL,
    done_at            bigint
);
CREATE INDEX refunds_due ON refunds (next_attempt_at) WHERE status = 'queued';
CREATE INDEX refunds_by_order ON refunds (order_id);
CREATE INDEX refunds_by_created ON refunds (created_at);

-- ---- mail and the waiting list ---------------------------------------------------

-- Queued in the transaction of what causes the mail; the mailer of any one
-- process sends it (rows are claimed with FOR UPDATE SKIP LOCKED).
CREATE TABLE mail_outbox (
    mail_id         uuid    PRIMARY KEY,
    kind            text    NOT NULL,
    recipient       text    NOT NULL,
    language        text    NOT NULL,
    payload         text    NOT NULL,
    order_id        uuid,
    created_at      bigint  NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at bigint  NOT NULL,
    sent_at         bigint,
    last_error      text
);
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at) WHERE sent_at IS NULL;

CREATE TABLE waitlist (
    seq              bigserial PRIMARY KEY,
    entry_id         uuid    NOT NULL UNIQUE,
    slot_id          text    NOT NULL REFERENCES slots,
    email            text    NOT NULL,
    party            integer NOT NULL CHECK (party > 0),
    language         text    NOT NULL,
    created_at       bigint  NOT NULL,
    state            text    NOT NULL DEFAULT 'waiting'
                     CHECK (state IN ('waiting', 'offered', 'taken', 'expired', 'removed')),
    offer_token_hash bytea   UNIQUE,
    offer_hold_id    uuid,
    offered_at       bigint,
    offer_expires_at bigint,
    taken_hold_id    uuid,
    client_tag       bytea
);
CREATE UNIQUE INDEX waitlist_one_per_email
    ON waitlist (slot_id, lower(email)) WHERE state IN ('waiting', 'offered');
CREATE INDEX waitlist_line ON waitlist (slot_id, seq) WHERE state = 'waiting';
CREATE INDEX waitlist_offers_due ON waitlist (offer_expires_at) WHERE state = 'offered';
CREATE INDEX waitlist_by_client ON waitlist (client_tag) WHERE state IN ('waiting', 'offered');
CREATE INDEX waitlist_by_email ON waitlist (lower(email)) WHERE state IN ('waiting', 'offered');
CREATE INDEX waitlist_by_slot ON waitlist (slot_id);

-- Add-ons (the audio guide) are tickets that admit nobody: V1 wrongly asked
-- every ticket to admit someone.
ALTER TABLE tickets DROP CONSTRAINT tickets_admits_check;
ALTER TABLE tickets ADD CONSTRAINT tickets_admits_check CHECK (admits >= 0);

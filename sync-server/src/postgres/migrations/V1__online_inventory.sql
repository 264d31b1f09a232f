-- Tessera on PostgreSQL, first step: the online inventory path (catalogue,
-- slots, checkout holds, orders with signed tickets, idempotency keys,
-- trusted channels, the server's signing keys). Counters, gates, payments,
-- the waiting list and reports are not on PostgreSQL yet; their tables come
-- with the migrations that bring them.
--
-- Times are milliseconds since the Unix epoch (bigint), as in the SQLite
-- backend, so both backends hand core the same numbers.

CREATE TABLE meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- The server's ticket-signing keys (and, later, the counters' certified keys).
CREATE TABLE signing_keys (
    key_id      integer PRIMARY KEY,
    owner       text    NOT NULL,
    device_id   uuid,
    public_key  bytea   NOT NULL CHECK (octet_length(public_key) = 32),
    -- Only the server's own keys have one; never sent anywhere.
    secret_seed bytea   CHECK (secret_seed IS NULL OR octet_length(secret_seed) = 32),
    created_at  bigint  NOT NULL,
    revoked_at  bigint
);

-- One row per entry window. Capacity is decided here: every write that takes
-- places is a conditional UPDATE of this row (see postgres/online.rs), so two
-- processes can never both take the last place. The CHECK is the last line of
-- defence should a write ever forget its condition. `over_capacity` (sales
-- from revoked counter leases beyond their escrow) stays outside it: those
-- sales are accepted and reported, never refused.
CREATE TABLE slots (
    slot_id        text    PRIMARY KEY,
    date           date    NOT NULL,
    starts_at      bigint  NOT NULL,
    ends_at        bigint  NOT NULL,
    window_minutes integer NOT NULL CHECK (window_minutes > 0),
    capacity       integer NOT NULL CHECK (capacity >= 0),
    sold_online    integer NOT NULL DEFAULT 0 CHECK (sold_online >= 0),
    held_online    integer NOT NULL DEFAULT 0 CHECK (held_online >= 0),
    leased         integer NOT NULL DEFAULT 0 CHECK (leased >= 0),
    over_capacity  integer NOT NULL DEFAULT 0 CHECK (over_capacity >= 0),
    -- Bumped by every write: processes caching the row keep the newest.
    version        bigint  NOT NULL DEFAULT 0,
    CONSTRAINT slots_never_oversold CHECK (sold_online::bigint + held_online + leased <= capacity)
);
CREATE INDEX slots_by_date ON slots (date);

CREATE TABLE holds (
    hold_id     uuid    PRIMARY KEY,
    slot_id     text    NOT NULL REFERENCES slots,
    admissions  integer NOT NULL CHECK (admissions > 0),
    lines       jsonb   NOT NULL,
    total       bigint  NOT NULL,
    currency    text    NOT NULL,
    created_at  bigint  NOT NULL,
    expires_at  bigint  NOT NULL,
    status      text    NOT NULL CHECK (status IN ('held', 'confirmed', 'cancelled', 'expired')),
    -- The process that released an expired hold (the sweeper), for audits.
    released_by text
);
-- The sweeper's question: which open holds are due?
CREATE INDEX holds_open_by_expiry ON holds (expires_at) WHERE status = 'held';

CREATE TABLE channels (
    channel_id uuid   PRIMARY KEY,
    name       text   NOT NULL UNIQUE,
    token_hash bytea  NOT NULL UNIQUE,
    created_at bigint NOT NULL,
    revoked_at bigint
);

CREATE TABLE orders (
    order_id          uuid    PRIMARY KEY,
    -- A hold becomes at most one order, whichever process confirms it.
    hold_id           uuid    NOT NULL UNIQUE REFERENCES holds,
    slot_id           text    NOT NULL REFERENCES slots,
    admissions        integer NOT NULL CHECK (admissions > 0),
    total             bigint  NOT NULL,
    currency          text    NOT NULL,
    lines             jsonb   NOT NULL,
    payment_reference text    NOT NULL,
    email             text,
    channel           text    NOT NULL,
    reference         text,
    created_at        bigint  NOT NULL
);
CREATE INDEX orders_by_slot ON orders (slot_id);
CREATE INDEX orders_by_created ON orders (created_at);

CREATE TABLE tickets (
    ticket_id  uuid    PRIMARY KEY,
    order_id   uuid    NOT NULL REFERENCES orders,
    slot_id    text    NOT NULL REFERENCES slots,
    product_id text    NOT NULL,
    admits     integer NOT NULL CHECK (admits > 0),
    code       text    NOT NULL,
    channel    text    NOT NULL,
    key_id     integer NOT NULL,
    price      bigint  NOT NULL,
    vat_bp     integer NOT NULL
);
CREATE INDEX tickets_by_order ON tickets (order_id);

-- An Idempotency-Key's first answer. The primary key makes a key unique
-- across processes: the job that inserts it first runs; any other (in this
-- process or another) waits for that commit and replays the stored answer.
CREATE TABLE idempotency (
    key_hash     bytea    PRIMARY KEY,
    request_hash bytea    NOT NULL,
    status       smallint NOT NULL,
    body         jsonb    NOT NULL,
    created_at   bigint   NOT NULL
);
CREATE INDEX idempotency_by_age ON idempotency (created_at);

CREATE TABLE audit_log (
    id     bigserial PRIMARY KEY,
    at     bigint    NOT NULL,
    actor  text      NOT NULL,
    action text      NOT NULL,
    detail text      NOT NULL
);

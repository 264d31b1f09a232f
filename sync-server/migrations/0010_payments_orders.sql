-- Online payments, trusted sales channels and "my booking" (version 10).
--
-- An order is confirmed only by a verified payment (a provider's signed
-- callback) or by a trusted channel's token. Each webhook event is recorded
-- once by its id, each payment confirms at most one order, and a payment that
-- arrives when its places are gone is refunded through a durable queue.

-- Trusted sellers (a partner's site, a tourist office) that confirm holds
-- with their own token. Only the token's SHA-256 is kept.
CREATE TABLE channels (
    channel_id TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    token_hash BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;

-- One attempt to pay for one hold. payment_id is what the provider echoes;
-- checkout_id is what the visitor's return page polls. Both are unguessable.
CREATE TABLE payments (
    payment_id    TEXT PRIMARY KEY,
    checkout_id   TEXT NOT NULL UNIQUE,
    hold_id       TEXT NOT NULL REFERENCES holds (hold_id),
    provider      TEXT NOT NULL,
    -- The provider's session id and the page the visitor pays on, once the
    -- provider answered (the call is made outside the writer).
    provider_ref  TEXT,
    redirect_url  TEXT,
    -- What a refund must name (Stripe: the payment intent), from the event.
    refund_ref    TEXT,
    amount        INTEGER NOT NULL,
    currency      TEXT NOT NULL,
    -- pending: no verified payment yet; paid: captured and ticketed;
    -- failed: abandoned or refused, nothing taken; refunding: captured with no
    -- places left, a refund is queued; refunded: that refund went through.
    status        TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'failed', 'refunding', 'refunded')),
    visitor_name  TEXT NOT NULL,
    email         TEXT NOT NULL,
    language      TEXT NOT NULL,
    order_id      TEXT,
    -- The "my booking" token in clear, kept only until the checkout's return
    -- page has read it once (the order keeps its hash).
    booking_token TEXT,
    created_at    INTEGER NOT NULL,
    paid_at       INTEGER
) STRICT;
CREATE INDEX payments_by_hold ON payments (hold_id);

-- Every verified webhook event, once: a replay finds its row and changes
-- nothing.
CREATE TABLE webhook_events (
    provider    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    payment_id  TEXT,
    kind        TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (provider, event_id)
) STRICT;

-- Money to give back, worked by a background task with retries. The
-- idempotency key goes to the provider, so a retried refund is paid once.
CREATE TABLE refunds (
    refund_id          TEXT PRIMARY KEY,
    payment_id         TEXT NOT NULL REFERENCES payments (payment_id),
    order_id           TEXT,
    amount             INTEGER NOT NULL CHECK (amount > 0),
    currency           TEXT NOT NULL,
    -- no_places (paid after the hold's places were gone), cancelled (tickets
    -- cancelled from "my booking"), duplicate (a second payment of a hold
    -- already paid), amount_mismatch (captured amount differs from the order).
    reason             TEXT NOT NULL,
    idempotency_key    TEXT NOT NULL UNIQUE,
    status             TEXT NOT NULL CHECK (status IN ('queued', 'done', 'failed')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    INTEGER NOT NULL,
    provider_refund_id TEXT,
    last_error         TEXT,
    -- The booking's "my booking" link, for the refund's email; kept only
    -- until that email is queued (it carries the token).
    link               TEXT,
    created_at         INTEGER NOT NULL,
    done_at            INTEGER
) STRICT;
CREATE INDEX refunds_due ON refunds (next_attempt_at) WHERE status = 'queued';
CREATE INDEX refunds_by_order ON refunds (order_id);

-- The visitor and the seller of each order. Orders from before channels were
-- confirmed anonymously: they say so.
ALTER TABLE orders ADD COLUMN name TEXT;
ALTER TABLE orders ADD COLUMN language TEXT;
ALTER TABLE orders ADD COLUMN channel TEXT NOT NULL DEFAULT 'anonymous';
ALTER TABLE orders ADD COLUMN payment_id TEXT;
-- SHA-256 of the "my booking" token (the token itself is only in the link).
ALTER TABLE orders ADD COLUMN booking_token_hash BLOB;
-- A short reference a visitor can read out at the desk.
ALTER TABLE orders ADD COLUMN reference TEXT;
-- Money given back (or queued to be) for cancelled tickets, minor units.
ALTER TABLE orders ADD COLUMN refunded INTEGER NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX orders_by_booking_token ON orders (booking_token_hash);
CREATE UNIQUE INDEX orders_by_payment ON orders (payment_id);
CREATE UNIQUE INDEX orders_by_reference ON orders (reference);
CREATE INDEX orders_by_created ON orders (created_at);

-- A ticket's price (VAT included) and rate, so a cancellation refunds it
-- exactly; cancelled_at marks a ticket cancelled from "my booking". Such a
-- ticket also gets voided_at, which is what every gate refuses (`voided`).
ALTER TABLE tickets ADD COLUMN price INTEGER;
ALTER TABLE tickets ADD COLUMN vat_bp INTEGER;
ALTER TABLE tickets ADD COLUMN cancelled_at INTEGER;
CREATE INDEX tickets_by_order ON tickets (order_id);

-- The demo payment provider's signing secret: per server, never shown.
INSERT OR IGNORE INTO meta (key, value) VALUES ('demo_payment_secret', lower(hex(randomblob(32))));

-- Emails to send, written in the same transaction as what causes them (an
-- order confirmed, tickets cancelled, a refund, a waiting-list offer, a
-- resend), so a committed event never loses its mail and a rolled-back one
-- never sends one. The mailer works through the unsent rows with retries.
CREATE TABLE mail_outbox (
    mail_id         TEXT PRIMARY KEY,
    -- booking_confirmed | tickets_cancelled | refund_issued | waitlist_offer | resend
    kind            TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    language        TEXT NOT NULL,
    -- What the mail says, as JSON: {"booking": Booking, "link": url} or
    -- {"offer": Offer, "link": url}. Links carry secrets; the mailer blanks
    -- the payload once the mail is sent.
    payload         TEXT NOT NULL,
    order_id        TEXT,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    sent_at         INTEGER,
    last_error      TEXT
);
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at) WHERE sent_at IS NULL;

-- One statement per online job, so that a writer's batch is pipelined: the
-- writer sends every job's call without waiting for the one before, and a
-- batch of a hundred holds costs a few round trips instead of five hundred.
--
-- Each function claims the job's Idempotency-Key, decides, and writes, in
-- one block. The block's EXCEPTION clause is what the writer's per-job
-- SAVEPOINT used to be: a job that fails (a broken constraint, a bug) is
-- rolled back alone and answered 'failed'; the batch goes on. Deadlocks and
-- serialization failures are raised on: the writer runs the whole batch
-- again.
--
-- Everything a job answers is computed by the server process before it
-- reaches the writer (ids, expiry, signed tickets, the answer's body); the
-- functions only decide against the rows and write. A refusal leaves the
-- key's row claimed (status 0): the writer records the refusal's answer or
-- forgets the key in a second statement, by the rule the server keeps in
-- one place (`worth_recording`).

CREATE TYPE tessera_job_answer AS (
    -- The slot row as the job left it (NULL when it never read one).
    slot_id        text,
    starts_at      bigint,
    ends_at        bigint,
    window_minutes integer,
    capacity       integer,
    sold_online    integer,
    held_online    integer,
    leased         integer,
    over_capacity  integer,
    version        bigint,
    -- 'done', 'replay', 'key_reused', 'pending', 'unknown_slot', 'past',
    -- 'sold_out', 'unknown_hold', 'confirmed', 'cancelled', 'expired',
    -- 'stale', 'failed'.
    outcome        text,
    -- A replay's stored answer; a failure's message (as a JSON string).
    status         smallint,
    body           jsonb,
    -- 'confirmed': the order the hold already became.
    order_id       uuid
);

-- Claims an Idempotency-Key. A job of another process holding the same key
-- makes the INSERT wait for that commit. Returns NULL when claimed, else the
-- answer to give.
CREATE FUNCTION tessera_claim_key(p_key bytea, p_request bytea, p_now bigint)
RETURNS tessera_job_answer LANGUAGE plpgsql AS $$
DECLARE
    a tessera_job_answer;
    first idempotency%ROWTYPE;
BEGIN
    INSERT INTO idempotency (key_hash, request_hash, status, body, created_at)
    VALUES (p_key, p_request, 0, 'null', p_now)
    ON CONFLICT (key_hash) DO NOTHING;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO first FROM idempotency WHERE key_hash = p_key;
    IF NOT FOUND THEN
        -- Only a concurrent prune gets here: let the client retry.
        a.outcome := 'pending';
    ELSIF first.request_hash <> p_request THEN
        a.outcome := 'key_reused';
    ELSIF first.status = 0 THEN
        -- Claimed by a job earlier in this same batch, not answered yet.
        a.outcome := 'pending';
    ELSE
        a.outcome := 'replay';
        a.status := first.status;
        a.body := first.body;
    END IF;
    RETURN a;
END $$;

CREATE FUNCTION tessera_slot_answer(s slots, p_outcome text)
RETURNS tessera_job_answer LANGUAGE sql IMMUTABLE AS $$
    SELECT s.slot_id, s.starts_at, s.ends_at, s.window_minutes, s.capacity,
           s.sold_online, s.held_online, s.leased, s.over_capacity, s.version,
           p_outcome, NULL::smallint, NULL::jsonb, NULL::uuid
$$;

-- A checkout hold: the places are taken by a conditional UPDATE of the slot
-- row that only matches while they are free.
CREATE FUNCTION tessera_take_hold(
    p_key bytea, p_request bytea, p_now bigint,
    p_slot text, p_admissions integer, p_hold uuid, p_expires bigint,
    p_lines jsonb, p_total bigint, p_currency text, p_body jsonb)
RETURNS tessera_job_answer LANGUAGE plpgsql AS $$
DECLARE
    a tessera_job_answer;
    s slots%ROWTYPE;
BEGIN
    BEGIN
        a := tessera_claim_key(p_key, p_request, p_now);
        -- (A composite IS NOT NULL only when every field is.)
        IF a.outcome IS NOT NULL THEN
            RETURN a;
        END IF;
        UPDATE slots SET held_online = held_online + p_admissions, version = version + 1
        WHERE slot_id = p_slot AND ends_at > p_now
          AND sold_online::bigint + held_online + leased + over_capacity + p_admissions <= capacity
        RETURNING * INTO s;
        IF NOT FOUND THEN
            SELECT * INTO s FROM slots WHERE slot_id = p_slot;
            IF NOT FOUND THEN
                a.outcome := 'unknown_slot';
                RETURN a;
            ELSIF s.ends_at <= p_now THEN
                RETURN tessera_slot_answer(s, 'past');
            END IF;
            RETURN tessera_slot_answer(s, 'sold_out');
        END IF;
        INSERT INTO holds (hold_id, slot_id, admissions, lines, total, currency,
                           created_at, expires_at, status)
        VALUES (p_hold, p_slot, p_admissions, p_lines, p_total, p_currency,
                p_now, p_expires, 'held');
        UPDATE idempotency SET status = 201, body = p_body WHERE key_hash = p_key;
        RETURN tessera_slot_answer(s, 'done');
    EXCEPTION
        WHEN deadlock_detected OR serialization_failure THEN RAISE;
        WHEN OTHERS THEN
            a.outcome := 'failed';
            a.body := to_jsonb(SQLERRM);
            RETURN a;
    END;
END $$;

-- Gives an open hold's places back; NULL if the hold is no longer open.
CREATE FUNCTION tessera_release_hold(p_hold uuid, p_status text, p_process text)
RETURNS slots LANGUAGE plpgsql AS $$
DECLARE
    h holds%ROWTYPE;
    s slots%ROWTYPE;
BEGIN
    UPDATE holds SET status = p_status, released_by = p_process
    WHERE hold_id = p_hold AND status = 'held' RETURNING * INTO h;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE slots SET held_online = held_online - h.admissions, version = version + 1
    WHERE slot_id = h.slot_id RETURNING * INTO s;
    RETURN s;
END $$;

-- A hold becomes an order with the tickets the server process signed for
-- it. Only an open, unexpired hold does; a second process confirming the
-- same hold waits for this row and then finds it taken. An open hold whose
-- time is up is released here, once, whichever process gets to it first.
CREATE FUNCTION tessera_confirm_hold(
    p_key bytea, p_request bytea, p_now bigint, p_process text,
    p_hold uuid, p_slot text, p_admissions integer,
    p_order uuid, p_payment_reference text, p_email text, p_channel text,
    p_reference text, p_body jsonb,
    p_ticket_ids uuid[], p_products text[], p_admits integer[], p_codes text[],
    p_prices bigint[], p_vat integer[], p_key_id integer)
RETURNS tessera_job_answer LANGUAGE plpgsql AS $$
DECLARE
    a tessera_job_answer;
    h holds%ROWTYPE;
    s slots%ROWTYPE;
    existing uuid;
BEGIN
    BEGIN
        a := tessera_claim_key(p_key, p_request, p_now);
        -- (A composite IS NOT NULL only when every field is.)
        IF a.outcome IS NOT NULL THEN
            RETURN a;
        END IF;
        UPDATE holds SET status = 'confirmed'
        WHERE hold_id = p_hold AND status = 'held' AND expires_at > p_now
          AND slot_id = p_slot AND admissions = p_admissions
        RETURNING * INTO h;
        IF NOT FOUND THEN
            SELECT * INTO h FROM holds WHERE hold_id = p_hold;
            IF NOT FOUND THEN
                a.outcome := 'unknown_hold';
            ELSIF h.status = 'confirmed' THEN
                SELECT order_id INTO existing FROM orders WHERE hold_id = p_hold;
                a.outcome := 'confirmed';
                a.order_id := existing;
            ELSIF h.status = 'cancelled' THEN
                a.outcome := 'cancelled';
            ELSIF h.status = 'held' AND h.expires_at > p_now THEN
                -- Open, but not the hold the tickets were signed for (the
                -- process read it before it existed): the client retries.
                a.outcome := 'stale';
            ELSE
                s := tessera_release_hold(p_hold, 'expired', p_process);
                IF s.slot_id IS NOT NULL THEN
                    RETURN tessera_slot_answer(s, 'expired');
                END IF;
                a.outcome := 'expired';
            END IF;
            RETURN a;
        END IF;
        UPDATE slots SET held_online = held_online - h.admissions,
                         sold_online = sold_online + h.admissions,
                         version = version + 1
        WHERE slot_id = h.slot_id RETURNING * INTO s;
        INSERT INTO orders (order_id, hold_id, slot_id, admissions, total, currency, lines,
                            payment_reference, email, channel, reference, created_at)
        VALUES (p_order, p_hold, h.slot_id, h.admissions, h.total, h.currency, h.lines,
                p_payment_reference, p_email, p_channel, p_reference, p_now);
        INSERT INTO tickets (ticket_id, order_id, slot_id, product_id, admits, code,
                             channel, key_id, price, vat_bp)
        SELECT t.id, p_order, h.slot_id, t.product, t.admits, t.code, 'online', p_key_id,
               t.price, t.vat
        FROM unnest(p_ticket_ids, p_products, p_admits, p_codes, p_prices, p_vat)
             AS t(id, product, admits, code, price, vat);
        UPDATE idempotency SET status = 201, body = p_body WHERE key_hash = p_key;
        RETURN tessera_slot_answer(s, 'done');
    EXCEPTION
        WHEN deadlock_detected OR serialization_failure THEN RAISE;
        WHEN OTHERS THEN
            a.outcome := 'failed';
            a.body := to_jsonb(SQLERRM);
            RETURN a;
    END;
END $$;

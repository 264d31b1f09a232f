-- A slot or key row held by another session past `lock_timeout` (see
-- postgres/connector.rs) must fail the writer's whole batch (answered 503,
-- nothing written), not be swallowed by a job's EXCEPTION block as a
-- failure of that job (answered 500). The functions of V2, unchanged but
-- for `lock_not_available` re-raised with the conflicts. (`statement_timeout`
-- and the idle-transaction limit are never caught by WHEN OTHERS.)


-- A checkout hold: the places are taken by a conditional UPDATE of the slot
-- row that only matches while they are free.
CREATE OR REPLACE FUNCTION tessera_take_hold(
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
        WHEN deadlock_detected OR serialization_failure OR lock_not_available THEN RAISE;
        WHEN OTHERS THEN
            a.outcome := 'failed';
            a.body := to_jsonb(SQLERRM);
            RETURN a;
    END;
END $$;


-- A hold becomes an order with the tickets the server process signed for
-- it. Only an open, unexpired hold does; a second process confirming the
-- same hold waits for this row and then finds it taken. An open hold whose
-- time is up is released here, once, whichever process gets to it first.
CREATE OR REPLACE FUNCTION tessera_confirm_hold(
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
        WHEN deadlock_detected OR serialization_failure OR lock_not_available THEN RAISE;
        WHEN OTHERS THEN
            a.outcome := 'failed';
            a.body := to_jsonb(SQLERRM);
            RETURN a;
    END;
END $$;

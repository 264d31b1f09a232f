//! The day report as text (for a person) and CSV (for a spreadsheet: one
//! header row, ISO dates, amounts in major units with two decimals).

use std::fmt::Write;

use tessera_core::money::format_minor;

use super::DayReport;

pub fn to_text(r: &DayReport) -> String {
    let mut o = String::new();
    let m = |v: i64| format!("{} {}", format_minor(v), r.currency);
    let _ = writeln!(o, "{} — day report for {}", r.museum, r.date);
    if let Some(problem) = &r.does_not_add_up {
        let _ = writeln!(o, "\n!! THIS REPORT DOES NOT ADD UP: {problem}");
    }
    let _ = writeln!(o, "\nTAKINGS");
    for c in r.channels.iter().chain(std::iter::once(&r.total)) {
        let _ = writeln!(
            o,
            "  {:<14} sales {:>4}  voids {:>3}  admissions {:>5}  gross {:>12}  refunds {:>10}  net {:>12}",
            c.channel,
            c.sales_count,
            c.voids_count,
            c.admissions,
            m(c.gross_sales),
            m(c.refunds),
            m(c.net_takings)
        );
        for p in &c.payments {
            let _ = writeln!(o, "      {:<8} {:>12}", p.method, m(p.net));
        }
        for v in &c.vat {
            let _ = writeln!(
                o,
                "      VAT {:<6} net {:>12}  tax {:>10}",
                v.label,
                m(v.net),
                m(v.tax)
            );
        }
    }
    let _ = writeln!(o, "\nONLINE CHANNELS");
    if r.online_channels.is_empty() {
        let _ = writeln!(o, "  none");
    }
    for l in &r.online_channels {
        let _ = writeln!(
            o,
            "  {:<24} orders {:>4}  admissions {:>5}  gross {:>12}  refunds {:>10}  net {:>12}",
            l.channel,
            l.orders,
            l.admissions,
            m(l.gross_sales),
            m(l.refunds),
            m(l.net_takings)
        );
    }
    let _ = writeln!(o, "\nONLINE REFUNDS (queued this day)");
    if r.refunds.by_state.is_empty() {
        let _ = writeln!(o, "  none");
    }
    for c in &r.refunds.by_state {
        let _ = writeln!(o, "  {:<10} {:>4}  {:>12}", c.key, c.count, m(c.amount));
    }
    for c in &r.refunds.by_reason {
        let _ = writeln!(o, "    {:<16} {:>4}  {:>12}", c.key, c.count, m(c.amount));
    }
    for f in &r.refunds.needs_attention {
        let _ = writeln!(
            o,
            "  REFUND REFUSED BY THE PROVIDER: {} of payment {} ({}) — give it back by hand: {}",
            m(f.amount),
            f.payment_id,
            f.reason,
            f.last_error.as_deref().unwrap_or("no reason given")
        );
    }
    let _ = writeln!(o, "\nCASH DRAWERS");
    for s in &r.shifts {
        match (s.expected_cash, s.counted_cash, s.over_short) {
            (Some(e), Some(c), Some(d)) => {
                let _ = writeln!(
                    o,
                    "  {:<14} {:<10} float {}  expected {}  counted {}  {} {}",
                    s.counter,
                    s.cashier,
                    m(s.float),
                    m(e),
                    m(c),
                    if d < 0 { "SHORT" } else { "over" },
                    m(d.abs())
                );
                if let Some(missing) = s.not_uploaded_cash.filter(|v| *v != 0) {
                    let _ = writeln!(
                        o,
                        "      {} of cash sales on its Z report are not on the server",
                        m(missing)
                    );
                }
            }
            _ => {
                let _ = writeln!(
                    o,
                    "  {:<14} {:<10} float {}  Z REPORT NOT RECEIVED (shift open)",
                    s.counter,
                    s.cashier,
                    m(s.float)
                );
            }
        }
    }
    let _ = writeln!(o, "\nMISSING");
    if r.missing.counters.is_empty()
        && r.missing.leases_held.is_empty()
        && r.missing.over_capacity.is_empty()
    {
        let _ = writeln!(o, "  nothing");
    }
    for c in &r.missing.counters {
        let _ = writeln!(o, "  {}: {}", c.counter, c.problem);
    }
    for l in &r.missing.leases_held {
        let _ = writeln!(
            o,
            "  lease held: {} {} — {} unsold of {}",
            l.counter, l.slot_id, l.unsold, l.escrow
        );
    }
    for s in &r.missing.over_capacity {
        let _ = writeln!(
            o,
            "  OVER CAPACITY: {} sale #{} for {} — {} admission(s) beyond a revoked lease",
            s.counter, s.terminal_seq, s.slot_id, s.admissions_over
        );
    }
    let _ = writeln!(o, "\nSLOTS  capacity online counter admitted no-shows");
    for s in &r.slots {
        let _ = writeln!(
            o,
            "  {}  {:>5} {:>6} {:>7} {:>8} {:>8}{}",
            s.slot_id,
            s.capacity,
            s.sold_online,
            s.sold_counter,
            s.admitted,
            s.no_shows,
            if s.over_capacity > 0 { "  OVER" } else { "" }
        );
        if s.kept_by_voids > 0 {
            let _ = writeln!(
                o,
                "    {} place(s) kept out of sale: voided after the visitor was admitted or the slot had started",
                s.kept_by_voids
            );
        }
    }
    let w = &r.waitlist;
    let _ = writeln!(o, "\nWAITING LIST  entries (admissions)");
    for (label, c) in [
        ("waiting", w.waiting),
        ("offered", w.offered),
        ("taken", w.taken),
        ("expired", w.expired),
        ("unserved", w.unserved),
    ] {
        let _ = writeln!(o, "  {label:<9} {:>5} ({})", c.entries, c.admissions);
    }
    let _ = writeln!(o, "\nQUARANTINE (uploads a supervisor must look at)");
    if r.quarantine.is_empty() {
        let _ = writeln!(o, "  none");
    }
    for q in &r.quarantine {
        let _ = writeln!(o, "  {} {} {}: {}", q.counter, q.kind, q.item_id, q.reason);
    }
    let _ = writeln!(o, "\nGATE CONFLICTS");
    if r.conflicts.is_empty() {
        let _ = writeln!(o, "  none");
    }
    for c in &r.conflicts {
        let _ = writeln!(
            o,
            "  ticket {} ({}) admitted by {} at {} and again by {} at {}",
            c.ticket_id, c.slot_id, c.first_gate, c.first_at, c.second_gate, c.second_at
        );
    }
    o
}

/// CSV field quoting: only when needed.
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

pub fn to_csv(r: &DayReport) -> String {
    let mut o = String::from("date,section,channel,item,count,amount\n");
    let mut row =
        |section: &str, channel: &str, item: &str, count: Option<i64>, amount: Option<i64>| {
            let _ = writeln!(
                o,
                "{},{},{},{},{},{}",
                r.date,
                section,
                field(channel),
                field(item),
                count.map(|c| c.to_string()).unwrap_or_default(),
                amount.map(format_minor).unwrap_or_default()
            );
        };
    for c in r.channels.iter().chain(std::iter::once(&r.total)) {
        row(
            "takings",
            &c.channel,
            "sales",
            Some(i64::from(c.sales_count)),
            Some(c.gross_sales),
        );
        row(
            "takings",
            &c.channel,
            "voids",
            Some(i64::from(c.voids_count)),
            Some(c.refunds),
        );
        row(
            "takings",
            &c.channel,
            "net",
            Some(c.admissions),
            Some(c.net_takings),
        );
        for p in &c.payments {
            row("payments", &c.channel, &p.method, None, Some(p.net));
        }
        for v in &c.vat {
            row(
                "vat",
                &c.channel,
                &format!("{} net", v.label),
                None,
                Some(v.net),
            );
            row(
                "vat",
                &c.channel,
                &format!("{} tax", v.label),
                None,
                Some(v.tax),
            );
        }
    }
    for l in &r.online_channels {
        row(
            "online_channel",
            &l.channel,
            "orders",
            Some(i64::from(l.orders)),
            Some(l.gross_sales),
        );
        row(
            "online_channel",
            &l.channel,
            "refunds",
            None,
            Some(l.refunds),
        );
        row(
            "online_channel",
            &l.channel,
            "net",
            Some(l.admissions),
            Some(l.net_takings),
        );
    }
    for c in &r.refunds.by_state {
        row(
            "refunds",
            "online",
            &c.key,
            Some(i64::from(c.count)),
            Some(c.amount),
        );
    }
    for c in &r.refunds.by_reason {
        row(
            "refund_reasons",
            "online",
            &c.key,
            Some(i64::from(c.count)),
            Some(c.amount),
        );
    }
    for s in &r.shifts {
        let who = format!("{} / {}", s.counter, s.cashier);
        row("cash", &who, "float", None, Some(s.float));
        row("cash", &who, "expected", None, s.expected_cash);
        row("cash", &who, "counted", None, s.counted_cash);
        row("cash", &who, "over_short", None, s.over_short);
        row(
            "cash",
            &who,
            if s.z_received {
                "z_received"
            } else {
                "z_missing"
            },
            Some(i64::from(s.z_received)),
            None,
        );
    }
    for c in &r.missing.counters {
        row(
            "missing",
            &c.counter,
            &c.problem,
            Some(c.reported_seq as i64 - c.acked_seq as i64),
            None,
        );
    }
    for l in &r.missing.leases_held {
        row(
            "lease_held",
            &l.counter,
            &l.slot_id.to_string(),
            Some(i64::from(l.unsold)),
            None,
        );
    }
    for s in &r.missing.over_capacity {
        row(
            "over_capacity",
            &s.counter,
            &s.slot_id.to_string(),
            Some(i64::from(s.admissions_over)),
            None,
        );
    }
    for s in &r.slots {
        let slot = s.slot_id.to_string();
        row("slot", "online", &slot, Some(s.sold_online), None);
        row("slot", "counter", &slot, Some(s.sold_counter), None);
        row("slot", "admitted", &slot, Some(s.admitted), None);
        row("slot", "no_shows", &slot, Some(s.no_shows), None);
    }
    let w = &r.waitlist;
    for (label, c) in [
        ("waiting", w.waiting),
        ("offered", w.offered),
        ("taken", w.taken),
        ("expired", w.expired),
        ("unserved", w.unserved),
    ] {
        row(
            "waitlist",
            "entries",
            label,
            Some(i64::from(c.entries)),
            None,
        );
        row(
            "waitlist",
            "admissions",
            label,
            Some(i64::from(c.admissions)),
            None,
        );
    }
    for q in &r.quarantine {
        let item = format!("{} {}: {}", q.kind, q.item_id, q.reason);
        row(
            "quarantine",
            &q.counter,
            &item,
            q.terminal_seq.and_then(|s| i64::try_from(s).ok()),
            None,
        );
    }
    for c in &r.conflicts {
        let item = format!(
            "{} {} at {} / {} at {}",
            c.ticket_id, c.first_gate, c.first_at, c.second_gate, c.second_at
        );
        row(
            "gate_conflict",
            &c.slot_id.to_string(),
            &item,
            Some(2),
            None,
        );
    }
    o
}

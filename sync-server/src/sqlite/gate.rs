//! Online redemption inside the writer: one ticket, one entry, atomically.

use rusqlite::{params, OptionalExtension};
use tessera_core::admission::DenyReason;
use tessera_core::api::gate::{RedeemResult, Redemption};
use tessera_core::ticket_code::TicketClaims;
use uuid::Uuid;

use super::writer::{Ctx, Fatal};
use crate::store::DeviceInfo;
use tessera_core::clock::from_ms;

pub(crate) fn redeem(
    ctx: &mut Ctx<'_>,
    gate: &DeviceInfo,
    claims: &TicketClaims,
    scan_id: Option<Uuid>,
) -> Result<Redemption, Fatal> {
    let ticket = claims.ticket_id.to_string();
    let mut answer = Redemption {
        result: RedeemResult::Admitted,
        reason: None,
        message: String::new(),
        ticket_id: Some(claims.ticket_id),
        product_id: Some(claims.product_id.clone()),
        slot_id: Some(claims.slot),
        admits: Some(claims.admits),
        first_redeemed_at: None,
        first_redeemed_by: None,
    };
    let voided: Option<Option<i64>> = ctx
        .tx
        .prepare_cached("SELECT voided_at FROM tickets WHERE ticket_id = ?1")?
        .query_row(params![ticket], |r| r.get(0))
        .optional()?;
    if let Some(Some(_)) = voided {
        answer.result = RedeemResult::Denied;
        answer.reason = Some(DenyReason::Voided);
        answer.message = DenyReason::Voided.explain().to_string();
        return Ok(answer);
    }
    let first: Option<(i64, String, Option<String>)> = ctx
        .tx
        .prepare_cached(
            "SELECT redeemed_at, gate_name, scan_id FROM redemptions WHERE ticket_id = ?1",
        )?
        .query_row(params![ticket], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    if let Some((at, by, first_scan)) = first {
        answer.first_redeemed_at = Some(from_ms(at));
        answer.first_redeemed_by = Some(by.clone());
        // The same scan sent again (a retry after a lost answer) is the same admission.
        let same_scan = scan_id.is_some() && first_scan == scan_id.map(|s| s.to_string());
        if same_scan {
            answer.message = format!("Admit {}", claims.admits);
            return Ok(answer);
        }
        answer.result = RedeemResult::Denied;
        answer.reason = Some(DenyReason::AlreadyUsed);
        answer.message = format!(
            "Already used at {} by {}",
            from_ms(at)
                .to_zoned(ctx.state.tz.clone())
                .strftime("%H:%M:%S"),
            by
        );
        metrics::counter!("tessera_redemptions_total", "result" => "already_used").increment(1);
        return Ok(answer);
    }
    ctx.tx
        .prepare_cached(
            "INSERT INTO redemptions (ticket_id, slot_id, admits, redeemed_at, gate_device, gate_name, mode, scan_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'online', ?7)",
        )?
        .execute(params![
            ticket,
            claims.slot.to_string(),
            claims.admits,
            ctx.now_ms,
            gate.device_id.to_string(),
            gate.name,
            scan_id.map(|s| s.to_string())
        ])?;
    answer.first_redeemed_at = Some(from_ms(ctx.now_ms));
    answer.first_redeemed_by = Some(gate.name.clone());
    answer.message = format!("Admit {}", claims.admits);
    metrics::counter!("tessera_redemptions_total", "result" => "admitted").increment(1);
    Ok(answer)
}

//! Tickets signed before their confirmation reaches the writer.
//!
//! Ed25519 signing was the largest single cost of a confirm inside the single
//! writer (see docs/BENCHMARKS.md). The writer publishes, after each commit,
//! a sketch of every open hold (its slot and what its lines admit); the
//! confirm handler signs the hold's tickets from that sketch on its own task
//! and sends them with the job. The writer then only compares them with the
//! hold as it stands in its transaction, and signs itself when they do not
//! match (the hold changed, the key rotated, no sketch was published yet).
//! Ticket ids are decided by whoever signs; the order stores them, and an
//! idempotent replay returns that stored answer, so they are decided once.

use std::sync::Arc;

use tessera_core::api::online::IssuedTicket;
use tessera_core::ids::new_id;
use tessera_core::pricing::PricedLine;
use tessera_core::slot::SlotId;
use tessera_core::ticket_code::{CodeError, TicketClaims, TicketSigner};
use uuid::Uuid;

/// What a confirm handler needs to sign an open hold's tickets.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HoldSketch {
    pub slot: SlotId,
    pub window_minutes: u16,
    /// Per line: product, people each unit admits, units.
    pub lines: Vec<(String, u8, u32)>,
}

impl HoldSketch {
    pub fn of(slot: SlotId, window_minutes: u16, lines: &[PricedLine]) -> Arc<HoldSketch> {
        Arc::new(HoldSketch {
            slot,
            window_minutes,
            lines: lines
                .iter()
                .map(|l| (l.product_id.clone(), l.admits_each, l.quantity))
                .collect(),
        })
    }

    pub fn tickets(&self) -> u64 {
        self.lines.iter().map(|(_, _, n)| u64::from(*n)).sum()
    }
}

/// Tickets signed for one hold, away from the writer. Built only by
/// `presign`, so every code in it is a real signature of its claims.
pub(crate) struct Presigned {
    hold_id: Uuid,
    slot: SlotId,
    window_minutes: u16,
    key_id: u32,
    tickets: Vec<IssuedTicket>,
}

/// Signs one ticket per unit of every line of the sketch, in line order.
pub(crate) fn presign(
    signer: &TicketSigner,
    hold_id: Uuid,
    sketch: &HoldSketch,
) -> Result<Presigned, CodeError> {
    let mut tickets = Vec::new();
    for (product_id, admits, quantity) in &sketch.lines {
        for _ in 0..*quantity {
            let claims = TicketClaims {
                key_id: signer.key_id,
                ticket_id: new_id(),
                slot: sketch.slot,
                window_minutes: sketch.window_minutes,
                admits: *admits,
                product_id: product_id.clone(),
            };
            let code = signer.sign(&claims)?;
            tickets.push(IssuedTicket {
                ticket_id: claims.ticket_id,
                product_id: claims.product_id,
                slot_id: sketch.slot,
                admits: claims.admits,
                code,
            });
        }
    }
    Ok(Presigned {
        hold_id,
        slot: sketch.slot,
        window_minutes: sketch.window_minutes,
        key_id: signer.key_id,
        tickets,
    })
}

/// The hold as the writer's transaction sees it.
pub(crate) struct HoldNow<'a> {
    pub hold_id: Uuid,
    pub slot: SlotId,
    pub window_minutes: u16,
    pub key_id: u32,
    pub lines: &'a [PricedLine],
}

impl Presigned {
    #[cfg(test)]
    pub fn ticket_ids(&self) -> Vec<Uuid> {
        self.tickets.iter().map(|t| t.ticket_id).collect()
    }

    /// The tickets, if they were signed for exactly this hold: same hold,
    /// slot, window and key, and one ticket per unit of each line in order
    /// with the line's product and admits. `None`: the writer signs itself.
    pub fn matching(self, now: &HoldNow<'_>) -> Option<Vec<IssuedTicket>> {
        if self.hold_id != now.hold_id
            || self.slot != now.slot
            || self.window_minutes != now.window_minutes
            || self.key_id != now.key_id
        {
            return None;
        }
        let mut tickets = self.tickets.iter();
        for line in now.lines {
            for _ in 0..line.quantity {
                let t = tickets.next()?;
                if t.product_id != line.product_id
                    || t.admits != line.admits_each
                    || t.slot_id != now.slot
                {
                    return None;
                }
            }
        }
        if tickets.next().is_some() {
            return None;
        }
        Some(self.tickets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::ticket_code::KeyRing;
    use tessera_core::vat::VatSplit;

    fn line(product: &str, admits: u8, quantity: u32) -> PricedLine {
        PricedLine {
            product_id: product.into(),
            name: product.into(),
            quantity,
            unit_price: 1000,
            vat_bp: 700,
            amounts: VatSplit::default(),
            admits_each: admits,
            membership_numbers: vec![],
        }
    }

    fn slot() -> SlotId {
        "2026-12-24T10:00".parse().unwrap()
    }

    #[test]
    fn tickets_signed_for_the_hold_as_it_stands_are_taken_and_verify() {
        let signer = TicketSigner::from_seed(3, [7; 32]);
        let lines = vec![line("adult", 1, 2), line("family", 4, 1)];
        let hold_id = new_id();
        let sketch = HoldSketch::of(slot(), 30, &lines);
        let signed = presign(&signer, hold_id, &sketch).unwrap();
        let now = HoldNow {
            hold_id,
            slot: slot(),
            window_minutes: 30,
            key_id: 3,
            lines: &lines,
        };
        let tickets = signed.matching(&now).expect("matches");
        assert_eq!(tickets.len(), 3);
        let mut ring = KeyRing::new();
        ring.insert(3, signer.public_key(), false).unwrap();
        for t in &tickets {
            let claims = ring.verify(&t.code).unwrap();
            assert_eq!(claims.ticket_id, t.ticket_id);
            assert_eq!(claims.product_id, t.product_id);
        }
        let mut ids: Vec<Uuid> = tickets.iter().map(|t| t.ticket_id).collect();
        ids.dedup();
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn tickets_for_another_hold_slot_key_or_cart_are_refused() {
        let signer = TicketSigner::from_seed(3, [7; 32]);
        let lines = vec![line("adult", 1, 2)];
        let hold_id = new_id();
        let sketch = HoldSketch::of(slot(), 30, &lines);
        let fewer = vec![line("adult", 1, 1)];
        let more = vec![line("adult", 1, 3)];
        let other_product = vec![line("child", 1, 2)];
        let other_admits = vec![line("adult", 2, 2)];
        let cases: Vec<HoldNow<'_>> = vec![
            HoldNow {
                hold_id: new_id(),
                slot: slot(),
                window_minutes: 30,
                key_id: 3,
                lines: &lines,
            },
            HoldNow {
                hold_id,
                slot: "2026-12-24T10:30".parse().unwrap(),
                window_minutes: 30,
                key_id: 3,
                lines: &lines,
            },
            HoldNow {
                hold_id,
                slot: slot(),
                window_minutes: 15,
                key_id: 3,
                lines: &lines,
            },
            HoldNow {
                hold_id,
                slot: slot(),
                window_minutes: 30,
                key_id: 4,
                lines: &lines,
            },
            HoldNow {
                hold_id,
                slot: slot(),
                window_minutes: 30,
                key_id: 3,
                lines: &fewer,
            },
            HoldNow {
                hold_id,
                slot: slot(),
                window_minutes: 30,
                key_id: 3,
                lines: &more,
            },
            HoldNow {
                hold_id,
                slot: slot(),
                window_minutes: 30,
                key_id: 3,
                lines: &other_product,
            },
            HoldNow {
                hold_id,
                slot: slot(),
                window_minutes: 30,
                key_id: 3,
                lines: &other_admits,
            },
        ];
        for now in &cases {
            let signed = presign(&signer, hold_id, &sketch).unwrap();
            assert!(signed.matching(now).is_none());
        }
    }
}

//! Turning a cart (product, quantity) into priced lines with VAT, the same way
//! online and at the counter, so both channels charge and report alike.

use serde::{Deserialize, Serialize};

use crate::catalogue::Catalogue;
use crate::money::Money;
use crate::vat::{split_gross, RateBp, VatBreakdown, VatSplit};

/// One line of a cart as a client sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct CartLine {
    pub product_id: String,
    pub quantity: u32,
    /// One per ticket, for products that require a membership.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub membership_numbers: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct PricedLine {
    pub product_id: String,
    pub name: String,
    pub quantity: u32,
    pub unit_price: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = u32))]
    pub vat_bp: RateBp,
    /// Gross, net and tax of the whole line (rounded once, per line).
    pub amounts: VatSplit,
    pub admits_each: u8,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub membership_numbers: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedCart {
    pub lines: Vec<PricedLine>,
    pub total: Money,
    pub vat: VatBreakdown,
    /// Places this cart takes in its slot.
    pub admissions: u32,
    /// Tickets to issue: one per unit of every line (add-ons get one too,
    /// so the audio-guide desk can scan it).
    pub tickets: u32,
}

/// Limits that keep one order from being absurd; the counter allows groups.
#[derive(Clone, Copy, Debug)]
pub struct CartLimits {
    pub max_admissions: u32,
    pub max_units_per_line: u32,
    pub max_lines: usize,
}

impl CartLimits {
    pub const ONLINE: CartLimits = CartLimits {
        max_admissions: 20,
        max_units_per_line: 20,
        max_lines: 10,
    };
    pub const COUNTER: CartLimits = CartLimits {
        max_admissions: 60,
        max_units_per_line: 60,
        max_lines: 12,
    };
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PricingError {
    #[error("the cart is empty")]
    Empty,
    #[error("unknown product {0:?}")]
    UnknownProduct(String),
    #[error("{0:?} is not sold online; buy it at the museum")]
    NotSoldOnline(String),
    #[error("quantity of {0:?} must be at least 1")]
    ZeroQuantity(String),
    #[error("at most {max} of {product:?} per order")]
    TooManyUnits { product: String, max: u32 },
    #[error("at most {max} lines per order")]
    TooManyLines { max: usize },
    #[error("at most {max} admissions per order; this one has {requested}")]
    TooManyAdmissions { max: u32, requested: u32 },
    #[error(
        "{product:?} needs one membership number per ticket ({quantity} tickets, {given} numbers)"
    )]
    MembershipRequired {
        product: String,
        quantity: u32,
        given: usize,
    },
    #[error("membership number {0:?} is not valid (4-20 letters, digits or '-')")]
    BadMembershipNumber(String),
    #[error("membership numbers were given for {0:?}, which does not take them")]
    UnexpectedMembership(String),
    #[error("an add-on such as {0:?} is sold with an admission ticket, not alone")]
    AddOnAlone(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Online,
    Counter,
}

pub fn price_cart(
    catalogue: &Catalogue,
    cart: &[CartLine],
    channel: Channel,
    limits: CartLimits,
) -> Result<PricedCart, PricingError> {
    if cart.is_empty() {
        return Err(PricingError::Empty);
    }
    if cart.len() > limits.max_lines {
        return Err(PricingError::TooManyLines {
            max: limits.max_lines,
        });
    }
    let currency = catalogue.museum.currency;
    let mut lines = Vec::with_capacity(cart.len());
    let mut vat = VatBreakdown::default();
    let mut total: i64 = 0;
    let mut admissions: u32 = 0;
    let mut tickets: u32 = 0;
    for item in cart {
        let product = catalogue
            .product(&item.product_id)
            .ok_or_else(|| PricingError::UnknownProduct(item.product_id.clone()))?;
        if channel == Channel::Online && !product.sold_online {
            return Err(PricingError::NotSoldOnline(product.id.clone()));
        }
        if item.quantity == 0 {
            return Err(PricingError::ZeroQuantity(product.id.clone()));
        }
        if item.quantity > limits.max_units_per_line {
            return Err(PricingError::TooManyUnits {
                product: product.id.clone(),
                max: limits.max_units_per_line,
            });
        }
        check_memberships(product.requires_membership, &product.id, item)?;
        let gross = product.price * i64::from(item.quantity);
        let vat_bp = catalogue.vat_bp(product);
        let amounts = split_gross(gross, vat_bp);
        vat.add_line(vat_bp, amounts);
        total += gross;
        admissions += u32::from(product.admits) * item.quantity;
        tickets += item.quantity;
        lines.push(PricedLine {
            product_id: product.id.clone(),
            name: product.name.clone(),
            quantity: item.quantity,
            unit_price: product.price,
            vat_bp,
            amounts,
            admits_each: product.admits,
            membership_numbers: item.membership_numbers.clone(),
        });
    }
    if admissions == 0 {
        return Err(PricingError::AddOnAlone(cart[0].product_id.clone()));
    }
    if admissions > limits.max_admissions {
        return Err(PricingError::TooManyAdmissions {
            max: limits.max_admissions,
            requested: admissions,
        });
    }
    Ok(PricedCart {
        lines,
        total: Money::new(total, currency),
        vat,
        admissions,
        tickets,
    })
}

fn check_memberships(required: bool, product: &str, item: &CartLine) -> Result<(), PricingError> {
    if !required {
        if item.membership_numbers.is_empty() {
            return Ok(());
        }
        return Err(PricingError::UnexpectedMembership(product.to_string()));
    }
    if item.membership_numbers.len() != item.quantity as usize {
        return Err(PricingError::MembershipRequired {
            product: product.to_string(),
            quantity: item.quantity,
            given: item.membership_numbers.len(),
        });
    }
    for number in &item.membership_numbers {
        let ok = (4..=crate::limits::MEMBERSHIP_NUMBER_CHARS).contains(&number.len())
            && number
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            // Echo a bounded piece: the number may be a hostile megabyte.
            let shown = crate::limits::prefix(number, crate::limits::MEMBERSHIP_NUMBER_CHARS + 1);
            return Err(PricingError::BadMembershipNumber(shown.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::tests::demo;

    fn line(p: &str, q: u32) -> CartLine {
        CartLine {
            product_id: p.into(),
            quantity: q,
            membership_numbers: vec![],
        }
    }

    #[test]
    fn prices_a_family_visit_with_vat_per_rate() {
        let c = demo();
        let cart = [line("adult", 2), line("child", 1), line("audio-guide", 2)];
        let priced = price_cart(&c, &cart, Channel::Counter, CartLimits::COUNTER).unwrap();
        assert_eq!(priced.total.amount, 2 * 1500 + 2 * 500);
        assert_eq!(priced.admissions, 3);
        assert_eq!(priced.tickets, 5);
        let vat_total = priced.vat.total();
        assert_eq!(vat_total.gross, priced.total.amount);
        assert_eq!(vat_total.net + vat_total.tax, vat_total.gross);
        assert_eq!(priced.vat.0[&550].tax, 156); // 3000 at 5.5 %
        assert_eq!(priced.vat.0[&2000].tax, 167); // 1000 at 20 %
    }

    #[test]
    fn refuses_carts_a_cashier_should_not_ring_up() {
        let c = demo();
        let lim = CartLimits::ONLINE;
        let err = |cart: &[CartLine]| price_cart(&c, cart, Channel::Online, lim).unwrap_err();
        assert_eq!(err(&[]), PricingError::Empty);
        assert!(matches!(
            err(&[line("yacht", 1)]),
            PricingError::UnknownProduct(_)
        ));
        assert!(matches!(
            err(&[line("adult", 0)]),
            PricingError::ZeroQuantity(_)
        ));
        assert!(matches!(
            err(&[line("adult", 1000)]),
            PricingError::TooManyUnits { .. }
        ));
        assert!(matches!(
            err(&[line("family", 6)]),
            PricingError::TooManyAdmissions { .. }
        ));
        assert!(matches!(
            err(&[line("audio-guide", 1)]),
            PricingError::AddOnAlone(_)
        ));
        assert!(matches!(
            err(&[line("member", 1)]),
            PricingError::MembershipRequired { .. }
        ));
        let mut m = line("member", 1);
        m.membership_numbers = vec!["M-2291".into()];
        assert!(price_cart(&c, &[m], Channel::Online, lim).is_ok());
    }
}

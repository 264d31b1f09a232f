//! VAT on prices that include it.
//!
//! Rounding rule (written down because reports must agree to the cent): VAT is
//! computed per sale line from the line's gross amount, `tax = gross * r / (1 + r)`
//! rounded half away from zero to the cent, and `net = gross - tax`. A total is
//! the sum of its rounded lines, never a recomputation from the summed gross.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A VAT rate in basis points: 550 is 5.5 %, 2000 is 20 %.
pub type RateBp = u32;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct VatSplit {
    pub gross: i64,
    pub net: i64,
    pub tax: i64,
}

/// Splits a VAT-inclusive amount into net and tax by the rule above.
pub fn split_gross(gross: i64, rate_bp: RateBp) -> VatSplit {
    let rate = i128::from(rate_bp);
    let numerator = i128::from(gross) * rate;
    let denominator = 10_000 + rate;
    let half = denominator / 2;
    let tax = if numerator >= 0 {
        (numerator + half) / denominator
    } else {
        -((-numerator + half) / denominator)
    };
    // |tax| <= |gross|, so the narrowing cannot fail.
    let tax = i64::try_from(tax).unwrap_or(0);
    VatSplit {
        gross,
        net: gross - tax,
        tax,
    }
}

/// What cancelling `now` more units of a sale line (of `quantity` units at
/// `unit_price`, of which `before` were cancelled earlier) takes off the
/// line's VAT: the line as it stood minus the line as it stands after. Taken
/// ticket by ticket instead, rounding would leave a cent of tax behind on a
/// line cancelled whole (3 × 15.00 at 5.5 %: 2.35 of tax sold, 3 × 0.78 =
/// 2.34 taken back); this way the cancellations of a line always add up to
/// the line itself.
pub fn cancelled_split(
    unit_price: i64,
    quantity: u32,
    rate_bp: RateBp,
    before: u32,
    now: u32,
) -> VatSplit {
    let left = |cancelled: u32| {
        let units = i64::from(quantity.saturating_sub(cancelled));
        split_gross(unit_price.saturating_mul(units), rate_bp)
    };
    let was = left(before);
    let is = left(before.saturating_add(now));
    VatSplit {
        gross: was.gross - is.gross,
        net: was.net - is.net,
        tax: was.tax - is.tax,
    }
}

impl VatSplit {
    pub fn add(&mut self, other: VatSplit) {
        self.gross += other.gross;
        self.net += other.net;
        self.tax += other.tax;
    }

    pub fn negate(self) -> VatSplit {
        VatSplit {
            gross: -self.gross,
            net: -self.net,
            tax: -self.tax,
        }
    }
}

/// Sums of rounded lines, per rate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VatBreakdown(pub BTreeMap<RateBp, VatSplit>);

impl VatBreakdown {
    pub fn add_line(&mut self, rate_bp: RateBp, split: VatSplit) {
        self.0.entry(rate_bp).or_default().add(split);
    }

    pub fn merge(&mut self, other: &VatBreakdown) {
        for (rate, split) in &other.0 {
            self.add_line(*rate, *split);
        }
    }

    pub fn total(&self) -> VatSplit {
        let mut sum = VatSplit::default();
        for split in self.0.values() {
            sum.add(*split);
        }
        sum
    }
}

/// "5.5 %" for 550, "20 %" for 2000.
pub fn format_rate(rate_bp: RateBp) -> String {
    if rate_bp.is_multiple_of(100) {
        format!("{} %", rate_bp / 100)
    } else if rate_bp.is_multiple_of(10) {
        format!("{}.{} %", rate_bp / 100, (rate_bp % 100) / 10)
    } else {
        format!("{}.{:02} %", rate_bp / 100, rate_bp % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_french_museum_rates() {
        // 15.00 at 5.5 %: 1500 * 550 / 10550 = 78.2 -> 78
        assert_eq!(
            split_gross(1500, 550),
            VatSplit {
                gross: 1500,
                net: 1422,
                tax: 78
            }
        );
        // 5.00 at 20 %: 500 * 2000 / 12000 = 83.3 -> 83
        assert_eq!(split_gross(500, 2000).tax, 83);
        assert_eq!(split_gross(0, 2000), VatSplit::default());
        assert_eq!(split_gross(-1500, 550).tax, -78);
        assert_eq!(format_rate(550), "5.5 %");
        assert_eq!(format_rate(2000), "20 %");
    }

    #[test]
    fn a_line_cancelled_whole_gives_back_exactly_its_tax() {
        let line = split_gross(3 * 1500, 550);
        assert_eq!(line.tax, 235);
        let mut back = cancelled_split(1500, 3, 550, 0, 1);
        back.add(cancelled_split(1500, 3, 550, 1, 2));
        assert_eq!(back, line);
    }

    proptest! {
        #[test]
        fn cancellations_of_a_line_add_up_to_the_line(
            price in 0i64..100_000,
            quantity in 1u32..30,
            rate in 0u32..3000,
            steps in proptest::collection::vec(1u32..5, 0..10),
        ) {
            let mut before = 0;
            let mut back = VatSplit::default();
            for now in steps {
                let now = now.min(quantity - before);
                let part = cancelled_split(price, quantity, rate, before, now);
                prop_assert_eq!(part.net + part.tax, part.gross);
                prop_assert_eq!(part.gross, price * i64::from(now));
                back.add(part);
                before += now;
            }
            let kept = split_gross(price * i64::from(quantity - before), rate);
            let mut whole = kept;
            whole.add(back);
            prop_assert_eq!(whole, split_gross(price * i64::from(quantity), rate));
        }

        #[test]
        fn net_plus_tax_is_gross(gross in -10_000_000i64..10_000_000, rate in 0u32..5000) {
            let s = split_gross(gross, rate);
            prop_assert_eq!(s.net + s.tax, gross);
            prop_assert!(s.tax.abs() <= gross.abs());
            prop_assert_eq!(split_gross(-gross, rate).tax, -s.tax);
        }
    }
}

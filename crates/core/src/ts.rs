//! TypeScript for the wire types whose JSON is a string rather than their
//! Rust shape (`SlotId`, `Currency`); everything else derives `ts_rs::TS`
//! beside its type (feature `ts`).

use ts_rs::{Config, TS};

use crate::money::Currency;
use crate::slot::SlotId;

macro_rules! as_string {
    ($($t:ty),+) => {$(
        impl TS for $t {
            type WithoutGenerics = Self;
            type OptionInnerType = Self;

            fn name(_: &Config) -> String {
                "string".into()
            }

            fn inline(cfg: &Config) -> String {
                Self::name(cfg)
            }
        }
    )+};
}

as_string!(SlotId, Currency);

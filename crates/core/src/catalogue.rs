//! The museum's catalogue: who it is, what it sells, when it opens. Loaded from
//! the fixture (TOML) on the server and sent to terminals as JSON; validated once
//! so the rest of the code can trust it.

use std::collections::{BTreeMap, HashSet};

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::money::Currency;
use crate::slot::{local_instant, Slot, SlotError, SlotId};
use crate::vat::RateBp;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Catalogue {
    pub museum: MuseumInfo,
    /// Named VAT rates in basis points, e.g. `admission = 550`.
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, u32>))]
    pub vat_rates: BTreeMap<String, RateBp>,
    pub schedule: Schedule,
    pub products: Vec<Product>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MuseumInfo {
    pub id: String,
    pub name: String,
    /// Printed line by line at the top of every receipt.
    pub address: Vec<String>,
    pub time_zone: String,
    pub currency: Currency,
    #[serde(default)]
    pub vat_number: Option<String>,
    #[serde(default)]
    pub receipt_footer: Option<String>,
    /// The museum's own language: the web shop's default when a browser
    /// asks for none we speak. Unset: English.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<crate::api::shop::Language>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Schedule {
    pub slot_minutes: u16,
    /// Admissions per slot unless an opening says otherwise.
    pub capacity: u32,
    #[serde(default)]
    pub closed_dates: Vec<Date>,
    pub week: Week,
}

/// Opening periods per weekday; an empty list is a closed day.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Week {
    #[serde(default)]
    pub monday: Vec<Opening>,
    #[serde(default)]
    pub tuesday: Vec<Opening>,
    #[serde(default)]
    pub wednesday: Vec<Opening>,
    #[serde(default)]
    pub thursday: Vec<Opening>,
    #[serde(default)]
    pub friday: Vec<Opening>,
    #[serde(default)]
    pub saturday: Vec<Opening>,
    #[serde(default)]
    pub sunday: Vec<Opening>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Opening {
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]+)?)?$", example = "10:00:00"))]
    pub open: Time,
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]+)?)?$", example = "18:00:00"))]
    pub close: Time,
    /// No entry window starts at or after this time (defaults to `close`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, pattern = "^[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]+)?)?$"))]
    pub last_entry: Option<Time>,
    #[serde(default)]
    pub capacity: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Product {
    pub id: String,
    pub name: String,
    /// Price including VAT, in minor units.
    pub price: i64,
    /// Name of an entry in `vat_rates`.
    pub vat: String,
    /// People this ticket lets in; 0 for add-ons such as an audio guide.
    pub admits: u8,
    /// Free member entry: each ticket names a membership number.
    #[serde(default)]
    pub requires_membership: bool,
    #[serde(default = "yes")]
    pub sold_online: bool,
    /// The name in other languages, by language code (`fr = "Adulte"`):
    /// the web shop, emails and PDF tickets speak the visitor's language.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub names: BTreeMap<String, String>,
}

impl Product {
    /// The name in `language` (a code such as `fr`), else the default name.
    pub fn name_in(&self, language: &str) -> &str {
        self.names
            .get(language)
            .map(String::as_str)
            .unwrap_or(&self.name)
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogueError {
    #[error("unknown time zone {0:?}")]
    UnknownTimeZone(String),
    #[error("product {product:?} names VAT rate {vat:?}, which is not in [vat_rates]")]
    UnknownVatRate { product: String, vat: String },
    #[error("product id {0:?} appears twice")]
    DuplicateProduct(String),
    #[error("product id {0:?} must be 1-24 characters of a-z, 0-9 and '-'")]
    BadProductId(String),
    #[error("product {0:?} has a negative price")]
    NegativePrice(String),
    #[error("slot length must be between 5 and 240 minutes")]
    BadSlotLength,
    #[error("{weekday}: opening {open}-{close} must open before it closes and be a whole number of slots from midnight")]
    BadOpening {
        weekday: String,
        open: Time,
        close: Time,
    },
    #[error("VAT rate {name:?} of {bp} basis points is not a plausible rate")]
    BadVatRate { name: String, bp: RateBp },
    #[error(transparent)]
    Slot(#[from] SlotError),
}

impl Catalogue {
    pub fn validate(&self) -> Result<(), CatalogueError> {
        self.time_zone()?;
        for (name, bp) in &self.vat_rates {
            if *bp > 10_000 {
                return Err(CatalogueError::BadVatRate {
                    name: name.clone(),
                    bp: *bp,
                });
            }
        }
        let mut seen = HashSet::new();
        for p in &self.products {
            let id_ok = !p.id.is_empty()
                && p.id.len() <= 24
                && p.id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !id_ok {
                return Err(CatalogueError::BadProductId(p.id.clone()));
            }
            if !seen.insert(p.id.as_str()) {
                return Err(CatalogueError::DuplicateProduct(p.id.clone()));
            }
            if p.price < 0 {
                return Err(CatalogueError::NegativePrice(p.id.clone()));
            }
            if !self.vat_rates.contains_key(&p.vat) {
                return Err(CatalogueError::UnknownVatRate {
                    product: p.id.clone(),
                    vat: p.vat.clone(),
                });
            }
        }
        let len = self.schedule.slot_minutes;
        if !(5..=240).contains(&len) {
            return Err(CatalogueError::BadSlotLength);
        }
        for (weekday, openings) in self.schedule.week.days() {
            for o in openings {
                let start = minute_of(o.open);
                let aligned = start.is_multiple_of(len);
                if o.open >= o.close || !aligned || o.last_entry.is_some_and(|l| l <= o.open) {
                    return Err(CatalogueError::BadOpening {
                        weekday: format!("{weekday:?}").to_lowercase(),
                        open: o.open,
                        close: o.close,
                    });
                }
            }
        }
        Ok(())
    }

    pub fn time_zone(&self) -> Result<TimeZone, CatalogueError> {
        TimeZone::get(&self.museum.time_zone)
            .map_err(|_| CatalogueError::UnknownTimeZone(self.museum.time_zone.clone()))
    }

    pub fn product(&self, id: &str) -> Option<&Product> {
        self.products.iter().find(|p| p.id == id)
    }

    pub fn vat_bp(&self, product: &Product) -> RateBp {
        // `validate` guarantees the name resolves.
        self.vat_rates.get(&product.vat).copied().unwrap_or(0)
    }

    pub fn is_closed(&self, date: Date) -> bool {
        self.schedule.closed_dates.contains(&date)
            || self.schedule.week.on(date.weekday()).is_empty()
    }

    /// The entry windows of one day in the museum's zone; empty on closed days.
    pub fn slots_on(&self, date: Date) -> Result<Vec<Slot>, CatalogueError> {
        if self.is_closed(date) {
            return Ok(Vec::new());
        }
        let tz = self.time_zone()?;
        let len = self.schedule.slot_minutes;
        let mut slots = Vec::new();
        for o in self.schedule.week.on(date.weekday()) {
            let last_entry = minute_of(o.last_entry.unwrap_or(o.close));
            let close = minute_of(o.close);
            let mut start = minute_of(o.open);
            while start < last_entry && start + len <= close {
                let id = SlotId::new(date, start)?;
                slots.push(Slot {
                    id,
                    window_minutes: len,
                    starts_at: local_instant(date, start, &tz)?,
                    ends_at: local_instant(date, start + len, &tz)?,
                    capacity: o.capacity.unwrap_or(self.schedule.capacity),
                });
                start += len;
            }
        }
        slots.sort_by_key(|s| s.id);
        slots.dedup_by_key(|s| s.id);
        Ok(slots)
    }
}

impl Week {
    pub fn on(&self, day: Weekday) -> &[Opening] {
        match day {
            Weekday::Monday => &self.monday,
            Weekday::Tuesday => &self.tuesday,
            Weekday::Wednesday => &self.wednesday,
            Weekday::Thursday => &self.thursday,
            Weekday::Friday => &self.friday,
            Weekday::Saturday => &self.saturday,
            Weekday::Sunday => &self.sunday,
        }
    }

    fn days(&self) -> [(Weekday, &[Opening]); 7] {
        [
            (Weekday::Monday, &self.monday),
            (Weekday::Tuesday, &self.tuesday),
            (Weekday::Wednesday, &self.wednesday),
            (Weekday::Thursday, &self.thursday),
            (Weekday::Friday, &self.friday),
            (Weekday::Saturday, &self.saturday),
            (Weekday::Sunday, &self.sunday),
        ]
    }
}

fn minute_of(t: Time) -> u16 {
    (t.hour() as u16) * 60 + t.minute() as u16
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_product_is_named_in_the_visitors_language_when_the_museum_gave_one() {
        let catalogue = demo();
        let adult = catalogue.product("adult").unwrap();
        assert_eq!(adult.name_in("fr"), "Adulte");
        assert_eq!(adult.name_in("en"), "Adult");
        assert_eq!(adult.name_in("de"), "Adult");
    }

    pub(crate) fn demo() -> Catalogue {
        let text = include_str!("../../../fixtures/demo-museum.toml");
        let (c, staff) = crate::fixture::parse_fixture(text).expect("fixture parses");
        assert_eq!(staff.len(), 3);
        c
    }

    #[test]
    fn demo_museum_opens_tuesday_to_sunday_in_half_hours() {
        let c = demo();
        let tuesday = jiff::civil::date(2026, 12, 1);
        let slots = c.slots_on(tuesday).unwrap();
        assert_eq!(slots.first().unwrap().id.to_string(), "2026-12-01T10:00");
        assert_eq!(slots.last().unwrap().id.to_string(), "2026-12-01T16:30");
        assert_eq!(slots.len(), 14);
        assert!(slots.iter().all(|s| s.window_minutes == 30));
        let monday = jiff::civil::date(2026, 11, 30);
        assert!(c.slots_on(monday).unwrap().is_empty());
        let christmas = jiff::civil::date(2026, 12, 25);
        assert!(c.slots_on(christmas).unwrap().is_empty());
        // Thursday late opening.
        let thursday = jiff::civil::date(2026, 12, 3);
        assert_eq!(
            c.slots_on(thursday).unwrap().last().unwrap().id.hhmm(),
            "19:30"
        );
    }

    #[test]
    fn products_cover_what_a_museum_sells() {
        let c = demo();
        for id in [
            "adult",
            "reduced",
            "child",
            "family",
            "member",
            "audio-guide",
        ] {
            assert!(c.product(id).is_some(), "{id}");
        }
        assert_eq!(c.product("family").unwrap().admits, 4);
        assert_eq!(c.product("audio-guide").unwrap().admits, 0);
        assert_eq!(c.product("child").unwrap().price, 0);
        assert!(c.product("member").unwrap().requires_membership);
    }

    #[test]
    fn rejects_a_product_with_an_unknown_rate() {
        let mut c = demo();
        c.products[0].vat = "luxury".into();
        assert!(matches!(
            c.validate(),
            Err(CatalogueError::UnknownVatRate { .. })
        ));
    }
}

//! Time slots: an entry window on one museum day, named by its local date and
//! start time ("2026-12-02T10:00"), which is what cashiers, gates and URLs use.

use std::fmt;
use std::str::FromStr;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Days between 2000-01-01 and a date, as carried in ticket codes.
const EPOCH: Date = jiff::civil::date(2000, 1, 1);

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SlotId {
    pub date: Date,
    /// Minutes after local midnight at which the entry window opens.
    pub start_minute: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SlotError {
    #[error("slot id must look like 2026-12-02T10:00, got {0:?}")]
    BadSlotId(String),
    #[error("date must look like 2026-12-02, got {0:?}")]
    BadDate(String),
    #[error("date {0} is outside the range tickets can carry (2000-01-01 to 2179)")]
    DateOutOfRange(Date),
    #[error("local time {date} {time} does not exist in {zone}")]
    NoSuchLocalTime {
        date: Date,
        time: String,
        zone: String,
    },
}

impl SlotId {
    pub fn new(date: Date, start_minute: u16) -> Result<Self, SlotError> {
        if start_minute >= 24 * 60 {
            return Err(SlotError::BadSlotId(format!(
                "{date} minute {start_minute}"
            )));
        }
        day_number(date)?;
        Ok(SlotId { date, start_minute })
    }

    pub fn start_time(&self) -> Time {
        let h = (self.start_minute / 60) as i8;
        let m = (self.start_minute % 60) as i8;
        Time::constant(h, m, 0, 0)
    }

    /// "10:00": how a cashier names the slot on screen and on a receipt.
    pub fn hhmm(&self) -> String {
        format!(
            "{:02}:{:02}",
            self.start_minute / 60,
            self.start_minute % 60
        )
    }

    /// The instant the window opens, in the museum's zone. A local time that
    /// falls in a DST gap is moved forward, as clocks do ("compatible").
    pub fn starts_at(&self, tz: &TimeZone) -> Result<Timestamp, SlotError> {
        local_instant(self.date, self.start_minute, tz)
    }

    pub fn ends_at(&self, window_minutes: u16, tz: &TimeZone) -> Result<Timestamp, SlotError> {
        local_instant(self.date, self.start_minute + window_minutes, tz)
    }
}

pub(crate) fn local_instant(
    date: Date,
    minute: u16,
    tz: &TimeZone,
) -> Result<Timestamp, SlotError> {
    let day_offset = i64::from(minute / (24 * 60));
    let minute = minute % (24 * 60);
    let date = date
        .checked_add(jiff::Span::new().days(day_offset))
        .map_err(|_| SlotError::DateOutOfRange(date))?;
    let dt = DateTime::from_parts(
        date,
        Time::constant((minute / 60) as i8, (minute % 60) as i8, 0, 0),
    );
    tz.to_ambiguous_timestamp(dt)
        .compatible()
        .map_err(|_| SlotError::NoSuchLocalTime {
            date,
            time: format!("{:02}:{:02}", minute / 60, minute % 60),
            zone: tz.iana_name().unwrap_or("?").to_string(),
        })
}

pub(crate) fn day_number(date: Date) -> Result<u16, SlotError> {
    let days = (date - EPOCH).get_days();
    u16::try_from(days).map_err(|_| SlotError::DateOutOfRange(date))
}

pub(crate) fn date_from_day_number(days: u16) -> Option<Date> {
    EPOCH
        .checked_add(jiff::Span::new().days(i64::from(days)))
        .ok()
}

pub fn parse_date(text: &str) -> Result<Date, SlotError> {
    // Exactly YYYY-MM-DD: reports and URLs should not guess at "2/12/26".
    let ok_shape = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    if !ok_shape {
        return Err(SlotError::BadDate(text.to_string()));
    }
    let date = Date::from_str(text).map_err(|_| SlotError::BadDate(text.to_string()))?;
    // A day no slot can have (9999-12-31) would otherwise reach date
    // arithmetic (the day after, the zone's midnight) and fail there.
    day_number(date)?;
    Ok(date)
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}T{}", self.date, self.hhmm())
    }
}

impl fmt::Debug for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for SlotId {
    type Err = SlotError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || SlotError::BadSlotId(text.to_string());
        let (date, time) = text.split_once('T').ok_or_else(bad)?;
        let date = parse_date(date).map_err(|_| bad())?;
        let (h, m) = time.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let h: u16 = h.parse().map_err(|_| bad())?;
        let m: u16 = m.parse().map_err(|_| bad())?;
        if h > 23 || m > 59 {
            return Err(bad());
        }
        SlotId::new(date, h * 60 + m).map_err(|_| bad())
    }
}

impl TryFrom<String> for SlotId {
    type Error = SlotError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<SlotId> for String {
    fn from(id: SlotId) -> String {
        id.to_string()
    }
}

/// One generated entry window with its capacity in admissions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub id: SlotId,
    pub window_minutes: u16,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub capacity: u32,
}

impl Slot {
    /// Whether the entry window is over at `now_ms`: from its end on, it
    /// can no longer be booked, joined or sold, on any channel.
    pub fn is_over(&self, now_ms: i64) -> bool {
        now_ms >= self.ends_at.as_millisecond()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_ids_round_trip_and_reject_nonsense() {
        let id: SlotId = "2026-12-02T10:30".parse().unwrap();
        assert_eq!(id.start_minute, 630);
        assert_eq!(id.to_string(), "2026-12-02T10:30");
        for bad in [
            "",
            "2026-12-02",
            "2026-12-02T25:00",
            "2026-13-02T10:00",
            "2026-12-02T10:3",
            "x",
        ] {
            assert!(bad.parse::<SlotId>().is_err(), "{bad}");
        }
        assert!(parse_date("2/12/2026").is_err());
        assert!(parse_date("2026-02-30").is_err());
        assert!(matches!(
            parse_date("9999-12-31"),
            Err(SlotError::DateOutOfRange(_))
        ));
        assert!(matches!(
            parse_date("1999-12-31"),
            Err(SlotError::DateOutOfRange(_))
        ));
    }

    #[test]
    fn slot_instants_follow_the_museum_zone_across_dst() {
        let paris = TimeZone::get("Europe/Paris").unwrap();
        let winter: SlotId = "2026-12-02T10:00".parse().unwrap();
        assert_eq!(
            winter.starts_at(&paris).unwrap().to_string(),
            "2026-12-02T09:00:00Z"
        );
        let summer: SlotId = "2026-07-02T10:00".parse().unwrap();
        assert_eq!(
            summer.starts_at(&paris).unwrap().to_string(),
            "2026-07-02T08:00:00Z"
        );
        // 2026-03-29 02:30 does not exist in Paris; the window opens at 03:30 local.
        let gap: SlotId = "2026-03-29T02:30".parse().unwrap();
        assert_eq!(
            gap.starts_at(&paris).unwrap().to_string(),
            "2026-03-29T01:30:00Z"
        );
    }

    #[test]
    fn day_numbers_round_trip() {
        let d = jiff::civil::date(2026, 12, 2);
        assert_eq!(date_from_day_number(day_number(d).unwrap()), Some(d));
    }
}

//! The web shop's rules that are not about money: which days the calendar
//! offers, when a day counts as sold out, which entry times to propose when
//! the one a visitor chose cannot take their party, and which language a
//! visitor is served in. Pure: the server passes in the live availability
//! and "today".

use jiff::civil::Date;

use crate::api::online::SlotAvailability;
use crate::api::shop::{CalendarDay, Language};
use crate::slot::SlotId;

/// Longest calendar one request may ask for: two months, what a month view
/// with its neighbour needs.
pub const MAX_CALENDAR_DAYS: u32 = 62;

/// Entry times proposed instead of one that cannot take a party.
pub const NEAREST_LIMIT: usize = 6;

/// Days after the chosen one that are searched for nearest times.
pub const NEAREST_LATER_DAYS: i64 = 14;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CalendarError {
    #[error("days must be between 1 and {MAX_CALENDAR_DAYS}, got {0}")]
    BadLength(u32),
}

/// The dates a calendar request covers, checked.
pub fn calendar_dates(from: Date, days: u32) -> Result<Vec<Date>, CalendarError> {
    if !(1..=MAX_CALENDAR_DAYS).contains(&days) {
        return Err(CalendarError::BadLength(days));
    }
    // Dates near the end of jiff's range simply stop the list short.
    Ok(from
        .series(jiff::Span::new().days(1))
        .take(days as usize)
        .collect())
}

/// Whether `date` lies in the window the shop sells: from the museum's
/// today for `horizon_days` days.
pub fn within_horizon(date: Date, today: Date, horizon_days: u32) -> bool {
    if date < today {
        return false;
    }
    let end = today
        .checked_add(jiff::Span::new().days(i64::from(horizon_days)))
        .unwrap_or(Date::MAX);
    date < end
}

/// One calendar day from the day's live entry times.
///
/// `closed` is the museum's own word (closing day, holiday). A day outside
/// the sold window (`bookable == false`: past, or beyond the horizon) shows
/// no places, and is never "sold out" — nothing was sold out, it just is not
/// on sale. A day with entry times still to come, all of them full, is sold
/// out; a day whose entry times are all over is neither.
pub fn calendar_day(
    date: Date,
    closed: bool,
    bookable: bool,
    slots: &[SlotAvailability],
) -> CalendarDay {
    let capacity = slots.iter().map(|s| s.capacity).sum();
    if closed || !bookable {
        return CalendarDay {
            date,
            closed,
            available: 0,
            capacity: if closed { 0 } else { capacity },
            sold_out: false,
        };
    }
    let to_come: Vec<&SlotAvailability> = slots.iter().filter(|s| !s.past).collect();
    let available = to_come.iter().map(|s| s.available).sum();
    CalendarDay {
        date,
        closed,
        available,
        capacity,
        sold_out: !to_come.is_empty() && available == 0,
    }
}

/// Entry times nearest to `chosen` that can take `admissions` now: first the
/// same day's, by distance in time from the chosen one (the earlier of two
/// equally near first), then later days' in time order. At most `limit`.
///
/// `same_day` is the chosen day's availability; `later` the following days'
/// (in date order). The chosen time itself is never proposed.
pub fn nearest<'a>(
    chosen: SlotId,
    admissions: u32,
    same_day: &[SlotAvailability],
    later: impl IntoIterator<Item = &'a [SlotAvailability]>,
    limit: usize,
) -> Vec<SlotAvailability> {
    let fits =
        |s: &SlotAvailability| s.slot_id != chosen && !s.past && s.available >= admissions.max(1);
    let minute = i32::from(chosen.start_minute);
    let mut today: Vec<&SlotAvailability> = same_day.iter().filter(|s| fits(s)).collect();
    today.sort_by_key(|s| {
        let m = i32::from(s.slot_id.start_minute);
        ((m - minute).abs(), m)
    });
    let mut out: Vec<SlotAvailability> = today.into_iter().take(limit).cloned().collect();
    for day in later {
        if out.len() >= limit {
            break;
        }
        let mut day: Vec<&SlotAvailability> = day.iter().filter(|s| fits(s)).collect();
        day.sort_by_key(|s| s.slot_id);
        out.extend(day.into_iter().take(limit - out.len()).cloned());
    }
    out
}

/// The language a shop page is served in: the browser's preference when it
/// names one we speak, else the museum's own.
pub fn shop_language(accept_language: Option<&str>, museum: Language) -> Language {
    accept_language
        .and_then(Language::negotiate)
        .unwrap_or(museum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;
    use jiff::Timestamp;

    fn slot(id: &str, capacity: u32, available: u32, past: bool) -> SlotAvailability {
        SlotAvailability {
            slot_id: id.parse().unwrap(),
            starts_at: Timestamp::UNIX_EPOCH,
            ends_at: Timestamp::UNIX_EPOCH,
            capacity,
            available,
            sold: capacity - available,
            past,
        }
    }

    #[test]
    fn calendar_covers_one_to_62_days() {
        let d = calendar_dates(date(2026, 12, 30), 3).unwrap();
        assert_eq!(
            d,
            vec![date(2026, 12, 30), date(2026, 12, 31), date(2027, 1, 1)]
        );
        assert_eq!(calendar_dates(date(2026, 1, 1), 62).unwrap().len(), 62);
        assert_eq!(
            calendar_dates(date(2026, 1, 1), 0),
            Err(CalendarError::BadLength(0))
        );
        assert_eq!(
            calendar_dates(date(2026, 1, 1), 63),
            Err(CalendarError::BadLength(63))
        );
    }

    #[test]
    fn the_horizon_starts_today_and_ends_before_today_plus_its_days() {
        let today = date(2026, 12, 2);
        assert!(!within_horizon(date(2026, 12, 1), today, 90));
        assert!(within_horizon(today, today, 90));
        assert!(within_horizon(date(2027, 3, 1), today, 90));
        assert!(!within_horizon(date(2027, 3, 2), today, 90));
        assert!(!within_horizon(today, today, 0));
    }

    #[test]
    fn a_day_is_sold_out_only_when_every_time_to_come_is_full() {
        let d = date(2026, 12, 5);
        let open = [
            slot("2026-12-05T09:30", 150, 0, true),
            slot("2026-12-05T10:00", 150, 0, false),
            slot("2026-12-05T10:30", 150, 3, false),
        ];
        let day = calendar_day(d, false, true, &open);
        assert_eq!((day.available, day.capacity, day.sold_out), (3, 450, false));

        let full = [
            slot("2026-12-05T09:30", 150, 20, true),
            slot("2026-12-05T10:00", 150, 0, false),
        ];
        let day = calendar_day(d, false, true, &full);
        assert!(day.sold_out);
        assert_eq!(day.available, 0);

        // Every entry time is over: nothing left to sell, but not sold out.
        let over = [slot("2026-12-05T09:30", 150, 0, true)];
        assert!(!calendar_day(d, false, true, &over).sold_out);
        // No entry times generated yet (beyond the server's slots).
        assert!(!calendar_day(d, false, true, &[]).sold_out);
    }

    #[test]
    fn closed_and_unsold_days_offer_nothing() {
        let d = date(2026, 12, 7);
        let closed = calendar_day(d, true, true, &[]);
        assert!(closed.closed && !closed.sold_out && closed.available == 0);
        let later = [slot("2026-12-07T10:00", 120, 120, false)];
        let beyond = calendar_day(d, false, false, &later);
        assert!(!beyond.closed && !beyond.sold_out);
        assert_eq!((beyond.available, beyond.capacity), (0, 120));
    }

    #[test]
    fn nearest_times_same_day_by_distance_then_later_days_in_order() {
        let chosen: SlotId = "2026-12-05T11:00".parse().unwrap();
        let same = [
            slot("2026-12-05T09:30", 150, 50, true), // over
            slot("2026-12-05T10:00", 150, 2, false), // too small for 3
            slot("2026-12-05T10:30", 150, 10, false),
            slot("2026-12-05T11:00", 150, 0, false), // the chosen one
            slot("2026-12-05T11:30", 150, 10, false),
            slot("2026-12-05T12:30", 150, 3, false),
        ];
        let sunday = [
            slot("2026-12-06T10:00", 150, 150, false),
            slot("2026-12-06T09:30", 150, 150, false),
        ];
        let tuesday = [slot("2026-12-08T10:00", 120, 120, false)];
        let got = nearest(chosen, 3, &same, [&sunday[..], &tuesday[..]], 6);
        let ids: Vec<String> = got.iter().map(|s| s.slot_id.to_string()).collect();
        assert_eq!(
            ids,
            [
                // 30 minutes either side: the earlier first.
                "2026-12-05T10:30",
                "2026-12-05T11:30",
                "2026-12-05T12:30",
                "2026-12-06T09:30",
                "2026-12-06T10:00",
                "2026-12-08T10:00",
            ]
        );
        let two = nearest(chosen, 3, &same, [&sunday[..]], 2);
        assert_eq!(two.len(), 2);
        assert!(nearest(chosen, 200, &same, [&sunday[..]], 6).is_empty());
    }

    #[test]
    fn the_shop_speaks_the_browsers_language_else_the_museums() {
        assert_eq!(
            shop_language(Some("en-US,en;q=0.9"), Language::Fr),
            Language::En
        );
        assert_eq!(shop_language(Some("de-DE"), Language::Fr), Language::Fr);
        assert_eq!(shop_language(None, Language::Fr), Language::Fr);
        assert_eq!(shop_language(Some("fr"), Language::En), Language::Fr);
    }
}

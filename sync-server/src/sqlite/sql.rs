//! How the SQLite backend stores what is not a number: ids and slot ids as
//! the text they show as (`tessera_core`'s `sql` feature gives its id types
//! and `SlotId` their `ToSql`/`FromSql`), and any other displayable value,
//! a plain `Uuid` above all, through [`Text`]. rusqlite's own `uuid` feature
//! would store 16-byte blobs, which these tables never held.

use std::fmt::Display;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::Row;
use tessera_core::slot::SlotId;
use uuid::Uuid;

/// A value stored as its text: `params![Text(&hold_id)]`,
/// `row.get::<_, Text<Uuid>>(0)?.0`.
pub(crate) struct Text<T>(pub T);

impl<T: Display> ToSql for Text<T> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.0.to_string()))
    }
}

impl<T> FromSql for Text<T>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map(Text)
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

/// Columns read into their types.
pub(crate) trait Column {
    /// A uuid stored as text.
    fn uuid(&self, idx: usize) -> rusqlite::Result<Uuid>;
}

impl Column for Row<'_> {
    fn uuid(&self, idx: usize) -> rusqlite::Result<Uuid> {
        Ok(self.get::<_, Text<Uuid>>(idx)?.0)
    }
}

fn unreadable(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

/// A uuid in text already read from a row (e.g. as part of a tuple).
pub(crate) fn parse_uuid(text: &str) -> rusqlite::Result<Uuid> {
    Uuid::parse_str(text).map_err(unreadable)
}

/// A slot id in text already read from a row.
pub(crate) fn parse_slot(text: &str) -> rusqlite::Result<SlotId> {
    text.parse::<SlotId>().map_err(unreadable)
}

#[cfg(test)]
mod tests {
    use rusqlite::{params, Connection};
    use tessera_core::ids::{LeaseId, SaleId};

    use super::*;

    #[test]
    fn ids_and_slots_are_stored_as_the_text_they_always_were() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (lease TEXT, slot TEXT, other TEXT)")
            .unwrap();
        let lease = LeaseId::generate();
        let slot: SlotId = "2026-12-02T10:30".parse().unwrap();
        let other = Uuid::now_v7();
        conn.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3)",
            params![lease, slot, Text(&other)],
        )
        .unwrap();
        let texts: (String, String, String) = conn
            .query_row("SELECT lease, slot, other FROM t", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(
            texts,
            (lease.to_string(), slot.to_string(), other.to_string())
        );
        let back: (LeaseId, SlotId, Uuid) = conn
            .query_row("SELECT lease, slot, other FROM t", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.uuid(2)?))
            })
            .unwrap();
        assert_eq!(back, (lease, slot, other));
    }

    #[test]
    fn text_that_is_not_the_type_is_an_error_not_a_default() {
        let conn = Connection::open_in_memory().unwrap();
        let read = conn.query_row("SELECT 'not-an-id'", [], |r| r.get::<_, SaleId>(0));
        assert!(read.is_err());
        let read = conn.query_row("SELECT '2026-12-02 10:30'", [], |r| r.get::<_, SlotId>(0));
        assert!(read.is_err());
        assert!(parse_uuid("x").is_err());
    }
}

//! SQLite columns of core's identifiers (feature `sql`, for the backends that
//! use rusqlite): each is stored as the text it shows as, which is what the
//! databases held before these types existed, so no migration is needed and
//! a column reads back into the type it was written from.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::ids::{DeviceId, HoldId, LeaseId, OrderId, SaleId, TicketId};
use crate::slot::SlotId;

macro_rules! text_columns {
    ($($t:ty),+ $(,)?) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.to_string()))
            }
        }

        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e| FromSqlError::Other(Box::new(e)))
            }
        }
    )+};
}

text_columns!(DeviceId, LeaseId, HoldId, SaleId, OrderId, TicketId, SlotId);

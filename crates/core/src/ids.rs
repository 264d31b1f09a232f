//! Identifiers are born where the thing is born: a sale on the terminal that
//! rang it up, an order on the server. UUIDv7 sorts by creation time, so logs
//! and tables read in order, and needs no coordination between devices.
//!
//! Each kind of thing has its own id type, so a lease id cannot be passed
//! where a hold id is meant. On the wire and in the databases every one is
//! the UUID's hyphenated text, exactly as before the types existed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

macro_rules! ids {
    ($($(#[$doc:meta])* $name:ident;)+) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[cfg_attr(feature = "ts", derive(ts_rs::TS))]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered id (UUIDv7).
            pub fn generate() -> Self {
                Self(new_id())
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(text: &str) -> Result<Self, IdError> {
                Uuid::parse_str(text).map(Self).map_err(|_| IdError {
                    kind: stringify!($name),
                    text: text.chars().take(64).collect(),
                })
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }

        impl PartialEq<Uuid> for $name {
            fn eq(&self, other: &Uuid) -> bool {
                self.0 == *other
            }
        }
    )+};
}

ids! {
    /// An enrolled counter or gate.
    DeviceId;
    /// Capacity of one slot escrowed to one counter.
    LeaseId;
    /// Places held online for a checkout.
    HoldId;
    /// A counter's sale.
    SaleId;
    /// An online order (a confirmed hold).
    OrderId;
    /// One ticket: what its code names and a gate admits.
    TicketId;
}

/// Text that is not the id it was meant to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {kind}: {text:?}")]
pub struct IdError {
    pub kind: &'static str,
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_its_uuid_on_the_wire_and_in_text() {
        let uuid = new_id();
        let lease = LeaseId(uuid);
        assert_eq!(lease.to_string(), uuid.to_string());
        assert_eq!(
            serde_json::to_string(&lease).unwrap(),
            serde_json::to_string(&uuid).unwrap()
        );
        let back: LeaseId = serde_json::from_str(&format!("\"{uuid}\"")).unwrap();
        assert_eq!(back, lease);
        assert_eq!(uuid.to_string().parse::<LeaseId>().unwrap(), lease);
    }

    #[test]
    fn text_that_is_not_an_id_is_refused_with_its_kind() {
        let err = "lease-1".parse::<LeaseId>().unwrap_err();
        assert_eq!(err.kind, "LeaseId");
        assert!(serde_json::from_str::<HoldId>("\"nope\"").is_err());
    }
}

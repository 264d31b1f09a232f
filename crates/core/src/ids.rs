//! Identifiers are born where the thing is born: a sale on the terminal that
//! rang it up, an order on the server. UUIDv7 sorts by creation time, so logs
//! and tables read in order, and needs no coordination between devices.

use uuid::Uuid;

pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

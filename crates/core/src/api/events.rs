//! The per-device push channel, `GET /v1/events/device`: the server tells a
//! counter or a gate that something concerning it changed, so it syncs at
//! once instead of on its next tick. The events carry what changed, not the
//! new state: the device's sync fetches that, so a missed event costs a
//! tick, never a wrong figure.

use serde::{Deserialize, Serialize};

use crate::slot::SlotId;

/// What changed. Also the SSE event's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DeviceTopic {
    /// First event of every connection: the channel is live; sync once to
    /// catch up on whatever happened while it was not.
    Hello,
    /// Places of these slots changed (a sale anywhere, a hold, a refund).
    /// Counters.
    Slots,
    /// This device's leases changed without it asking (a recall, a grant).
    /// Counters.
    Leases,
    /// Products, prices or the day's slots changed. Counters and gates.
    Catalogue,
    /// Staff or their PINs changed. Counters.
    Staff,
    /// Tickets were voided, cancelled or refunded. Gates and counters (gate
    /// mode).
    Voided,
    /// A device's signing key was revoked. Gates and counters.
    Keys,
    /// The entry policy changed. Gates and counters.
    Policy,
}

impl DeviceTopic {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceTopic::Hello => "hello",
            DeviceTopic::Slots => "slots",
            DeviceTopic::Leases => "leases",
            DeviceTopic::Catalogue => "catalogue",
            DeviceTopic::Staff => "staff",
            DeviceTopic::Voided => "voided",
            DeviceTopic::Keys => "keys",
            DeviceTopic::Policy => "policy",
        }
    }
}

/// The `data` of every event of the device channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceEvent {
    pub topic: DeviceTopic,
    /// For `slots`: the slots whose places changed (at most 500; more is
    /// sent as an empty list, meaning "any").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<SlotId>,
}

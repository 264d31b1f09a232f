//! Enrolment of counters, gates and supervisors, and the keys gates trust.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum Role {
    Counter,
    Gate,
    Supervisor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Counter => "counter",
            Role::Gate => "gate",
            Role::Supervisor => "supervisor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "counter" => Some(Role::Counter),
            "gate" => Some(Role::Gate),
            "supervisor" => Some(Role::Supervisor),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrolRequest {
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub code: String,
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 100))]
    pub name: String,
    /// A counter's or gate's own Ed25519 public key (hex), which the server
    /// certifies: gates accept the tickets a counter signs, and the
    /// admissions other gates (and counters in gate mode) share over the LAN.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-fA-F]{64}$"))]
    pub public_key: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Enrolled {
    pub device_id: Uuid,
    pub role: Role,
    /// Bearer credential for every later call. Shown once; the server keeps
    /// only its hash.
    pub token: String,
    /// Key id assigned to the device's public key, if it sent one.
    pub key_id: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublicKeys {
    pub keys: Vec<PublicKeyInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublicKeyInfo {
    pub key_id: u32,
    /// Ed25519 public key, lowercase hex.
    pub public_key: String,
    /// `server` or the enrolled device's name.
    pub owner: String,
    pub device_id: Option<Uuid>,
    pub revoked: bool,
    /// What the key may sign. Only server and counter keys sign tickets; a
    /// gate's key signs the admissions gates share over the LAN, never a
    /// ticket. Absent from older servers, which certified counters only.
    #[serde(default)]
    pub role: KeyRole,
}

/// Whose key it is, and so what a signature by it is worth.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum KeyRole {
    /// The server's own key: online tickets.
    Server,
    /// A counter's key: the tickets it sells, and admissions it shares in
    /// gate mode.
    #[default]
    Counter,
    /// A gate's key: admissions it shares with other gates only.
    Gate,
}

impl KeyRole {
    /// Whether a ticket signed by this key may be admitted.
    pub fn signs_tickets(self) -> bool {
        matches!(self, KeyRole::Server | KeyRole::Counter)
    }

    /// Whether an admission shared by a peer over the LAN may be signed by
    /// this key: only devices that scan at a gate.
    pub fn signs_admissions(self) -> bool {
        matches!(self, KeyRole::Counter | KeyRole::Gate)
    }

    /// The role of a key as the server stores it: the server's own, or that
    /// of the device it was certified for (`None` when no device owns it).
    pub fn of_device(device_role: Option<Role>) -> KeyRole {
        match device_role {
            None => KeyRole::Server,
            Some(Role::Counter) => KeyRole::Counter,
            // Supervisors are never certified; were one, it must not sign
            // tickets, so it is held to the narrowest rule there is.
            Some(Role::Gate) | Some(Role::Supervisor) => KeyRole::Gate,
        }
    }
}

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
    /// A counter's own Ed25519 public key (hex), which the server certifies so
    /// gates accept the tickets it signs.
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
}

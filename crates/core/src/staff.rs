//! Museum staff who use the counters: cashiers, and supervisors who approve
//! voids, revoke leases and read the day report.
//!
//! A PIN is kept only as an argon2id verifier (PHC string, random salt per
//! PIN). Counters receive the verifiers of cashiers alone, because unlocking
//! the till is the only PIN check offline work needs; supervisor PINs are
//! checked by the server, behind a lockout it keeps in its database. A stolen
//! counter therefore holds nothing that lets it approve anything offline.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};

use crate::limits;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum StaffRole {
    Cashier,
    Supervisor,
}

impl StaffRole {
    pub fn as_str(self) -> &'static str {
        match self {
            StaffRole::Cashier => "cashier",
            StaffRole::Supervisor => "supervisor",
        }
    }
}

/// A staff member as fixtures declare them (with the PIN in clear).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffFixture {
    pub name: String,
    pub role: StaffRole,
    pub pin: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StaffError {
    #[error(
        "PIN must be {} to {} digits",
        limits::PIN_MIN_DIGITS,
        limits::PIN_MAX_DIGITS
    )]
    BadPin,
    #[error("staff name must be 1-{} characters", limits::STAFF_NAME_CHARS)]
    BadName,
    #[error("PIN verifier is not a usable argon2id PHC string: {0}")]
    BadVerifier(String),
}

/// The cost of computing one PIN verifier (argon2id parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub lanes: u32,
}

impl KdfCost {
    /// What real PINs get: OWASP's argon2id floor (19 MiB, 2 passes), a few
    /// tens of milliseconds per check on a small server or counter. A 4-digit
    /// PIN still falls to an offline search in minutes, so the real defence
    /// is that supervisors' verifiers never leave the server (see README).
    pub const DEFAULT: KdfCost = KdfCost {
        memory_kib: 19 * 1024,
        iterations: 2,
        lanes: 1,
    };

    /// Cheap enough for test suites that initialise hundreds of databases.
    /// Never for real PINs: the server uses it only when
    /// `TESSERA_INSECURE_TEST_PIN_KDF=1` is set.
    pub const INSECURE_TEST_ONLY: KdfCost = KdfCost {
        memory_kib: 64,
        iterations: 1,
        lanes: 1,
    };

    /// Verifiers above this cost are refused when read: a bad database or a
    /// bad server must not make a counter spend minutes or gigabytes on a
    /// login.
    pub const MAX: KdfCost = KdfCost {
        memory_kib: 256 * 1024,
        iterations: 16,
        lanes: 8,
    };

    fn params(self) -> Result<Params, StaffError> {
        Params::new(self.memory_kib, self.iterations, self.lanes, None)
            .map_err(|e| StaffError::BadVerifier(e.to_string()))
    }
}

/// Salt bytes per verifier.
pub const SALT_BYTES: usize = 16;

/// An argon2id verifier of one PIN, in PHC string format
/// (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PinVerifier(String);

impl std::fmt::Debug for PinVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Logs and panics never show a verifier: it is what an offline
        // search starts from.
        f.write_str("PinVerifier(…)")
    }
}

impl PinVerifier {
    /// `salt` comes from the caller's RNG (core does no IO).
    pub fn create(pin: &str, salt: &[u8; SALT_BYTES], cost: KdfCost) -> Result<Self, StaffError> {
        check_pin(pin)?;
        let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, cost.params()?);
        let hash = hasher
            .hash_password_with_salt(pin.as_bytes(), salt)
            .map_err(|e| StaffError::BadVerifier(e.to_string()))?;
        PinVerifier::parse(&hash.to_string())
    }

    /// Accepts only argon2id (v19) within [`KdfCost::MAX`].
    pub fn parse(text: &str) -> Result<Self, StaffError> {
        let hash = PasswordHash::new(text).map_err(|e| StaffError::BadVerifier(e.to_string()))?;
        if hash.algorithm.as_str() != "argon2id" || hash.version != Some(0x13) {
            return Err(StaffError::BadVerifier("not argon2id v19".into()));
        }
        let params = Params::try_from(&hash).map_err(|e| StaffError::BadVerifier(e.to_string()))?;
        let max = KdfCost::MAX;
        if params.m_cost() > max.memory_kib
            || params.t_cost() > max.iterations
            || params.p_cost() > max.lanes
        {
            return Err(StaffError::BadVerifier(
                "cost above the allowed maximum".into(),
            ));
        }
        if hash.salt.is_none() || hash.hash.is_none() {
            return Err(StaffError::BadVerifier("salt or hash missing".into()));
        }
        Ok(PinVerifier(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Recomputes the hash with the verifier's own salt and parameters.
    pub fn matches(&self, pin: &str) -> bool {
        let pin = pin.trim();
        if check_pin(pin).is_err() {
            return false;
        }
        // The argon2 crate compares outputs in constant time.
        Argon2::default()
            .verify_password(pin.as_bytes(), self.0.as_str())
            .is_ok()
    }

    /// The memory cost it was made with (tests check the default is real).
    pub fn memory_kib(&self) -> u32 {
        PasswordHash::new(&self.0)
            .ok()
            .and_then(|h| Params::try_from(&h).ok())
            .map(|p| p.m_cost())
            .unwrap_or(0)
    }
}

impl TryFrom<String> for PinVerifier {
    type Error = StaffError;
    fn try_from(text: String) -> Result<Self, StaffError> {
        PinVerifier::parse(&text)
    }
}

impl From<PinVerifier> for String {
    fn from(v: PinVerifier) -> String {
        v.0
    }
}

pub fn check_pin(pin: &str) -> Result<(), StaffError> {
    let ok = (limits::PIN_MIN_DIGITS..=limits::PIN_MAX_DIGITS).contains(&pin.len())
        && pin.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(StaffError::BadPin)
    }
}

/// A staff member with their PIN verifier. Counters receive these for
/// cashiers only; the server keeps every role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StaffMember {
    pub name: String,
    pub role: StaffRole,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub pin_verifier: PinVerifier,
}

impl StaffMember {
    pub fn new(
        name: &str,
        role: StaffRole,
        pin: &str,
        salt: &[u8; SALT_BYTES],
        cost: KdfCost,
    ) -> Result<StaffMember, StaffError> {
        let name = name.trim();
        if limits::text("staff name", name, limits::STAFF_NAME_CHARS).is_err() {
            return Err(StaffError::BadName);
        }
        Ok(StaffMember {
            name: name.to_string(),
            role,
            pin_verifier: PinVerifier::create(pin, salt, cost)?,
        })
    }

    pub fn pin_matches(&self, pin: &str) -> bool {
        self.pin_verifier.matches(pin)
    }

    pub fn may_approve(&self) -> bool {
        self.role == StaffRole::Supervisor
    }
}

/// Finds who a PIN belongs to (names need not be typed at a busy counter).
/// Costs one KDF run per staff member tried.
pub fn who_has_pin<'a>(staff: &'a [StaffMember], pin: &str) -> Option<&'a StaffMember> {
    if check_pin(pin.trim()).is_err() {
        return None;
    }
    staff.iter().find(|s| s.pin_matches(pin))
}

/// What counters may hold: cashiers' verifiers, never a supervisor's.
pub fn for_counters(staff: &[StaffMember]) -> Vec<StaffMember> {
    staff
        .iter()
        .filter(|s| s.role == StaffRole::Cashier)
        .cloned()
        .collect()
}

/// What an operator's "set this member's PIN" does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinChange {
    /// The member exists: their PIN changes, and their role too if one was
    /// given.
    Change { role: Option<StaffRole> },
    /// A new member with this role.
    Add(StaffRole),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinChangeRefused {
    /// PINs identify staff on their own (nobody types a name at a busy
    /// counter), so two members can never share one.
    #[error("another staff member already has this PIN; choose another")]
    PinTaken,
    #[error("no staff member {0:?}; give --role cashier|supervisor to add one")]
    UnknownMember(String),
}

/// Decides what setting `name`'s PIN to `pin` does, given everyone on staff
/// now (a verifier that does not parse counts as nobody's PIN). Costs one
/// KDF run per other member.
pub fn pin_change(
    name: &str,
    role: Option<StaffRole>,
    pin: &str,
    on_staff: &[(String, Option<PinVerifier>)],
) -> Result<PinChange, PinChangeRefused> {
    let name = name.trim();
    let pin = pin.trim();
    let mut exists = false;
    for (member, verifier) in on_staff {
        if member == name {
            exists = true;
        } else if verifier.as_ref().is_some_and(|v| v.matches(pin)) {
            return Err(PinChangeRefused::PinTaken);
        }
    }
    match (exists, role) {
        (true, role) => Ok(PinChange::Change { role }),
        (false, Some(role)) => Ok(PinChange::Add(role)),
        (false, None) => Err(PinChangeRefused::UnknownMember(name.to_string())),
    }
}

/// Wrong supervisor PINs one device may type before it is locked out.
pub const LOCKOUT_FAILURES: u32 = 5;
/// How long a lockout lasts, and how long a wrong PIN is remembered.
pub const LOCKOUT_MS: i64 = 5 * 60 * 1000;

/// One device's recent supervisor-PIN attempts, as the server stores them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attempts {
    /// Attempts since the last success, counted when they start (so that
    /// concurrent guesses cannot all slip in before the first is judged).
    pub failures: u32,
    pub last_at_ms: i64,
    /// Refused until then (0: not locked).
    pub locked_until_ms: i64,
}

impl Attempts {
    /// Starts an attempt at `now_ms`: the state to store before checking the
    /// PIN, or the milliseconds left of a lockout. The attempt that makes
    /// the fifth failure locks the device; a success (see [`Attempts::reset`])
    /// lifts it, since whoever succeeded knew the PIN.
    pub fn begin(self, now_ms: i64) -> Result<Attempts, i64> {
        if now_ms < self.locked_until_ms {
            return Err(self.locked_until_ms - now_ms);
        }
        let mut next = self;
        if now_ms.saturating_sub(self.last_at_ms) >= LOCKOUT_MS || self.locked_until_ms != 0 {
            next = Attempts::default();
        }
        next.failures += 1;
        next.last_at_ms = now_ms;
        if next.failures >= LOCKOUT_FAILURES {
            next.failures = 0;
            next.locked_until_ms = now_ms.saturating_add(LOCKOUT_MS);
        }
        Ok(next)
    }

    pub fn reset() -> Attempts {
        Attempts::default()
    }
}

/// "5 min" for a person, rounded up.
pub fn minutes_left(ms: i64) -> i64 {
    (ms.max(0) + 59_999) / 60_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_staff(members: &[(&str, &str)]) -> Vec<(String, Option<PinVerifier>)> {
        members
            .iter()
            .map(|(name, pin)| {
                let v = PinVerifier::create(pin, &SALT, KdfCost::INSECURE_TEST_ONLY).ok();
                (name.to_string(), v)
            })
            .collect()
    }

    #[test]
    fn a_new_pin_for_a_member_changes_it_and_keeps_the_role_unless_given() {
        let staff = on_staff(&[("Inès", "1234"), ("Tom", "5678")]);
        assert_eq!(
            pin_change(" Inès ", None, "4321", &staff),
            Ok(PinChange::Change { role: None })
        );
        assert_eq!(
            pin_change("Inès", Some(StaffRole::Supervisor), "1234", &staff),
            Ok(PinChange::Change {
                role: Some(StaffRole::Supervisor)
            }),
            "keeping one's own PIN is not a clash"
        );
    }

    #[test]
    fn a_pin_someone_else_has_is_refused() {
        let staff = on_staff(&[("Inès", "1234"), ("Tom", "5678")]);
        assert_eq!(
            pin_change("Inès", None, " 5678 ", &staff),
            Err(PinChangeRefused::PinTaken)
        );
        assert_eq!(
            pin_change("Ana", Some(StaffRole::Cashier), "5678", &staff),
            Err(PinChangeRefused::PinTaken)
        );
    }

    #[test]
    fn a_newcomer_needs_a_role() {
        let staff = on_staff(&[("Inès", "1234")]);
        assert_eq!(
            pin_change("Ana", Some(StaffRole::Cashier), "2468", &staff),
            Ok(PinChange::Add(StaffRole::Cashier))
        );
        assert_eq!(
            pin_change("Ana", None, "2468", &staff),
            Err(PinChangeRefused::UnknownMember("Ana".into()))
        );
    }

    #[test]
    fn an_unreadable_verifier_is_nobodys_pin() {
        let staff = vec![("Old".to_string(), None)];
        assert_eq!(
            pin_change("Ana", Some(StaffRole::Cashier), "2468", &staff),
            Ok(PinChange::Add(StaffRole::Cashier))
        );
    }

    const SALT: [u8; SALT_BYTES] = [7; SALT_BYTES];

    #[test]
    fn pins_check_against_argon2id_verifiers() {
        let s = StaffMember::new(
            "Inès",
            StaffRole::Supervisor,
            "9999",
            &SALT,
            KdfCost::INSECURE_TEST_ONLY,
        )
        .unwrap();
        assert!(s
            .pin_verifier
            .as_str()
            .starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(s.pin_matches("9999"));
        assert!(s.pin_matches(" 9999 "));
        assert!(!s.pin_matches("9998"));
        assert!(!s.pin_matches(""));
        assert!(!s.pin_verifier.as_str().contains("9999"));
        assert!(!format!("{s:?}").contains("argon2"));
        assert_eq!(
            StaffMember::new("x", StaffRole::Cashier, "12", &SALT, KdfCost::DEFAULT),
            Err(StaffError::BadPin)
        );
        assert_eq!(
            who_has_pin(std::slice::from_ref(&s), "9999").map(|m| m.name.as_str()),
            Some("Inès")
        );
    }

    #[test]
    fn each_salt_gives_another_verifier() {
        let a = PinVerifier::create("1234", &[1; 16], KdfCost::INSECURE_TEST_ONLY).unwrap();
        let b = PinVerifier::create("1234", &[2; 16], KdfCost::INSECURE_TEST_ONLY).unwrap();
        assert_ne!(a, b);
        assert!(a.matches("1234") && b.matches("1234"));
    }

    #[test]
    fn the_default_cost_is_the_real_one() {
        let v = PinVerifier::create("2468", &SALT, KdfCost::DEFAULT).unwrap();
        assert_eq!(v.memory_kib(), 19 * 1024);
        assert!(v.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(v.matches("2468"));
    }

    #[test]
    fn only_bounded_argon2id_verifiers_are_read() {
        let good = PinVerifier::create("1234", &SALT, KdfCost::INSECURE_TEST_ONLY).unwrap();
        let json = serde_json::to_string(&good).unwrap();
        let back: PinVerifier = serde_json::from_str(&json).unwrap();
        assert_eq!(back, good);
        for bad in [
            "",
            "1234",
            "$argon2i$v=19$m=64,t=1,p=1$BwcHBwcHBwcHBwcHBwcHBw$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$argon2id$v=19$m=4194304,t=1,p=1$BwcHBwcHBwcHBwcHBwcHBw$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$argon2id$v=19$m=64,t=1,p=1",
        ] {
            assert!(PinVerifier::parse(bad).is_err(), "{bad:?} accepted");
            assert!(serde_json::from_str::<PinVerifier>(&format!("{bad:?}")).is_err());
        }
    }

    #[test]
    fn counters_get_cashiers_only() {
        let mk = |n, r| StaffMember::new(n, r, "1234", &SALT, KdfCost::INSECURE_TEST_ONLY).unwrap();
        let all = vec![
            mk("Camille", StaffRole::Cashier),
            mk("Inès", StaffRole::Supervisor),
        ];
        let sent = for_counters(&all);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].name, "Camille");
    }

    #[test]
    fn five_attempts_lock_for_five_minutes() {
        let mut a = Attempts::default();
        let t0 = 1_000_000;
        for i in 0..LOCKOUT_FAILURES {
            a = a.begin(t0 + i64::from(i)).expect("not locked yet");
        }
        assert!(a.locked_until_ms > t0);
        let left = a.begin(t0 + 10).unwrap_err();
        assert_eq!(minutes_left(left), 5);
        assert!(a.begin(t0 + LOCKOUT_MS - 1).is_err());
        let after = a.begin(t0 + 4 + LOCKOUT_MS).expect("lock over");
        assert_eq!(after.failures, 1);
        assert_eq!(after.locked_until_ms, 0);
    }

    #[test]
    fn old_failures_are_forgotten() {
        let mut a = Attempts::default();
        for i in 0..LOCKOUT_FAILURES - 1 {
            a = a.begin(i64::from(i)).unwrap();
        }
        let later = a.begin(LOCKOUT_MS + 10).unwrap();
        assert_eq!(later.failures, 1);
        assert_eq!(later.locked_until_ms, 0);
    }
}

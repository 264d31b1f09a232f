//! Test-only faults, so that tests can prove the writer contains what no
//! known input triggers any more: a panic or an error inside a job, a panic
//! of the writer itself. Compiled in only with the `testkit` feature (the
//! binary that `cargo test` builds); release builds have none of it.
//!
//! `TESSERA_TEST_FAILPOINTS` lists `name=action` pairs separated by `;`, with
//! action `panic`, `error` (the point answers an error, which a backend turns
//! into a failed job), or `panic-after-N` (pass N times, then panic every time).
//!
//! Points live in the HTTP layer, the payment providers and the backends
//! alike, so this module depends on none of them.

#[cfg(feature = "testkit")]
pub(crate) const ENV: &str = "TESSERA_TEST_FAILPOINTS";

#[cfg(feature = "testkit")]
mod points {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    #[derive(Debug)]
    pub enum Action {
        Panic,
        Error,
        PanicAfter(u64, AtomicU64),
    }

    pub fn action(name: &str) -> Option<&'static Action> {
        static POINTS: OnceLock<HashMap<String, Action>> = OnceLock::new();
        POINTS
            .get_or_init(|| {
                let spec = std::env::var(super::ENV).unwrap_or_default();
                spec.split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .filter_map(|(name, action)| {
                        let action = match action.trim() {
                            "panic" => Action::Panic,
                            "error" => Action::Error,
                            other => {
                                let n = other.strip_prefix("panic-after-")?.parse().ok()?;
                                Action::PanicAfter(n, AtomicU64::new(0))
                            }
                        };
                        Some((name.trim().to_string(), action))
                    })
                    .collect()
            })
            .get(name)
    }

    /// Whether a `panic-after-N` point has passed its N free hits.
    pub fn due(passes: u64, hits: &AtomicU64) -> bool {
        hits.fetch_add(1, Ordering::Relaxed) >= passes
    }
}

/// A failpoint set to `error` was hit.
#[derive(Debug, thiserror::Error)]
#[error("failpoint {0}")]
#[cfg_attr(not(feature = "testkit"), allow(dead_code))]
pub(crate) struct Hit(pub String);

/// A point inside a job: may panic or fail the job.
#[cfg(feature = "testkit")]
pub(crate) fn hit(name: &str) -> Result<(), Hit> {
    use points::Action;
    match points::action(name) {
        Some(Action::Panic) => panic!("failpoint {name}"),
        Some(Action::Error) => Err(Hit(name.to_string())),
        Some(Action::PanicAfter(n, hits)) if points::due(*n, hits) => panic!("failpoint {name}"),
        _ => Ok(()),
    }
}

/// A point outside any job: may only panic.
#[cfg(feature = "testkit")]
pub(crate) fn panic_if(name: &str) {
    if let Err(e) = hit(name) {
        panic!("{e}");
    }
}

#[cfg(not(feature = "testkit"))]
#[inline(always)]
pub(crate) fn hit(_name: &str) -> Result<(), Hit> {
    Ok(())
}

#[cfg(not(feature = "testkit"))]
#[inline(always)]
pub(crate) fn panic_if(_name: &str) {}

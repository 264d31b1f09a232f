//! The backend's side of the test-only faults (`crate::failpoint`): a point
//! set to `error` fails the job it is in, as a `Fatal` error would.

use super::writer::Fatal;

pub(crate) use crate::failpoint::panic_if;

/// A point inside a job: may panic or fail the job.
#[inline(always)]
pub(crate) fn hit(name: &str) -> Result<(), Fatal> {
    crate::failpoint::hit(name).map_err(|e| Fatal::Bookkeeping(e.to_string()))
}

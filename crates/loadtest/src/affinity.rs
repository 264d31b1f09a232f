//! CPU affinity for the spike's "pinned" runs: the server on one CPU, the
//! load generator on another, so that neither takes the other's core and
//! the server's figure is what one core of its own serves.
//!
//! Linux keeps affinity per thread (`sched_setaffinity` on a thread id), and
//! a new thread inherits its creator's. So a whole process is moved by
//! setting every thread listed in `/proc/<pid>/task`, repeated until no
//! thread appears that was not set (one may be born while the list is
//! read; it inherits from a thread that may not have been moved yet).

use std::io;

use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AffinityError {
    #[error("pinned cores need at least 2 CPUs this process may run on; it has {0}")]
    TooFewCpus(usize),
    #[error("reading CPU affinity: {0}")]
    Get(io::Error),
    #[error("setting CPU affinity of thread {tid}: {source}")]
    Set { tid: i32, source: io::Error },
    #[error("listing the threads of process {pid}: {source}")]
    Threads { pid: u32, source: io::Error },
}

/// The CPUs this process may run on now, in order.
pub fn allowed_cpus() -> Result<Vec<usize>, AffinityError> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the kernel writes at
    // most size_of::<cpu_set_t>() bytes into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(AffinityError::Get(io::Error::last_os_error()));
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the set's capacity.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Where the pinned run puts the server and the load generator: two
/// different CPUs of the allowed ones (the last for the server, the first
/// for the load generator).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pinning {
    pub server: usize,
    pub load_generator: usize,
}

impl Pinning {
    pub fn choose(allowed: &[usize]) -> Result<Pinning, AffinityError> {
        match (allowed.first(), allowed.last()) {
            (Some(&first), Some(&last)) if first != last => Ok(Pinning {
                server: last,
                load_generator: first,
            }),
            _ => Err(AffinityError::TooFewCpus(allowed.len())),
        }
    }
}

fn set_thread(tid: i32, cpus: &[usize]) -> Result<(), AffinityError> {
    // SAFETY: as in `allowed_cpus`; CPU_SET is only called with indexes
    // below CPU_SETSIZE.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        // A thread that ended between the listing and this call is no
        // thread to move.
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(AffinityError::Set { tid, source: err });
    }
    Ok(())
}

fn threads(pid: u32) -> Result<Vec<i32>, AffinityError> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|source| AffinityError::Threads { pid, source })?;
    Ok(dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect())
}

/// Moves every thread of process `pid` onto `cpus`; the threads it makes
/// later inherit them. Returns how many threads were set.
pub fn pin_process(pid: u32, cpus: &[usize]) -> Result<usize, AffinityError> {
    let mut done: Vec<i32> = Vec::new();
    // A bounded number of passes: a process that makes threads faster than
    // they can be listed is not one this harness starts.
    for _ in 0..20 {
        let fresh: Vec<i32> = threads(pid)?
            .into_iter()
            .filter(|t| !done.contains(t))
            .collect();
        if fresh.is_empty() {
            return Ok(done.len());
        }
        for tid in fresh {
            set_thread(tid, cpus)?;
            done.push(tid);
        }
    }
    Ok(done.len())
}

/// Moves this process (every thread: the tokio workers, the blocking pool)
/// onto `cpus`.
pub fn pin_this_process(cpus: &[usize]) -> Result<usize, AffinityError> {
    pin_process(std::process::id(), cpus)
}

/// The CPUs of one thread of `pid`, from `/proc/<pid>/task/<tid>/status`
/// (`Cpus_allowed_list`), for checks.
pub fn thread_cpus(pid: u32, tid: u32) -> Option<Vec<usize>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    parse_cpu_list(list)
}

/// `0-2,5` → `[0, 1, 2, 5]` (the kernel's list form).
fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 4096 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_needs_two_cpus() {
        assert!(matches!(
            Pinning::choose(&[0]),
            Err(AffinityError::TooFewCpus(1))
        ));
        assert!(matches!(
            Pinning::choose(&[]),
            Err(AffinityError::TooFewCpus(0))
        ));
        assert_eq!(
            Pinning::choose(&[0, 1]).expect("two"),
            Pinning {
                server: 1,
                load_generator: 0
            }
        );
        assert_eq!(
            Pinning::choose(&[2, 3, 7]).expect("three"),
            Pinning {
                server: 7,
                load_generator: 2
            }
        );
    }

    #[test]
    fn cpu_lists_parse_as_the_kernel_writes_them() {
        assert_eq!(parse_cpu_list("0-2,5"), Some(vec![0, 1, 2, 5]));
        assert_eq!(parse_cpu_list("1"), Some(vec![1]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn a_child_process_is_pinned_with_all_its_threads() {
        let allowed = allowed_cpus().expect("affinity");
        assert!(!allowed.is_empty());
        // A child with more than one thread would be better; `sleep` has
        // one, which still shows that another process's threads are set.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let target = [*allowed.last().expect("a CPU")];
        let set = pin_process(child.id(), &target);
        let tids = threads(child.id()).unwrap_or_default();
        let seen: Vec<_> = tids
            .iter()
            .map(|&t| thread_cpus(child.id(), t as u32))
            .collect();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(set.expect("pin"), tids.len());
        assert!(
            seen.iter().all(|c| c.as_deref() == Some(&target[..])),
            "{seen:?}"
        );
    }

    #[test]
    fn this_process_can_be_set_to_the_cpus_it_has() {
        // Setting the same CPUs changes nothing for the other tests that
        // run in this process meanwhile.
        let allowed = allowed_cpus().expect("affinity");
        assert!(pin_this_process(&allowed).expect("pin") >= 1);
        assert_eq!(allowed_cpus().expect("affinity"), allowed);
    }
}

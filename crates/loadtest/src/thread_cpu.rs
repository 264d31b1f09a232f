//! On-CPU time of one named thread of a process (the server's
//! `tessera-writer`), from Linux's `/proc/<pid>/task/<tid>/`. The spike's
//! throughput on one hot slot is bounded by the single writer thread's CPU
//! per request, so that cost is read from the thread's own counters rather
//! than inferred from the whole process.
//!
//! `schedstat`'s first field (nanoseconds on a CPU) is preferred: the
//! scheduler accounts it exactly, while `stat`'s utime + stime (fields 14
//! and 15) are sampled in clock ticks (10 ms at the usual 100 Hz), too
//! coarse for a thread that runs in short bursts. `stat` is the fallback
//! for kernels built without schedstats.

use std::path::Path;

use serde::Serialize;

/// Where a reading came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Schedstat,
    Stat,
}

/// One reading of a thread's on-CPU time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadMark {
    pub tid: u32,
    pub on_cpu_ns: u64,
    pub source: Source,
}

/// The thread ids of `pid` whose name (`comm`) is `name`. The kernel cuts
/// names to 15 bytes, so `name` is compared cut the same way.
pub fn find_threads(pid: u32, name: &str) -> Vec<u32> {
    find_threads_in(&Path::new("/proc").join(pid.to_string()), name)
}

fn find_threads_in(process: &Path, name: &str) -> Vec<u32> {
    let wanted = comm_form(name);
    let Ok(dir) = std::fs::read_dir(process.join("task")) else {
        return Vec::new();
    };
    let mut tids: Vec<u32> = dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|tid| {
            std::fs::read_to_string(process.join(format!("task/{tid}/comm")))
                .is_ok_and(|c| c.trim_end_matches('\n') == wanted)
        })
        .collect();
    tids.sort_unstable();
    tids
}

/// `name` as the kernel stores a thread's name: at most 15 bytes, cut at a
/// character boundary.
fn comm_form(name: &str) -> &str {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Reads thread `tid` of process `pid` now; `None` if it is gone or
/// `/proc` cannot be read (not Linux).
pub fn mark(pid: u32, tid: u32) -> Option<ThreadMark> {
    let task = Path::new("/proc").join(format!("{pid}/task/{tid}"));
    if let Some(ns) = std::fs::read_to_string(task.join("schedstat"))
        .ok()
        .and_then(|t| parse_schedstat(&t))
    {
        return Some(ThreadMark {
            tid,
            on_cpu_ns: ns,
            source: Source::Schedstat,
        });
    }
    let ticks = parse_stat_ticks(&std::fs::read_to_string(task.join("stat")).ok()?)?;
    Some(ThreadMark {
        tid,
        on_cpu_ns: ticks.saturating_mul(1_000_000_000 / clock_ticks_per_s()),
        source: Source::Stat,
    })
}

/// The first field of a `schedstat` line: nanoseconds spent on a CPU.
fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// utime + stime (fields 14 and 15) of a `stat` line, in clock ticks. The
/// name (field 2) is in parentheses and may hold spaces and parentheses:
/// fields are counted from after its last `)`.
fn parse_stat_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name come state (field 3) … utime (14), stime (15).
    let utime: u64 = fields.nth(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf reads a constant of the C library; no memory is shared.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// A named thread's CPU over a phase: marks at its start, compared at its end.
#[derive(Clone, Debug)]
pub struct NamedThreadCpu {
    pid: u32,
    marks: Vec<ThreadMark>,
}

/// What a named thread spent over a phase.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ThreadSpent {
    pub on_cpu_s: f64,
    pub source: Source,
}

impl NamedThreadCpu {
    /// Marks every thread of `pid` named `name` (usually one).
    pub fn start(pid: u32, name: &str) -> NamedThreadCpu {
        NamedThreadCpu {
            pid,
            marks: find_threads(pid, name)
                .into_iter()
                .filter_map(|tid| mark(pid, tid))
                .collect(),
        }
    }

    /// CPU spent since [`NamedThreadCpu::start`] by the threads marked then;
    /// `None` if there were none (no such thread) or one has gone since.
    pub fn spent(&self) -> Option<ThreadSpent> {
        let first = self.marks.first()?;
        let mut ns = 0u64;
        for before in &self.marks {
            let now = mark(self.pid, before.tid)?;
            ns += now.on_cpu_ns.saturating_sub(before.on_cpu_ns);
        }
        Some(ThreadSpent {
            on_cpu_s: ns as f64 / 1e9,
            source: first.source,
        })
    }
}

/// Microseconds of CPU per request; `None` without requests.
pub fn us_per_request(spent: &ThreadSpent, requests: u64) -> Option<f64> {
    (requests > 0).then(|| spent.on_cpu_s * 1e6 / requests as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn stat_ticks_are_fields_14_and_15_even_with_a_strange_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
        // majflt cmajflt utime stime cutime cstime …
        let line = "4242 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 123 45 67 89 20 0 1 0 100";
        assert_eq!(parse_stat_ticks(line), Some(168));
        assert_eq!(parse_stat_ticks("garbage"), None);
        assert_eq!(parse_stat_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn schedstat_is_its_first_field() {
        assert_eq!(parse_schedstat("123456789 2000 17\n"), Some(123_456_789));
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
    }

    #[test]
    fn names_are_compared_as_the_kernel_cuts_them() {
        assert_eq!(comm_form("tessera-writer"), "tessera-writer");
        assert_eq!(comm_form("a-very-long-thread-name"), "a-very-long-thr");
        assert_eq!(comm_form("ééééééééé"), "ééééééé");
    }

    #[test]
    fn a_busy_named_thread_of_this_process_shows_cpu() {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let busy = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("tc-busy-probe".into())
                .spawn(move || {
                    let _ = ready_tx.send(());
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..10_000 {
                            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        }
                        std::hint::black_box(x);
                    }
                })
                .expect("spawn")
        };
        ready_rx.recv().expect("thread started");
        let pid = std::process::id();
        let tids = find_threads(pid, "tc-busy-probe");
        assert_eq!(tids.len(), 1, "exactly the probe thread: {tids:?}");
        assert!(find_threads(pid, "no-such-thread").is_empty());

        let phase = NamedThreadCpu::start(pid, "tc-busy-probe");
        // Wait for a state (the thread has been charged CPU), not a time;
        // the deadline only turns a hang into a failure.
        let deadline = Instant::now() + Duration::from_secs(60);
        let spent = loop {
            let spent = phase.spent().expect("the probe is still there");
            if spent.on_cpu_s > 0.0 || Instant::now() > deadline {
                break spent;
            }
            std::thread::yield_now();
        };
        // The fallback reads the same thread's real stat line.
        let stat =
            std::fs::read_to_string(format!("/proc/{pid}/task/{}/stat", tids[0])).expect("stat");
        assert!(parse_stat_ticks(&stat).is_some(), "{stat}");
        stop.store(true, Ordering::Relaxed);
        busy.join().expect("probe");
        assert!(spent.on_cpu_s > 0.0, "{spent:?}");
        assert_eq!(us_per_request(&spent, 0), None);
        assert!(us_per_request(&spent, 10).is_some_and(|us| us > 0.0));
        // Gone threads make the phase unreadable, not zero.
        assert!(phase.spent().is_none());
        assert!(NamedThreadCpu::start(pid, "no-such-thread")
            .spent()
            .is_none());
    }
}

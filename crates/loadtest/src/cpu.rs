//! Where a run's CPU went, from Linux's `/proc`: the whole machine's busy
//! time, and the share of it taken by the load generator (this process), the
//! server processes and PostgreSQL's processes. On a machine whose cores the
//! clients, the server and the database share, admissions per second are
//! the cores divided by the CPU one admission costs all of them together, so
//! this is what explains a throughput, not the wall time of one request.
//!
//! Figures are core-seconds. `/proc/stat` and `/proc/<pid>/stat` count in
//! the same clock ticks, so a process's ticks are converted with the
//! machine's own rate over the run (ticks seen / cores / wall time), with
//! no assumption about the tick rate.

use std::time::Instant;

use serde::Serialize;

/// A reading of the counters, taken before a run and compared after it.
#[derive(Clone, Debug)]
pub struct CpuMark {
    at: Instant,
    busy: u64,
    total: u64,
    cores: usize,
    this: u64,
    servers: u64,
    postgres: u64,
}

/// CPU spent between two marks, in core-seconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CpuSpent {
    pub wall_s: f64,
    pub cores: usize,
    /// Every process of the machine (other work on it included).
    pub machine_s: f64,
    /// The load generator (this process).
    pub load_generator_s: f64,
    /// The server processes named at the mark.
    pub servers_s: f64,
    /// Processes named `postgres` (the postmaster and its backends; a
    /// backend that ended during the run counts through the postmaster,
    /// which reaped it).
    pub postgres_s: f64,
}

impl CpuMark {
    /// Reads the counters now. `servers` are the server processes' ids.
    /// Where `/proc` cannot be read (not Linux), every figure is zero.
    pub fn now(servers: &[u32]) -> CpuMark {
        let (busy, total, cores) = machine().unwrap_or((0, 0, 1));
        CpuMark {
            at: Instant::now(),
            busy,
            total,
            cores,
            this: process_ticks("self", false).unwrap_or(0),
            servers: servers
                .iter()
                .filter_map(|p| process_ticks(&p.to_string(), false))
                .sum(),
            postgres: postgres_ticks(),
        }
    }

    /// What was spent from this mark to `later`.
    pub fn spent(&self, later: &CpuMark) -> CpuSpent {
        let wall_s = later.at.duration_since(self.at).as_secs_f64();
        let cores = later.cores.max(1);
        let total = later.total.saturating_sub(self.total);
        if total == 0 || wall_s <= 0.0 {
            return CpuSpent {
                wall_s,
                cores,
                ..CpuSpent::default()
            };
        }
        let ticks_per_s = total as f64 / cores as f64 / wall_s;
        let seconds = |a: u64, b: u64| b.saturating_sub(a) as f64 / ticks_per_s;
        CpuSpent {
            wall_s,
            cores,
            machine_s: seconds(self.busy, later.busy),
            load_generator_s: seconds(self.this, later.this),
            servers_s: seconds(self.servers, later.servers),
            postgres_s: seconds(self.postgres, later.postgres),
        }
    }
}

impl CpuSpent {
    /// One line: the machine's busy share and, per `unit` (an admission),
    /// the CPU milliseconds of each part.
    pub fn line(&self, units: u64, unit: &str) -> String {
        let per = |s: f64| s * 1000.0 / units.max(1) as f64;
        let rest =
            (self.machine_s - self.load_generator_s - self.servers_s - self.postgres_s).max(0.0);
        format!(
            "machine {:.0} % of {} cores busy; CPU ms per {unit}: all {:.3} = load generator {:.3} + server {:.3} + PostgreSQL {:.3} + other {:.3}",
            100.0 * self.machine_s / (self.cores as f64 * self.wall_s.max(1e-9)),
            self.cores,
            per(self.machine_s),
            per(self.load_generator_s),
            per(self.servers_s),
            per(self.postgres_s),
            per(rest),
        )
    }
}

/// Busy and total ticks over all cores (the first line of `/proc/stat`),
/// and the number of cores.
fn machine() -> Option<(u64, u64, usize)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let mut lines = text.lines();
    let first = lines.next()?;
    let f: Vec<u64> = first
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is
    // already inside user).
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    let idle = at(3) + at(4);
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    let cores = lines
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some((busy, busy + idle, cores.max(1)))
}

/// A process's user + system ticks (`/proc/<pid>/stat` fields 14 and 15),
/// with its reaped children's (16 and 17) when `children`.
fn process_ticks(pid: &str, children: bool) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count fields
    // from after its closing one (field 3 on).
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // After the name: state(3) ppid(4) … utime(14) stime(15) cutime(16) cstime(17).
    let at = |field: usize| f.get(field - 4).copied().unwrap_or(0);
    let own = at(14) + at(15);
    Some(if children { own + at(16) + at(17) } else { own })
}

/// Every `postgres` process's ticks, with reaped children (the postmaster's
/// ended backends).
fn postgres_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .map(|c| c.trim() == "postgres")
                .unwrap_or(false)
        })
        .filter_map(|p| process_ticks(&p, true))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_loop_shows_in_this_process_and_the_machine() {
        let before = CpuMark::now(&[]);
        let start = process_ticks("self", false).expect("/proc/self/stat");
        // Busy until this process has been charged a few ticks: a state,
        // whatever else the machine runs meanwhile.
        let mut x = 0u64;
        while process_ticks("self", false).unwrap_or(u64::MAX) < start + 5 {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        let spent = before.spent(&CpuMark::now(&[]));
        assert!(spent.load_generator_s > 0.0, "{spent:?}");
        assert!(spent.machine_s > 0.0, "{spent:?}");
        assert_eq!(spent.servers_s, 0.0, "no server was named: {spent:?}");
    }
}

//! Latency samples and their percentiles, error tallies, and small helpers
//! shared by the scenarios.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// Latencies in microseconds; percentiles by sorting (runs are small enough).
#[derive(Clone, Debug, Default)]
pub struct Samples(pub Vec<u64>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_micros().min(u128::from(u64::MAX)) as u64);
    }

    pub fn push_us(&mut self, us: u64) {
        self.0.push(us);
    }

    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    pub fn summary(&self) -> Summary {
        let mut v = self.0.clone();
        v.sort_unstable();
        let pick = |q: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            // Nearest rank.
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1] as f64 / 1000.0
        };
        Summary {
            count: v.len() as u64,
            p50_ms: pick(0.50),
            p95_ms: pick(0.95),
            p99_ms: pick(0.99),
            max_ms: v.last().map(|x| *x as f64 / 1000.0).unwrap_or(0.0),
            mean_ms: if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<u64>() as f64 / v.len() as f64 / 1000.0
            },
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Summary {
    pub fn line(&self) -> String {
        format!(
            "p50 {:>7.2}  p95 {:>7.2}  p99 {:>7.2}  max {:>8.2} ms  (n={})",
            self.p50_ms, self.p95_ms, self.p99_ms, self.max_ms, self.count
        )
    }

    pub fn line_us(&self) -> String {
        format!(
            "p50 {:>7.0}  p95 {:>7.0}  p99 {:>7.0}  max {:>8.0} µs  (n={})",
            self.p50_ms * 1000.0,
            self.p95_ms * 1000.0,
            self.p99_ms * 1000.0,
            self.max_ms * 1000.0,
            self.count
        )
    }
}

/// Counts per error code (`sold_out`, `transport`, `http_503`, …).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Errors(pub BTreeMap<String, u64>);

impl Errors {
    pub fn add(&mut self, code: impl Into<String>) {
        *self.0.entry(code.into()).or_default() += 1;
    }

    pub fn merge(&mut self, other: Errors) {
        for (k, v) in other.0 {
            *self.0.entry(k).or_default() += v;
        }
    }

    pub fn line(&self) -> String {
        if self.0.is_empty() {
            return "none".into();
        }
        self.0
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The `code` of an API error body, or `http_<status>`.
pub fn error_code(status: u16, body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("http_{status}"))
}

/// Kind of a transport failure, for the error tally.
pub fn transport_code(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "transport_timeout".into()
    } else if e.is_connect() {
        "transport_connect".into()
    } else {
        "transport_other".into()
    }
}

/// Sum and count of a Prometheus histogram/summary in `/metrics` text.
pub fn metric_sum_count(text: &str, name: &str) -> Option<(f64, f64)> {
    let find = |suffix: &str| -> Option<f64> {
        let key = format!("{name}_{suffix}");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|k| k == key || k.starts_with(&format!("{key}{{")))
            })
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
    };
    Some((find("sum")?, find("count")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut s = Samples::default();
        for i in 1..=100 {
            s.push_us(i * 1000);
        }
        let m = s.summary();
        assert_eq!(m.p50_ms, 50.0);
        assert_eq!(m.p99_ms, 99.0);
        assert_eq!(m.max_ms, 100.0);
        assert_eq!(Samples::default().summary().count, 0);
    }

    #[test]
    fn reads_prometheus_sum_and_count() {
        let text = "# TYPE x summary\nx{quantile=\"0.5\"} 3\nx_sum 120\nx_count 40\n";
        assert_eq!(metric_sum_count(text, "x"), Some((120.0, 40.0)));
    }
}

//! tessera-loadtest: the demand-spike and fault harness. It starts the real
//! `tessera-server` binary as a child process on a loopback port over a fresh
//! SQLite file, drives it with online clients (HTTP) and real counter/gate
//! terminals (`tessera-terminal`, each with its own SQLite file), and reports
//! figures and invariant checks. Scenarios: `spike`, `chaos`, `gate`, `gate-peers` (offline gates
//! sharing admissions over the LAN), `drain`, `shop`,
//! `history` (a year of open days through the real APIs), `pg-spike` (the hot
//! slot on PostgreSQL, several server processes) and `pg-chaos` (online
//! clients and counters on PostgreSQL while processes and the database are
//! restarted). `counters` holds what the two chaos scenarios share about
//! counters (the cashier's loop, the per-counter check); `thread_cpu` reads
//! one named thread's CPU (the server's writer) from `/proc`; `affinity`
//! pins the server and the load generator to CPUs of their own; `pg_naive`
//! runs PostgreSQL's naive hot-row update, the spike's reference.

pub mod affinity;
pub mod chaos;
pub mod client;
pub mod counters;
pub mod cpu;
pub mod drain;
pub mod gate;
pub mod gate_peers;
pub mod history;
pub mod pg_chaos;
pub mod pg_naive;
pub mod pg_spike;
pub mod proxy;
pub mod push;
pub mod push_devices;
pub mod queue;
pub mod server;
pub mod shop;
pub mod spike;
pub mod stats;
pub mod thread_cpu;

//! `tessera-loadtest`: see the crate docs and docs/BENCHMARKS.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tessera_loadtest::server::release_server_binary;
use tessera_loadtest::{
    chaos, drain, gate, gate_peers, history, pg_chaos, pg_spike, push, push_devices, queue, shop,
    spike,
};
use tessera_server::testkit::Backend;

#[derive(Parser)]
#[command(
    name = "tessera-loadtest",
    version,
    about = "Demand spike and fault harness for Tessera (drives the release-built tessera-server)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// C online clients hold + confirm on one hot slot; M counters sell it too.
    Spike {
        /// Admissions the hot slot holds.
        #[arg(long, default_value_t = 50_000)]
        capacity: u32,
        /// Concurrent online clients (closed loop).
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Counter terminals selling the same slot from leases.
        #[arg(long, default_value_t = 0)]
        terminals: usize,
        /// Longest a run lasts (seconds) if the slot does not sell out.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Adult tickets per online order (1 is the worst case; parties of
        /// two or more are typical for a museum).
        #[arg(long, default_value_t = 1)]
        quantity: u32,
        /// group | per-request | both
        #[arg(long, default_value = "both", value_parser = ["group", "per-request", "both"])]
        commit: String,
        /// shared | pinned | both: pinned runs the server on one CPU and
        /// the load generator on another (needs 2 CPUs); both runs shared,
        /// then pinned, and prints them side by side.
        #[arg(long, default_value = "shared", value_parser = ["shared", "pinned", "both"])]
        cores: String,
        /// Also run PostgreSQL's naive `UPDATE … WHERE sold < capacity`
        /// (pgbench, a throw-away cluster) at the same clients and
        /// duration, and print the ratios against it.
        #[arg(long)]
        pg_reference: bool,
        /// One JSON object with every figure instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Counters behind cuttable proxies, server SIGKILLs, requests sent
    /// twice; then heal and check oversold/lost/duplicated/tallies.
    Chaos {
        #[arg(long, default_value_t = 2000)]
        capacity: u32,
        #[arg(long, default_value_t = 16)]
        clients: usize,
        #[arg(long, default_value_t = 4)]
        terminals: usize,
        /// Server SIGKILLs (each restarted on the same file).
        #[arg(long, default_value_t = 3)]
        kills: usize,
        /// Network partitions of single counters.
        #[arg(long, default_value_t = 8)]
        partitions: usize,
        /// Seed of the fault plan (printed; default: from the clock).
        #[arg(long)]
        seed: Option<u64>,
        /// Seconds of selling under faults.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Share of online requests sent twice with the same key.
        #[arg(long, default_value_t = 0.15)]
        duplicate_rate: f64,
        #[arg(long)]
        json: bool,
    },
    /// Online redeem (steady 500/s and flat out) and offline verify+redeem.
    Gate {
        /// Tickets per phase.
        #[arg(long, default_value_t = 5000)]
        tickets: usize,
        /// Scans per second of the steady online phase.
        #[arg(long, default_value_t = 500)]
        rate: u32,
        #[arg(long)]
        json: bool,
    },
    /// Push: commit -> event delivered to N listeners of a day's
    /// availability stream.
    Push {
        /// Listener counts to measure, one server each.
        #[arg(long, value_delimiter = ',', default_values_t = [1000usize, 10000])]
        subscribers: Vec<usize>,
        /// Holds made (one event each) per listener count.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        #[arg(long, default_value = "sqlite", value_parser = parse_backend)]
        backend: Backend,
        #[arg(long)]
        json: bool,
    },
    /// Push to devices: online order -> counter engines' places left, with
    /// 8 counters; void at a counter -> the gate refuses the ticket itself.
    PushDevices {
        #[arg(long, default_value_t = 8)]
        counters: usize,
        #[arg(long, default_value_t = 20)]
        orders: usize,
        #[arg(long, default_value_t = 20)]
        voids: usize,
        #[arg(long, default_value = "sqlite", value_parser = parse_backend)]
        backend: Backend,
        #[arg(long)]
        json: bool,
    },
    /// Three gates with the server down: scan at one → known at the others.
    GatePeers {
        /// Admissions, round-robin at the three gates.
        #[arg(long, default_value_t = 600)]
        admissions: usize,
        #[arg(long)]
        json: bool,
    },
    /// A spike of web-shop visitors: pages, calendar, availability polls,
    /// and a share buying through the demo payment provider.
    /// A blockbuster's opening through its waiting room: visitors join
    /// before the opening, wait, are let in at the configured rate and book;
    /// a background of holds on another day measures the server's p99
    /// alone and while the room works.
    Queue {
        #[arg(long, default_value_t = 10_000)]
        visitors: usize,
        #[arg(long, default_value_t = 12_000)]
        rate_per_minute: u32,
        /// Background holds per second (another day, not queued).
        #[arg(long, default_value_t = 100)]
        background: u32,
        /// Seconds of background alone before the crowd arrives.
        #[arg(long, default_value_t = 15)]
        quiet: u64,
        #[arg(long)]
        json: bool,
    },
    Shop {
        #[arg(long, default_value_t = 200)]
        visitors: usize,
        /// Seconds of load.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Share of visits that buy (0..1).
        #[arg(long, default_value_t = 0.1)]
        buy_share: f64,
        /// Places in each of the six entry times visitors buy.
        #[arg(long, default_value_t = 5000)]
        capacity: u32,
        #[arg(long)]
        json: bool,
    },
    /// The hot-slot spike on PostgreSQL (a throw-away cluster): online
    /// clients hold + confirm through 1 or more server processes.
    PgSpike {
        #[arg(long, default_value_t = 1_000_000)]
        capacity: u32,
        #[arg(long, default_value_t = 100)]
        clients: usize,
        /// Server processes per run, comma-separated (one run each).
        #[arg(long, default_value = "1,3", value_delimiter = ',')]
        processes: Vec<usize>,
        /// Seconds per run.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// group | per-request | both
        #[arg(long, default_value = "group", value_parser = ["group", "per-request", "both"])]
        commit: String,
        /// Load pg_stat_statements and print PostgreSQL's busiest statements.
        #[arg(long)]
        pg_stats: bool,
        #[arg(long)]
        json: bool,
    },
    /// Online clients and counters on PostgreSQL under faults: three
    /// processes, one SIGKILLed and restarted twice, PostgreSQL restarted,
    /// counters moved off a dead process and cut off; then the books.
    PgChaos {
        #[arg(long, default_value_t = 400)]
        capacity: u32,
        #[arg(long, default_value_t = 16)]
        clients: usize,
        #[arg(long, default_value_t = 20261202)]
        seed: u64,
        /// Seconds the faults are spread over.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Share of requests sent to two processes at once.
        #[arg(long, default_value_t = 0.1)]
        duplicate_rate: f64,
        /// Counters selling the slot too (counter i syncs to process i mod 3).
        #[arg(long, default_value_t = 3)]
        counters: usize,
        /// Mean milliseconds between two sales of one counter.
        #[arg(long, default_value_t = 300)]
        counter_gap_ms: u64,
        #[arg(long)]
        json: bool,
    },
    /// Seconds to upload N sales a counter queued while offline.
    Drain {
        #[arg(long, default_value_t = 10_000)]
        sales: usize,
        #[arg(long)]
        json: bool,
    },
    /// A year of history through the real APIs (one restart per day), then
    /// sync, hold+confirm, availability, day report and start-up on the
    /// first day vs the last.
    History {
        /// Open days of history.
        #[arg(long, default_value_t = 320)]
        days: usize,
        /// Online orders booked each day (for the coming week).
        #[arg(long, default_value_t = 600)]
        orders_per_day: usize,
        /// Sales each of the three counters makes each day.
        #[arg(long, default_value_t = 40)]
        counter_sales_per_day: usize,
        /// Syncs per counter in each probe.
        #[arg(long, default_value_t = 100)]
        probe_syncs: usize,
        /// Online hold + confirm pairs in each probe.
        #[arg(long, default_value_t = 200)]
        probe_orders: usize,
        /// The store: `sqlite` (a file) or `postgres` (a throw-away
        /// PostgreSQL cluster, initdb'd in a temporary directory, served with
        /// `--database`).
        #[arg(long, default_value = "sqlite", value_parser = parse_backend)]
        backend: Backend,
        /// Copy the walked SQLite databases (server and counters) into this
        /// directory at the end, to study the last day afterwards.
        #[arg(long)]
        keep_db: Option<PathBuf>,
        /// After the walk, probe a fresh twin's day 1 and the walked
        /// database's last day in this many alternating rounds (0: off).
        #[arg(long, default_value_t = 4)]
        paired_rounds: usize,
        #[arg(long)]
        json: bool,
    },
}

fn parse_backend(text: &str) -> Result<Backend, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "sqlite" => Ok(Backend::Sqlite),
        "postgres" | "postgresql" => Ok(Backend::Postgres),
        other => Err(format!("{other:?}: must be sqlite or postgres")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Counters sync every second during runs unless told otherwise.
    if std::env::var_os("TESSERA_SYNC_INTERVAL_MS").is_none() {
        std::env::set_var("TESSERA_SYNC_INTERVAL_MS", "1000");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(violations) if violations.is_empty() => ExitCode::SUCCESS,
        Ok(violations) => {
            for v in &violations {
                eprintln!("VIOLATION: {v}");
            }
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn run(cli: Cli) -> Result<Vec<String>> {
    match cli.command {
        Cmd::Spike {
            capacity,
            clients,
            terminals,
            duration,
            quantity,
            commit,
            cores,
            pg_reference,
            json,
        } => {
            let modes = match commit.as_str() {
                "both" => vec!["group".to_string(), "per-request".to_string()],
                m => vec![m.to_string()],
            };
            let opts = spike::SpikeOptions {
                capacity,
                clients,
                terminals,
                duration: Duration::from_secs(duration),
                modes,
                server_bin: release_server_binary()?,
                quantity: quantity.clamp(1, 20),
                cores: match cores.as_str() {
                    "both" => vec![spike::Cores::Shared, spike::Cores::Pinned],
                    "pinned" => vec![spike::Cores::Pinned],
                    _ => vec![spike::Cores::Shared],
                },
                pg_reference,
            };
            let report = spike::run(&opts).await?;
            if json {
                print_json(&report)?;
            } else {
                spike::print(&report);
            }
            Ok(spike::violations(&report))
        }
        Cmd::Chaos {
            capacity,
            clients,
            terminals,
            kills,
            partitions,
            seed,
            duration,
            duplicate_rate,
            json,
        } => {
            let seed = seed.unwrap_or_else(chaos::fresh_seed);
            eprintln!("chaos: seed {seed} (replay with --seed {seed})");
            let opts = chaos::ChaosOptions {
                capacity,
                clients,
                terminals,
                kills,
                partitions,
                seed,
                duration: Duration::from_secs(duration),
                duplicate_rate: duplicate_rate.clamp(0.0, 1.0),
                server_bin: release_server_binary()?,
                sabotage: false,
            };
            let report = chaos::run(&opts).await?;
            if json {
                print_json(&report)?;
            } else {
                chaos::print(&report);
            }
            eprintln!("chaos: seed {seed}");
            Ok(report.violations.clone())
        }
        Cmd::Push {
            subscribers,
            rounds,
            backend,
            json,
        } => {
            let mut server = tessera_loadtest::server::ServerOptions::new(release_server_binary()?);
            server.backend = Some(backend);
            let report = push::run(&push::PushOptions {
                subscribers,
                rounds,
                server,
            })
            .await?;
            if json {
                print_json(&report)?;
            } else {
                push::print(&report);
            }
            Ok(vec![])
        }
        Cmd::PushDevices {
            counters,
            orders,
            voids,
            backend,
            json,
        } => {
            let mut server = tessera_loadtest::server::ServerOptions::new(release_server_binary()?);
            server.backend = Some(backend);
            let report = push_devices::run(&push_devices::DeviceOptions {
                counters,
                orders,
                voids,
                server,
            })
            .await?;
            if json {
                print_json(&report)?;
            } else {
                push_devices::print(&report);
            }
            Ok(vec![])
        }
        Cmd::Gate {
            tickets,
            rate,
            json,
        } => {
            let opts = gate::GateOptions {
                tickets,
                rate,
                server_bin: release_server_binary()?,
            };
            let report = gate::run(&opts).await?;
            if json {
                print_json(&report)?;
            } else {
                gate::print(&report);
            }
            Ok(gate::violations(&report))
        }
        Cmd::GatePeers { admissions, json } => {
            let opts = gate_peers::GatePeersOptions {
                admissions,
                server_bin: release_server_binary()?,
            };
            let report = gate_peers::run(&opts).await?;
            if json {
                print_json(&report)?;
            } else {
                gate_peers::print(&report);
            }
            Ok(gate_peers::violations(&report))
        }
        Cmd::Shop {
            visitors,
            duration,
            buy_share,
            capacity,
            json,
        } => {
            let opts = shop::ShopOptions {
                visitors: visitors.max(1),
                duration: Duration::from_secs(duration.max(1)),
                buy_share: buy_share.clamp(0.0, 1.0),
                capacity: capacity.max(1),
                server_bin: release_server_binary()?,
            };
            let report = shop::run(&opts).await?;
            if json {
                print_json(&report)?;
            } else {
                shop::print(&report);
            }
            Ok(shop::violations(&report))
        }
        Cmd::Queue {
            visitors,
            rate_per_minute,
            background,
            quiet,
            json,
        } => {
            let opts = queue::QueueOptions {
                visitors: visitors.max(1),
                rate_per_minute: rate_per_minute.max(1),
                background_per_s: background.max(1),
                quiet_secs: quiet.max(1),
                server_bin: release_server_binary()?,
            };
            let report = queue::run(&opts).await?;
            if json {
                print_json(&report)?;
            } else {
                queue::print(&report);
            }
            Ok(queue::violations(&report))
        }
        Cmd::PgSpike {
            capacity,
            clients,
            processes,
            duration,
            commit,
            pg_stats,
            json,
        } => {
            let modes = match commit.as_str() {
                "both" => vec!["group".to_string(), "per-request".to_string()],
                m => vec![m.to_string()],
            };
            let opts = pg_spike::PgSpikeOptions {
                capacity,
                clients,
                processes,
                modes,
                duration: Duration::from_secs(duration),
                server_bin: release_server_binary()?,
                pg_stats,
            };
            let runs = pg_spike::run(&opts).await?;
            if json {
                print_json(&runs)?;
            } else {
                pg_spike::print(&runs);
            }
            Ok(pg_spike::violations(&runs))
        }
        Cmd::PgChaos {
            capacity,
            clients,
            seed,
            duration,
            duplicate_rate,
            counters,
            counter_gap_ms,
            json,
        } => {
            let opts = pg_chaos::PgChaosOptions {
                capacity,
                clients,
                seed,
                duration: Duration::from_secs(duration),
                duplicate_rate: duplicate_rate.clamp(0.0, 1.0),
                counters,
                counter_gap: Duration::from_millis(counter_gap_ms),
                server_bin: release_server_binary()?,
                sabotage: pg_chaos::Sabotage::default(),
            };
            let report = pg_chaos::run(&opts).await?;
            if json {
                print_json(&report)?;
            } else {
                pg_chaos::print(&report);
            }
            Ok(report.violations.clone())
        }
        Cmd::Drain { sales, json } => {
            let opts = drain::DrainOptions {
                sales,
                server_bin: release_server_binary()?,
            };
            let report = drain::run(&opts).await?;
            if json {
                print_json(&report)?;
            } else {
                drain::print(&report);
            }
            Ok(drain::violations(&report))
        }
        Cmd::History {
            days,
            orders_per_day,
            counter_sales_per_day,
            probe_syncs,
            probe_orders,
            backend,
            keep_db,
            paired_rounds,
            json,
        } => {
            let opts = history::HistoryOptions {
                days: days.max(1),
                orders_per_day,
                counter_sales_per_day,
                probe_syncs: probe_syncs.max(1),
                probe_orders,
                backend,
                server_bin: release_server_binary()?,
                keep_db,
                paired_rounds,
            };
            let report = history::run(&opts).await?;
            if json {
                print_json(&report)?;
            } else {
                history::print(&report);
            }
            Ok(history::violations(&report))
        }
    }
}

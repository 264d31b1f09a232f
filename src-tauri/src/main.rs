//! tessera-counter: the counter desktop app. A thin Tauri shell: one command
//! per `tessera_terminal::Terminal` call (see `commands`), the engine held in
//! `state`, and the screens in `ui/`. No business rules live here: the engine
//! decides, this only carries calls and answers across the IPC boundary.

// No console window behind the app on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod commands;
mod error;
mod exports;
mod state;

use tauri::Manager;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let result = tauri::Builder::default()
        .setup(|app| {
            let data_dir = state::data_dir(app.path().app_data_dir().ok())?;
            tracing::info!(data_dir = %data_dir.display(), "counter app starting");
            app.manage(state::AppState::start(data_dir, Some(app.handle().clone())));
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![
            commands::is_enrolled,
            commands::setup_defaults,
            commands::enrol,
            commands::status,
            commands::products,
            commands::slots_today,
            commands::quote,
            commands::login,
            commands::open_shift,
            commands::sell,
            commands::sales_today,
            commands::reprint,
            commands::void_sale,
            commands::x_report,
            commands::close_shift,
            commands::set_printer,
            commands::test_print,
            commands::sync_now,
            commands::scan,
            commands::day_report,
            commands::day_report_csv,
            commands::leases,
            commands::revoke_lease,
            commands::save_export,
        ])
        .run(tauri::generate_context!());
    if let Err(e) = result {
        tracing::error!("the counter app stopped: {e}");
        std::process::exit(1);
    }
}

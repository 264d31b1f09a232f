//! One Tauri command per engine call, same names and arguments (the screens'
//! typed wrapper is ui/src/api.ts). All are async: engine calls that read or
//! write SQLite or talk to the printer run on the blocking pool, so the
//! window's main thread never waits on a disk or a printer.

use jiff::civil::Date;
use tauri::State;
use tessera_core::pricing::CartLine;
use tessera_core::slot::SlotId;
use tessera_terminal::views::{
    PrintOutcome, ProductView, Quote, SaleDone, SaleRequest, SaleView, ScanView, ShiftReport,
    ShiftView, SlotStatus, StaffView, Status, SyncSummary, VoidDone,
};
use tessera_terminal::{Terminal, TerminalError};
use uuid::Uuid;

use crate::error::CommandError;
use crate::exports;
use crate::state::AppState;

type Answer<T> = Result<T, CommandError>;

/// Runs a blocking engine call off the async workers.
async fn blocking<T, F>(state: &AppState, f: F) -> Answer<T>
where
    T: Send + 'static,
    F: FnOnce(&Terminal) -> Result<T, TerminalError> + Send + 'static,
{
    let terminal = state.terminal()?;
    tauri::async_runtime::spawn_blocking(move || f(&terminal))
        .await
        .map_err(CommandError::task)?
        .map_err(CommandError::from)
}

#[tauri::command]
pub async fn is_enrolled(state: State<'_, AppState>) -> Answer<bool> {
    Ok(state.is_enrolled())
}

/// What the setup screen starts with: a demo or an installer can pass the
/// server, the one-time code and the printer in the environment so the person
/// at the machine only confirms.
#[derive(serde::Serialize)]
pub struct SetupDefaults {
    server_url: Option<String>,
    code: Option<String>,
    name: Option<String>,
    printer: Option<String>,
}

#[tauri::command]
pub async fn setup_defaults() -> Answer<SetupDefaults> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    Ok(SetupDefaults {
        server_url: var("TESSERA_SERVER_URL"),
        code: var("TESSERA_ENROL_CODE"),
        name: var("TESSERA_DEVICE_NAME"),
        printer: var("TESSERA_PRINTER"),
    })
}

#[tauri::command]
pub async fn enrol(
    state: State<'_, AppState>,
    server_url: String,
    code: String,
    name: String,
) -> Answer<Status> {
    let terminal = Terminal::enrol(state.data_dir(), &server_url, &code, &name).await?;
    state.install(terminal.clone());
    tauri::async_runtime::spawn_blocking(move || terminal.status())
        .await
        .map_err(CommandError::task)?
        .map_err(CommandError::from)
}

#[tauri::command]
pub async fn status(state: State<'_, AppState>) -> Answer<Status> {
    blocking(&state, |t| t.status()).await
}

#[tauri::command]
pub async fn products(state: State<'_, AppState>) -> Answer<Vec<ProductView>> {
    blocking(&state, |t| t.products()).await
}

#[tauri::command]
pub async fn slots_today(state: State<'_, AppState>) -> Answer<Vec<SlotStatus>> {
    blocking(&state, |t| t.slots_today()).await
}

#[tauri::command]
pub async fn quote(
    state: State<'_, AppState>,
    slot_id: SlotId,
    items: Vec<CartLine>,
) -> Answer<Quote> {
    blocking(&state, move |t| t.quote(slot_id, &items)).await
}

#[tauri::command]
pub async fn login(state: State<'_, AppState>, pin: String) -> Answer<StaffView> {
    blocking(&state, move |t| t.login(&pin)).await
}

#[tauri::command]
pub async fn open_shift(state: State<'_, AppState>, pin: String, float: i64) -> Answer<ShiftView> {
    blocking(&state, move |t| t.open_shift(&pin, float)).await
}

#[tauri::command]
pub async fn sell(state: State<'_, AppState>, request: SaleRequest) -> Answer<SaleDone> {
    let terminal = state.terminal()?;
    Ok(terminal.sell(request).await?)
}

#[tauri::command]
pub async fn sales_today(state: State<'_, AppState>) -> Answer<Vec<SaleView>> {
    blocking(&state, |t| t.sales_today()).await
}

#[tauri::command]
pub async fn reprint(state: State<'_, AppState>, sale_id: Uuid) -> Answer<PrintOutcome> {
    let terminal = state.terminal()?;
    Ok(terminal.reprint(sale_id).await?)
}

#[tauri::command]
pub async fn void_sale(
    state: State<'_, AppState>,
    sale_id: Uuid,
    supervisor_pin: String,
    reason: String,
) -> Answer<VoidDone> {
    // The server checks the supervisor's PIN, so this waits on the network.
    let terminal = state.terminal()?;
    Ok(terminal.void(sale_id, &supervisor_pin, &reason).await?)
}

#[tauri::command]
pub async fn x_report(state: State<'_, AppState>) -> Answer<ShiftReport> {
    blocking(&state, |t| t.x_report()).await
}

#[tauri::command]
pub async fn close_shift(state: State<'_, AppState>, counted: i64) -> Answer<ShiftReport> {
    let terminal = state.terminal()?;
    Ok(terminal.close_shift(counted).await?)
}

#[tauri::command]
pub async fn set_printer(state: State<'_, AppState>, spec: String) -> Answer<()> {
    blocking(&state, move |t| t.set_printer(&spec)).await
}

#[tauri::command]
pub async fn test_print(state: State<'_, AppState>) -> Answer<PrintOutcome> {
    let terminal = state.terminal()?;
    Ok(terminal.test_print().await?)
}

#[tauri::command]
pub async fn sync_now(state: State<'_, AppState>) -> Answer<SyncSummary> {
    let terminal = state.terminal()?;
    Ok(terminal.sync_now().await?)
}

#[tauri::command]
pub async fn scan(state: State<'_, AppState>, code: String) -> Answer<ScanView> {
    let terminal = state.terminal()?;
    Ok(terminal.scan(&code).await?)
}

#[tauri::command]
pub async fn day_report(
    state: State<'_, AppState>,
    supervisor_pin: String,
    date: Date,
) -> Answer<serde_json::Value> {
    let terminal = state.terminal()?;
    Ok(terminal.day_report(&supervisor_pin, date).await?)
}

#[tauri::command]
pub async fn day_report_csv(
    state: State<'_, AppState>,
    supervisor_pin: String,
    date: Date,
) -> Answer<String> {
    let terminal = state.terminal()?;
    Ok(terminal.day_report_csv(&supervisor_pin, date).await?)
}

#[tauri::command]
pub async fn leases(
    state: State<'_, AppState>,
    supervisor_pin: String,
    date: Date,
) -> Answer<serde_json::Value> {
    let terminal = state.terminal()?;
    Ok(terminal.leases(&supervisor_pin, date).await?)
}

#[tauri::command]
pub async fn revoke_lease(
    state: State<'_, AppState>,
    supervisor_pin: String,
    lease_id: Uuid,
) -> Answer<serde_json::Value> {
    let terminal = state.terminal()?;
    Ok(terminal.revoke_lease(&supervisor_pin, lease_id).await?)
}

/// Not an engine call: saves an export the screen produced (the day report
/// as CSV) next to the counter's data, and says where.
#[tauri::command]
pub async fn save_export(
    state: State<'_, AppState>,
    file_name: String,
    contents: String,
) -> Answer<String> {
    let dir = state.data_dir().to_path_buf();
    let path =
        tauri::async_runtime::spawn_blocking(move || exports::save(&dir, &file_name, &contents))
            .await
            .map_err(CommandError::task)??;
    Ok(path.display().to_string())
}

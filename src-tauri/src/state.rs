//! The engine the commands share. `Terminal` is cheap to clone, so a command
//! clones it out of the lock and never holds the lock across an `.await`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock};

use tauri::{AppHandle, Emitter};
use tessera_terminal::views::EngineChange;
use tessera_terminal::{Terminal, TerminalError};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::error::CommandError;

/// Where the engine keeps its database: `TESSERA_DATA_DIR` (tests, several
/// counters on one machine), else the platform's app data directory.
pub const DATA_DIR_ENV: &str = "TESSERA_DATA_DIR";

pub fn data_dir(app_data_dir: Option<PathBuf>) -> Result<PathBuf, String> {
    match std::env::var_os(DATA_DIR_ENV).filter(|v| !v.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => app_data_dir
            .ok_or_else(|| format!("no app data directory on this system: set {DATA_DIR_ENV}")),
    }
}

pub struct AppState {
    data_dir: PathBuf,
    terminal: RwLock<Option<Terminal>>,
    /// Why an enrolled terminal could not be opened at start (shown instead
    /// of the setup screen, which would try to enrol it a second time).
    open_error: Mutex<Option<String>>,
    /// The terminal's background tasks: its sync loop and, in the app, the
    /// forwarding of its changes to the screens.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Where engine changes go as Tauri events (none in unit tests).
    app: Option<AppHandle>,
}

/// The Tauri event the screens listen to; its payload is an
/// `EngineChange` ("status", "slots", "sales", "catalogue").
pub const ENGINE_CHANGED: &str = "engine-changed";

impl AppState {
    /// Opens the terminal if this machine is enrolled, and starts syncing.
    pub fn start(data_dir: PathBuf, app: Option<AppHandle>) -> Self {
        let state = AppState {
            data_dir,
            terminal: RwLock::new(None),
            open_error: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
            app,
        };
        // Not enrolled means no database here at all; a damaged one is an
        // open error shown to the person at the counter, never a setup
        // screen that would enrol over its unsynced sales.
        match Terminal::open(&state.data_dir) {
            Ok(t) => state.install(t),
            Err(TerminalError::NotEnrolled) => {}
            Err(e) => {
                tracing::error!("cannot open the terminal: {e}");
                *state
                    .open_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
            }
        }
        state
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// False only when there is nothing here to open: a terminal that could
    /// not be opened counts as enrolled, so the screens show why.
    pub fn is_enrolled(&self) -> bool {
        self.terminal
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
            || self
                .open_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some()
            || Terminal::is_enrolled(&self.data_dir)
    }

    /// The open terminal, or why there is none.
    pub fn terminal(&self) -> Result<Terminal, CommandError> {
        if let Some(t) = self
            .terminal
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            return Ok(t.clone());
        }
        match self
            .open_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            Some(e) => Err(CommandError::new(
                "open_failed",
                format!("this counter's data could not be opened: {e}"),
            )),
            None => Err(tessera_terminal::TerminalError::NotEnrolled.into()),
        }
    }

    /// Makes `t` the terminal every command uses and (re)starts its sync
    /// loop and the forwarding of its changes to the screens.
    pub fn install(&self, t: Terminal) {
        // The tasks run inside Tauri's runtime, which is also where every
        // async command runs.
        let tasks = {
            let _runtime = tauri::async_runtime::handle().inner().enter();
            let mut tasks = vec![t.spawn_sync_loop()];
            if let Some(app) = &self.app {
                tasks.push(tokio::spawn(forward_changes(t.changes(), app.clone())));
            }
            tasks
        };
        // A gate shares its admissions with the other gates (set with the
        // CLI's `peers`) when told where to listen.
        if let Some(listen) = peer_listen() {
            let old = self
                .terminal
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let peer = t.clone();
            tauri::async_runtime::spawn(async move {
                // The terminal replaced (if any) frees the port first.
                if let Some(old) = old {
                    old.stop_peer_service().await;
                }
                if let Err(e) = peer.start_peer_service(listen).await {
                    tracing::error!("gate peers not started: {e}");
                }
            });
        }
        *self
            .terminal
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(t);
        *self
            .open_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        let old = std::mem::replace(
            &mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner),
            tasks,
        );
        for task in old {
            task.abort();
        }
    }
}

/// Engine changes to the screens, as they happen: the screens re-read what
/// a change concerns instead of polling for it.
async fn forward_changes(mut changes: broadcast::Receiver<EngineChange>, app: AppHandle) {
    loop {
        let what = match changes.recv().await {
            Ok(what) => vec![what],
            // Fell behind: some changes are unknown, so all of them.
            Err(broadcast::error::RecvError::Lagged(_)) => vec![
                EngineChange::Status,
                EngineChange::Slots,
                EngineChange::Sales,
                EngineChange::Catalogue,
            ],
            Err(broadcast::error::RecvError::Closed) => return,
        };
        for w in what {
            if let Err(e) = app.emit(ENGINE_CHANGED, w) {
                tracing::warn!("engine change not delivered to the screens: {e}");
            }
        }
    }
}

/// `TESSERA_PEER_LISTEN`, e.g. `0.0.0.0:7801`; unset or unreadable: none.
fn peer_listen() -> Option<std::net::SocketAddr> {
    let value = std::env::var("TESSERA_PEER_LISTEN").ok()?;
    match value.trim().parse() {
        Ok(addr) => Some(addr),
        Err(e) => {
            tracing::error!("TESSERA_PEER_LISTEN={value:?} is not an address: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_database_is_shown_not_offered_for_enrolment() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("terminal.db");
        std::fs::write(&db, b"").unwrap();
        let state = AppState::start(dir.path().to_path_buf(), None);
        assert!(state.is_enrolled(), "the setup screen must not be offered");
        let err = state
            .terminal()
            .err()
            .expect("no terminal on a damaged file");
        assert_eq!(err.code, "open_failed");
        assert!(
            err.message.contains(&db.display().to_string()),
            "{}",
            err.message
        );
        assert!(err.message.contains("empty"), "{}", err.message);
        assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "left as it was");
    }

    #[test]
    fn an_empty_directory_is_offered_for_enrolment() {
        let dir = tempfile::tempdir().unwrap();
        let state = AppState::start(dir.path().to_path_buf(), None);
        assert!(!state.is_enrolled());
        assert_eq!(
            state.terminal().err().map(|e| e.code),
            Some("not_enrolled".to_string())
        );
        assert!(!dir.path().join("terminal.db").exists());
    }

    #[test]
    fn data_dir_prefers_the_environment() {
        // One test touches the variable, so no other test races with it.
        std::env::set_var(DATA_DIR_ENV, "/tmp/tessera-x");
        assert_eq!(
            data_dir(Some(PathBuf::from("/home/a"))),
            Ok(PathBuf::from("/tmp/tessera-x"))
        );
        std::env::set_var(DATA_DIR_ENV, "");
        assert_eq!(
            data_dir(Some(PathBuf::from("/home/a"))),
            Ok(PathBuf::from("/home/a"))
        );
        assert!(data_dir(None).is_err());
        std::env::remove_var(DATA_DIR_ENV);
    }
}

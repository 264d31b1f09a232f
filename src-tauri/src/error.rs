//! What a failed command hands the screen: the engine's `{code, message}`,
//! plus the few failures that belong to the shell itself.

use serde::Serialize;
use tessera_terminal::TerminalError;

#[derive(Debug, Serialize)]
pub struct CommandError {
    pub code: String,
    pub message: String,
}

impl CommandError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        CommandError {
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// A blocking engine call that panicked or was cancelled: the engine's
    /// transaction decided what happened, the screen only learns it failed.
    pub fn task(e: impl std::fmt::Display) -> Self {
        CommandError::new("internal", format!("the app hit an internal error: {e}"))
    }
}

impl From<TerminalError> for CommandError {
    fn from(e: TerminalError) -> Self {
        CommandError::new(e.code(), e.to_string())
    }
}

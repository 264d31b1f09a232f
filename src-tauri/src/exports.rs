//! Files the supervisor exports (the day report as CSV). Written under the
//! data directory so they sit with the counter's records; the name comes from
//! the screen, so it is reduced to a plain file name first.

use std::path::{Path, PathBuf};

use crate::error::CommandError;

/// Keeps letters, digits, `-`, `_` and `.`; no directories, no hidden files.
pub fn safe_file_name(name: &str) -> Option<String> {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.').to_string();
    if cleaned.is_empty() || cleaned.len() > 120 {
        None
    } else {
        Some(cleaned)
    }
}

pub fn save(data_dir: &Path, file_name: &str, contents: &str) -> Result<PathBuf, CommandError> {
    let name = safe_file_name(file_name)
        .ok_or_else(|| CommandError::new("invalid", format!("not a file name: {file_name:?}")))?;
    let dir = data_dir.join("exports");
    let write = || -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(name);
        std::fs::write(&path, contents)?;
        Ok(path)
    };
    write().map_err(|e| CommandError::new("export_failed", format!("could not save the file: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_escape_the_exports_folder() {
        assert_eq!(
            safe_file_name("day-report-2026-12-02.csv").as_deref(),
            Some("day-report-2026-12-02.csv")
        );
        assert_eq!(
            safe_file_name("../../etc/passwd").as_deref(),
            Some("_.._etc_passwd")
        );
        assert_eq!(safe_file_name("/abs/x.csv").as_deref(), Some("_abs_x.csv"));
        assert_eq!(safe_file_name("..."), None);
        assert_eq!(safe_file_name(""), None);
    }

    #[test]
    fn saves_under_exports() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = save(dir.path(), "r.csv", "a,b\r\n").expect("saved");
        assert_eq!(path, dir.path().join("exports").join("r.csv"));
        assert_eq!(std::fs::read_to_string(path).expect("read"), "a,b\r\n");
    }
}

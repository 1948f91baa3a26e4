//! Logging for both plugin binaries (`manx`, `manx-ipam`): stdout is the CNI
//! result, so logs go to `log_file_path` when the network configuration
//! sets one, and only there (a runtime such as `ctr run --cni` shows the
//! plugin's stderr on the user's terminal), else to stderr; at `log_level`
//! (Calico's fields; `warning` is accepted for `warn`). Errors still reach
//! the runtime in the CNI error result.

use std::fs::OpenOptions;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

/// Keeps logging set up; dropping it changes nothing (the file is shared).
#[derive(Debug)]
pub struct LogGuard;

/// Sets the global subscriber from the `log_level` / `log_file_path` fields
/// of the stdin configuration (defaults: `warn`, stderr). `MANX_LOG`
/// overrides the level. A log file that cannot be opened leaves stderr.
pub fn init(stdin: &[u8]) -> LogGuard {
    let conf: serde_json::Value = serde_json::from_slice(stdin).unwrap_or_default();
    let level = conf
        .get("log_level")
        .and_then(|v| v.as_str())
        .map(|l| match l.to_ascii_lowercase().as_str() {
            "warning" => "warn".to_string(),
            "fatal" | "panic" => "error".to_string(),
            other => other.to_string(),
        })
        .unwrap_or_else(|| "warn".to_string());
    let filter = EnvFilter::try_from_env("MANX_LOG")
        .or_else(|_| EnvFilter::try_new(&level))
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    let file = conf
        .get("log_file_path")
        .and_then(|v| v.as_str())
        .filter(|p| !p.is_empty())
        .and_then(|p| {
            if let Some(dir) = std::path::Path::new(p).parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            OpenOptions::new().create(true).append(true).open(p).ok()
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    let _ = match file {
        Some(f) => builder.with_writer(Mutex::new(f)).try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
    LogGuard
}

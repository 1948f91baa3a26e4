//! Helper processes manx-node starts and leaves running across its own
//! restarts (the UDP data path, manx-bfdd): output appended to a log file,
//! stdin closed, a process group of their own (signals to the agent's group
//! leave them alone), reaped while the agent runs and by init after.

use std::path::Path;

/// Start `cmd` detached with its output appended to `log_path`. `what`
/// names it in the log lines; an exit is logged as a warning (a success
/// too unless `quiet_success`). Returns whether it started.
pub fn spawn(
    mut cmd: tokio::process::Command,
    log_path: &Path,
    what: &'static str,
    quiet_success: bool,
) -> bool {
    let log = match std::fs::File::options()
        .create(true)
        .append(true)
        .open(log_path)
    {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, log = %log_path.display(), "cannot start {what}");
            return false;
        }
    };
    cmd.stdin(std::process::Stdio::null())
        .stdout(
            log.try_clone()
                .map_or(std::process::Stdio::null(), Into::into),
        )
        .stderr(log)
        .process_group(0);
    match cmd.spawn() {
        Ok(mut child) => {
            tracing::info!(pid = child.id(), log = %log_path.display(), "started {what}");
            tokio::spawn(async move {
                if let Ok(status) = child.wait().await
                    && !(quiet_success && status.success())
                {
                    tracing::warn!(%status, "{what} exited");
                }
            });
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start {what}");
            false
        }
    }
}

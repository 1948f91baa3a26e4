//! Processes: run a command and fail loudly, and daemons that die with the
//! test and show their log when it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// Run a command; returns stdout, panics with its output if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A daemon in a namespace, killed on drop; its output goes to
/// `<dir>/<name>.log` (appended: a restarted daemon keeps one log), printed
/// when the test panics.
#[derive(Debug)]
pub struct Daemon {
    /// A label for logs.
    pub name: String,
    child: Option<Child>,
    /// Its log file.
    pub log: PathBuf,
}

impl Daemon {
    /// Start `program args` in `ns` with `env` added to its environment.
    pub fn spawn(
        ns: &Netns,
        dir: &Path,
        name: &str,
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        Daemon::start(ns.command(program), dir, name, args, env)
    }

    /// Start `cmd args` (e.g. a command already wrapped for a namespace).
    pub fn start(
        mut cmd: Command,
        dir: &Path,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("log file {}: {e}", log.display()));
        let child = cmd
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Daemon {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    /// The process id (0 once killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `kill -9` and reap: the process gets no chance to say goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then up to `grace` to exit, then SIGKILL. Returns the exit
    /// code if it exited by itself.
    pub fn terminate(&mut self, grace: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "---- {} log ({}) ----\n{}",
                self.name,
                self.log.display(),
                self.log_text()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_returns_stdout() {
        assert_eq!(run(Command::new("echo").arg("hi")), "hi\n");
    }

    #[test]
    #[should_panic(expected = "failed")]
    fn run_panics_on_failure() {
        run(&mut Command::new("false"));
    }

    #[test]
    fn a_daemon_logs_and_stops() {
        let dir = std::env::temp_dir().join(crate::netns::unique_name("mxtk-daemon"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg("-c");
        let mut d = Daemon::start(cmd, &dir, "sh", &["echo up; exec sleep 600"], &[]);
        assert!(crate::wait::eventually(Duration::from_secs(5), || d
            .log_text()
            .contains("up")));
        assert!(d.alive());
        assert_eq!(
            d.terminate(Duration::from_secs(5)),
            None,
            "killed by SIGTERM"
        );
        assert!(!d.alive());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

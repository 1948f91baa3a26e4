//! Network-namespace helpers for tests, benchmarks and tools: create a named namespace that
//! is deleted on drop, and run code (or a whole tokio runtime) on a thread inside it.
//!
//! Netlink sockets, `/proc/sys/net` and child processes all follow the namespace of the
//! thread that creates or opens them, so a thread that has `setns`'d is enough.

use std::fs::File;
use std::process::Command;

use nix::sched::{CloneFlags, setns};

/// A named network namespace (`ip netns add`), deleted with everything in it on drop.
#[derive(Debug)]
pub struct NetnsGuard {
    name: String,
}

/// Failure to create or enter a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// `ip netns` failed.
    #[error("ip netns {action} {name}: {message}")]
    Ip {
        /// add / delete.
        action: &'static str,
        /// Namespace.
        name: String,
        /// stderr.
        message: String,
    },
    /// setns failed.
    #[error("entering network namespace {name}: {source}")]
    Enter {
        /// Namespace.
        name: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl NetnsGuard {
    /// Create the namespace with `lo` up.
    pub fn new(name: &str) -> Result<Self, NetnsError> {
        // A leftover from a crashed run would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        let out = Command::new("ip")
            .args(["netns", "add", name])
            .output()
            .map_err(|e| NetnsError::Ip {
                action: "add",
                name: name.into(),
                message: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(NetnsError::Ip {
                action: "add",
                name: name.into(),
                message: String::from_utf8_lossy(&out.stderr).trim().into(),
            });
        }
        let g = NetnsGuard { name: name.into() };
        g.ip(&["link", "set", "lo", "up"]);
        Ok(g)
    }

    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run `ip <args>` inside the namespace; returns stdout, panics with stderr on failure
    /// (test helper).
    pub fn ip(&self, args: &[&str]) -> String {
        self.exec("ip", args)
    }

    /// Run a command inside the namespace; returns stdout, panics on failure (test helper).
    pub fn exec(&self, cmd: &str, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, cmd])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {cmd} in {}: {e}", self.name));
        assert!(
            out.status.success(),
            "{cmd} {args:?} in {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run `f` on a new thread inside the namespace and wait for its result.
    pub fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, NetnsError> {
        run_in(&self.name, f)
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Run `f` on a fresh thread that has entered namespace `name` (`/run/netns/<name>`).
/// A panic in `f` is propagated.
pub fn run_in<R: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, NetnsError> {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).map_err(|e| NetnsError::Enter {
        name: name.into(),
        source: e,
    })?;
    let owned = name.to_string();
    let handle = std::thread::spawn(move || {
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Enter {
            name: owned,
            source: std::io::Error::from(e),
        })?;
        Ok(f())
    });
    match handle.join() {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Run an async block on a current-thread tokio runtime inside namespace `name`.
pub fn block_on_in<R, Fut>(
    name: &str,
    f: impl FnOnce() -> Fut + Send + 'static,
) -> Result<R, NetnsError>
where
    R: Send + 'static,
    Fut: std::future::Future<Output = R>,
{
    run_in(name, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building a tokio runtime");
        rt.block_on(f())
    })
}

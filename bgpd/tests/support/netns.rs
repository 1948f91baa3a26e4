//! Network namespaces and process helpers shared by bgpd's namespace tests
//! (`support/` labs, `netns_topo/` topologies, `from_datastore`). Each user
//! names its namespaces `<prefix>-<pid>-<n>` with its own prefix, so
//! concurrent test binaries never collide; a namespace is a Drop guard that
//! kills what runs in it and deletes it, even on panic.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT_NS: AtomicU32 = AtomicU32::new(0);

/// Whether `CI=true`: missing tools fail the test instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Root and the given binaries must be present. Returns false (after
/// printing why) when the test should skip; panics when `CI=true`.
pub fn prerequisites(binaries: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::Uid::effective().is_root() {
        missing.push("root (network namespaces)".to_string());
    }
    for b in binaries {
        if !Path::new(b).exists() {
            missing.push((*b).to_string());
        }
    }
    if missing.is_empty() {
        return true;
    }
    assert!(
        !in_ci(),
        "CI=true and prerequisites are missing: {}",
        missing.join(", ")
    );
    eprintln!("SKIP: missing {}", missing.join(", "));
    false
}

/// Run a command; panic with its output if it fails.
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

/// Poll `f` every 200 ms until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A network namespace `<prefix>-<pid>-<n>` with `lo` up; on drop, whatever
/// still runs in it is killed and the namespace deleted.
#[derive(Debug)]
pub struct Netns {
    /// Its name (`ip netns` name).
    pub name: String,
}

impl Netns {
    /// A fresh namespace named after `prefix`.
    pub fn new(prefix: &str) -> Netns {
        let n = NEXT_NS.fetch_add(1, Ordering::SeqCst);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        if Path::new("/run/netns").join(&name).exists() {
            // A leftover of a crashed run with our pid: ours to remove.
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> String {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command to run inside the namespace (`ip netns exec` execs the
    /// program, so the child's pid is the program's).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Run inside the namespace, return stdout (panics on failure).
    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        run(self.command(program).args(args))
    }

    /// The `/run/netns` file, for `setns(2)`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Run a closure on a thread that has entered this namespace (sockets it
    /// creates live in the namespace).
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns file");
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

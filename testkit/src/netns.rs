//! Network namespaces for tests: `<prefix>-<pid>-<n>`, unique across
//! concurrent test binaries; a [`Netns`] kills whatever still runs in it and
//! deletes itself on drop, even when the test panics.
//!
//! Netlink sockets, `/proc/sys/net` and child processes all follow the
//! namespace of the thread that creates them, so [`Netns::run_in`] (a
//! thread that has `setns`'d) is enough to run code "on" a node.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::proc::run;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh name `<prefix>-<pid>-<n>` (at most 15 bytes of prefix keep it
/// usable as an interface name too).
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// A network namespace with `lo` up, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// A fresh namespace named after `prefix`.
    pub fn new(prefix: &str) -> Netns {
        Netns::named(unique_name(prefix))
    }

    /// A namespace with exactly this name; a leftover of that name (from a
    /// crashed run) is removed first.
    pub fn named(name: impl Into<String>) -> Netns {
        let name = name.into();
        if Path::new("/run/netns").join(&name).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Its `ip netns` name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `/run/netns` file (for `setns(2)`, or a CNI `CNI_NETNS`).
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n <ns> <args>`; returns stdout, panics with stderr on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// `ip -n <ns> -j <args>` parsed as JSON (empty output is `[]`).
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let out = run(Command::new("ip").args(["-n", &self.name, "-j"]).args(args));
        let text = if out.trim().is_empty() { "[]" } else { &out };
        serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("ip -j {args:?} in {}: {e}: {text}", self.name))
    }

    /// A command that runs inside the namespace (`ip netns exec` execs the
    /// program, so the child's pid is the program's).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Run inside the namespace; returns stdout, panics on failure.
    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        run(self.command(program).args(args))
    }

    /// `sysctl -qw key=value` inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")]);
    }

    /// Run `f` on a new thread that has entered this namespace and wait for
    /// it; a panic in `f` is propagated.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        run_in_path(self.path(), f)
    }

    /// Run an async block on a current-thread tokio runtime inside the
    /// namespace.
    pub fn block_on<T, Fut>(&self, f: impl FnOnce() -> Fut + Send + 'static) -> T
    where
        T: Send + 'static,
        Fut: std::future::Future<Output = T>,
    {
        self.run_in(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building a tokio runtime")
                .block_on(f())
        })
    }

    /// Kill every process still running in the namespace.
    pub fn kill_all(&self) {
        let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        else {
            return;
        };
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Run `f` on a new thread that has entered the namespace file at `path`.
pub fn run_in_path<T: Send + 'static>(path: PathBuf, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("entering {}: {e}", path.display()));
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Join `a` and `b` with a veth pair, `ifa` in `a` and `ifb` in `b`, both up.
pub fn veth(a: &Netns, ifa: &str, b: &Netns, ifb: &str) {
    a.ip(&[
        "link", "add", ifa, "type", "veth", "peer", "name", ifb, "netns", &b.name,
    ]);
    a.ip(&["link", "set", ifa, "up"]);
    b.ip(&["link", "set", ifb, "up"]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::Prereqs;

    #[test]
    fn names_are_unique_and_carry_the_pid() {
        let a = unique_name("mxtk");
        let b = unique_name("mxtk");
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("mxtk-{}-", std::process::id())));
    }

    #[test]
    fn a_namespace_is_entered_and_removed_on_drop() {
        if !Prereqs::new().root().command("ip").ok() {
            return;
        }
        let ns = Netns::new("mxtk");
        let path = ns.path();
        assert!(path.exists());
        let b = Netns::new("mxtk");
        veth(&ns, "tk0", &b, "tk1");
        ns.ip(&["addr", "add", "198.51.100.1/30", "dev", "tk0"]);
        // Code run inside sees the namespace's links, not the host's.
        let links = ns.run_in(|| std::fs::read_dir("/sys/class/net").map(|d| d.count()));
        assert!(ns.ip(&["-br", "addr"]).contains("198.51.100.1/30"));
        assert!(links.is_ok());
        let json = ns.ip_json(&["link", "show", "tk0"]);
        assert_eq!(json[0]["ifname"], "tk0");
        // Reaped below with waitpid, to see how it died.
        #[allow(clippy::zombie_processes)]
        let sleeper = ns.command("sleep").arg("600").spawn().expect("sleep");
        // `ip netns exec` enters the namespace after the spawn returns; drop
        // only once the sleeper is inside, or the test races the setns.
        let name = ns.name().to_string();
        let inside = crate::eventually(std::time::Duration::from_secs(10), || {
            let out = crate::run(std::process::Command::new("ip").args(["netns", "pids", &name]));
            out.split_whitespace()
                .any(|p| p == sleeper.id().to_string())
        });
        assert!(inside, "the sleeper never entered {name}");
        drop(ns);
        assert!(!path.exists(), "{} left behind", path.display());
        let pid = nix::unistd::Pid::from_raw(sleeper.id() as i32);
        // Killed on drop (a zombie until reaped, so reap it).
        let status = nix::sys::wait::waitpid(pid, None).expect("waitpid");
        assert!(matches!(
            status,
            nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)
        ));
    }
}

//! Network namespaces, daemons and process helpers shared by bgpd's namespace tests
//! (`support/` labs, `netns_topo/` topologies, `from_datastore`). Each user
//! names its namespaces `<prefix>-<pid>-<n>` with its own prefix, so
//! concurrent test binaries never collide; a namespace is a Drop guard that
//! kills what runs in it and deletes it, even on panic.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
    /// Start `program args` in `ns` (`MANX_LOG=debug`).
    pub fn spawn(ns: &Netns, dir: &Path, name: &str, program: &str, args: &[&str]) -> Daemon {
        Self::spawn_env(ns, dir, name, program, args, &[])
    }

    /// [`Daemon::spawn`] with extra environment variables.
    pub fn spawn_env(
        ns: &Netns,
        dir: &Path,
        name: &str,
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = ns
            .command(program)
            .args(args)
            .env("MANX_LOG", "debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        Daemon {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    /// The process id (0 once killed; `ip netns exec` execs the program,
    /// so this is the daemon's own pid).
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
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    /// SIGTERM (a clean stop: manx-bgpd sends CEASE) and wait up to 10 s,
    /// then SIGKILL. Returns the exit code if it exited by itself.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
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

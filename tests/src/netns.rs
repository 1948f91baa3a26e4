//! Network namespaces, links and processes for lab clusters, each owned by a
//! guard that undoes it on drop (tests clean up even when they fail).
//!
//! Everything goes through iproute2 (`ip`), the tool an operator would use to
//! reproduce a lab by hand; nothing here touches the root namespace except
//! creating and deleting the named namespaces themselves.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Run a command and fail with its stderr if it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// `ip <args>` in the root namespace (only for `netns add/del`).
pub fn ip(args: &[&str]) -> Result<String> {
    let out = run(Command::new("ip").args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A named network namespace, deleted on drop (with every process still in it
/// killed first, so the deletion really frees it).
#[derive(Debug)]
pub struct Netns {
    name: String,
    keep: bool,
}

impl Netns {
    /// Create `name`, replacing a leftover of the same name from a crashed run.
    pub fn create(name: &str) -> Result<Netns> {
        if Path::new("/run/netns").join(name).exists() {
            kill_all_in(name);
            let _ = ip(&["netns", "del", name]);
        }
        ip(&["netns", "add", name]).with_context(|| format!("creating netns {name}"))?;
        let ns = Netns {
            name: name.to_string(),
            keep: false,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A handle on an existing namespace that this handle does not own:
    /// dropping it leaves the namespace alone (the lab outlives `up`).
    pub fn adopt(name: &str) -> Netns {
        Netns {
            name: name.to_string(),
            keep: true,
        }
    }

    /// Do not delete on drop (the lab keeps running after `up` returns).
    pub fn persist(mut self) -> String {
        self.keep = true;
        self.name.clone()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `Command` that runs `program` inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// `ip <args>` inside this namespace.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let out = run(self.command("ip").args(args))
            .with_context(|| format!("in netns {}", self.name))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Write a sysctl inside this namespace (`net.ipv4.ip_forward`, ...).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        run(self
            .command("sysctl")
            .args(["-qw", &format!("{key}={value}")]))?;
        Ok(())
    }

    /// Ping `dst` from this namespace: `count` probes, returns the number answered.
    pub fn ping(&self, dst: &str, count: u32, interval: &str) -> Result<u32> {
        let out = self
            .command("ping")
            .args([
                "-n",
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                interval,
                "-W",
                "1",
                dst,
            ])
            .output()
            .context("running ping (apt-get install iputils-ping)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "5 packets transmitted, 5 received, 0% packet loss"
        let received = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .and_then(|l| l.split(',').nth(1))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        Ok(received)
    }

    /// Spawn a long-running process inside this namespace.
    pub fn spawn(&self, cmd: Command, log: &Path) -> Result<Proc> {
        self.spawn_with(cmd, log, false)
    }

    /// [`Netns::spawn`] in a process group of its own (`setpgid(0, 0)`), so
    /// a Ctrl-C (SIGINT to the terminal's foreground group) on the caller
    /// does not reach it: the lab's daemons outlive `manx-lab up`.
    pub fn spawn_own_group(&self, cmd: Command, log: &Path) -> Result<Proc> {
        self.spawn_with(cmd, log, true)
    }

    fn spawn_with(&self, cmd: Command, log: &Path, own_group: bool) -> Result<Proc> {
        let file = std::fs::File::create(log).with_context(|| format!("creating {log:?}"))?;
        let mut wrapped = self.command(cmd.get_program());
        wrapped.args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        if own_group {
            use std::os::unix::process::CommandExt;
            wrapped.process_group(0);
        }
        let child = wrapped
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("spawning {:?} in {}", cmd.get_program(), self.name))?;
        Ok(Proc {
            child: Some(child),
            log: log.to_path_buf(),
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.keep {
            kill_all_in(&self.name);
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Kill (SIGKILL) every process inside namespace `name`.
pub fn kill_all_in(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                signal(pid, libc::SIGKILL);
            }
        }
    }
}

/// Send `sig` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: i32, sig: i32) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// A child process killed on drop.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The file the process writes its output to.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Let it run past our exit (the lab stays up after `manx-lab up`).
    pub fn detach(mut self) -> u32 {
        let pid = self.pid();
        self.child = None;
        pid
    }

    /// `kill -9` now and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        if let Some(mut c) = self.child.take() {
            signal(c.id() as i32, libc::SIGTERM);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Poll `f` until it returns `Ok(Some(v))` or `timeout` passes; the error
/// names `what` and the last failure.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("never ready");
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

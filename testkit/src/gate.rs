//! Prerequisite gates: a test that needs root, a command or a file this
//! machine lacks is skipped with one line naming what is missing, and fails
//! instead under `CI=true`, where everything is installed by `.ci/run`.

use std::path::Path;
use std::process::Command;

/// Whether `CI=true`: a missing prerequisite fails the test instead of
/// skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Whether `name` is a command on `PATH` (or an existing path).
pub fn has_command(name: &str) -> bool {
    if name.contains('/') {
        return Path::new(name).exists();
    }
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What a test needs. Build it up, then [`Prereqs::ok`].
#[derive(Debug, Default)]
#[must_use = "call .ok() to check the prerequisites"]
pub struct Prereqs {
    missing: Vec<String>,
}

impl Prereqs {
    /// Nothing needed yet.
    pub fn new() -> Prereqs {
        Prereqs::default()
    }

    /// Root (network namespaces need CAP_NET_ADMIN and CAP_SYS_ADMIN).
    pub fn root(mut self) -> Prereqs {
        if !is_root() {
            self.missing
                .push("root (network namespaces need CAP_NET_ADMIN)".into());
        }
        self
    }

    /// A command on `PATH`, or a binary at a path.
    pub fn command(mut self, name: &str) -> Prereqs {
        if !has_command(name) {
            self.missing.push(name.to_string());
        }
        self
    }

    /// Several commands.
    pub fn commands(self, names: &[&str]) -> Prereqs {
        names.iter().fold(self, |p, n| p.command(n))
    }

    /// A file, with the package that provides it (for the message).
    pub fn file(mut self, path: impl AsRef<Path>, package: &str) -> Prereqs {
        let path = path.as_ref();
        if !path.exists() {
            self.missing
                .push(format!("{} (package {package})", path.display()));
        }
        self
    }

    /// Any other condition, described by `what` when false.
    pub fn check(mut self, ok: bool, what: impl Into<String>) -> Prereqs {
        if !ok {
            self.missing.push(what.into());
        }
        self
    }

    /// What is missing, if anything.
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// True when everything is there. Otherwise prints `SKIP: <why>` and
    /// returns false, or panics when `CI=true`.
    pub fn ok(self) -> bool {
        if self.missing.is_empty() {
            return true;
        }
        let why = format!("missing {}", self.missing.join(", "));
        assert!(!in_ci(), "CI=true and a prerequisite is missing: {why}");
        eprintln!("SKIP: {why}");
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_things_are_named() {
        let p = Prereqs::new()
            .command("sh")
            .command("no-such-command-manx")
            .file("/no/such/file", "nothing")
            .check(false, "a condition");
        assert_eq!(
            p.missing(),
            [
                "no-such-command-manx".to_string(),
                "/no/such/file (package nothing)".to_string(),
                "a condition".to_string(),
            ]
        );
    }

    #[test]
    fn nothing_missing_is_ok() {
        assert!(Prereqs::new().command("sh").ok());
    }
}

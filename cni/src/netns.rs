//! Running code inside another network namespace.
//!
//! `setns(2)` changes the namespace of the calling *thread*, so each switch
//! happens on a dedicated, short-lived thread: the caller's thread (and the
//! tokio runtime on it) never leaves the namespace the plugin runs in. A
//! netlink socket opened on that thread stays bound to the namespace it was
//! opened in, so it can be used from any thread afterwards.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

use crate::error::{CniError, ErrorCode};

/// An open network namespace (`/var/run/netns/<name>`, `/proc/<pid>/ns/net`).
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens the namespace at `path`. A missing path is code 3 (unknown
    /// container).
    pub fn open(path: &Path) -> Result<NetNs, CniError> {
        let file = File::open(path).map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorCode::UnknownContainer
            } else {
                ErrorCode::IoFailure
            };
            CniError::new(
                code,
                format!("cannot open network namespace {}: {e}", path.display()),
            )
        })?;
        refuse_own_netns(&file, path)?;
        Ok(NetNs {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The namespace path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file (for `IFLA_NET_NS_FD`).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Runs `f` on a new thread that has joined this namespace, and returns
    /// its result. Fails if the file is not a network namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, CniError> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    setns(&self.file, CloneFlags::CLONE_NEWNET).map_err(|e| {
                        CniError::io(format!(
                            "cannot enter network namespace {}: {e} (is it a network namespace?)",
                            self.path.display()
                        ))
                    })?;
                    Ok(f())
                })
                .join()
                .map_err(|_| {
                    CniError::internal(format!(
                        "thread working in network namespace {} panicked",
                        self.path.display()
                    ))
                })?
        })
    }
}

/// The namespace file of the namespace the plugin runs in.
pub const SELF_NETNS: &str = "/proc/self/ns/net";

/// Refuses (code 4, invalid environment) a `CNI_NETNS` that is the
/// namespace the plugin itself runs in: `/proc/self/ns/net`, a symlink to
/// it or a bind mount of it (`/run/netns/<name>` when the plugin runs in
/// that namespace). ADD would put the pod address and `default via
/// 169.254.1.1` on the host's own interface, DEL would remove it. The two
/// are one namespace when the opened file and `/proc/self/ns/net` have the
/// same (device, inode). Checked on the open file, so the path cannot be
/// swapped between the check and its use.
fn refuse_own_netns(file: &File, path: &Path) -> Result<(), CniError> {
    use std::os::unix::fs::MetadataExt;
    let ns = file.metadata().map_err(|e| {
        CniError::io(format!(
            "cannot stat network namespace {}: {e}",
            path.display()
        ))
    })?;
    let own = std::fs::metadata(SELF_NETNS)
        .map_err(|e| CniError::io(format!("cannot stat {SELF_NETNS}: {e} (is /proc mounted?)")))?;
    if (ns.dev(), ns.ino()) == (own.dev(), own.ino()) {
        return Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            format!(
                "CNI_NETNS {:?} is not valid: it is the network namespace the plugin itself runs in \
                 (same device and inode as {SELF_NETNS}), not a pod's; the runtime must pass the \
                 path of the pod's own network namespace",
                path.display().to_string()
            ),
        ));
    }
    Ok(())
}

/// Writes one sysctl under `/proc/sys` in the namespace of the calling
/// thread, e.g. `("net/ipv4/conf/cali123/proxy_arp", "1")`.
pub fn write_sysctl(key: &str, value: &str) -> Result<(), CniError> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value)
        .map_err(|e| CniError::io(format!("cannot set sysctl {path} to {value}: {e}")))
}

/// Reads one sysctl in the namespace of the calling thread.
pub fn read_sysctl(key: &str) -> Result<String, CniError> {
    let path = format!("/proc/sys/{key}");
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| CniError::io(format!("cannot read sysctl {path}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_namespace_is_unknown_container() {
        let e = NetNs::open(Path::new("/nonexistent/mxcn-netns")).unwrap_err();
        assert_eq!(e.code, 3);
        assert!(e.msg.contains("/nonexistent/mxcn-netns"));
    }

    /// Needs no privileges: every process may stat its own namespace.
    #[test]
    fn own_namespace_is_refused_with_code_4() {
        let e = NetNs::open(Path::new(SELF_NETNS)).unwrap_err();
        assert_eq!(e.code, 4, "{}", e.msg);
        assert!(e.msg.contains("\"/proc/self/ns/net\""), "{}", e.msg);
        assert!(e.msg.contains("the plugin itself runs in"), "{}", e.msg);
        // A symlink to it is the same namespace.
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("ns");
        std::os::unix::fs::symlink(format!("/proc/{}/ns/net", std::process::id()), &link).unwrap();
        let e = NetNs::open(&link).unwrap_err();
        assert_eq!(e.code, 4, "{}", e.msg);
        assert!(e.msg.contains(&link.display().to_string()), "{}", e.msg);
    }

    #[test]
    fn non_netns_file_fails_to_enter() {
        // Needs no privileges: setns on a regular file is EINVAL.
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let ns = NetNs::open(tmp.path()).unwrap();
        let e = ns.run(|| ()).unwrap_err();
        assert_eq!(e.code, 5);
        assert!(
            e.msg.contains("cannot enter network namespace"),
            "{}",
            e.msg
        );
    }
}

//! Sysctls under `/proc/sys`, which shows the network namespace of the calling thread.
//!
//! What felix-lite sets, following Calico felix's `configureInterface`:
//! * globally: `net/ipv4/ip_forward=1`; `net/ipv6/conf/all/forwarding=1` only when an IPv6
//!   pool exists (it turns off router-advertisement acceptance host-wide);
//! * per IPv4 workload interface: `conf/<if>/rp_filter=1` (strict: a pod cannot spoof its
//!   source; the kernel uses max(all, if), so a host-wide loose 2 still wins, as in Calico),
//!   `conf/<if>/proxy_arp=1` and `neigh/<if>/proxy_delay=0` (the host answers the pod's ARP
//!   for its `169.254.1.1` gateway at once), `conf/<if>/forwarding=1`;
//! * per IPv6 workload interface: `conf/<if>/proxy_ndp=1`, `conf/<if>/forwarding=1`.
//!
//! Calico also sets `route_localnet=1` for NAT to localhost; Manx has no such NAT and leaves
//! it off.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;

/// Reads and writes sysctls by `/proc/sys`-relative path (`net/ipv4/ip_forward`).
pub trait Sysctls: Send + Sync {
    /// Current value, trimmed.
    fn read(&self, path: &str) -> io::Result<String>;
    /// Write a value.
    fn write(&self, path: &str, value: &str) -> io::Result<()>;
}

impl<T: Sysctls + ?Sized> Sysctls for std::sync::Arc<T> {
    fn read(&self, path: &str) -> io::Result<String> {
        (**self).read(path)
    }
    fn write(&self, path: &str, value: &str) -> io::Result<()> {
        (**self).write(path, value)
    }
}

/// The real `/proc/sys` (or another root, for tests).
#[derive(Debug, Clone)]
pub struct ProcSysctl {
    root: PathBuf,
}

impl Default for ProcSysctl {
    fn default() -> Self {
        ProcSysctl {
            root: PathBuf::from("/proc/sys"),
        }
    }
}

impl ProcSysctl {
    /// Sysctls under another directory.
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        ProcSysctl { root: root.into() }
    }
}

impl Sysctls for ProcSysctl {
    fn read(&self, path: &str) -> io::Result<String> {
        Ok(std::fs::read_to_string(self.root.join(path))?
            .trim()
            .to_string())
    }
    fn write(&self, path: &str, value: &str) -> io::Result<()> {
        std::fs::write(self.root.join(path), value)
    }
}

/// In-memory sysctls that count writes. Paths not set read as `0`.
#[derive(Debug, Default)]
pub struct MemSysctl {
    values: Mutex<(BTreeMap<String, String>, usize)>,
}

impl MemSysctl {
    /// The value of a path, if written.
    pub fn get(&self, path: &str) -> Option<String> {
        self.values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .get(path)
            .cloned()
    }
    /// Number of writes.
    pub fn writes(&self) -> usize {
        self.values.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

impl Sysctls for MemSysctl {
    fn read(&self, path: &str) -> io::Result<String> {
        Ok(self.get(path).unwrap_or_else(|| "0".into()))
    }
    fn write(&self, path: &str, value: &str) -> io::Result<()> {
        let mut v = self.values.lock().unwrap_or_else(|e| e.into_inner());
        v.0.insert(path.to_string(), value.to_string());
        v.1 += 1;
        Ok(())
    }
}

/// Write `value` only if it differs. Returns whether it wrote.
pub fn ensure(s: &dyn Sysctls, path: &str, value: &str) -> io::Result<bool> {
    if s.read(path)? == value {
        return Ok(false);
    }
    s.write(path, value)?;
    Ok(true)
}

/// Global sysctls.
pub fn global_settings(ipv6: bool) -> Vec<(String, &'static str)> {
    let mut v = vec![("net/ipv4/ip_forward".to_string(), "1")];
    if ipv6 {
        v.push(("net/ipv6/conf/all/forwarding".to_string(), "1"));
    }
    v
}

/// Per-workload-interface sysctls.
pub fn workload_settings(
    iface: &str,
    v4: bool,
    v6: bool,
    rp_filter: &'static str,
) -> Vec<(String, &'static str)> {
    let mut v = Vec::new();
    if v4 {
        v.push((format!("net/ipv4/conf/{iface}/rp_filter"), rp_filter));
        v.push((format!("net/ipv4/conf/{iface}/proxy_arp"), "1"));
        v.push((format!("net/ipv4/neigh/{iface}/proxy_delay"), "0"));
        v.push((format!("net/ipv4/conf/{iface}/forwarding"), "1"));
    }
    if v6 {
        v.push((format!("net/ipv6/conf/{iface}/proxy_ndp"), "1"));
        v.push((format!("net/ipv6/conf/{iface}/forwarding"), "1"));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_writes_only_on_difference() {
        let s = MemSysctl::default();
        assert!(ensure(&s, "net/ipv4/ip_forward", "1").unwrap());
        assert!(!ensure(&s, "net/ipv4/ip_forward", "1").unwrap());
        assert_eq!(s.writes(), 1);
    }

    #[test]
    fn proc_sysctl_reads_and_writes_under_its_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("net/ipv4")).unwrap();
        std::fs::write(dir.path().join("net/ipv4/ip_forward"), "0\n").unwrap();
        let s = ProcSysctl::with_root(dir.path());
        assert!(ensure(&s, "net/ipv4/ip_forward", "1").unwrap());
        assert_eq!(s.read("net/ipv4/ip_forward").unwrap(), "1");
    }

    #[test]
    fn workload_settings_follow_calico() {
        let v = workload_settings("cali1", true, false, "1");
        assert!(v.contains(&("net/ipv4/conf/cali1/rp_filter".into(), "1")));
        assert!(v.contains(&("net/ipv4/conf/cali1/proxy_arp".into(), "1")));
        assert!(v.contains(&("net/ipv4/neigh/cali1/proxy_delay".into(), "0")));
        assert!(!v.iter().any(|(p, _)| p.contains("ipv6")));
    }
}

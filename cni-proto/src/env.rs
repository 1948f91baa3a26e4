//! The `CNI_*` environment variables (CNI spec 1.1, "Parameters"), validated
//! before anything is touched. Every failure is code 4 and names the
//! variable, the value and the rule.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::error::CniError;

/// The CNI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    /// Parses `CNI_COMMAND`.
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }

    /// The `CNI_COMMAND` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

/// Kubernetes identity from `CNI_ARGS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct K8sArgs {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub infra_container_id: Option<String>,
    pub pod_uid: Option<String>,
}

/// The validated environment.
#[derive(Debug, Clone)]
pub struct CniEnv {
    pub command: Command,
    /// `CNI_CONTAINERID` (empty for VERSION/STATUS/GC).
    pub container_id: String,
    /// `CNI_NETNS`; `None` when unset (allowed for DEL).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` (empty for VERSION/STATUS/GC).
    pub ifname: String,
    /// Parsed `CNI_ARGS`.
    pub k8s: K8sArgs,
    /// `CNI_PATH`, split on ':'.
    pub path: Vec<PathBuf>,
    /// `CNI_ARGS` as given (passed on to the IPAM plugin).
    pub raw_args: String,
    /// `CNI_PATH` as given (passed on to the IPAM plugin).
    pub raw_path: String,
}

/// Keys of `CNI_ARGS` this plugin knows.
const KNOWN_ARGS: [&str; 5] = [
    "IgnoreUnknown",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];

impl CniEnv {
    /// Validates the environment given as a lookup function (so tests need
    /// not touch the process environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<CniEnv, CniError> {
        let raw_command = get("CNI_COMMAND")
            .ok_or_else(|| CniError::env("CNI_COMMAND is not set: this binary is a CNI plugin, run by a container runtime with CNI_COMMAND=ADD|DEL|CHECK|VERSION|STATUS|GC"))?;
        let command = Command::parse(&raw_command).ok_or_else(|| {
            CniError::env(format!(
                "CNI_COMMAND {raw_command:?} is not a CNI command: use ADD, DEL, CHECK, VERSION, STATUS or GC"
            ))
        })?;
        // VERSION needs nothing but stdin: libcni's ValidateNetworkList (podman,
        // CRI-O's ocicni) runs it with CNI_NETNS=dummy CNI_IFNAME=dummy
        // CNI_PATH=dummy, and a refusal makes the runtime drop the network.
        if command == Command::Version {
            return Ok(CniEnv {
                command,
                container_id: String::new(),
                netns: None,
                ifname: String::new(),
                k8s: K8sArgs::default(),
                path: Vec::new(),
                raw_args: String::new(),
                raw_path: String::new(),
            });
        }
        let per_container = matches!(command, Command::Add | Command::Del | Command::Check);

        let container_id = get("CNI_CONTAINERID").unwrap_or_default();
        if per_container {
            validate_container_id(&container_id)?;
        }

        // STATUS and GC are not about one container: what a runtime puts in
        // the per-container variables is not looked at.
        let netns = match get("CNI_NETNS").filter(|s| !s.is_empty() && per_container) {
            None if matches!(command, Command::Add | Command::Check) => {
                return Err(CniError::env(format!(
                    "CNI_NETNS is not set: {} needs the path of the pod's network namespace",
                    command.as_str()
                )));
            }
            None => None,
            Some(p) => Some(validate_netns(&p, command != Command::Del)?),
        };

        let ifname = get("CNI_IFNAME").unwrap_or_default();
        if per_container {
            validate_ifname(&ifname)?;
        }

        let raw_args = get("CNI_ARGS").unwrap_or_default();
        let k8s = parse_args(&raw_args)?;

        let raw_path = get("CNI_PATH").unwrap_or_default();
        let path: Vec<PathBuf> = raw_path
            .split(':')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        if path.is_empty() && command != Command::Version {
            return Err(CniError::env(format!(
                "CNI_PATH is not set: {} needs the directories holding the CNI plugins (e.g. /opt/cni/bin)",
                command.as_str()
            )));
        }
        Ok(CniEnv {
            command,
            container_id,
            netns,
            ifname,
            k8s,
            path,
            raw_args,
            raw_path,
        })
    }

    /// Validates the process environment.
    pub fn from_process() -> Result<CniEnv, CniError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// The workload id the veth name hashes: `<namespace>.<pod>` for a
    /// Kubernetes pod (as Calico), else the container id.
    pub fn workload_id(&self) -> String {
        match (&self.k8s.namespace, &self.k8s.pod) {
            (Some(ns), Some(pod)) => format!("{ns}.{pod}"),
            _ => self.container_id.clone(),
        }
    }
}

/// Calico/CNI rule: alphanumeric plus `_.-`, starting alphanumeric.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    if id.is_empty() {
        return Err(CniError::env(
            "CNI_CONTAINERID is not set: ADD, DEL and CHECK need the container id",
        ));
    }
    let first_ok = id.as_bytes()[0].is_ascii_alphanumeric();
    let rest_ok = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !first_ok || !rest_ok {
        return Err(CniError::env(format!(
            "CNI_CONTAINERID {id:?} is not valid: use letters, digits, '_', '.' and '-', starting with a letter or digit"
        )));
    }
    Ok(())
}

/// Linux rules for interface names (`dev_valid_name`): 1–15 bytes, not
/// `.`/`..`, no `/`, `:` or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    const RULE: &str = "at most 15 characters, no '/', ':' or spaces, not '.' or '..'";
    if name.is_empty() {
        return Err(CniError::env(
            "CNI_IFNAME is not set: ADD, DEL and CHECK need the pod interface name (e.g. eth0)",
        ));
    }
    let bad = name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if bad {
        return Err(CniError::env(format!(
            "CNI_IFNAME {name:?} is not a valid interface name: {RULE}"
        )));
    }
    Ok(())
}

/// `CNI_NETNS` must be an absolute path with no `.`/`..` components (so it
/// cannot be steered elsewhere) and, unless for DEL, must exist.
pub fn validate_netns(path: &str, must_exist: bool) -> Result<PathBuf, CniError> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(CniError::env(format!(
            "CNI_NETNS {path:?} is not valid: it must be an absolute path such as /var/run/netns/<name>"
        )));
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        || path.contains("/./")
        || path.ends_with("/.")
    {
        return Err(CniError::env(format!(
            "CNI_NETNS {path:?} is not valid: '.' and '..' components are not allowed"
        )));
    }
    if must_exist && !p.exists() {
        return Err(CniError::env(format!(
            "CNI_NETNS {path:?} does not exist: the runtime must create the pod's network namespace first"
        )));
    }
    Ok(p.to_path_buf())
}

/// Kubernetes DNS-1123 label (namespace names): 1–63 characters of
/// lowercase letters, digits and '-', starting and ending with a letter or
/// digit. `None` when valid, else why not.
pub fn dns1123_label_error(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return Some("it is empty");
    }
    if s.len() > 63 {
        return Some("it is longer than 63 characters");
    }
    label_chars_error(s)
}

/// The DNS-1123 label characters, without the length limit (Kubernetes'
/// subdomain parts have none of their own).
fn label_chars_error(s: &str) -> Option<&'static str> {
    let b = s.as_bytes();
    if !b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    {
        return Some("only lowercase letters, digits and '-' are allowed");
    }
    if !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return Some("it must start and end with a lowercase letter or digit");
    }
    None
}

/// Kubernetes DNS-1123 subdomain (pod names): at most 253 characters,
/// '.'-separated DNS-1123 labels. `None` when valid, else why not.
pub fn dns1123_subdomain_error(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return Some("it is empty");
    }
    if s.len() > 253 {
        return Some("it is longer than 253 characters");
    }
    for label in s.split('.') {
        if label.is_empty() {
            return Some("it has an empty '.'-separated part ('..', or '.' at an end)");
        }
        if let Some(e) = label_chars_error(label) {
            return Some(e);
        }
    }
    None
}

/// Parses `K=V;K=V`. Unknown keys are an error unless `IgnoreUnknown=1`
/// (or `true`) is present, as in libcni's `LoadArgs`.
pub fn parse_args(args: &str) -> Result<K8sArgs, CniError> {
    let mut pairs = BTreeMap::new();
    for part in args.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            CniError::env(format!(
                "CNI_ARGS {args:?} is not valid: {part:?} is not KEY=VALUE (pairs are separated by ';')"
            ))
        })?;
        pairs.insert(k.to_string(), v.to_string());
    }
    let ignore_unknown = pairs
        .get("IgnoreUnknown")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true"))
        .unwrap_or(false);
    if !ignore_unknown && let Some(k) = pairs.keys().find(|k| !KNOWN_ARGS.contains(&k.as_str())) {
        {
            return Err(CniError::env(format!(
                "CNI_ARGS has unknown key {k:?}: add IgnoreUnknown=1 or remove it (known: {})",
                KNOWN_ARGS.join(", ")
            )));
        }
    }
    let get = |k: &str| pairs.get(k).filter(|v| !v.is_empty()).cloned();
    let k8s = K8sArgs {
        namespace: get("K8S_POD_NAMESPACE"),
        pod: get("K8S_POD_NAME"),
        infra_container_id: get("K8S_POD_INFRA_CONTAINER_ID"),
        pod_uid: get("K8S_POD_UID"),
    };
    // A pod name without a namespace (podman sends `K8S_POD_NAME=<name>`
    // alone) or the other way round is not a Kubernetes pod: as Calico's
    // plugin does for other orchestrators, the workload is then keyed by
    // its container id.
    if k8s.namespace.is_none() || k8s.pod.is_none() {
        return Ok(K8sArgs {
            namespace: None,
            pod: None,
            ..k8s
        });
    }
    // A Kubernetes pod: the names follow Kubernetes' rules (they key the
    // workload in the datastore and name the host veth).
    if let Some(ns) = &k8s.namespace
        && let Some(why) = dns1123_label_error(ns)
    {
        return Err(CniError::env(format!(
            "CNI_ARGS K8S_POD_NAMESPACE {ns:?} is not a Kubernetes namespace name: {why} \
             (a DNS-1123 label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit)"
        )));
    }
    if let Some(pod) = &k8s.pod
        && let Some(why) = dns1123_subdomain_error(pod)
    {
        return Err(CniError::env(format!(
            "CNI_ARGS K8S_POD_NAME {pod:?} is not a Kubernetes pod name: {why} \
             (a DNS-1123 subdomain: at most 253 characters, '.'-separated lowercase letters, digits or '-')"
        )));
    }
    Ok(k8s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<CniEnv, CniError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CniEnv::from_lookup(|k| map.get(k).cloned())
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/proc/self/ns/net"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"),
            ("CNI_PATH", "/usr/lib/cni:/opt/cni/bin"),
        ]
    }

    fn with(key: &'static str, value: &'static str) -> Vec<(&'static str, &'static str)> {
        let mut b: Vec<_> = base().into_iter().filter(|(k, _)| *k != key).collect();
        b.push((key, value));
        b
    }

    fn without(key: &str) -> Vec<(&'static str, &'static str)> {
        base().into_iter().filter(|(k, _)| *k != key).collect()
    }

    #[test]
    fn good_env() {
        let e = env(&base()).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.workload_id(), "default.web-0");
        assert_eq!(e.path.len(), 2);
    }

    /// CNI spec "Parameters": each bad variable is code 4 with a message
    /// naming the variable.
    #[test]
    fn bad_values_are_code_4() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (without("CNI_COMMAND"), "CNI_COMMAND is not set"),
            (with("CNI_COMMAND", "PUT"), "CNI_COMMAND \"PUT\""),
            (without("CNI_CONTAINERID"), "CNI_CONTAINERID is not set"),
            (with("CNI_CONTAINERID", "-abc"), "CNI_CONTAINERID \"-abc\""),
            (with("CNI_CONTAINERID", "a/b"), "not valid"),
            (with("CNI_CONTAINERID", "a b"), "not valid"),
            (without("CNI_NETNS"), "CNI_NETNS is not set"),
            (with("CNI_NETNS", "relative/ns"), "absolute path"),
            (with("CNI_NETNS", "/proc/self/../self/ns/net"), "'..'"),
            (with("CNI_NETNS", "/nonexistent/mxcn"), "does not exist"),
            (without("CNI_IFNAME"), "CNI_IFNAME is not set"),
            (
                with("CNI_IFNAME", "eth0/x"),
                "CNI_IFNAME \"eth0/x\" is not a valid interface name",
            ),
            (with("CNI_IFNAME", "eth0:1"), "no '/', ':' or spaces"),
            (with("CNI_IFNAME", "eth 0"), "not a valid interface name"),
            (with("CNI_IFNAME", "0123456789abcdef"), "at most 15"),
            (with("CNI_IFNAME", ".."), "not a valid"),
            (with("CNI_ARGS", "FOO=bar"), "unknown key \"FOO\""),
            (with("CNI_ARGS", "K8S_POD_NAME"), "not KEY=VALUE"),
            (
                with("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=../../x"),
                "K8S_POD_NAME \"../../x\" is not a Kubernetes pod name",
            ),
            (
                with("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=Web"),
                "lowercase",
            ),
            (
                with("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=a\nb"),
                "K8S_POD_NAME \"a\\nb\"",
            ),
            (
                with("CNI_ARGS", "K8S_POD_NAMESPACE=a.b;K8S_POD_NAME=web"),
                "K8S_POD_NAMESPACE \"a.b\" is not a Kubernetes namespace name",
            ),
            (
                with("CNI_ARGS", "K8S_POD_NAMESPACE=-a;K8S_POD_NAME=web"),
                "start and end",
            ),
            (without("CNI_PATH"), "CNI_PATH is not set"),
        ];
        for (vars, needle) in cases {
            let e = env(&vars).unwrap_err();
            assert_eq!(e.code, 4, "{vars:?}");
            assert!(e.msg.contains(needle), "{needle:?} not in {:?}", e.msg);
        }
    }

    #[test]
    fn ignore_unknown_and_del_rules() {
        let e = env(&with(
            "CNI_ARGS",
            "IgnoreUnknown=1;FOO=bar;K8S_POD_NAMESPACE=a;K8S_POD_NAME=b",
        ))
        .unwrap();
        assert_eq!(e.k8s.pod.as_deref(), Some("b"));
        // DEL: the namespace may be gone already.
        let mut v = with("CNI_COMMAND", "DEL");
        v.retain(|(k, _)| *k != "CNI_NETNS");
        assert!(env(&v).unwrap().netns.is_none());
        let mut v = with("CNI_COMMAND", "DEL");
        v.retain(|(k, _)| *k != "CNI_NETNS");
        v.push(("CNI_NETNS", "/nonexistent/mxcn"));
        assert!(env(&v).is_ok());
        // VERSION needs nothing else.
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
        // GC and STATUS need only CNI_PATH.
        assert!(env(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")]).is_ok());
        assert_eq!(env(&[("CNI_COMMAND", "STATUS")]).unwrap_err().code, 4);
    }

    /// libcni's ValidateNetworkList, as podman and CRI-O run it.
    #[test]
    fn version_needs_nothing_but_stdin() {
        let e = env(&[
            ("CNI_COMMAND", "VERSION"),
            ("CNI_NETNS", "dummy"),
            ("CNI_IFNAME", "dummy"),
            ("CNI_PATH", "dummy"),
            ("CNI_CONTAINERID", "not a valid id"),
            ("CNI_ARGS", "garbage"),
        ])
        .unwrap();
        assert_eq!(e.command, Command::Version);
        // STATUS and GC do not look at the per-container variables either.
        assert!(
            env(&[
                ("CNI_COMMAND", "STATUS"),
                ("CNI_NETNS", "dummy"),
                ("CNI_IFNAME", "dummy"),
                ("CNI_PATH", "/opt/cni/bin"),
            ])
            .is_ok()
        );
    }

    /// podman: `IgnoreUnknown=1;K8S_POD_NAME=<name>` and no namespace.
    #[test]
    fn a_pod_name_without_namespace_is_keyed_by_container_id() {
        for args in [
            "IgnoreUnknown=1;K8S_POD_NAME=web",
            "K8S_POD_NAME=web",
            "K8S_POD_NAMESPACE=prod",
        ] {
            let e = env(&with("CNI_ARGS", args)).unwrap();
            assert_eq!(e.k8s.namespace, None, "{args}");
            assert_eq!(e.k8s.pod, None, "{args}");
            assert_eq!(e.workload_id(), "abc123", "{args}");
        }
    }

    #[test]
    fn no_k8s_args_uses_container_id() {
        let e = env(&with("CNI_ARGS", "")).unwrap();
        assert_eq!(e.workload_id(), "abc123");
    }

    #[test]
    fn kubernetes_name_rules() {
        assert_eq!(dns1123_subdomain_error("web-0.a1"), None);
        assert_eq!(dns1123_subdomain_error(&"a".repeat(253)), None);
        assert!(dns1123_subdomain_error(&"a".repeat(254)).is_some());
        assert!(dns1123_subdomain_error("a..b").is_some());
        assert!(dns1123_subdomain_error("a.").is_some());
        assert!(dns1123_subdomain_error("a_b").is_some());
        assert_eq!(dns1123_label_error(&"a".repeat(63)), None);
        assert!(dns1123_label_error(&"a".repeat(64)).is_some());
        assert!(dns1123_label_error("a-").is_some());
        assert!(dns1123_label_error("").is_some());
        // Valid names pass through unchanged.
        let e = env(&with(
            "CNI_ARGS",
            "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-5d78c9869d-abcde",
        ))
        .unwrap();
        assert_eq!(e.workload_id(), "kube-system.coredns-5d78c9869d-abcde");
    }
}

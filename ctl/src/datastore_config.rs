//! Datastore selection: the environment (as calicoctl), or a config file.
//!
//! The file may be `KEY=VALUE` lines with the environment's names, or
//! calicoctl's `calicoctl.cfg` shape:
//!
//! ```yaml
//! apiVersion: projectcalico.org/v3
//! kind: CalicoAPIConfig
//! spec:
//!   datastoreType: etcdv3
//!   etcdEndpoints: https://etcd1:2379
//!   etcdCACertFile: /etc/manx/ca.pem
//! ```

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use datastore::config::DatastoreConfig;

fn calicoctl_key(k: &str) -> Option<&'static str> {
    Some(match k {
        "datastoreType" => "DATASTORE_TYPE",
        "etcdEndpoints" => "ETCD_ENDPOINTS",
        "etcdCACertFile" => "ETCD_CA_CERT_FILE",
        "etcdCertFile" => "ETCD_CERT_FILE",
        "etcdKeyFile" => "ETCD_KEY_FILE",
        "etcdUsername" => "ETCD_USERNAME",
        "etcdPassword" => "ETCD_PASSWORD",
        "manxDB" | "manxDb" => "MANX_DB",
        _ => return None,
    })
}

/// Parse a config file into environment-style pairs.
pub fn parse_config_file(text: &str, source: &str) -> Result<Vec<(String, String)>> {
    let mut vars = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line == "---" {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            vars.push((k.trim().to_string(), v.trim().trim_matches('"').to_string()));
        } else if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim(), v.trim().trim_matches('"').trim_matches('\''));
            match calicoctl_key(k) {
                Some(env) => vars.push((env.to_string(), v.to_string())),
                None if ["apiVersion", "kind", "spec", "metadata"].contains(&k) => {}
                None => {
                    return Err(anyhow!(
                        "{source}:{}: unknown setting {k:?}: use datastoreType, etcdEndpoints, \
                         etcdCACertFile, etcdCertFile, etcdKeyFile, etcdUsername, etcdPassword or manxDB",
                        i + 1
                    ));
                }
            }
        } else {
            return Err(anyhow!(
                "{source}:{}: expected KEY=VALUE or key: value",
                i + 1
            ));
        }
    }
    Ok(vars)
}

/// The datastore to use: the config file if given, else the environment.
pub fn datastore_config(file: Option<&Path>) -> Result<DatastoreConfig> {
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let vars = parse_config_file(&text, &path.display().to_string())?;
            DatastoreConfig::from_vars(vars).map_err(|e| anyhow!("{}: {e}", path.display()))
        }
        None => DatastoreConfig::from_env().map_err(|e| anyhow!("{e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_calicoctl_cfg_and_env_style_files() {
        let v = parse_config_file(
            "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata:\nspec:\n  datastoreType: \"etcdv3\"\n  etcdEndpoints: http://127.0.0.1:2379\n",
            "c.cfg",
        )
        .unwrap();
        assert_eq!(
            v,
            [
                ("DATASTORE_TYPE".to_string(), "etcdv3".to_string()),
                (
                    "ETCD_ENDPOINTS".to_string(),
                    "http://127.0.0.1:2379".to_string()
                )
            ]
        );
        let v = parse_config_file("DATASTORE_TYPE=embedded\nMANX_DB=/tmp/x.db\n", "e").unwrap();
        assert_eq!(v[1], ("MANX_DB".to_string(), "/tmp/x.db".to_string()));
        let e = parse_config_file("spec:\n  etcdEndpoint: x\n", "c.cfg").unwrap_err();
        assert!(
            e.to_string()
                .contains("c.cfg:2: unknown setting \"etcdEndpoint\""),
            "{e}"
        );
    }
}

//! Picking a backend, calicoctl-style.
//!
//! From the environment ([`DatastoreConfig::from_env`]):
//!
//! | variable | meaning |
//! | --- | --- |
//! | `DATASTORE_TYPE` | `etcdv3` or `embedded`; default `etcdv3` when `ETCD_ENDPOINTS` is set, else `embedded` |
//! | `ETCD_ENDPOINTS` | comma-separated URLs, `https://host:2379,...` |
//! | `ETCD_CA_CERT_FILE`, `ETCD_CERT_FILE`, `ETCD_KEY_FILE` | PEM files for TLS / mutual TLS |
//! | `ETCD_USERNAME`, `ETCD_PASSWORD` | etcd user authentication |
//! | `MANX_DB` | the embedded store's file (default `/var/lib/manx/manx.db`) |
//!
//! The same struct can be filled from flags or a config file, then
//! [`DatastoreConfig::connect`] opens the store.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::embedded::{DEFAULT_DB_PATH, EmbeddedStore};
use crate::etcd::{EtcdConfig, EtcdStore};
use crate::store::{Datastore, StoreError};

/// Which backend, and how to reach it. `Debug` redacts the etcd password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatastoreConfig {
    /// etcd v3 (`DATASTORE_TYPE=etcdv3`).
    Etcd(EtcdConfig),
    /// The embedded SQLite file (`DATASTORE_TYPE=embedded`).
    Embedded { path: PathBuf },
}

impl Default for DatastoreConfig {
    fn default() -> Self {
        DatastoreConfig::Embedded {
            path: PathBuf::from(DEFAULT_DB_PATH),
        }
    }
}

impl DatastoreConfig {
    /// Read the process environment (see the module docs).
    pub fn from_env() -> Result<Self, StoreError> {
        Self::from_vars(std::env::vars())
    }

    /// Same as [`Self::from_env`], from any set of variables (for tests and
    /// config files that use the same names). Empty values count as unset.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, StoreError> {
        let vars: HashMap<String, String> = vars
            .into_iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .collect();
        let get = |name: &str| vars.get(name).map(|v| v.trim().to_string());
        let endpoints: Vec<String> = get("ETCD_ENDPOINTS")
            .map(|e| {
                e.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let kind = get("DATASTORE_TYPE").unwrap_or_else(|| {
            if endpoints.is_empty() {
                "embedded".into()
            } else {
                "etcdv3".into()
            }
        });
        match kind.as_str() {
            "etcdv3" | "etcd" => {
                if endpoints.is_empty() {
                    return Err(StoreError::Config(
                        "DATASTORE_TYPE=etcdv3 but ETCD_ENDPOINTS is empty: set \
                         ETCD_ENDPOINTS=https://host:2379"
                            .into(),
                    ));
                }
                let password = get("ETCD_PASSWORD");
                let username = get("ETCD_USERNAME");
                if password.is_some() && username.is_none() {
                    return Err(StoreError::Config(
                        "ETCD_PASSWORD is set but ETCD_USERNAME is empty: set both or neither"
                            .into(),
                    ));
                }
                Ok(DatastoreConfig::Etcd(EtcdConfig {
                    endpoints,
                    ca_cert: get("ETCD_CA_CERT_FILE").map(PathBuf::from),
                    cert: get("ETCD_CERT_FILE").map(PathBuf::from),
                    key: get("ETCD_KEY_FILE").map(PathBuf::from),
                    username,
                    password,
                    ..EtcdConfig::default()
                }))
            }
            "embedded" | "sqlite" => Ok(DatastoreConfig::Embedded {
                path: get("MANX_DB")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_DB_PATH)),
            }),
            "kubernetes" => Err(StoreError::Config(
                "DATASTORE_TYPE=kubernetes is not supported by Manx: use etcdv3 or embedded".into(),
            )),
            other => Err(StoreError::Config(format!(
                "DATASTORE_TYPE={other} is unknown: use etcdv3 or embedded"
            ))),
        }
    }

    /// Open the configured store.
    pub async fn connect(&self) -> Result<Arc<dyn Datastore>, StoreError> {
        Ok(match self {
            DatastoreConfig::Etcd(cfg) => Arc::new(EtcdStore::connect(cfg.clone()).await?),
            DatastoreConfig::Embedded { path } => Arc::new(EmbeddedStore::open(path).await?),
        })
    }

    /// One line for logs: which backend and where (no secrets).
    pub fn describe(&self) -> String {
        match self {
            DatastoreConfig::Etcd(cfg) => format!("etcdv3 {}", cfg.endpoints.join(",")),
            DatastoreConfig::Embedded { path } => format!("embedded {}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn default_is_embedded_at_default_path() {
        assert_eq!(
            DatastoreConfig::from_vars(vars(&[])).unwrap(),
            DatastoreConfig::Embedded {
                path: DEFAULT_DB_PATH.into()
            }
        );
        assert_eq!(
            DatastoreConfig::from_vars(vars(&[("MANX_DB", "/tmp/x.db")])).unwrap(),
            DatastoreConfig::Embedded {
                path: "/tmp/x.db".into()
            }
        );
    }

    #[test]
    fn endpoints_alone_select_etcd() {
        let cfg = DatastoreConfig::from_vars(vars(&[
            ("ETCD_ENDPOINTS", "https://a:2379, https://b:2379,"),
            ("ETCD_CA_CERT_FILE", "/ca.pem"),
            ("ETCD_CERT_FILE", "/c.pem"),
            ("ETCD_KEY_FILE", "/k.pem"),
            ("ETCD_USERNAME", "manx"),
            ("ETCD_PASSWORD", "s3cret"),
        ]))
        .unwrap();
        let DatastoreConfig::Etcd(etcd) = &cfg else {
            panic!("expected etcd, got {cfg:?}");
        };
        assert_eq!(etcd.endpoints, ["https://a:2379", "https://b:2379"]);
        assert_eq!(etcd.ca_cert.as_deref(), Some("/ca.pem".as_ref()));
        assert_eq!(etcd.key.as_deref(), Some("/k.pem".as_ref()));
        assert_eq!(etcd.username.as_deref(), Some("manx"));
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("s3cret"), "password leaked: {shown}");
        assert!(!cfg.describe().contains("s3cret"));
    }

    #[test]
    fn etcd_without_endpoints_says_what_to_set() {
        let err = DatastoreConfig::from_vars(vars(&[("DATASTORE_TYPE", "etcdv3")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ETCD_ENDPOINTS is empty")
                && err.contains("ETCD_ENDPOINTS=https://host:2379"),
            "{err}"
        );
    }

    #[test]
    fn explicit_embedded_wins_over_endpoints() {
        let cfg = DatastoreConfig::from_vars(vars(&[
            ("DATASTORE_TYPE", "embedded"),
            ("ETCD_ENDPOINTS", "http://a:2379"),
        ]))
        .unwrap();
        assert!(matches!(cfg, DatastoreConfig::Embedded { .. }));
    }

    #[test]
    fn unknown_type_is_refused() {
        let err = DatastoreConfig::from_vars(vars(&[("DATASTORE_TYPE", "consul")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("consul") && err.contains("etcdv3 or embedded"),
            "{err}"
        );
        let err = DatastoreConfig::from_vars(vars(&[
            ("ETCD_ENDPOINTS", "http://a"),
            ("ETCD_PASSWORD", "p"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("ETCD_USERNAME"), "{err}");
    }

    #[tokio::test]
    async fn connect_opens_embedded_store() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DatastoreConfig::Embedded {
            path: dir.path().join("sub/manx.db"),
        };
        let store = cfg.connect().await.unwrap();
        store.create("/k", b"v".to_vec()).await.unwrap();
        assert_eq!(store.get("/k").await.unwrap().unwrap().value, b"v");
    }

    #[tokio::test]
    async fn connect_to_dead_etcd_is_unavailable() {
        // A port nothing listens on: bind, read, release.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = DatastoreConfig::Etcd(EtcdConfig {
            endpoints: vec![format!("http://127.0.0.1:{port}")],
            dial_timeout: std::time::Duration::from_millis(300),
            request_timeout: std::time::Duration::from_millis(500),
            ..EtcdConfig::default()
        });
        let err = cfg.connect().await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(
            err.to_string().contains("ETCD_ENDPOINTS") || matches!(err, StoreError::Timeout(_)),
            "{err}"
        );
    }
}

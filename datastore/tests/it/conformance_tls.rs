//! etcd over TLS with client certificates and user/password auth: the
//! configuration a production cluster uses. Certificates come from a
//! throwaway CA made with the openssl CLI.

use std::time::Duration;

use datastore::config::DatastoreConfig;
use datastore::etcd::{EtcdConfig, EtcdStore};
use datastore::testing::{EtcdServer, TEST_ROOT_PASSWORD, require_etcd_and_openssl};
use datastore::{Datastore, StoreError, WatchEvent};
use futures::StreamExt;

fn quick(cfg: EtcdConfig) -> EtcdConfig {
    EtcdConfig {
        dial_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        ..cfg
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_tls_with_client_cert_and_password() {
    if !require_etcd_and_openssl() {
        return;
    }
    let server = EtcdServer::start_secure().await.unwrap();
    let cfg = server.config();
    assert!(server.endpoint().starts_with("https://"));

    // Through the environment, as manxctl and manx-node read it.
    let pki = server.pki().unwrap();
    let vars = [
        ("ETCD_ENDPOINTS", server.endpoint()),
        ("ETCD_CA_CERT_FILE", pki.ca.display().to_string()),
        ("ETCD_CERT_FILE", pki.client_cert.display().to_string()),
        ("ETCD_KEY_FILE", pki.client_key.display().to_string()),
        ("ETCD_USERNAME", "root".to_string()),
        ("ETCD_PASSWORD", TEST_ROOT_PASSWORD.to_string()),
    ];
    let from_env =
        DatastoreConfig::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.clone()))).unwrap();
    assert!(!format!("{from_env:?}").contains(TEST_ROOT_PASSWORD));
    let store = from_env.connect().await.unwrap();
    let rev = store.create("/tls/a", b"1".to_vec()).await.unwrap();
    let mut w = store.watch("/tls/", rev).await.unwrap();
    let rev2 = store.update("/tls/a", b"2".to_vec(), rev).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Ok(WatchEvent::Put(kv)))) => assert_eq!(kv.mod_revision, rev2),
        other => panic!("expected the update over the TLS watch, got {other:?}"),
    }

    // Wrong password: refused as Denied.
    let bad = EtcdConfig {
        password: Some("wrong".into()),
        ..quick(cfg.clone())
    };
    match EtcdStore::connect(bad).await {
        Err(StoreError::Denied(msg)) => assert!(!msg.contains("wrong"), "{msg}"),
        other => panic!("wrong password: expected Denied, got {other:?}"),
    }

    // No credentials at all (the client cert's CN would be used, but a
    // token-less request to an auth-enabled etcd must not read as another
    // user's data silently): either Denied, or it authenticates as the
    // cert's CN=root — both are etcd's documented behaviours; it must not
    // be a transport error.
    let no_user = EtcdConfig {
        username: None,
        password: None,
        ..quick(cfg.clone())
    };
    let r = EtcdStore::connect(no_user).await;
    eprintln!("without user: {r:?}");
    if let Err(e) = r {
        assert!(matches!(e, StoreError::Denied(_)), "{e}");
    }

    // Without the CA the server's certificate is not trusted.
    let no_ca = EtcdConfig {
        ca_cert: None,
        ..quick(cfg.clone())
    };
    let err = EtcdStore::connect(no_ca).await.unwrap_err();
    eprintln!("without CA: {err}");
    assert!(err.to_string().contains("ETCD_CA_CERT_FILE"), "{err}");
    assert!(!matches!(err, StoreError::Denied(_)), "{err}");

    // Without a client certificate the TLS handshake fails.
    let no_cert = EtcdConfig {
        cert: None,
        key: None,
        ..quick(cfg)
    };
    let err = EtcdStore::connect(no_cert).await.unwrap_err();
    eprintln!("without client cert: {err}");
}

/// A user whose role covers `/allowed/` only: writes and watches elsewhere
/// come back as `Denied`, with a message that says what to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_role_limits_map_to_denied() {
    if !require_etcd_and_openssl() {
        return;
    }
    let server = EtcdServer::start_secure().await.unwrap();
    let root = server.config();
    let pki = server.pki().unwrap();
    let opts = etcd_client::ConnectOptions::new()
        .with_tls(pki.client_tls().unwrap())
        .with_user("root", TEST_ROOT_PASSWORD);
    let mut admin = etcd_client::Client::connect(&root.endpoints, Some(opts))
        .await
        .unwrap();
    admin.role_add("allowed-rw").await.unwrap();
    admin
        .role_grant_permission(
            "allowed-rw",
            etcd_client::Permission::read_write("/allowed/").with_range_end("/allowed0"),
        )
        .await
        .unwrap();
    admin.user_add("limited", "limited-pw", None).await.unwrap();
    admin
        .user_grant_role("limited", "allowed-rw")
        .await
        .unwrap();

    let store = EtcdStore::connect(EtcdConfig {
        username: Some("limited".into()),
        password: Some("limited-pw".into()),
        ..quick(root)
    })
    .await
    .unwrap();
    store.create("/allowed/a", b"1".to_vec()).await.unwrap();
    match store.create("/secret/a", b"1".to_vec()).await {
        Err(StoreError::Denied(msg)) => assert!(msg.contains("/secret/a"), "{msg}"),
        other => panic!("write outside the role: expected Denied, got {other:?}"),
    }
    let mut w = store.watch("/secret/", 0).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Err(StoreError::Denied(msg)))) => assert!(msg.contains("roles"), "{msg}"),
        other => panic!("watch outside the role: expected Denied, got {other:?}"),
    }
}

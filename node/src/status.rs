//! The node's local status socket (`<run dir>/status.sock`): manx-node
//! serves it here. The protocol (request, answer, encoding, socket path,
//! the client `manxctl node status|ready` uses) is the `manx-status` crate.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

pub use manx_status::{NodeStatus, PeerRow, Request, RouteRow, socket_path};

/// What the dataplane's last apply adds to the status: the warnings (pools
/// this kernel cannot serve, BGP routes not installed) and the rows of
/// `manxctl node status --routes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataplaneStatus {
    pub warnings: Vec<String>,
    pub routes: Vec<RouteRow>,
}

impl DataplaneStatus {
    /// From one dataplane apply.
    pub fn from_applied(a: &felix::Applied<'_>) -> DataplaneStatus {
        let mut warnings: Vec<String> = a.degraded.iter().map(|d| d.reason.clone()).collect();
        warnings.extend(a.peer_route_problems.iter().cloned());
        let not_installed = a
            .external_routes
            .iter()
            .filter(|r| r.state != felix::ExternalState::Installed)
            .count();
        if not_installed > 0 {
            warnings.push(format!(
                "{not_installed} of {} BGP routes from outside the IP pools not installed: \
                 see manxctl node status --routes",
                a.external_routes.len()
            ));
        }
        let routes = a
            .external_routes
            .iter()
            .map(|r| RouteRow {
                prefix: r.prefix.to_string(),
                next_hop: r
                    .next_hops
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                state: r.state.as_str().to_string(),
                info: r.detail.clone(),
            })
            .collect();
        DataplaneStatus { warnings, routes }
    }
}

/// Serve `status()` on the socket until the task is dropped. Every request
/// line is answered with one status line (status is the only request; a
/// line that is not one is answered the same, as before the protocol had
/// a request type, and logged).
pub async fn serve(
    path: PathBuf,
    status: Arc<dyn Fn() -> NodeStatus + Send + Sync>,
) -> std::io::Result<()> {
    let _ = std::fs::remove_file(&path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(&path)?;
    loop {
        let (sock, _) = listener.accept().await?;
        let status = status.clone();
        tokio::spawn(async move {
            let (r, mut w) = sock.into_split();
            let mut line = String::new();
            if BufReader::new(r).read_line(&mut line).await.is_err() {
                return;
            }
            match manx_status::decode_request(&line) {
                Ok(Request::Status) => {}
                Err(e) => tracing::debug!("status socket: {e}"),
            }
            let body = manx_status::encode_status(&status());
            let _ = w.write_all(body.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_outside_the_pools_become_rows_and_one_warning() {
        let input = felix::DataplaneInput::default();
        let result = Ok(felix::ApplyReport::default());
        let route = |prefix: &str, state, detail: &str| felix::ExternalRouteStatus {
            prefix: prefix.parse().unwrap(),
            next_hops: vec!["198.19.50.1".parse().unwrap()],
            state,
            detail: detail.into(),
        };
        let a = felix::Applied {
            input: &input,
            result: &result,
            elapsed: std::time::Duration::ZERO,
            degraded: vec![],
            wireguard_public_key: None,
            peer_route_problems: vec![
                "route to BGP peer 10.0.9.9 via its reachableBy gateway 198.19.60.9 not installed: gateway 198.19.60.9 is not on a connected subnet".into(),
            ],
            external_routes: vec![
                route(
                    "10.200.0.0/26",
                    felix::ExternalState::Installed,
                    "via 198.19.50.1 dev eth0",
                ),
                route(
                    "0.0.0.0/0",
                    felix::ExternalState::Refused,
                    "kernel already has a route for 0.0.0.0/0 (proto boot); not replaced",
                ),
            ],
        };
        let s = DataplaneStatus::from_applied(&a);
        assert_eq!(
            s.warnings,
            [
                "route to BGP peer 10.0.9.9 via its reachableBy gateway 198.19.60.9 not installed: gateway 198.19.60.9 is not on a connected subnet",
                "1 of 2 BGP routes from outside the IP pools not installed: see manxctl node status --routes"
            ]
        );
        assert_eq!(
            s.routes[1],
            RouteRow {
                prefix: "0.0.0.0/0".into(),
                next_hop: "198.19.50.1".into(),
                state: "refused".into(),
                info: "kernel already has a route for 0.0.0.0/0 (proto boot); not replaced".into(),
            }
        );
        assert_eq!(s.routes[0].state, "installed");
    }

    /// manx-node's server and manx-status's client (manxctl's) agree.
    #[tokio::test]
    async fn socket_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path());
        let task = tokio::spawn(serve(
            path.clone(),
            Arc::new(|| NodeStatus {
                node: "n9".into(),
                ready: true,
                ..Default::default()
            }),
        ));
        let mut got = None;
        for _ in 0..100 {
            if let Ok(s) = manx_status::query(dir.path()).await {
                got = Some(s);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        task.abort();
        let got = got.expect("no answer from the status socket");
        assert_eq!(got.node, "n9");
        assert!(got.ready);
    }
}

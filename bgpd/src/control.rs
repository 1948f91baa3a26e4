//! The local control socket: a Unix stream socket speaking one JSON object
//! per line, request then response.
//!
//! ```text
//! → {"cmd":"peers"}
//! ← {"ok":true,"peers":[{"address":"198.18.0.2","type":"node-to-node mesh","state":"Established",...}]}
//! → {"cmd":"routes"}
//! ← {"ok":true,"routes":[{"prefix":"10.65.0.0/26","source":{"kind":"local"},...}]}
//! → {"cmd":"announce","prefix":"10.65.1.0/26"}     (also "withdraw")
//! ← {"ok":true}
//! ```
//!
//! The server side is a task that forwards requests to the speaker actor;
//! the client side ([`query_peers`], [`query_routes`], [`request`]) is plain
//! blocking std I/O so that `manxctl node status` needs no runtime.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::config::PeerType;
use crate::fsm::State;
use crate::rib::RouteSource;
use crate::speaker::SpeakerHandle;
use crate::tasks::TaskGuard;

/// One peer, as `manxctl node status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    /// Peer address.
    pub address: IpAddr,
    /// Peer type (global, node-to-node mesh, node specific).
    #[serde(rename = "type")]
    pub peer_type: PeerType,
    /// Peer AS.
    pub as_number: u32,
    /// FSM state.
    pub state: State,
    /// When the peer entered its current state, RFC 3339 UTC.
    pub since: String,
    /// The same instant as Unix seconds.
    pub since_unix: u64,
    /// Why the session last went down or failed, if it did.
    pub last_error: Option<String>,
    /// Prefixes in its Adj-RIB-In.
    pub prefixes_received: usize,
    /// Of those, usable (passed import checks).
    pub prefixes_accepted: usize,
    /// Prefixes in its Adj-RIB-Out.
    pub prefixes_advertised: usize,
    /// The peer's BGP identifier, once an OPEN was received.
    pub router_id: Option<Ipv4Addr>,
    /// Negotiated hold time, when established.
    pub hold_time: Option<u16>,
    /// The BFD session's state, for a peer with BFD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<crate::bfd::State>,
}

/// One Loc-RIB entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// Destination.
    pub prefix: IpNetwork,
    /// Where the best path came from.
    pub source: RouteSource,
    /// Next hop as received (none for local prefixes).
    pub next_hop: Option<IpAddr>,
    /// AS_PATH as a flat list.
    pub as_path: Vec<u32>,
    /// LOCAL_PREF, if any.
    pub local_pref: Option<u32>,
    /// How many times this prefix's best path changed since start (a
    /// flap shows as a count above 1).
    #[serde(default)]
    pub changes: u64,
}

/// A control request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "cmd")]
pub enum Request {
    /// Peer table.
    Peers,
    /// Loc-RIB.
    Routes,
    /// Originate a prefix.
    Announce {
        /// The prefix.
        prefix: IpNetwork,
    },
    /// Stop originating a prefix.
    Withdraw {
        /// The prefix.
        prefix: IpNetwork,
    },
}

/// A control response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// Failure reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For `peers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<PeerStatus>>,
    /// For `routes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<RouteStatus>>,
}

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Connecting or talking to the socket failed.
    #[error("bgpd control socket {path}: {source} (is manx-bgpd / manx-node running?)")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The answer was not the expected JSON.
    #[error("bgpd control socket {path}: bad response: {detail}")]
    BadResponse {
        /// The socket path.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The daemon refused the request.
    #[error("bgpd control socket {path}: {message}")]
    Refused {
        /// The socket path.
        path: PathBuf,
        /// The daemon's reason.
        message: String,
    },
}

/// Send one request and read the response (blocking, 10 s timeout).
pub fn request(path: &Path, req: &Request) -> Result<Response, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    let mut line = serde_json::to_string(req).expect("requests serialise");
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer).map_err(io)?;
    let resp: Response = serde_json::from_str(&answer).map_err(|e| ControlError::BadResponse {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    if !resp.ok {
        return Err(ControlError::Refused {
            path: path.to_path_buf(),
            message: resp.error.unwrap_or_else(|| "request failed".into()),
        });
    }
    Ok(resp)
}

/// The peer table (the data behind `manxctl node status`).
pub fn query_peers(path: &Path) -> Result<Vec<PeerStatus>, ControlError> {
    request(path, &Request::Peers)?
        .peers
        .ok_or_else(|| ControlError::BadResponse {
            path: path.to_path_buf(),
            detail: "no peers field".into(),
        })
}

/// The Loc-RIB.
pub fn query_routes(path: &Path) -> Result<Vec<RouteStatus>, ControlError> {
    request(path, &Request::Routes)?
        .routes
        .ok_or_else(|| ControlError::BadResponse {
            path: path.to_path_buf(),
            detail: "no routes field".into(),
        })
}

/// The server: accepts connections on `path` (replacing a stale socket
/// file) and answers from the speaker. Dropping the guard stops it.
pub fn serve(path: &Path, speaker: SpeakerHandle) -> std::io::Result<TaskGuard> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    Ok(TaskGuard::spawn(async move {
        // Client tasks live in a JoinSet owned by this task: aborting the
        // server (dropping its guard) aborts them too.
        let mut clients = tokio::task::JoinSet::new();
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
                Some(_) = clients.join_next(), if !clients.is_empty() => continue,
            };
            let speaker = speaker.clone();
            clients.spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut lines = tokio::io::BufReader::new(rd).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let resp = match serde_json::from_str::<Request>(&line) {
                        Ok(req) => speaker.control(req).await,
                        Err(e) => Response {
                            ok: false,
                            error: Some(format!("bad request: {e}")),
                            ..Default::default()
                        },
                    };
                    let mut out = serde_json::to_string(&resp).expect("responses serialise");
                    out.push('\n');
                    if wr.write_all(out.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    }))
}

/// Format Unix seconds as RFC 3339 UTC (`2026-01-02T03:04:05Z`); the one
/// implementation lives with the resource model's timestamps.
pub fn rfc3339(unix: u64) -> String {
    datastore::model::meta::rfc3339_from_unix(unix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn requests_use_the_documented_json() {
        assert_eq!(
            serde_json::to_string(&Request::Peers).unwrap(),
            r#"{"cmd":"peers"}"#
        );
        let r: Request =
            serde_json::from_str(r#"{"cmd":"announce","prefix":"10.0.0.0/24"}"#).unwrap();
        assert_eq!(
            r,
            Request::Announce {
                prefix: "10.0.0.0/24".parse().unwrap()
            }
        );
    }

    /// The server answers the blocking client: announce, routes, peers, bad JSON.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_and_client_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bgpd.sock");
        let mut cfg = crate::SpeakerConfig::new(64512, "198.18.0.1".parse().unwrap());
        cfg.listen = None;
        cfg.peers = vec![crate::PeerConfig::new("127.0.0.71".parse().unwrap(), 65071)];
        cfg.peers[0].passive = true;
        let speaker = crate::Speaker::start(cfg, None).unwrap();
        let _server = serve(&path, speaker.handle()).unwrap();
        let p = path.clone();
        let (peers, routes) = tokio::task::spawn_blocking(move || {
            request(
                &p,
                &Request::Announce {
                    prefix: "10.65.0.0/26".parse().unwrap(),
                },
            )
            .unwrap();
            (query_peers(&p).unwrap(), query_routes(&p).unwrap())
        })
        .await
        .unwrap();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].state, State::Active);
        assert_eq!(peers[0].as_number, 65071);
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].source, RouteSource::Local);
        // A malformed request gets an error answer, not a hang-up.
        let mut raw = std::os::unix::net::UnixStream::connect(&path).unwrap();
        raw.write_all(b"{\"cmd\":\"nope\"}\n").unwrap();
        let mut line = String::new();
        BufReader::new(raw).read_line(&mut line).unwrap();
        let resp: Response = serde_json::from_str(&line).unwrap();
        assert!(!resp.ok && resp.error.unwrap().contains("bad request"));
    }

    #[test]
    fn client_reports_missing_socket_with_a_hint() {
        let err = query_peers(Path::new("/nonexistent/bgpd.sock")).unwrap_err();
        assert!(err.to_string().contains("is manx-bgpd"), "{err}");
    }
}

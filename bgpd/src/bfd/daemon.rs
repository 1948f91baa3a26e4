//! `manx-bfdd`: BFD in its own process, so that a restart of manx-node
//! (kill -9, upgrade) does not take the BFD sessions down (RFC 5882 §4.3,
//! as FRR's separate `bfdd`). Its sessions advertise the C bit (control
//! plane independent): a peer that sees them go Down knows the forwarding
//! path died, not the control plane.
//!
//! ```text
//!  manx-node (speaker) ──client──┐  JSON lines over a root-only unix socket
//!     io::Handle (Add/Remove) ───┼──► serve(): one owner of the claims
//!     ◄── Event (state changes) ─┘         │ io::Handle
//!                                          ▼
//!                              io task: sockets 3784/4784, sessions
//! ```
//!
//! Requests are [`Request`] lines; answers are [`super::io::Event`] lines.
//! A client that connects is first sent every session's state (an event
//! with `from == to`). Sessions outlive their client: a session no client
//! asked for since the last client connected is removed once
//! [`CLAIM_WINDOW`] has passed (a restarted manx-node asks again for the
//! ones it still wants within seconds; the others were de-configured while
//! it was away).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::io::{Command, Event, Handle, PeerSpec};

/// How long after a client connects the sessions it does not ask for are
/// kept.
pub const CLAIM_WINDOW: Duration = Duration::from_secs(60);

/// One request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Start or reconfigure a session.
    Add { spec: PeerSpec },
    /// Remove a session (AdminDown is sent first).
    Remove { peer: Ipv4Addr },
}

enum Internal {
    Connected(mpsc::Sender<Event>),
    Request(Request),
}

/// Serve `listener` with the BFD task behind `bfd`, whose events arrive on
/// `events`. Runs until the listener fails.
pub async fn serve(
    listener: UnixListener,
    bfd: Handle,
    mut events: mpsc::Receiver<Event>,
    claim_window: Duration,
) {
    let (fanout, _) = broadcast::channel::<Event>(1024);
    let (itx, mut irx) = mpsc::channel::<Internal>(256);
    // peer -> last time a client asked for it.
    let mut claimed: HashMap<Ipv4Addr, Instant> = HashMap::new();
    let mut last_connect: Option<Instant> = None;
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tracing::error!("manx-bfdd: accept failed; stopping");
                    return;
                };
                tokio::spawn(client(stream, itx.clone(), fanout.subscribe()));
            }
            Some(ev) = events.recv() => {
                let _ = fanout.send(ev);
            }
            Some(msg) = irx.recv() => match msg {
                Internal::Connected(reply) => {
                    last_connect = Some(Instant::now());
                    for s in bfd.status().await {
                        let _ = reply.send(Event {
                            peer: s.peer,
                            from: s.state,
                            to: s.state,
                            diag: super::Diag::None,
                            remote_control_plane_independent: false,
                        }).await;
                    }
                }
                Internal::Request(Request::Add { spec }) => {
                    claimed.insert(spec.peer, Instant::now());
                    bfd.add(spec).await;
                }
                Internal::Request(Request::Remove { peer }) => {
                    claimed.remove(&peer);
                    bfd.remove(peer).await;
                }
            },
            _ = sweep.tick() => {
                let Some(since) = last_connect else { continue };
                if since.elapsed() < claim_window {
                    continue;
                }
                let stale: Vec<Ipv4Addr> = claimed
                    .iter()
                    .filter(|(_, t)| **t < since)
                    .map(|(p, _)| *p)
                    .collect();
                for peer in stale {
                    tracing::info!(%peer, "manx-bfdd: no client asked for this session again; removed");
                    claimed.remove(&peer);
                    bfd.remove(peer).await;
                }
            }
        }
    }
}

async fn client(
    stream: UnixStream,
    to_owner: mpsc::Sender<Internal>,
    mut events: broadcast::Receiver<Event>,
) {
    let (read, mut write) = stream.into_split();
    let (snap_tx, mut snap_rx) = mpsc::channel::<Event>(1024);
    if to_owner.send(Internal::Connected(snap_tx)).await.is_err() {
        return;
    }
    let mut lines = BufReader::new(read).lines();
    loop {
        let ev = tokio::select! {
            line = lines.next_line() => {
                let Ok(Some(line)) = line else { return };
                match serde_json::from_str::<Request>(&line) {
                    Ok(r) => {
                        if to_owner.send(Internal::Request(r)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "manx-bfdd: bad request line ignored"),
                }
                continue;
            }
            Some(ev) = snap_rx.recv() => ev,
            ev = events.recv() => match ev {
                Ok(ev) => ev,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "manx-bfdd: a client fell behind; events lost");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        let mut line = serde_json::to_string(&ev).expect("plain struct");
        line.push('\n');
        if write.write_all(line.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Bind the daemon's socket at `path`, mode 0600 (root-only: whoever can
/// write to it can add BFD sessions). A stale socket file is replaced.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// The speaker's side: an [`io::Handle`](Handle) whose sessions live in
/// manx-bfdd at `path`. Every session asked for is (re)sent on each
/// (re)connect; events go to `events`. Connect failures are retried every
/// 500 ms and logged once.
pub fn connect(path: PathBuf, events: mpsc::Sender<Event>) -> Handle {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(client_task(path, rx, events));
    Handle::from_sender(tx)
}

async fn client_task(
    path: PathBuf,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
) {
    let mut wanted: HashMap<Ipv4Addr, PeerSpec> = HashMap::new();
    let mut warned = false;
    loop {
        let stream = match UnixStream::connect(&path).await {
            Ok(s) => s,
            Err(e) => {
                if !warned {
                    tracing::warn!(socket = %path.display(), error = %e, "cannot reach manx-bfdd; retrying");
                    warned = true;
                }
                // Keep taking commands while waiting.
                let retry = tokio::time::sleep(Duration::from_millis(500));
                tokio::pin!(retry);
                loop {
                    tokio::select! {
                        () = &mut retry => break,
                        cmd = commands.recv() => match cmd {
                            None => return,
                            Some(c) => remember(&mut wanted, c),
                        },
                    }
                }
                continue;
            }
        };
        warned = false;
        tracing::info!(socket = %path.display(), sessions = wanted.len(), "connected to manx-bfdd");
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let mut ok = true;
        for spec in wanted.values() {
            ok &= send(&mut write, &Request::Add { spec: *spec }).await;
        }
        while ok {
            tokio::select! {
                cmd = commands.recv() => {
                    let Some(c) = cmd else { return };
                    let req = match &c {
                        Command::Add(spec) => Some(Request::Add { spec: *spec }),
                        Command::Remove(peer) => Some(Request::Remove { peer: *peer }),
                        _ => None,
                    };
                    remember(&mut wanted, c);
                    if let Some(r) = req {
                        ok = send(&mut write, &r).await;
                    }
                }
                line = lines.next_line() => match line {
                    Ok(Some(l)) => match serde_json::from_str::<Event>(&l) {
                        Ok(ev) => {
                            if events.send(ev).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "bad event line from manx-bfdd"),
                    },
                    _ => ok = false,
                },
            }
        }
        tracing::warn!(socket = %path.display(), "lost manx-bfdd; reconnecting");
    }
}

/// Track what the speaker wants; answer what needs an answer.
fn remember(wanted: &mut HashMap<Ipv4Addr, PeerSpec>, c: Command) {
    match c {
        Command::Add(spec) => {
            wanted.insert(spec.peer, spec);
        }
        Command::Remove(peer) => {
            wanted.remove(&peer);
        }
        // Sessions live in manx-bfdd; the speaker keeps their states from
        // the events.
        Command::Status(reply) => {
            let _ = reply.send(Vec::new());
        }
        Command::AdminDown(..) => {}
    }
}

async fn send(w: &mut tokio::net::unix::OwnedWriteHalf, r: &Request) -> bool {
    let mut line = serde_json::to_string(r).expect("plain struct");
    line.push('\n');
    w.write_all(line.as_bytes()).await.is_ok()
}

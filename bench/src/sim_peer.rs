//! Raw BGP peers on the Manx codec for `rr-slow-peer`: an established iBGP
//! session whose two directions are driven separately, so that a peer can
//! stop reading (its TCP window closes) while it still sends KEEPALIVEs,
//! churn routes as fast as TCP takes them, or read everything.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bgpd::packet::{
    AfiSafi, Capability, Message, Nlri, Open, SessionCaps, Update, decode_message, encode_message,
};
use ipnetwork::IpNetwork;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::bgp_client::ASN;

/// An established session.
#[derive(Debug)]
pub struct SimPeer {
    /// Our address.
    pub src: Ipv4Addr,
    /// What both OPENs negotiated.
    pub caps: SessionCaps,
    /// The reading direction (drop it, or never read it, to stop reading).
    pub rd: OwnedReadHalf,
    /// The writing direction, shared by the keepalive task and the churn.
    pub wr: Arc<Mutex<OwnedWriteHalf>>,
}

/// Connect from `src` (receive buffer `rcvbuf` if given), exchange OPEN
/// and KEEPALIVE, and return once Established. Retried for `timeout`.
pub async fn establish(
    src: Ipv4Addr,
    rr: SocketAddr,
    hold: u16,
    rcvbuf: Option<u32>,
    timeout: Duration,
) -> anyhow::Result<SimPeer> {
    let give_up = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(give_up, attempt(src, rr, hold, rcvbuf)).await {
            Ok(Ok(p)) => return Ok(p),
            Ok(Err(e)) if tokio::time::Instant::now() + Duration::from_millis(200) < give_up => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => bail!("{src}: no session with {rr} within {timeout:?}"),
        }
    }
}

async fn attempt(
    src: Ipv4Addr,
    rr: SocketAddr,
    hold: u16,
    rcvbuf: Option<u32>,
) -> anyhow::Result<SimPeer> {
    let sock = TcpSocket::new_v4()?;
    if let Some(b) = rcvbuf {
        sock.set_recv_buffer_size(b)?;
    }
    sock.bind(SocketAddr::new(IpAddr::V4(src), 0))
        .with_context(|| format!("bind {src}"))?;
    let mut stream = sock
        .connect(rr)
        .await
        .with_context(|| format!("{src}: connect"))?;
    stream.set_nodelay(true)?;
    let open = Open::new(
        ASN,
        hold,
        src,
        vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::FourOctetAs(ASN),
        ],
    );
    let mut caps = SessionCaps::default();
    stream
        .write_all(&encode(
            &[Message::Open(open.clone()), Message::Keepalive],
            &caps,
        )?)
        .await?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 4096];
    let mut got_open = false;
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("{src}: closed before Established");
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some((msg, used)) = decode_message(&buf[start..], &caps)? {
            start += used;
            match msg {
                Message::Open(remote) => {
                    caps = SessionCaps::negotiate(&open, &remote);
                    got_open = true;
                }
                Message::Keepalive if got_open => {
                    // Anything after it (the first UPDATEs) is dropped:
                    // these peers do not keep a table.
                    let (rd, wr) = stream.into_split();
                    return Ok(SimPeer {
                        src,
                        caps,
                        rd,
                        wr: Arc::new(Mutex::new(wr)),
                    });
                }
                Message::Notification(n) => bail!("{src}: NOTIFICATION {}", n.describe()),
                _ => {}
            }
        }
        buf.drain(..start);
    }
}

/// Encode messages back to back.
pub fn encode(msgs: &[Message], caps: &SessionCaps) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for m in msgs {
        encode_message(m, caps, &mut out)?;
    }
    Ok(out)
}

/// UPDATEs withdrawing `prefixes` (IPv4, 400 per UPDATE).
pub fn withdrawal(prefixes: &[IpNetwork]) -> Vec<Update> {
    prefixes
        .chunks(400)
        .map(|c| Update {
            withdrawn: c.iter().map(|p| Nlri::new(*p)).collect(),
            ..Default::default()
        })
        .collect()
}

/// Send a KEEPALIVE every `every` until the session fails; returns why.
pub fn keepalives(peer: &SimPeer, every: Duration) -> JoinHandle<String> {
    let wr = peer.wr.clone();
    let ka = encode(&[Message::Keepalive], &peer.caps).expect("a KEEPALIVE encodes");
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = wr.lock().await.write_all(&ka).await {
                return format!("keepalive write failed: {e}");
            }
        }
    })
}

/// What a reading peer saw, updated as it reads.
#[derive(Debug, Default)]
pub struct Seen {
    /// UPDATE messages.
    pub updates: AtomicU64,
    /// Prefixes announced in them (IPv4 NLRI).
    pub announced: AtomicU64,
    /// Prefixes withdrawn in them.
    pub withdrawn: AtomicU64,
    /// When the marker prefix was first announced to us, if it was.
    pub marker_at: std::sync::OnceLock<std::time::Instant>,
}

/// Read and decode everything the reflector sends into `seen` (noting
/// when `marker` is announced) until the session ends; returns why it
/// ended.
pub fn watch(
    mut rd: OwnedReadHalf,
    caps: SessionCaps,
    seen: Arc<Seen>,
    marker: Option<IpNetwork>,
) -> JoinHandle<String> {
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match rd.read(&mut chunk).await {
                Ok(0) => return "the reflector closed the session".to_string(),
                Ok(n) => n,
                Err(e) => return format!("read failed: {e}"),
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut start = 0;
            loop {
                match decode_message(&buf[start..], &caps) {
                    Ok(Some((msg, used))) => {
                        start += used;
                        match msg {
                            Message::Update(u) => {
                                seen.updates.fetch_add(1, Ordering::Relaxed);
                                seen.announced
                                    .fetch_add(u.nlri.len() as u64, Ordering::Relaxed);
                                seen.withdrawn
                                    .fetch_add(u.withdrawn.len() as u64, Ordering::Relaxed);
                                if let Some(m) = marker
                                    && u.nlri.iter().any(|n| n.prefix == m)
                                {
                                    let _ = seen.marker_at.set(std::time::Instant::now());
                                }
                            }
                            Message::Notification(n) => {
                                return format!("NOTIFICATION {}", n.describe());
                            }
                            _ => {}
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return format!("malformed message: {e}"),
                }
            }
            buf.drain(..start);
        }
    })
}

//! A minimal iBGP client for load generation: connect from a chosen source
//! address, exchange OPEN/KEEPALIVE, announce prefixes, then count the
//! distinct prefixes the reflector sends until a target is reached.
//! Built on the Manx codec (`bgpd::packet`); no FSM, no timers beyond a
//! keepalive every 30 s.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bgpd::packet::{
    AfiSafi, AsPath, Capability, Message, Nlri, Open, Origin, PathAttribute, SessionCaps, Update,
    decode_message, encode_message,
};
use ipnetwork::{IpNetwork, Ipv4Network};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// The load client's AS (iBGP with the reflector).
pub const ASN: u32 = 64512;

/// The `n`-th /26 of 10.0.0.0/8.
pub fn prefix(n: u32) -> IpNetwork {
    let base = u32::from(Ipv4Addr::new(10, 0, 0, 0)) + n * 64;
    IpNetwork::V4(Ipv4Network::new(Ipv4Addr::from(base), 26).expect("valid /26"))
}

/// The `i`-th client source address: 127.1.0.1, 127.1.0.2, … (skipping .0 and .255).
pub fn client_addr(i: u32) -> Ipv4Addr {
    let n = i / 250;
    Ipv4Addr::new(
        127,
        1 + (n / 256) as u8,
        (n % 256) as u8,
        (i % 250 + 1) as u8,
    )
}

/// What one client saw.
#[derive(Debug)]
pub struct ClientResult {
    /// The session, still open: closing it would withdraw this client's
    /// routes from the others (keep it until every client is done).
    pub session: tokio::net::TcpStream,
    /// When the session reached Established (after the OPEN exchange).
    pub established: Instant,
    /// When the client held `target` learnt prefixes.
    pub done: Instant,
}

/// Run one client: connect from `src` to `rr`, announce `prefixes` with
/// next hop `src`, and return once `target` distinct prefixes were learnt.
/// A session refused or closed before it is established is retried (a
/// daemon may accept connections before it configured every peer).
pub async fn run_client(
    src: Ipv4Addr,
    rr: SocketAddr,
    prefixes: Vec<IpNetwork>,
    target: usize,
    timeout: Duration,
) -> anyhow::Result<ClientResult> {
    let give_up = Instant::now() + timeout;
    loop {
        let mut established = false;
        match attempt(src, rr, &prefixes, target, timeout, &mut established).await {
            Ok(r) => return Ok(r),
            Err(_) if !established && Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn attempt(
    src: Ipv4Addr,
    rr: SocketAddr,
    prefixes: &[IpNetwork],
    target: usize,
    timeout: Duration,
    est_flag: &mut bool,
) -> anyhow::Result<ClientResult> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(IpAddr::V4(src), 0))
        .with_context(|| format!("bind {src}"))?;
    let mut stream = tokio::time::timeout(timeout, sock.connect(rr))
        .await
        .with_context(|| format!("{src}: connect to {rr} timed out"))?
        .with_context(|| format!("{src}: connect to {rr}"))?;
    stream.set_nodelay(true)?;
    let open = Open::new(
        ASN,
        240,
        src,
        vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::FourOctetAs(ASN),
        ],
    );
    let mut caps = SessionCaps::default();
    let mut wbuf = Vec::new();
    encode_message(&Message::Open(open.clone()), &caps, &mut wbuf)?;
    encode_message(&Message::Keepalive, &caps, &mut wbuf)?;
    stream.write_all(&wbuf).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut rbuf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut learnt: HashSet<IpNetwork> = HashSet::new();
    let mut established = None;
    let mut last_keepalive = Instant::now();
    loop {
        if let Some(est) = established
            && learnt.len() >= target
        {
            return Ok(ClientResult {
                session: stream,
                established: est,
                done: Instant::now(),
            });
        }
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => bail!(
                "{src}: timed out with {} of {target} prefixes learnt",
                learnt.len()
            ),
            Ok(r) => r?,
        };
        if n == 0 {
            bail!(
                "{src}: the reflector closed the session ({} of {target} prefixes learnt)",
                learnt.len()
            );
        }
        rbuf.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some((msg, used)) = decode_message(&rbuf[start..], &caps)
            .map_err(|e| anyhow::anyhow!("{src}: malformed message from the reflector: {e}"))?
        {
            start += used;
            match msg {
                Message::Open(remote) => caps = SessionCaps::negotiate(&open, &remote),
                Message::Keepalive if established.is_none() => {
                    established = Some(Instant::now());
                    *est_flag = true;
                    let mut out = Vec::new();
                    for u in announcement(src, prefixes) {
                        encode_message(&Message::Update(u), &caps, &mut out)?;
                    }
                    encode_message(
                        &Message::Update(Update::end_of_rib(AfiSafi::IPV4_UNICAST)),
                        &caps,
                        &mut out,
                    )?;
                    stream.write_all(&out).await?;
                }
                Message::Update(u) => {
                    for w in &u.withdrawn {
                        learnt.remove(&w.prefix);
                    }
                    learnt.extend(u.nlri.iter().map(|n| n.prefix));
                }
                Message::Notification(n) => bail!("{src}: NOTIFICATION {}", n.describe()),
                _ => {}
            }
        }
        rbuf.drain(..start);
        if last_keepalive.elapsed() > Duration::from_secs(30) {
            last_keepalive = Instant::now();
            let mut out = Vec::new();
            encode_message(&Message::Keepalive, &caps, &mut out)?;
            stream.write_all(&out).await?;
        }
    }
}

/// UPDATEs announcing `prefixes` with next hop `src` (400 per UPDATE).
pub fn announcement(src: Ipv4Addr, prefixes: &[IpNetwork]) -> Vec<Update> {
    prefixes
        .chunks(400)
        .map(|chunk| Update {
            attributes: vec![
                PathAttribute::Origin(Origin::Igp),
                PathAttribute::AsPath(AsPath::default()),
                PathAttribute::NextHop(src),
                PathAttribute::LocalPref(100),
            ],
            nlri: chunk.iter().map(|p| Nlri::new(*p)).collect(),
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_prefixes_are_distinct() {
        let addrs: HashSet<_> = (0..5000).map(client_addr).collect();
        assert_eq!(addrs.len(), 5000);
        assert!(addrs.iter().all(|a| a.is_loopback() && a.octets()[3] != 0));
        let ps: HashSet<_> = (0..4000).map(prefix).collect();
        assert_eq!(ps.len(), 4000);
        assert_eq!(prefix(1).to_string(), "10.0.0.64/26");
    }
}

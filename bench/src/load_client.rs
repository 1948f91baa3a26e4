//! Long-lived iBGP load clients for `bgp-load`: each connects from its own
//! loopback address, announces its prefixes, and keeps its session,
//! counting the distinct reflected prefixes it holds, so that convergence,
//! churn (a client told to flap closes and reconnects) and session drops
//! can all be read from the outside while the clients run.
//!
//! Cheap enough for 5,000 clients that each learn 20,000 prefixes in one
//! process beside the reflector under test: a client's view is a bitmap
//! over the prefix index ([`crate::bgp_client::prefix`]), UPDATEs are
//! scanned in place (withdrawn routes and NLRI only, no attribute decode),
//! and the receive buffer is reused.
//!
//! Connections pass a [`Gate`]: with a window of W, at most W clients are
//! between their TCP connect and the reflector's OPEN at any moment, so a
//! listen queue of W or more never overflows (the steady measurement);
//! without a window every client connects at once (the reconnect storm).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bgpd::packet::{
    AfiSafi, Capability, Message, Open, SessionCaps, Update, decode_message, encode_message,
};
use ipnetwork::IpNetwork;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore};

use crate::bgp_client::{ASN, announcement};

/// Admission of new connections (see the module doc).
#[derive(Debug, Clone)]
pub struct Gate(Option<Arc<Semaphore>>);

impl Gate {
    /// At most `window` clients between connect and the reflector's OPEN;
    /// `None`: no limit.
    pub fn new(window: Option<usize>) -> Gate {
        Gate(window.map(|w| Arc::new(Semaphore::new(w.max(1)))))
    }
}

/// What the outside sees of one client.
#[derive(Debug, Default)]
pub struct ClientState {
    /// Distinct prefixes held now (own excluded only if the reflector
    /// never sends them back, as none does).
    pub learnt: AtomicU32,
    /// Nanoseconds after the run's start when `learnt` first reached the
    /// target (0: not yet).
    pub first_done_ns: AtomicU64,
    /// Sessions established so far.
    pub sessions: AtomicU32,
    /// Sessions the reflector closed or reset after they were established.
    pub drops: AtomicU32,
    /// Connection attempts that failed before the session came up.
    pub failed_attempts: AtomicU32,
    /// The session is established now.
    pub up: AtomicBool,
    /// The last error, for the report.
    pub last_error: std::sync::Mutex<Option<String>>,
}

/// A running client.
#[derive(Debug)]
pub struct Client {
    /// Its address.
    pub addr: Ipv4Addr,
    /// Its counters.
    pub state: Arc<ClientState>,
    flap: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Close the session and reconnect (through the gate).
    pub fn flap(&self) {
        self.flap.notify_one();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What every client shares.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The reflector.
    pub rr: SocketAddr,
    /// Distinct prefixes every client should hold.
    pub target: u32,
    /// Bits in each client's view (prefix indexes are below this).
    pub universe: u32,
    /// Hold time proposed (keepalives every third of it).
    pub hold_time: u16,
    /// The run's start.
    pub start: Instant,
    /// Connection admission.
    pub gate: Gate,
}

/// Start a client at `addr` announcing `prefixes`.
pub fn spawn(addr: Ipv4Addr, prefixes: Vec<IpNetwork>, plan: Plan) -> Client {
    let state = Arc::new(ClientState::default());
    let flap = Arc::new(Notify::new());
    let task = tokio::spawn(run(addr, prefixes, plan, state.clone(), flap.clone()));
    Client {
        addr,
        state,
        flap,
        task,
    }
}

async fn run(
    addr: Ipv4Addr,
    prefixes: Vec<IpNetwork>,
    plan: Plan,
    st: Arc<ClientState>,
    flap: Arc<Notify>,
) {
    let mut view = View::new(plan.universe);
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        view.clear();
        st.learnt.store(0, Ordering::Relaxed);
        let end = session(addr, &prefixes, &plan, &st, &flap, &mut view, &mut buf).await;
        let was_up = st.up.swap(false, Ordering::Relaxed);
        match end {
            End::Flapped => {}
            End::Failed(e) => {
                if was_up {
                    st.drops.fetch_add(1, Ordering::Relaxed);
                } else {
                    st.failed_attempts.fetch_add(1, Ordering::Relaxed);
                }
                *st.last_error.lock().expect("not poisoned") = Some(format!("{e:#}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

enum End {
    Flapped,
    Failed(anyhow::Error),
}

/// The client's view of the table: one bit per prefix index.
struct View {
    bits: Vec<u64>,
    count: u32,
    universe: u32,
}

impl View {
    fn new(universe: u32) -> View {
        View {
            bits: vec![0; universe.div_ceil(64) as usize],
            count: 0,
            universe,
        }
    }
    fn clear(&mut self) {
        self.bits.iter_mut().for_each(|w| *w = 0);
        self.count = 0;
    }
    /// The index of a 10.0.0.0/8 /26 as [`crate::bgp_client::prefix`] numbers them.
    fn index(len: u8, octets: &[u8]) -> Option<u32> {
        if len != 26 || octets.len() != 4 || octets[0] != 10 {
            return None;
        }
        let a = u32::from_be_bytes([octets[0], octets[1], octets[2], octets[3]]);
        Some((a - (10 << 24)) / 64)
    }
    fn set(&mut self, i: u32, on: bool) {
        if i >= self.universe {
            return;
        }
        let (w, b) = ((i / 64) as usize, 1u64 << (i % 64));
        let was = self.bits[w] & b != 0;
        if on && !was {
            self.bits[w] |= b;
            self.count += 1;
        } else if !on && was {
            self.bits[w] &= !b;
            self.count -= 1;
        }
    }
    /// Apply one UPDATE body (after the 19-octet header): IPv4 unicast
    /// withdrawn routes and NLRI; path attributes are skipped.
    fn apply_update(&mut self, body: &[u8]) -> anyhow::Result<()> {
        let wlen = u16::from_be_bytes(body.get(0..2).context("short UPDATE")?.try_into()?) as usize;
        let withdrawn = body.get(2..2 + wlen).context("short withdrawn routes")?;
        let alen_at = 2 + wlen;
        let alen = u16::from_be_bytes(
            body.get(alen_at..alen_at + 2)
                .context("short UPDATE")?
                .try_into()?,
        ) as usize;
        let nlri = body
            .get(alen_at + 2 + alen..)
            .context("short path attributes")?;
        self.prefixes(withdrawn, false)?;
        self.prefixes(nlri, true)
    }
    fn prefixes(&mut self, mut b: &[u8], on: bool) -> anyhow::Result<()> {
        while let Some((&len, rest)) = b.split_first() {
            let n = usize::from(len).div_ceil(8);
            let octets = rest.get(..n).context("truncated prefix")?;
            if let Some(i) = View::index(len, octets) {
                self.set(i, on);
            }
            b = &rest[n..];
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    addr: Ipv4Addr,
    prefixes: &[IpNetwork],
    plan: &Plan,
    st: &ClientState,
    flap: &Notify,
    view: &mut View,
    buf: &mut Vec<u8>,
) -> End {
    // Through the gate: the permit is held from connect to the reflector's OPEN.
    let permit = match &plan.gate.0 {
        Some(s) => Some(s.clone().acquire_owned().await.expect("never closed")),
        None => None,
    };
    let mut stream = match connect(addr, plan.rr).await {
        Ok(s) => s,
        Err(e) => return End::Failed(e),
    };
    let mut permit = permit;
    let open = Open::new(
        ASN,
        plan.hold_time,
        addr,
        vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::FourOctetAs(ASN),
        ],
    );
    let mut caps = SessionCaps::default();
    let mut out = Vec::new();
    if let Err(e) = encode_message(&Message::Open(open.clone()), &caps, &mut out)
        .and_then(|()| encode_message(&Message::Keepalive, &caps, &mut out))
    {
        return End::Failed(e.into());
    }
    if let Err(e) = stream.write_all(&out).await {
        return End::Failed(e.into());
    }
    buf.clear();
    let keepalive_every = Duration::from_secs(u64::from(plan.hold_time / 3).max(1));
    let mut keepalive = tokio::time::interval_at(
        tokio::time::Instant::now() + keepalive_every,
        keepalive_every,
    );
    let mut established = false;
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        tokio::select! {
            () = flap.notified() => return End::Flapped,
            _ = keepalive.tick() => {
                let mut out = Vec::new();
                let _ = encode_message(&Message::Keepalive, &caps, &mut out);
                if let Err(e) = stream.write_all(&out).await {
                    return End::Failed(e.into());
                }
            }
            r = stream.read_buf(buf) => {
                match r {
                    Ok(0) => return End::Failed(anyhow::anyhow!("{addr}: the reflector closed the session ({} prefixes held)", view.count)),
                    Ok(_) => {}
                    Err(e) => return End::Failed(anyhow::anyhow!("{addr}: read: {e}")),
                }
                let mut at = 0;
                while buf.len() - at >= 19 {
                    let len = usize::from(u16::from_be_bytes([buf[at + 16], buf[at + 17]]));
                    if len < 19 {
                        return End::Failed(anyhow::anyhow!("{addr}: bad message length {len}"));
                    }
                    if buf.len() - at < len {
                        break;
                    }
                    let msg = &buf[at..at + len];
                    at += len;
                    if msg[18] == 2 {
                        if let Err(e) = view.apply_update(&msg[19..]) {
                            return End::Failed(anyhow::anyhow!("{addr}: malformed UPDATE: {e}"));
                        }
                        continue;
                    }
                    let decoded = match decode_message(msg, &caps) {
                        Ok(Some((m, _))) => m,
                        Ok(None) => continue,
                        Err(e) => return End::Failed(anyhow::anyhow!("{addr}: malformed message: {e}")),
                    };
                    match decoded {
                        Message::Open(remote) => {
                            caps = SessionCaps::negotiate(&open, &remote);
                            permit.take();
                        }
                        Message::Keepalive if !established => {
                            established = true;
                            st.up.store(true, Ordering::Relaxed);
                            st.sessions.fetch_add(1, Ordering::Relaxed);
                            let mut out = Vec::new();
                            let r = announcement(addr, prefixes)
                                .into_iter()
                                .chain([Update::end_of_rib(AfiSafi::IPV4_UNICAST)])
                                .try_for_each(|u| encode_message(&Message::Update(u), &caps, &mut out));
                            if let Err(e) = r {
                                return End::Failed(e.into());
                            }
                            if let Err(e) = stream.write_all(&out).await {
                                return End::Failed(e.into());
                            }
                        }
                        Message::Notification(n) => {
                            return End::Failed(anyhow::anyhow!("{addr}: NOTIFICATION {}", n.describe()));
                        }
                        _ => {}
                    }
                }
                buf.drain(..at);
                st.learnt.store(view.count, Ordering::Relaxed);
                if established
                    && view.count >= plan.target
                    && st.first_done_ns.load(Ordering::Relaxed) == 0
                {
                    let ns = u64::try_from(plan.start.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1);
                    st.first_done_ns.store(ns, Ordering::Relaxed);
                }
            }
        }
    }
}

async fn connect(src: Ipv4Addr, rr: SocketAddr) -> anyhow::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(IpAddr::V4(src), 0))
        .with_context(|| format!("bind {src}"))?;
    let s = tokio::time::timeout(Duration::from_secs(30), sock.connect(rr))
        .await
        .with_context(|| format!("{src}: connect to {rr} timed out"))?
        .with_context(|| format!("{src}: connect to {rr}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Fail with the first client error if none of `clients` is making progress.
pub fn first_error(clients: &[Client]) -> Option<String> {
    clients
        .iter()
        .find_map(|c| c.state.last_error.lock().expect("not poisoned").clone())
}

/// Wait until every client holds `target` prefixes with its session up,
/// polling every 10 ms; returns when that happened, or fails at `deadline`.
pub async fn wait_all(
    clients: &[Client],
    target: u32,
    deadline: Instant,
    what: &str,
) -> anyhow::Result<Instant> {
    loop {
        let done = clients
            .iter()
            .filter(|c| {
                c.state.up.load(Ordering::Relaxed)
                    && c.state.learnt.load(Ordering::Relaxed) >= target
            })
            .count();
        if done == clients.len() {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!(
                "{what}: {done} of {} clients hold all {target} prefixes at the timeout (first error seen: {})",
                clients.len(),
                first_error(clients).unwrap_or_else(|| "none".into())
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp_client::prefix;

    #[test]
    fn view_counts_announcements_and_withdrawals() {
        let caps = SessionCaps::default();
        let ps: Vec<_> = (0..900).map(prefix).collect();
        let mut v = View::new(1000);
        for u in announcement(Ipv4Addr::new(127, 1, 0, 1), &ps) {
            let mut out = Vec::new();
            encode_message(&Message::Update(u), &caps, &mut out).unwrap();
            v.apply_update(&out[19..]).unwrap();
        }
        assert_eq!(v.count, 900);
        let w = Update {
            withdrawn: ps[..10]
                .iter()
                .map(|p| bgpd::packet::Nlri::new(*p))
                .collect(),
            ..Default::default()
        };
        let mut out = Vec::new();
        encode_message(&Message::Update(w), &caps, &mut out).unwrap();
        v.apply_update(&out[19..]).unwrap();
        assert_eq!(v.count, 890);
        // Truncated NLRI is an error, not a silent miscount.
        assert!(v.apply_update(&[0, 0, 0, 0, 26, 10]).is_err());
    }
}

//! The UDP backend's data path (Flannel's `flanneld` UDP mode): one worker thread per TUN
//! queue of `udp.manx`, each with its own `SO_REUSEPORT` socket on port 8285.
//!
//! ```text
//!   kernel: route <block> via <node> dev udp.manx ──► TUN queue i ──► worker i ─┐
//!                                                                              │ read ≤32 packets
//!   route watcher (RTNLGRP_IPV4_ROUTE) ─► BlockTable (Arc, generation) ─► lookup │ (TSO: ≤64 KiB),
//!                                                                              │ owner, cut, one
//!                                                                              │ GSO sendmmsg
//!   UDP :8285 socket i (reuseport) ──► recvmmsg ≤64 (GRO) ──► owner? ──► join TCP runs ──►
//!                                                               one TSO write to TUN queue i
//! ```
//!
//! A datagram's payload is the bare inner IPv4 packet with complete checksums, as
//! Flannel's. Datagrams from addresses that own no block are dropped. Buffers are
//! allocated once per worker. With TUN offloads ([`offload`]: `IFF_VNET_HDR`,
//! `TUNSETOFFLOAD` TSO/USO) a TCP burst is one TUN read, cut in userspace ([`tx`]), and
//! a received run of one flow's segments is one TUN write ([`rx`]).
//!
//! It runs as a process of its own (`manx-node udp-datapath`), not inside the agent: the
//! agent restarts (upgrades, a crash, a datastore outage) must not stop pod traffic, as
//! they do not for the kernel's VXLAN or IPIP. It needs nothing from the agent but the
//! kernel's routes, which outlive the agent too. It exits when `udp.manx` is deleted.

pub mod offload;
pub mod rx;
pub mod sys;
pub mod table;
pub mod tun;
pub mod tx;

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use table::BlockTable;

use crate::netlink::{Netlink, RealNetlink};

/// Datagrams per `recvmmsg`.
pub const BATCH: usize = 64;
/// Bytes per receive buffer: a `UDP_GRO` coalesced datagram is at most 64 KiB.
pub const RX_SLOT: usize = 64 * 1024;

/// How to run the data path.
#[derive(Debug, Clone)]
pub struct UdpConfig {
    /// The TUN device (felix-lite's `udp.manx`).
    pub device: String,
    /// UDP port, local and remote (8285).
    pub port: u16,
    /// Queues and workers; 0: one per CPU, at most 8.
    pub queues: usize,
    /// Held with `flock` while running, so a second copy exits at once.
    pub lock: Option<PathBuf>,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            device: crate::tunnel::udp::DEVICE.into(),
            port: crate::tunnel::udp::PORT,
            queues: 0,
            lock: None,
        }
    }
}

/// Why the data path stopped.
#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    /// Another copy holds the lock.
    #[error("another UDP data path holds {0}")]
    AlreadyRunning(PathBuf),
    /// A setup step failed.
    #[error("UDP data path: {step}: {source}")]
    Setup {
        /// What was being set up.
        step: String,
        /// The OS error.
        source: io::Error,
    },
    /// The device went away (felix-lite removed it: no UDP pool any more).
    #[error("UDP data path: {0} is gone")]
    DeviceGone(String),
}

fn setup(step: impl Into<String>) -> impl FnOnce(io::Error) -> UdpError {
    let step = step.into();
    move |source| UdpError::Setup { step, source }
}

/// What every worker shares: the table, its generation, and the stop flag.
#[derive(Debug, Default)]
struct Shared {
    table: Mutex<Arc<BlockTable>>,
    generation: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn publish(&self, t: BlockTable) {
        *self.table.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(t);
        self.generation.fetch_add(1, Ordering::Release);
    }
    fn current(&self) -> Arc<BlockTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Per-worker counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    /// Packets read from the TUN and sent.
    pub tx: u64,
    /// Datagrams received and written to the TUN.
    pub rx: u64,
    /// TUN packets with no owner (no route of ours covers the destination).
    pub no_owner: u64,
    /// Datagrams from a source that owns no block, or not IPv4, or truncated.
    pub rejected: u64,
    /// Sends the kernel refused and TUN writes that failed.
    pub errors: u64,
}

/// Run the data path until `udp.manx` is deleted. Blocks the calling thread.
pub fn run(cfg: &UdpConfig) -> Result<Counters, UdpError> {
    let _lock = match &cfg.lock {
        Some(path) => {
            let f = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .map_err(setup(format!("open {}", path.display())))?;
            if !sys::try_lock(&f).map_err(setup(format!("lock {}", path.display())))? {
                return Err(UdpError::AlreadyRunning(path.clone()));
            }
            Some(f)
        }
        None => None,
    };
    let queues = match cfg.queues {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
        n => n,
    };
    let nl = RealNetlink::new().map_err(|e| UdpError::Setup {
        step: "netlink".into(),
        source: io::Error::other(e.to_string()),
    })?;
    let shared = Arc::new(Shared::default());
    // Started beside the dataplane's first sync: give felix-lite time to create the device.
    let deadline = Instant::now() + Duration::from_secs(30);
    let oif = loop {
        match reload(&nl, &cfg.device, &shared)? {
            Some(i) => break i,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            None => return Err(UdpError::DeviceGone(cfg.device.clone())),
        }
    };
    // TUN offloads unless turned off: the first queue sets the device's flags and its
    // offloads for all (MANX_UDP_NO_OFFLOAD=1 clears them: the kernel cuts and sums).
    let mut vnet = std::env::var_os("MANX_UDP_NO_OFFLOAD").is_none();
    let first = match tun::open_queue_with(&cfg.device, true, vnet) {
        Ok(f) => f,
        Err(e) if vnet => {
            tracing::info!(error = %e, "TUN refuses IFF_VNET_HDR: no TUN offloads");
            vnet = false;
            tun::open_queue(&cfg.device, true)
                .map_err(setup(format!("attach queue 0 of {}", cfg.device)))?
        }
        Err(e) => return Err(setup(format!("attach queue 0 of {}", cfg.device))(e)),
    };
    let offloads = if vnet {
        tun::negotiate_offload(&first)
    } else {
        tun::set_offload(&first, 0).map_err(setup("TUNSETOFFLOAD 0"))?;
        0
    };
    let mut first = Some(first);
    let mut workers = Vec::new();
    for q in 0..queues {
        let tun = match first.take() {
            Some(f) => f,
            None => tun::open_queue_with(&cfg.device, true, vnet)
                .map_err(setup(format!("attach queue {q} of {}", cfg.device)))?,
        };
        let sock = sys::udp_socket(cfg.port, 4 << 20)
            .map_err(setup(format!("bind UDP port {}", cfg.port)))?;
        let shared = shared.clone();
        let port = cfg.port;
        let device = cfg.device.clone();
        workers.push(
            std::thread::Builder::new()
                .name(format!("udp-q{q}"))
                .spawn(move || worker(&tun, &sock, port, vnet, &shared, &device))
                .map_err(setup("spawn worker"))?,
        );
    }
    tracing::info!(
        vnet_hdr = vnet,
        offloads = format!("{offloads:#x}"),
        "TUN offloads"
    );
    tracing::info!(device = %cfg.device, index = oif, queues, port = cfg.port, "UDP data path running");
    let watch = watch_routes(&nl, &cfg.device, &shared);
    shared.stop.store(true, Ordering::Release);
    let mut total = Counters::default();
    for w in workers {
        if let Ok(c) = w.join() {
            total.tx += c.tx;
            total.rx += c.rx;
            total.no_owner += c.no_owner;
            total.rejected += c.rejected;
            total.errors += c.errors;
        }
    }
    tracing::info!(?total, "UDP data path stopped");
    watch.map(|()| total)
}

/// Re-read the device's index and routes into the table. None: the device is gone.
fn reload(nl: &RealNetlink, device: &str, shared: &Shared) -> Result<Option<u32>, UdpError> {
    let io = |e: crate::netlink::NlError| UdpError::Setup {
        step: "read routes".into(),
        source: io::Error::other(e.to_string()),
    };
    let links = futures::executor::block_on(nl.links()).map_err(io)?;
    let Some(link) = links.iter().find(|l| l.name == device) else {
        return Ok(None);
    };
    let routes = futures::executor::block_on(nl.routes()).map_err(io)?;
    let table = BlockTable::from_routes(&routes, link.index);
    if *shared.current() != table {
        tracing::debug!(prefixes = table.len(), "block table updated");
        shared.publish(table);
    }
    Ok(Some(link.index))
}

/// Follow route and link changes until the device is deleted.
fn watch_routes(nl: &RealNetlink, device: &str, shared: &Shared) -> Result<(), UdpError> {
    use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
    const RTMGRP_LINK: u32 = 0x1;
    const RTMGRP_IPV4_ROUTE: u32 = 0x40;
    let mut sock = Socket::new(NETLINK_ROUTE).map_err(setup("netlink socket"))?;
    sock.bind(&SocketAddr::new(0, RTMGRP_LINK | RTMGRP_IPV4_ROUTE))
        .map_err(setup("netlink subscribe"))?;
    sock.set_non_blocking(true)
        .map_err(setup("netlink socket"))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_full = Instant::now();
    loop {
        // Anything on the socket (or an overrun) means: read the table again. Changes come
        // in bursts, so wait 10 ms for the rest of the burst first.
        let (ev, _) = sys::poll2(sock.as_raw_fd(), -1, 1000).map_err(setup("poll"))?;
        if ev != 0 {
            std::thread::sleep(Duration::from_millis(10));
            while sock.recv(&mut &mut buf[..], 0).is_ok() {}
        } else if last_full.elapsed() < Duration::from_secs(30) {
            continue;
        }
        last_full = Instant::now();
        if reload(nl, device, shared)?.is_none() {
            return Err(UdpError::DeviceGone(device.into()));
        }
    }
}

/// One queue: TUN → UDP and UDP → TUN, a batch of each per wake-up.
fn worker(
    tun: &File,
    sock: &OwnedFd,
    port: u16,
    vnet: bool,
    shared: &Shared,
    device: &str,
) -> Counters {
    let (tfd, sfd) = (tun.as_raw_fd(), sock.as_raw_fd());
    // Coalesced sends and receives, unless the kernel refuses (then one datagram each).
    let gso = std::env::var_os("MANX_UDP_NO_GSO").is_none();
    let mut out = tx::TxPath::new(vnet, gso, port);
    let mut inb = sys::Batch::new(BATCH, RX_SLOT);
    if gso && !sys::enable_gro(sfd) {
        tracing::info!("no UDP_GRO on this kernel: one datagram per receive");
    }
    let mut c = Counters::default();
    let mut generation = u64::MAX;
    let mut table = shared.current();
    // The last destination's owner: a TCP stream looks it up once.
    let mut last: Option<(Ipv4Addr, Ipv4Addr)> = None;
    while !shared.stop.load(Ordering::Acquire) {
        let g = shared.generation.load(Ordering::Acquire);
        if g != generation {
            generation = g;
            table = shared.current();
            last = None;
        }
        let (tev, sev) = match sys::poll2(tfd, sfd, 500) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "poll failed");
                break;
            }
        };
        if tev != 0 {
            while out.has_room() {
                match sys::read(tfd, out.slot()) {
                    Ok(len) => {
                        let owner = |dst: Ipv4Addr| match last {
                            Some((d, o)) if d == dst => Some(o),
                            _ => {
                                let o = table.lookup(dst);
                                last = o.map(|o| (dst, o));
                                o
                            }
                        };
                        match out.commit(len, owner) {
                            tx::Outcome::Queued(_) => {}
                            tx::Outcome::NoOwner => c.no_owner += 1,
                            tx::Outcome::Malformed(e) => {
                                tracing::debug!(error = %e, "TUN read dropped");
                                c.errors += 1;
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // EBADFD / EIO: the device was deleted under us.
                        tracing::info!(device, error = %e, "TUN queue closed");
                        shared.stop.store(true, Ordering::Release);
                        break;
                    }
                }
            }
            let (sent, refused) = out.flush(sfd);
            c.tx += sent as u64;
            c.errors += refused as u64;
        }
        if sev != 0 {
            match inb.recv(sfd) {
                Ok(n) => {
                    for i in 0..n {
                        let (data, src, truncated, seg) = inb.received_mut(i);
                        if truncated || !table.is_peer(src) {
                            c.rejected += 1;
                            continue;
                        }
                        let seg = seg.unwrap_or(data.len());
                        rx::write_datagram(tun, data, seg, vnet, &mut c);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    tracing::debug!(error = %e, "recvmmsg");
                    c.errors += 1;
                }
            }
        }
    }
    c
}

//! A netlink route listener in a lab namespace: every `RTM_NEWROUTE` /
//! `RTM_DELROUTE` of Manx's routes (protocol 77), stamped when it arrived,
//! so a benchmark times a route change from the kernel's own notification
//! instead of polling `ip route`.
//!
//! ```text
//!   thread (setns into the node) ── NETLINK_ROUTE, groups RTMGRP_IPV4_ROUTE|RTMGRP_IPV6_ROUTE
//!        │ recv → decode → RouteEvent { at: Instant, .. }
//!        ▼
//!   Arc<Mutex<Vec<RouteEvent>>> ◄── RouteWatch::lost_all (the benchmark)
//! ```

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use ipnetwork::IpNetwork;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// Manx's route protocol number (`felix_lite::MANX_ROUTE_PROTOCOL`).
pub const MANX_PROTO: u8 = 77;
/// The IPv4 and IPv6 route multicast groups (`RTMGRP_IPV4_ROUTE`,
/// `RTMGRP_IPV6_ROUTE` in rtnetlink.h).
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;

/// One change of a Manx route, as the kernel announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEvent {
    /// When the listener received it.
    pub at: Instant,
    /// `RTM_DELROUTE` (else `RTM_NEWROUTE`: added or replaced).
    pub deleted: bool,
    pub dst: IpNetwork,
    /// Its next hops (the gateway, or every `RTA_MULTIPATH` hop).
    pub gateways: Vec<IpAddr>,
}

/// A running listener; dropping it stops the thread.
#[derive(Debug)]
pub struct RouteWatch {
    netns: String,
    events: Arc<Mutex<Vec<RouteEvent>>>,
    failed: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RouteWatch {
    /// Listen in the named namespace (`/run/netns/<netns>`); returns once
    /// the socket is subscribed, so no later change is missed.
    pub fn start(netns: &str) -> Result<RouteWatch> {
        let path = std::path::Path::new("/run/netns").join(netns);
        let events = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let (ev, fl, st) = (events.clone(), failed.clone(), stop.clone());
        let name = netns.to_string();
        let thread = std::thread::spawn(move || {
            let sock = match subscribe(&path) {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            if let Err(e) = listen(&sock, &ev, &st) {
                *fl.lock().unwrap() = Some(format!("route listener in {name}: {e:#}"));
            }
        });
        ready_rx
            .recv()
            .map_err(|_| anyhow!("route listener thread for {netns} died"))??;
        Ok(RouteWatch {
            netns: netns.to_string(),
            events,
            failed,
            stop,
            thread: Some(thread),
        })
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Every event received so far.
    pub fn events(&self) -> Vec<RouteEvent> {
        self.events.lock().unwrap().clone()
    }

    /// When a Manx route to `dst` was first added (or replaced) at or
    /// after `since`: `None` while none was. An error if the listener
    /// failed (its socket overran: events may be missing).
    pub fn first_added(&self, dst: &IpNetwork, since: Instant) -> Result<Option<Instant>> {
        if let Some(e) = self.failed.lock().unwrap().clone() {
            anyhow::bail!(e);
        }
        let events = self.events.lock().unwrap();
        Ok(events
            .iter()
            .find(|e| e.at >= since && !e.deleted && e.dst == *dst)
            .map(|e| e.at))
    }

    /// When the last of `dsts` stopped going via `gateway` after `since`
    /// (deleted, or replaced by a route without it): `None` while one of
    /// them still does. An error if the listener failed (its socket
    /// overran: events may be missing).
    pub fn lost_all(
        &self,
        dsts: &[IpNetwork],
        gateway: IpAddr,
        since: Instant,
    ) -> Result<Option<Instant>> {
        if let Some(e) = self.failed.lock().unwrap().clone() {
            anyhow::bail!(e);
        }
        let events = self.events.lock().unwrap();
        let mut last = since;
        for dst in dsts {
            // The latest event for this destination decides whether it
            // still goes via the gateway; the first one that took it away
            // is when it was lost.
            let mine: Vec<&RouteEvent> = events
                .iter()
                .filter(|e| e.at >= since && e.dst == *dst)
                .collect();
            let via = |e: &RouteEvent| !e.deleted && e.gateways.contains(&gateway);
            match mine.last() {
                Some(e) if !via(e) => {}
                _ => return Ok(None),
            }
            let lost = mine.iter().rev().take_while(|e| !via(e)).last().unwrap();
            last = last.max(lost.at);
        }
        Ok(Some(last))
    }
}

impl Drop for RouteWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Enter the namespace (this thread only) and subscribe to its IPv4 and
/// IPv6 route changes; the socket stays in that namespace.
fn subscribe(netns: &std::path::Path) -> Result<Socket> {
    let f = std::fs::File::open(netns).with_context(|| format!("opening {netns:?}"))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("setns {netns:?}"))?;
    let mut sock = Socket::new(NETLINK_ROUTE).context("netlink socket")?;
    sock.bind(&SocketAddr::new(0, RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE))
        .context("netlink subscribe to RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE")?;
    let opts = socket2::SockRef::from(&sock);
    // Wake up now and then to see the stop flag.
    opts.set_read_timeout(Some(Duration::from_millis(100)))
        .context("SO_RCVTIMEO on the netlink socket")?;
    // Room for a burst (a node's whole table replaced at once).
    let _ = opts.set_recv_buffer_size(4 << 20);
    Ok(sock)
}

fn listen(sock: &Socket, events: &Mutex<Vec<RouteEvent>>, stop: &AtomicBool) -> Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    while !stop.load(Ordering::SeqCst) {
        let n = match sock.recv(&mut &mut buf[..], 0) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // ENOBUFS: the kernel dropped notifications.
            Err(e) => return Err(e).context("netlink recv (events lost)"),
        };
        let at = Instant::now();
        let got = decode(&buf[..n], at);
        events.lock().unwrap().extend(got);
    }
    Ok(())
}

/// The Manx route changes in one datagram.
fn decode(buf: &[u8], at: Instant) -> Vec<RouteEvent> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        if len < 16 || off + len > buf.len() {
            break;
        }
        if let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..off + len]) {
            let (deleted, route) = match &m.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => (false, r),
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(r)) => (true, r),
                _ => {
                    off += (len + 3) & !3;
                    continue;
                }
            };
            if let Some((dst, gateways)) = manx_route(route) {
                out.push(RouteEvent {
                    at,
                    deleted,
                    dst,
                    gateways,
                });
            }
        }
        off += (len + 3) & !3;
    }
    out
}

fn addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Destination and next hops of a protocol-77 route.
fn manx_route(m: &RouteMessage) -> Option<(IpNetwork, Vec<IpAddr>)> {
    if u8::from(m.header.protocol) != MANX_PROTO {
        return None;
    }
    let mut dst = None;
    let mut gateways = Vec::new();
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = addr(d),
            RouteAttribute::Gateway(g) => gateways.extend(addr(g)),
            RouteAttribute::MultiPath(hops) => {
                for h in hops {
                    for a in &h.attributes {
                        if let RouteAttribute::Gateway(g) = a {
                            gateways.extend(addr(g));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let dst = dst.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    Some((
        IpNetwork::new(dst, m.header.destination_prefix_length).ok()?,
        gateways,
    ))
}

/// How long [`RouteWatch::lost_all`] is polled between looks (the time
/// itself comes from the event).
pub const LOOK_EVERY: Duration = Duration::from_millis(5);

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(at: Instant, deleted: bool, dst: &str, gw: &[&str]) -> RouteEvent {
        RouteEvent {
            at,
            deleted,
            dst: dst.parse().unwrap(),
            gateways: gw.iter().map(|g| g.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn first_added_is_the_first_addition_since_the_trial() {
        let t0 = Instant::now();
        let t = |ms| t0 + Duration::from_millis(ms);
        let w = RouteWatch {
            netns: "x".into(),
            events: Arc::new(Mutex::new(vec![
                ev(
                    t0 - Duration::from_secs(1),
                    false,
                    "10.70.0.5/32",
                    &["172.30.0.12"],
                ),
                ev(t(10), true, "10.70.0.5/32", &[]),
                ev(t(20), false, "10.70.0.6/32", &["172.30.0.12"]),
                ev(t(30), false, "10.70.0.5/32", &["172.30.0.12"]),
                ev(t(40), false, "10.70.0.5/32", &["172.30.0.13"]),
                ev(t(50), false, "fd70::5/128", &["fd30::12"]),
            ])),
            failed: Arc::new(Mutex::new(None)),
            stop: Arc::new(AtomicBool::new(true)),
            thread: None,
        };
        let dst: IpNetwork = "10.70.0.5/32".parse().unwrap();
        assert_eq!(w.first_added(&dst, t0).unwrap(), Some(t(30)));
        assert_eq!(w.first_added(&dst, t(41)).unwrap(), None);
        let v6: IpNetwork = "fd70::5/128".parse().unwrap();
        assert_eq!(w.first_added(&v6, t0).unwrap(), Some(t(50)));
        *w.failed.lock().unwrap() = Some("overran".into());
        assert!(w.first_added(&dst, t0).is_err());
    }

    #[test]
    fn lost_all_waits_for_every_destination_and_takes_the_last_loss() {
        let t0 = Instant::now();
        let t = |ms| t0 + Duration::from_millis(ms);
        let w = RouteWatch {
            netns: "x".into(),
            events: Arc::new(Mutex::new(vec![
                // Before the trial: ignored.
                ev(
                    t0 - Duration::from_secs(1),
                    true,
                    "10.0.1.0/26",
                    &["172.30.0.13"],
                ),
                ev(t(100), true, "10.0.1.0/26", &["172.30.0.13"]),
            ])),
            failed: Arc::new(Mutex::new(None)),
            stop: Arc::new(AtomicBool::new(true)),
            thread: None,
        };
        let gw: IpAddr = "172.30.0.13".parse().unwrap();
        let dsts: Vec<IpNetwork> = vec![
            "10.0.1.0/26".parse().unwrap(),
            "10.0.2.0/26".parse().unwrap(),
        ];
        assert_eq!(
            w.lost_all(&dsts, gw, t0).unwrap(),
            None,
            "10.0.2.0/26 not lost yet"
        );
        // Replaced by a route via another node: lost too.
        w.events
            .lock()
            .unwrap()
            .push(ev(t(250), false, "10.0.2.0/26", &["172.30.0.12"]));
        assert_eq!(w.lost_all(&dsts, gw, t0).unwrap(), Some(t(250)));
        // Back via the gateway: not lost any more.
        w.events
            .lock()
            .unwrap()
            .push(ev(t(400), false, "10.0.2.0/26", &["172.30.0.13"]));
        assert_eq!(w.lost_all(&dsts, gw, t0).unwrap(), None);
        *w.failed.lock().unwrap() = Some("overran".into());
        assert!(w.lost_all(&dsts, gw, t0).is_err());
    }
}

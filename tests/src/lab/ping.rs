//! Pod-to-pod reachability, probed in parallel: one thread per source pod
//! enters the pod's network namespace (`setns`, which moves only that
//! thread) and sends ICMP echo requests to all its targets from one raw
//! socket per family (ICMPv6 echo to the IPv6 addresses), resending to the silent ones every 200 ms until they answer or
//! the timeout passes. A 100-pod full matrix is 100 threads, not 9,900
//! `ping` processes one after another.
//!
//! [`PingPlan::Sample`] bounds the work at scale: every pod to `k` others
//! spread over the cluster, plus one pod pair for each pair of nodes (so
//! every node's routes to every other node's blocks are exercised once).
//! A pod pair is pinged once per family both pods have: a dual-stack pair
//! is two probes, the IPv6 one reported as `<pod> (IPv6)`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{LabPod, LabState, runtime};
use crate::netns::wait_for;

/// Which pod pairs to ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingPlan {
    /// Every pod from every other pod: P(P-1) pairs.
    Full,
    /// Every pod to `k` others spread over the cluster, plus one pair per
    /// pair of nodes: at most P*k + N(N-1)/2 pairs.
    Sample { k: usize },
}

/// A result of pinging pod pairs: (source pod, destination pod), the
/// destination named `<pod> (IPv6)` for the IPv6 probe of a pair.
#[derive(Debug, Default)]
pub struct PingMatrix {
    pub ok: Vec<(String, String)>,
    pub failed: Vec<(String, String)>,
}

/// Most threads probing at once (each mostly waits on its socket).
const MAX_THREADS: usize = 64;

/// The (source, destination) pod indices `plan` pings, sorted, no pod to
/// itself.
pub fn ping_pairs(pods: &[LabPod], plan: PingPlan) -> Vec<(usize, usize)> {
    let n = pods.len();
    let mut pairs = BTreeSet::new();
    match plan {
        PingPlan::Full => {
            for a in 0..n {
                for b in (0..n).filter(|&b| b != a) {
                    pairs.insert((a, b));
                }
            }
        }
        PingPlan::Sample { k } => {
            if n >= 2 {
                // k targets at even strides round the list of the others.
                let k = k.min(n - 1);
                for a in 0..n {
                    for m in 0..k {
                        let off = 1 + m * (n - 1) / k;
                        pairs.insert((a, (a + off) % n));
                    }
                }
            }
            // One pod pair per node pair, the pod chosen by the pair so
            // that different pods of a node get used.
            let mut by_node: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
            for (i, p) in pods.iter().enumerate() {
                by_node.entry(&p.node).or_default().push(i);
            }
            let nodes: Vec<&Vec<usize>> = by_node.values().collect();
            for (u, pu) in nodes.iter().enumerate() {
                for (v, pv) in nodes.iter().enumerate().skip(u + 1) {
                    let (a, b) = (pu[(u + v) % pu.len()], pv[(u + v) % pv.len()]);
                    // Alternate the direction.
                    pairs.insert(if (u + v) % 2 == 0 { (a, b) } else { (b, a) });
                }
            }
        }
    }
    pairs.into_iter().collect()
}

/// Ping the pairs of `plan` (waiting up to `timeout` for each pair's route
/// to appear), in parallel.
pub fn ping(state: &LabState, plan: PingPlan, timeout: Duration) -> PingMatrix {
    let pods = &state.pods;
    // Per source: (destination pod, its address), one per family both have.
    let mut by_src: BTreeMap<usize, Vec<(usize, IpAddr)>> = BTreeMap::new();
    for (a, b) in ping_pairs(pods, plan) {
        let from = pods[a].addrs();
        for ip in pods[b].addrs() {
            if from.iter().any(|f| f.is_ipv4() == ip.is_ipv4()) {
                by_src.entry(a).or_default().push((b, ip));
            }
        }
    }
    let work = Mutex::new(by_src.into_iter().collect::<Vec<_>>());
    let results = Mutex::new(Vec::new());
    let threads = work.lock().unwrap().len().clamp(1, MAX_THREADS);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let Some((a, targets)) = work.lock().unwrap().pop() else {
                        return;
                    };
                    let ips: Vec<IpAddr> = targets.iter().map(|t| t.1).collect();
                    let answered = probe_from(state, &pods[a], &ips, timeout);
                    let mut r = results.lock().unwrap();
                    for ((b, ip), ok) in targets.into_iter().zip(answered) {
                        r.push((a, b, ip.is_ipv6(), ok));
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort();
    let mut m = PingMatrix::default();
    for (a, b, v6, ok) in results {
        let dst = if v6 {
            format!("{} (IPv6)", pods[b].name)
        } else {
            pods[b].name.clone()
        };
        let pair = (pods[a].name.clone(), dst);
        if ok {
            m.ok.push(pair)
        } else {
            m.failed.push(pair)
        }
    }
    m
}

/// Every pod from every other pod (see [`ping`]).
pub fn ping_all(state: &LabState, timeout: Duration) -> PingMatrix {
    ping(state, PingPlan::Full, timeout)
}

/// Which of `targets` (pod addresses) answer `src`.
fn probe_from(state: &LabState, src: &LabPod, targets: &[IpAddr], timeout: Duration) -> Vec<bool> {
    let ips: Vec<Option<IpAddr>> = targets.iter().copied().map(Some).collect();
    let path = if src.container {
        src.pid
            .map(|pid| PathBuf::from(format!("/proc/{pid}/ns/net")))
    } else {
        Some(PathBuf::from("/run/netns").join(&src.netns))
    };
    if let Some(path) = path.filter(|p| p.exists())
        && let Ok(r) = probe(&path, &ips, timeout)
    {
        return r;
    }
    // A container whose namespace this process cannot enter: its runtime's
    // exec, one pair at a time.
    ips.iter()
        .map(|ip| {
            ip.is_some_and(|ip| {
                wait_for(&format!("{} -> {ip}", src.name), timeout, || {
                    Ok(runtime::ping(state, src, &ip.to_string())?.then_some(()))
                })
                .is_ok()
            })
        })
        .collect()
}

/// From inside the network namespace at `netns`, which of `targets` answer
/// an ICMP (ICMPv6) echo within `timeout` (a `None` target never does).
pub fn probe(
    netns: &std::path::Path,
    targets: &[Option<IpAddr>],
    timeout: Duration,
) -> Result<Vec<bool>> {
    let netns = netns.to_path_buf();
    let targets = targets.to_vec();
    // A thread of its own: setns moves the calling thread only, and this
    // one ends with the probe.
    std::thread::spawn(move || -> Result<Vec<bool>> {
        let f = std::fs::File::open(&netns).with_context(|| format!("opening {netns:?}"))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("setns {netns:?}"))?;
        echo_all(&targets, timeout)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("ping thread panicked"))?
}

/// A raw ICMP socket of one family, if any target is of that family.
fn icmp_socket(targets: &[Option<IpAddr>], v6: bool) -> Result<Option<Socket>> {
    if !targets.iter().flatten().any(|t| t.is_ipv6() == v6) {
        return Ok(None);
    }
    let sock = if v6 {
        // The kernel computes ICMPv6 checksums on raw ICMPv6 sockets.
        Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
            .context("raw ICMPv6 socket (needs root)")?
    } else {
        Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
            .context("raw ICMP socket (needs root)")?
    };
    sock.set_read_timeout(Some(Duration::from_millis(10)))?;
    Ok(Some(sock))
}

fn echo_all(targets: &[Option<IpAddr>], timeout: Duration) -> Result<Vec<bool>> {
    let socks = [icmp_socket(targets, false)?, icmp_socket(targets, true)?];
    // The thread's id keeps concurrent probes in one namespace apart.
    let ident = (std::process::id() as u16) ^ (nix::unistd::gettid().as_raw() as u16);
    let mut answered: Vec<bool> = vec![false; targets.len()];
    let deadline = Instant::now() + timeout;
    let mut next_send = Instant::now();
    let mut buf = [0u8; 1500];
    loop {
        let pending = targets
            .iter()
            .zip(&answered)
            .any(|(t, a)| t.is_some() && !a);
        if !pending || Instant::now() >= deadline {
            return Ok(answered);
        }
        if Instant::now() >= next_send {
            for (seq, t) in targets.iter().enumerate() {
                if let Some(ip) = t
                    && !answered[seq]
                {
                    let (sock, pkt) = match ip {
                        IpAddr::V4(_) => (&socks[0], echo_request(ident, seq as u16)),
                        IpAddr::V6(v6) => (&socks[1], echo_request_v6(ident, seq as u16, *v6)),
                    };
                    // An unreachable destination is a failed probe, not an error.
                    if let Some(sock) = sock {
                        let _ = sock.send_to(&pkt, &SockAddr::from(SocketAddr::new(*ip, 0)));
                    }
                }
            }
            next_send = Instant::now() + Duration::from_millis(200);
        }
        for (v6, sock) in socks.iter().enumerate() {
            let Some(sock) = sock else { continue };
            match (&*sock).read(&mut buf) {
                Ok(len) => {
                    let pkt = &buf[..len];
                    let reply = if v6 == 1 {
                        parse_echo_reply_v6(pkt).map(|(to, id, seq)| (IpAddr::V6(to), id, seq))
                    } else {
                        parse_echo_reply(pkt).map(|(f, id, seq)| (IpAddr::V4(f), id, seq))
                    };
                    if let Some((from, id, seq)) = reply
                        && id == ident
                        && let Some(Some(ip)) = targets.get(seq as usize)
                        && *ip == from
                    {
                        answered[seq as usize] = true;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e).context("receiving ICMP"),
            }
        }
    }
}

/// An ICMP echo request: type 8, code 0, checksum, identifier, sequence,
/// eight bytes of payload.
pub fn echo_request(ident: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"manx-lab");
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// The source, identifier and sequence of an IPv4 packet carrying an ICMP
/// echo reply with a valid checksum.
pub fn parse_echo_reply(pkt: &[u8]) -> Option<(Ipv4Addr, u16, u16)> {
    let ihl = usize::from(*pkt.first()? & 0x0f) * 4;
    if pkt.len() < ihl + 8 || pkt[0] >> 4 != 4 || pkt[9] != 1 {
        return None;
    }
    let icmp = &pkt[ihl..];
    if icmp[0] != 0 || icmp[1] != 0 || checksum(icmp) != 0 {
        return None;
    }
    let from = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let id = u16::from_be_bytes([icmp[4], icmp[5]]);
    let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
    Some((from, id, seq))
}

/// An ICMPv6 echo request (RFC 4443 §4.1): type 128, code 0, checksum 0
/// (the kernel fills it in on a raw ICMPv6 socket), identifier, sequence,
/// and as payload `manx-lab` and the address it is sent to. A raw ICMPv6
/// socket receives no IPv6 header, so the reply's echoed payload is what
/// says whom it came from.
pub fn echo_request_v6(ident: u16, seq: u16, to: Ipv6Addr) -> Vec<u8> {
    let mut p = vec![128, 0, 0, 0];
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"manx-lab");
    p.extend_from_slice(&to.octets());
    p
}

/// The address (from the echoed payload), identifier and sequence of an
/// ICMPv6 echo reply (type 129) answering [`echo_request_v6`].
pub fn parse_echo_reply_v6(icmp: &[u8]) -> Option<(Ipv6Addr, u16, u16)> {
    if icmp.len() < 32 || icmp[0] != 129 || icmp[1] != 0 || &icmp[8..16] != b"manx-lab" {
        return None;
    }
    let to: [u8; 16] = icmp[16..32].try_into().ok()?;
    let id = u16::from_be_bytes([icmp[4], icmp[5]]);
    let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
    Some((Ipv6Addr::from(to), id, seq))
}

/// The Internet checksum (RFC 1071).
fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(nodes: usize, per_node: usize) -> Vec<LabPod> {
        let mut v = Vec::new();
        for n in 1..=nodes {
            for p in 1..=per_node {
                v.push(LabPod {
                    name: format!("node{n}-p{p}"),
                    node: format!("node{n}"),
                    netns: format!("mxlab-t-node{n}-p{p}"),
                    ip: format!("10.65.{n}.{p}"),
                    ips: vec![],
                    container: false,
                    pid: None,
                });
            }
        }
        v
    }

    #[test]
    fn full_plan_is_every_ordered_pair() {
        let p = pods(3, 2);
        let pairs = ping_pairs(&p, PingPlan::Full);
        assert_eq!(pairs.len(), 6 * 5);
        assert!(pairs.iter().all(|(a, b)| a != b));
    }

    #[test]
    fn sample_is_bounded_and_covers_every_node_pair() {
        for (nodes, per_node, k) in [(50, 1, 3), (100, 2, 3), (5, 3, 2), (2, 1, 5)] {
            let p = pods(nodes, per_node);
            let pairs = ping_pairs(&p, PingPlan::Sample { k });
            let n = p.len();
            assert!(
                pairs.len() <= n * k + nodes * (nodes - 1) / 2,
                "{nodes} nodes: {} pairs",
                pairs.len()
            );
            assert!(pairs.iter().all(|(a, b)| a != b));
            // Every pod pings k others (fewer only if there are fewer).
            for a in 0..n {
                let out = pairs.iter().filter(|(x, _)| *x == a).count();
                assert!(out >= k.min(n - 1), "pod {a} pings {out}");
            }
            // Every pair of nodes is joined by one pinged pod pair.
            for u in 1..=nodes {
                for v in (u + 1)..=nodes {
                    let (nu, nv) = (format!("node{u}"), format!("node{v}"));
                    assert!(
                        pairs.iter().any(|&(a, b)| {
                            (p[a].node == nu && p[b].node == nv)
                                || (p[a].node == nv && p[b].node == nu)
                        }),
                        "{nu}-{nv} not covered"
                    );
                }
            }
        }
        // 100 nodes: far below the 9,900 pairs of the full matrix.
        let p = pods(100, 1);
        assert!(ping_pairs(&p, PingPlan::Sample { k: 3 }).len() < 5300);
    }

    #[test]
    fn icmpv6_echo_reply_names_the_address_it_answers_for() {
        let to: Ipv6Addr = "fd65::1:2".parse().unwrap();
        let req = echo_request_v6(0x1234, 7, to);
        assert_eq!(req[0], 128);
        // The reply echoes identifier, sequence and payload (RFC 4443 §4.2).
        let mut reply = req.clone();
        reply[0] = 129;
        assert_eq!(parse_echo_reply_v6(&reply), Some((to, 0x1234, 7)));
        // Our own request (looped back) or a neighbour solicitation is not one.
        assert_eq!(parse_echo_reply_v6(&req), None);
        let mut ns = reply.clone();
        ns[0] = 135;
        assert_eq!(parse_echo_reply_v6(&ns), None);
    }

    #[test]
    fn echo_request_and_reply_round_trip() {
        let req = echo_request(0x1234, 7);
        assert_eq!(checksum(&req), 0);
        assert_eq!(req[0], 8);
        // The reply a host sends: type 0, same id/seq/payload, in IPv4.
        let mut icmp = req.clone();
        icmp[0] = 0;
        icmp[2] = 0;
        icmp[3] = 0;
        let c = checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let mut pkt = vec![
            0x45, 0, 0, 36, 0, 0, 0, 0, 64, 1, 0, 0, 10, 65, 2, 1, 10, 65, 1, 1,
        ];
        pkt.extend_from_slice(&icmp);
        assert_eq!(
            parse_echo_reply(&pkt),
            Some((Ipv4Addr::new(10, 65, 2, 1), 0x1234, 7))
        );
        // A corrupt checksum or a request (our own, looped back) is not a reply.
        let mut bad = pkt.clone();
        bad[30] ^= 1;
        assert_eq!(parse_echo_reply(&bad), None);
        let mut echo = pkt.clone();
        echo[20] = 8;
        assert_eq!(parse_echo_reply(&echo), None);
    }
}

//! A worker's send side: TUN reads into preallocated slots, each read cut into datagrams
//! (a TSO/USO packet from an `IFF_VNET_HDR` queue into MSS-sized ones, [`offload::split`]),
//! and the datagrams grouped into UDP GSO sends (`UDP_SEGMENT`): a run of equal-sized
//! datagrams to one node, the last possibly shorter, goes as one `sendmmsg` entry and one
//! trip through the UDP/IP stack. A cut datagram is two iovecs (its headers in the
//! scratch, its payload in the read slot), so the payload is copied only by the kernel.
//!
//! ```text
//!   read slot 0: [vnet hdr][IP|TCP|   payload 0   |   payload 1   | .. ]   (≤ 64 KiB)
//!   scratch:     [IP|TCP 0][IP|TCP 1] ..                 (headers of each segment)
//!   iovecs:      hdr0 pay0 hdr1 pay1 ..  ──► one mmsghdr, UDP_SEGMENT = |hdr|+MSS
//! ```
#![allow(unsafe_code)]

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use super::offload::{self, F_NEEDS_CSUM, GSO_NONE, OffloadError, SEG_HDR_ROOM, Segment, VnetHdr};
use super::sys;

/// TUN reads held for one flush.
pub const READS: usize = 32;
/// Bytes per read slot: a `virtio_net_hdr` and the largest IPv4 packet.
pub const READ_SLOT: usize = offload::VNET_HDR_LEN + 65_535;
/// Segment headers, datagrams and groups per flush.
const SEGS: usize = 2048;
/// Bytes queued before a flush: a couple of 64 KiB TSO reads. More makes the first
/// read's datagrams wait for the later reads and the receiver idle meanwhile.
const FLUSH_BYTES: usize = 128 * 1024;
/// Datagrams one read may become: a 64 KiB TSO packet at the kernel's smallest MSS (88)
/// is 745; a USO packet is at most 128 (UDP_MAX_SEGMENTS).
const MAX_SEGS_PER_READ: usize = 768;

/// What became of one TUN read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Queued as this many datagrams.
    Queued(usize),
    /// Not IPv4, or no block of ours covers the destination.
    NoOwner,
    /// An offload packet that could not be cut or checksummed.
    Malformed(OffloadError),
}

/// Datagrams to one node of one size, sent as one GSO message.
#[derive(Debug, Default, Clone, Copy)]
struct Group {
    dst: u32,
    size: usize,
    count: usize,
    bytes: usize,
    /// A shorter datagram ended it.
    closed: bool,
    iov: usize,
    niov: usize,
}

/// The send side of one worker; everything allocated once.
pub struct TxPath {
    vnet: bool,
    gso: bool,
    port: u16,
    reads: Vec<u8>,
    used: usize,
    scratch: Vec<u8>,
    nseg: usize,
    segs: Vec<Segment>,
    iov: Vec<libc::iovec>,
    niov: usize,
    groups: Vec<Group>,
    ngroups: usize,
    bytes: usize,
    msgs: Vec<libc::mmsghdr>,
    addr: Vec<libc::sockaddr_in>,
    ctrl: Vec<[u64; 4]>,
}

// SAFETY: the raw pointers in `iov` and `msgs` point into this TxPath's own heap buffers,
// which move with it; a TxPath is used by one thread at a time.
unsafe impl Send for TxPath {}

impl std::fmt::Debug for TxPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxPath")
            .field("vnet", &self.vnet)
            .field("gso", &self.gso)
            .field("used", &self.used)
            .finish()
    }
}

impl TxPath {
    /// The send side for a queue with (`vnet`) or without a `virtio_net_hdr` on its
    /// reads, sending GSO groups if `gso`, to UDP `port`.
    pub fn new(vnet: bool, gso: bool, port: u16) -> TxPath {
        TxPath {
            vnet,
            gso,
            port,
            reads: vec![0; READS * READ_SLOT],
            used: 0,
            scratch: vec![0; SEGS * SEG_HDR_ROOM],
            nseg: 0,
            segs: vec![Segment::default(); MAX_SEGS_PER_READ],
            // SAFETY (all three): these C structs are plain data; all-zero is valid.
            iov: vec![unsafe { std::mem::zeroed() }; 2 * SEGS],
            niov: 0,
            groups: vec![Group::default(); SEGS],
            ngroups: 0,
            bytes: 0,
            msgs: vec![unsafe { std::mem::zeroed() }; SEGS],
            addr: vec![unsafe { std::mem::zeroed() }; SEGS],
            ctrl: vec![[0; 4]; SEGS],
        }
    }

    /// Whether GSO sends are on (a kernel refusing one turns them off).
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Whether another read fits before a flush.
    pub fn has_room(&self) -> bool {
        self.used < READS
            && self.bytes < FLUSH_BYTES
            && self.nseg + MAX_SEGS_PER_READ <= SEGS
            && self.ngroups + MAX_SEGS_PER_READ <= SEGS
            && self.niov + 2 * MAX_SEGS_PER_READ <= self.iov.len()
    }

    /// The buffer for the next TUN read (call [`TxPath::has_room`] first).
    pub fn slot(&mut self) -> &mut [u8] {
        let at = self.used * READ_SLOT;
        &mut self.reads[at..at + READ_SLOT]
    }

    /// Take the `len` bytes just read into [`TxPath::slot`]: find the owner of its
    /// destination, cut or finish it, and queue its datagrams for the next flush.
    pub fn commit(
        &mut self,
        len: usize,
        mut owner: impl FnMut(Ipv4Addr) -> Option<Ipv4Addr>,
    ) -> Outcome {
        let at = self.used * READ_SLOT;
        let (h, start) = if self.vnet {
            match VnetHdr::parse(&self.reads[at..at + len.min(READ_SLOT)]) {
                Some(h) => (h, at + offload::VNET_HDR_LEN),
                None => return Outcome::Malformed(OffloadError::Malformed("short read")),
            }
        } else {
            (VnetHdr::default(), at)
        };
        let end = at + len.min(READ_SLOT);
        let Some(dst) = offload::ipv4_dst(&self.reads[start..end]).and_then(&mut owner) else {
            return Outcome::NoOwner;
        };
        let queued = if h.gso_type != GSO_NONE {
            let n = match offload::split(
                &h,
                &self.reads[start..end],
                &mut self.scratch[self.nseg * SEG_HDR_ROOM..],
                &mut self.segs,
            ) {
                Ok(n) => n,
                Err(e) => return Outcome::Malformed(e),
            };
            for i in 0..n {
                let s = self.segs[i];
                let hdr = self.scratch[self.nseg * SEG_HDR_ROOM + s.header..].as_ptr();
                let pay = self.reads[start + s.payload..].as_ptr();
                self.push(dst, &[(hdr, s.header_len), (pay, s.payload_len)]);
            }
            self.nseg += n;
            n
        } else {
            if h.flags & F_NEEDS_CSUM != 0
                && let Err(e) = offload::finish_checksum(&h, &mut self.reads[start..end])
            {
                return Outcome::Malformed(e);
            }
            let p = self.reads[start..].as_ptr();
            self.push(dst, &[(p, end - start)]);
            1
        };
        self.used += 1;
        Outcome::Queued(queued)
    }

    /// Queue one datagram of `parts`: into the last group if it goes to the same node and
    /// fits, else as a new group.
    fn push(&mut self, dst: Ipv4Addr, parts: &[(*const u8, usize)]) {
        let size: usize = parts.iter().map(|p| p.1).sum();
        let d = u32::from(dst);
        let joins = self.gso && self.ngroups > 0 && self.groups[self.ngroups - 1].joins(d, size);
        if !joins {
            self.groups[self.ngroups] = Group {
                dst: d,
                size,
                iov: self.niov,
                ..Group::default()
            };
            self.ngroups += 1;
        }
        let g = &mut self.groups[self.ngroups - 1];
        for &(base, len) in parts {
            self.iov[self.niov] = libc::iovec {
                iov_base: base as *mut libc::c_void,
                iov_len: len,
            };
            self.niov += 1;
            g.niov += 1;
        }
        g.count += 1;
        g.bytes += size;
        self.bytes += size;
        g.closed = size < g.size;
    }

    /// Send everything queued, one `sendmmsg` (as many calls as it takes), and free the
    /// slots. A datagram the kernel refuses (no route to that node, say) is skipped; a
    /// kernel or route that refuses GSO turns it off and gets one datagram each.
    /// Returns (datagrams sent, refused).
    pub fn flush(&mut self, fd: RawFd) -> (usize, usize) {
        for k in 0..self.ngroups {
            let g = self.groups[k];
            self.addr[k] = sys::sockaddr(Ipv4Addr::from(g.dst), self.port);
            let m = &mut self.msgs[k].msg_hdr;
            m.msg_name = &mut self.addr[k] as *mut libc::sockaddr_in as *mut libc::c_void;
            m.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            m.msg_iov = &mut self.iov[g.iov];
            m.msg_iovlen = g.niov;
            m.msg_flags = 0;
            if g.count > 1 {
                m.msg_control = self.ctrl[k].as_mut_ptr() as *mut libc::c_void;
                // SAFETY: CMSG_SPACE(2) (24) fits the 32-byte buffer of group k.
                unsafe { sys::put_segment_cmsg(m, g.size as u16) };
            } else {
                m.msg_control = std::ptr::null_mut();
                m.msg_controllen = 0;
            }
        }
        let (mut done, mut sent, mut refused) = (0, 0, 0);
        while done < self.ngroups {
            // SAFETY: msgs[done..ngroups] are initialised mmsghdrs pointing into our
            // buffers (slots, scratch, iovecs, addresses, cmsgs), unchanged since above.
            let rc = unsafe {
                libc::sendmmsg(
                    fd,
                    self.msgs[done..].as_mut_ptr(),
                    (self.ngroups - done) as u32,
                    0,
                )
            };
            if rc > 0 {
                let rc = rc as usize;
                sent += self.groups[done..done + rc]
                    .iter()
                    .map(|g| g.count)
                    .sum::<usize>();
                done += rc;
                continue;
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            let g = self.groups[done];
            if g.count > 1 && matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL)) {
                // EIO: the route's device cannot checksum a GSO send; EINVAL: no
                // UDP_SEGMENT, or a segment larger than the path MTU.
                tracing::info!(error = %e, "UDP GSO refused: sending one datagram per packet");
                self.gso = false;
                let (s, r) = self.send_singly(fd, done);
                sent += s;
                refused += r;
            } else {
                refused += g.count;
            }
            done += 1;
        }
        self.used = 0;
        self.nseg = 0;
        self.niov = 0;
        self.ngroups = 0;
        self.bytes = 0;
        (sent, refused)
    }

    /// Send group `k`'s datagrams one `sendmsg` each: its iovecs cut where their lengths
    /// add up to the group's datagram size.
    fn send_singly(&mut self, fd: RawFd, k: usize) -> (usize, usize) {
        let g = self.groups[k];
        let (mut sent, mut refused) = (0, 0);
        let mut i = g.iov;
        let end = g.iov + g.niov;
        while i < end {
            let (mut j, mut bytes) = (i, 0);
            while j < end && bytes < g.size {
                bytes += self.iov[j].iov_len;
                j += 1;
            }
            let mut m = self.msgs[k].msg_hdr;
            m.msg_iov = &mut self.iov[i];
            m.msg_iovlen = j - i;
            m.msg_control = std::ptr::null_mut();
            m.msg_controllen = 0;
            // SAFETY: `m` points at our address and iovecs i..j, all initialised.
            if unsafe { libc::sendmsg(fd, &m, 0) } < 0 {
                refused += 1;
            } else {
                sent += 1;
            }
            i = j;
        }
        (sent, refused)
    }
}

impl Group {
    fn joins(&self, dst: u32, size: usize) -> bool {
        self.dst == dst
            && !self.closed
            && size <= self.size
            && self.count < sys::GSO_MAX_SEGMENTS
            && self.bytes + size <= sys::GSO_MAX_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn ipv4(len: usize, fill: u8) -> Vec<u8> {
        let mut p = vec![fill; len];
        p[0] = 0x45;
        p[16..20].copy_from_slice(&[10, 65, 9, 9]);
        p
    }

    fn receiver() -> (std::net::UdpSocket, u16) {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let port = rx.local_addr().unwrap().port();
        (rx, port)
    }

    /// A GSO send of a run to one address arrives as separate datagrams of the run's
    /// sizes (the kernel cuts it; 127.0.0.1 only), and a run breaks at another size.
    #[test]
    fn gso_runs_arrive_as_separate_datagrams() {
        let (rx, port) = receiver();
        let tx = sys::udp_socket(0, 1 << 20).unwrap();
        let mut t = TxPath::new(false, true, port);
        let sizes = [100, 100, 100, 100, 40, 300, 300];
        for (i, len) in sizes.iter().enumerate() {
            let p = ipv4(*len, i as u8);
            t.slot()[..*len].copy_from_slice(&p);
            assert_eq!(
                t.commit(*len, |_| Some(Ipv4Addr::LOCALHOST)),
                Outcome::Queued(1)
            );
        }
        assert_eq!(t.ngroups, 2, "100 x4 + 40 | 300 x2");
        assert_eq!(t.flush(tx.as_raw_fd()), (sizes.len(), 0));
        let mut buf = [0u8; 4096];
        let got: Vec<(usize, u8)> = (0..sizes.len())
            .map(|_| {
                let n = rx.recv(&mut buf).unwrap();
                (n, buf[1])
            })
            .collect();
        let want: Vec<(usize, u8)> = sizes
            .iter()
            .enumerate()
            .map(|(i, l)| (*l, i as u8))
            .collect();
        assert_eq!(got, want);
        assert!(t.has_room());
    }

    /// A TSO packet read with its virtio_net_hdr goes out as MSS-sized IPv4 packets, each
    /// with valid checksums, through one GSO send of two iovecs per datagram.
    #[test]
    fn a_tso_read_goes_out_as_checksummed_segments() {
        let (rx, port) = receiver();
        let tx = sys::udp_socket(0, 1 << 20).unwrap();
        let mut t = TxPath::new(true, true, port);
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let mut pkt = ipv4(52, 0);
        pkt[9] = 6;
        pkt[32] = 8 << 4;
        pkt[33] = 0x18;
        pkt.extend_from_slice(&payload);
        let len = pkt.len() as u16;
        pkt[2..4].copy_from_slice(&len.to_be_bytes());
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: offload::GSO_TCPV4,
            hdr_len: 52,
            gso_size: 1400,
            csum_start: 20,
            csum_offset: 16,
        };
        let slot = t.slot();
        slot[..10].copy_from_slice(&h.encode());
        slot[10..10 + pkt.len()].copy_from_slice(&pkt);
        assert_eq!(
            t.commit(10 + pkt.len(), |_| Some(Ipv4Addr::LOCALHOST)),
            Outcome::Queued(4)
        );
        assert_eq!(t.flush(tx.as_raw_fd()), (4, 0));
        let mut buf = [0u8; 4096];
        let mut data = Vec::new();
        for i in 0..4 {
            let n = rx.recv(&mut buf).unwrap();
            let p = &buf[..n];
            assert_eq!(n, 52 + if i == 3 { 800 } else { 1400 });
            assert_eq!(offload::sum(&p[..20], 0), 0xffff, "IPv4 checksum");
            let ps = u32::from(offload::sum(&p[12..20], 0)) + 6 + (n - 20) as u32;
            assert_eq!(offload::sum(&p[20..], ps), 0xffff, "TCP checksum");
            assert_eq!(p[33], if i == 3 { 0x18 } else { 0x10 }, "PSH on the last");
            data.extend_from_slice(&p[52..]);
        }
        assert_eq!(data, payload);
    }

    #[test]
    fn reads_without_an_owner_or_not_ipv4_are_not_queued() {
        let mut t = TxPath::new(false, true, 9);
        let p = ipv4(60, 1);
        t.slot()[..60].copy_from_slice(&p);
        assert_eq!(t.commit(60, |_| None), Outcome::NoOwner);
        t.slot()[0] = 0x60;
        assert_eq!(
            t.commit(60, |_| Some(Ipv4Addr::LOCALHOST)),
            Outcome::NoOwner
        );
        assert_eq!(t.used, 0);
    }
}

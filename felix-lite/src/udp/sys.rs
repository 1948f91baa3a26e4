//! The few syscalls the data path needs that std does not wrap: batched `recvmmsg`
//! receives over preallocated buffers (sends: [`super::tx`]), a `SO_REUSEPORT` UDP
//! socket, `poll`, `flock`.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is a c_int that lives for the call.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

const SOL_UDP: libc::c_int = 17;
/// `UDP_SEGMENT` (Linux 4.18): the datagram size of a GSO send.
const UDP_SEGMENT: libc::c_int = 103;
/// `UDP_GRO` (Linux 5.0): receive coalesced datagrams with their size in a cmsg.
const UDP_GRO: libc::c_int = 104;
/// Room for one cmsg carrying an int.
pub(crate) const CTRL: usize = 32;
/// Bytes of one GSO send at most (an IPv4 datagram's 64 KiB less headers).
pub(crate) const GSO_MAX_BYTES: usize = 65_000;
/// Datagrams of one GSO send at most (the kernel's UDP_MAX_SEGMENTS is 64 or 128).
pub(crate) const GSO_MAX_SEGMENTS: usize = 64;

/// Ask for coalesced receives (`UDP_GRO`); false where the kernel lacks it.
pub fn enable_gro(fd: RawFd) -> bool {
    setsockopt_int(fd, SOL_UDP, UDP_GRO, 1).is_ok()
}

/// Write a `UDP_SEGMENT` cmsg of datagram size `size` into `m.msg_control` and set
/// `msg_controllen`.
///
/// # Safety
/// `m.msg_control` must point at [`CTRL`] writable bytes, 8-byte aligned.
pub(crate) unsafe fn put_segment_cmsg(m: &mut libc::msghdr, size: u16) {
    // SAFETY: the caller's buffer holds CMSG_SPACE(2) (24 bytes).
    unsafe {
        m.msg_controllen = libc::CMSG_SPACE(2) as _;
        let c = libc::CMSG_FIRSTHDR(m);
        (*c).cmsg_level = SOL_UDP;
        (*c).cmsg_type = UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(2) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, size);
    }
}

/// A blocking IPv4 UDP socket bound to `0.0.0.0:port` with `SO_REUSEPORT`, so each worker
/// has its own and the kernel spreads flows over them. Receives use `MSG_DONTWAIT`.
pub fn udp_socket(port: u16, bufsize: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned from here on.
    let fd =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        // FORCE passes net.core.[rw]mem_max with CAP_NET_ADMIN; else the capped request.
        if setsockopt_int(fd, libc::SOL_SOCKET, force, bufsize).is_err() {
            setsockopt_int(fd, libc::SOL_SOCKET, plain, bufsize)?;
        }
    }
    let addr = sockaddr(Ipv4Addr::UNSPECIFIED, port);
    // SAFETY: `addr` is a sockaddr_in of the size passed.
    check(unsafe {
        libc::bind(
            fd,
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })?;
    Ok(sock)
}

pub(crate) fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// `poll` two descriptors for input; returns their `revents`.
pub fn poll2(a: RawFd, b: RawFd, timeout_ms: i32) -> io::Result<(i16, i16)> {
    let mut fds = [
        libc::pollfd {
            fd: a,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: b,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: `fds` is an array of two pollfd.
    match check(unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) }) {
        Ok(_) => Ok((fds[0].revents, fds[1].revents)),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok((0, 0)),
        Err(e) => Err(e),
    }
}

/// Read one packet from `fd` into `buf` (a TUN queue: one packet per read).
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Write one packet to `fd`.
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is readable for its length.
    let n = unsafe { libc::write(fd, buf.as_ptr() as *const libc::c_void, buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Take an exclusive `flock` on `file` without waiting; false if another holds it.
pub fn try_lock(file: &File) -> io::Result<bool> {
    // SAFETY: flock(2) on a descriptor we own.
    match check(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `slots` datagram buffers of `slot` bytes with their iovecs, addresses and `mmsghdr`s,
/// allocated once: the data path allocates nothing per packet.
pub struct Batch {
    slot: usize,
    buf: Vec<u8>,
    iov: Vec<libc::iovec>,
    addr: Vec<libc::sockaddr_in>,
    msgs: Vec<libc::mmsghdr>,
    /// Per-slot control buffers (UDP_GRO / UDP_SEGMENT cmsgs), u64 for alignment.
    ctrl: Vec<[u64; CTRL / 8]>,
}

// SAFETY: the raw pointers in `iov` and `msgs` point into this Batch's own heap buffers,
// which move with it; a Batch is used by one thread at a time.
unsafe impl Send for Batch {}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("slots", &self.msgs.len())
            .field("slot", &self.slot)
            .finish()
    }
}

impl Batch {
    /// A batch of `slots` buffers of `slot` bytes.
    pub fn new(slots: usize, slot: usize) -> Batch {
        let mut b = Batch {
            slot,
            buf: vec![0; slots * slot],
            // SAFETY (all three): these C structs are plain data; all-zero is valid.
            iov: vec![unsafe { std::mem::zeroed() }; slots],
            addr: vec![unsafe { std::mem::zeroed() }; slots],
            msgs: vec![unsafe { std::mem::zeroed() }; slots],
            ctrl: vec![[0; CTRL / 8]; slots],
        };
        let base = b.buf.as_mut_ptr();
        for i in 0..slots {
            // SAFETY: `i * slot` is inside `buf`.
            b.iov[i].iov_base = unsafe { base.add(i * slot) } as *mut libc::c_void;
            b.iov[i].iov_len = slot;
            let h = &mut b.msgs[i].msg_hdr;
            h.msg_iov = &mut b.iov[i];
            h.msg_iovlen = 1;
            h.msg_name = &mut b.addr[i] as *mut libc::sockaddr_in as *mut libc::c_void;
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
        b
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// Whether the batch has no slots.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Datagram `i` as received: its bytes (to rewrite in place), its source, whether it
    /// was truncated, and the size of each datagram in it when the kernel coalesced
    /// several (`UDP_GRO`).
    pub fn received_mut(&mut self, i: usize) -> (&mut [u8], Ipv4Addr, bool, Option<usize>) {
        let m = &self.msgs[i];
        let len = (m.msg_len as usize).min(self.slot);
        let src = Ipv4Addr::from(u32::from_be(self.addr[i].sin_addr.s_addr));
        let truncated = m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let mut gso = None;
        // SAFETY: the kernel wrote `msg_controllen` bytes of cmsgs into our buffer; the
        // CMSG_* macros walk it within that length.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&m.msg_hdr);
            while !c.is_null() {
                if (*c).cmsg_level == SOL_UDP && (*c).cmsg_type == UDP_GRO {
                    let v = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
                    gso = usize::try_from(v).ok().filter(|v| *v > 0);
                }
                c = libc::CMSG_NXTHDR(&m.msg_hdr, c);
            }
        }
        (
            &mut self.buf[i * self.slot..i * self.slot + len],
            src,
            truncated,
            gso,
        )
    }

    /// Receive up to a batch of datagrams without waiting (`recvmmsg`, `MSG_DONTWAIT`).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for i in 0..self.msgs.len() {
            self.iov[i].iov_len = self.slot;
            self.msgs[i].msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            self.msgs[i].msg_hdr.msg_flags = 0;
            self.msgs[i].msg_hdr.msg_control = self.ctrl[i].as_mut_ptr() as *mut libc::c_void;
            self.msgs[i].msg_hdr.msg_controllen = CTRL as _;
        }
        // SAFETY: every mmsghdr points into our buffers, reset above.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                self.msgs.len() as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc as usize)
        }
    }
}

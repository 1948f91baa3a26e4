//! Socket options the standard library and socket2 do not cover:
//! TCP-MD5 signatures (RFC 2385) and the receive side of GTSM (RFC 5082).
//!
//! This is the one module of bgpd with `unsafe`: two `setsockopt(2)` calls on
//! descriptors the caller owns, with structures built and sized here.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

/// `TCP_MD5SIG_MAXKEYLEN` from `<linux/tcp.h>`.
pub const TCP_MD5SIG_MAXKEYLEN: usize = 80;

/// `struct tcp_md5sig` from `<linux/tcp.h>` (the libc crate does not export it).
#[repr(C)]
struct TcpMd5Sig {
    tcpm_addr: libc::sockaddr_storage,
    tcpm_flags: u8,
    tcpm_prefixlen: u8,
    tcpm_keylen: u16,
    tcpm_ifindex: libc::c_int,
    tcpm_key: [u8; TCP_MD5SIG_MAXKEYLEN],
}

/// Errors of [`set_md5_key`].
#[derive(Debug, thiserror::Error)]
pub enum SockoptError {
    /// The password is longer than the kernel accepts.
    #[error("TCP-MD5 password for {peer} is {len} bytes; the kernel accepts at most 80")]
    KeyTooLong {
        /// The peer.
        peer: IpAddr,
        /// Password length.
        len: usize,
    },
    /// The kernel was built without TCP-MD5 (`CONFIG_TCP_MD5SIG`).
    #[error(
        "this kernel has no TCP-MD5 (CONFIG_TCP_MD5SIG is off): peer {peer} has a password and cannot be authenticated; use a kernel with TCP-MD5 or remove the password"
    )]
    NoKernelMd5 {
        /// The peer.
        peer: IpAddr,
    },
    /// The kernel refused the option.
    #[error("setsockopt({option}) for {peer}: {source}")]
    Setsockopt {
        /// Option name.
        option: &'static str,
        /// The peer concerned.
        peer: IpAddr,
        /// The OS error.
        source: io::Error,
    },
}

/// Install (or with `None`, remove) the TCP-MD5 key for `peer` on `socket`:
/// a listener (one key per peer address) or an unconnected outgoing socket
/// (before `connect`). `v6_socket` tells the socket's family: an IPv6
/// socket takes IPv4 peers as v4-mapped addresses.
pub fn set_md5_key(
    socket: &impl AsRawFd,
    v6_socket: bool,
    peer: IpAddr,
    password: Option<&str>,
) -> Result<(), SockoptError> {
    let key = password.unwrap_or("").as_bytes();
    if key.len() > TCP_MD5SIG_MAXKEYLEN {
        return Err(SockoptError::KeyTooLong {
            peer,
            len: key.len(),
        });
    }
    // SAFETY: sockaddr_storage and the other fields are plain integers and
    // byte arrays, for which all-zero is a valid value.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    write_sockaddr(&mut sig.tcpm_addr, peer, v6_socket);
    sig.tcpm_keylen = key.len() as u16;
    sig.tcpm_key[..key.len()].copy_from_slice(key);
    // SAFETY: `sig` is a fully initialised `struct tcp_md5sig` that lives
    // across the call, and we pass its exact size; the fd is borrowed from
    // a live socket.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            (&sig as *const TcpMd5Sig).cast(),
            size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let source = io::Error::last_os_error();
        // Deleting a key that was never set is not an error worth reporting.
        if password.is_none() && source.raw_os_error() == Some(libc::ENOENT) {
            return Ok(());
        }
        if source.raw_os_error() == Some(libc::ENOPROTOOPT) {
            return Err(SockoptError::NoKernelMd5 { peer });
        }
        return Err(SockoptError::Setsockopt {
            option: "TCP_MD5SIG",
            peer,
            source,
        });
    }
    Ok(())
}

/// Whether this kernel does TCP-MD5 at all: a key set on a throwaway
/// socket (asked once per process).
pub fn md5_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let Ok(sock) = std::net::TcpListener::bind("127.0.0.1:0") else {
            return true; // cannot tell: let the real install decide
        };
        !matches!(
            set_md5_key(
                &sock,
                false,
                "127.0.0.2".parse().expect("address"),
                Some("probe")
            ),
            Err(SockoptError::NoKernelMd5 { .. })
        )
    })
}

fn write_sockaddr(storage: &mut libc::sockaddr_storage, addr: IpAddr, v6_socket: bool) {
    let addr = match (addr, v6_socket) {
        (IpAddr::V4(v4), true) => IpAddr::V6(v4.to_ipv6_mapped()),
        (other, _) => other,
    };
    match SocketAddr::new(addr, 0) {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for every
            // sockaddr type; we write one whole sockaddr_in at its start.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin) };
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin6) };
        }
    }
}

/// GTSM receive check (RFC 5082 §3): drop segments whose TTL (hop limit) is
/// below `min`, i.e. that come from more than 255 − min hops away.
pub fn set_min_ttl(
    socket: &impl AsRawFd,
    v6_socket: bool,
    min: u8,
    peer: IpAddr,
) -> Result<(), SockoptError> {
    let (level, option, name) = if v6_socket {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MINHOPCOUNT,
            "IPV6_MINHOPCOUNT",
        )
    } else {
        (libc::IPPROTO_IP, libc::IP_MINTTL, "IP_MINTTL")
    };
    let value: libc::c_int = min.into();
    // SAFETY: an int option passed by pointer with its exact size; the fd
    // is borrowed from a live socket.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(SockoptError::Setsockopt {
            option: name,
            peer,
            source: io::Error::last_os_error(),
        });
    }
    // A v6 socket may carry v4-mapped traffic: set the IPv4 option too, best effort.
    if v6_socket && peer.is_ipv4() {
        let _ = set_min_ttl(socket, false, min, peer);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_layout_matches_the_kernel() {
        // <linux/tcp.h>: 128 (sockaddr_storage) + 1 + 1 + 2 + 4 + 80.
        assert_eq!(size_of::<TcpMd5Sig>(), 216);
    }

    #[test]
    fn md5_key_can_be_set_and_removed_on_a_socket() {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let peer: IpAddr = "127.0.0.2".parse().unwrap();
        set_md5_key(&sock, false, peer, Some("secret")).unwrap();
        set_md5_key(&sock, false, peer, None).unwrap();
        let long = "x".repeat(81);
        assert!(matches!(
            set_md5_key(&sock, false, peer, Some(&long)),
            Err(SockoptError::KeyTooLong { .. })
        ));
    }

    #[test]
    fn the_probe_sees_this_kernels_md5_and_the_refusal_names_the_fix() {
        // This kernel sets keys (the test above), so the probe must agree;
        // without CONFIG_TCP_MD5SIG the same setsockopt is ENOPROTOOPT.
        assert!(md5_supported());
        let e = SockoptError::NoKernelMd5 {
            peer: "10.0.0.1".parse().unwrap(),
        };
        let text = e.to_string();
        assert!(
            text.contains("CONFIG_TCP_MD5SIG") && text.contains("remove the password"),
            "{text}"
        );
    }

    #[test]
    fn md5_key_for_ipv4_peer_on_ipv6_socket() {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        set_md5_key(&sock, true, "127.0.0.2".parse().unwrap(), Some("secret")).unwrap();
        set_md5_key(&sock, true, "::1".parse().unwrap(), Some("secret")).unwrap();
    }

    #[test]
    fn min_ttl_is_accepted() {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        set_min_ttl(&sock, false, 254, "127.0.0.2".parse().unwrap()).unwrap();
    }
}

//! A raw BGP speaker for malformed-input tests: hand-built bytes (not our
//! codec), blocking std sockets created inside the peer namespace.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{Lab, MANX_V4};

pub const OPEN: u8 = 1;
pub const UPDATE: u8 = 2;
pub const NOTIFICATION: u8 = 3;
pub const KEEPALIVE: u8 = 4;

/// One BGP message: 16 × 0xff marker, length, type, body.
pub fn message(msg_type: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(msg_type);
    m.extend_from_slice(body);
    m
}

/// An OPEN with Multiprotocol IPv4 unicast and 4-octet AS capabilities.
pub fn open(version: u8, asn: u32, hold: u16, id: Ipv4Addr) -> Vec<u8> {
    let my_as: u16 = if asn > 65535 { 23456 } else { asn as u16 };
    let mut caps = vec![1, 4, 0, 1, 0, 1]; // MP: AFI 1, SAFI 1
    caps.extend_from_slice(&[65, 4]);
    caps.extend_from_slice(&asn.to_be_bytes());
    let mut body = vec![version];
    body.extend_from_slice(&my_as.to_be_bytes());
    body.extend_from_slice(&hold.to_be_bytes());
    body.extend_from_slice(&id.octets());
    body.push((caps.len() + 2) as u8);
    body.push(2); // parameter type: capabilities
    body.push(caps.len() as u8);
    body.extend_from_slice(&caps);
    message(OPEN, &body)
}

pub fn keepalive() -> Vec<u8> {
    message(KEEPALIVE, &[])
}

/// An UPDATE from raw attribute bytes and IPv4 NLRI (prefix, length).
pub fn update(withdrawn: &[(Ipv4Addr, u8)], attrs: &[u8], nlri: &[(Ipv4Addr, u8)]) -> Vec<u8> {
    let enc = |list: &[(Ipv4Addr, u8)]| {
        let mut out = Vec::new();
        for (p, len) in list {
            out.push(*len);
            out.extend_from_slice(&p.octets()[..usize::from(len.div_ceil(8))]);
        }
        out
    };
    let w = enc(withdrawn);
    let mut body = (w.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(&w);
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(&enc(nlri));
    message(UPDATE, &body)
}

/// ORIGIN IGP.
pub fn origin() -> Vec<u8> {
    vec![0x40, 1, 1, 0]
}

/// AS_PATH with one AS_SEQUENCE of 4-octet ASNs.
pub fn as_path(asns: &[u32]) -> Vec<u8> {
    let mut v = vec![2, asns.len() as u8];
    for a in asns {
        v.extend_from_slice(&a.to_be_bytes());
    }
    let mut attr = vec![0x40, 2, v.len() as u8];
    attr.extend_from_slice(&v);
    attr
}

pub fn next_hop(nh: Ipv4Addr) -> Vec<u8> {
    let mut v = vec![0x40, 3, 4];
    v.extend_from_slice(&nh.octets());
    v
}

/// A connection from `source` (an address of the peer namespace) to manx-bgpd.
#[derive(Debug)]
pub struct Injector {
    pub stream: TcpStream,
    pub source: Ipv4Addr,
}

impl Injector {
    pub fn connect(lab: &Lab, source: Ipv4Addr) -> Injector {
        let stream = lab.peer.run_in(move || {
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            sock.bind(&SocketAddr::new(source.into(), 0).into())
                .unwrap();
            let target: SocketAddr = format!("{MANX_V4}:179").parse().unwrap();
            sock.connect_timeout(&target.into(), Duration::from_secs(5))
                .expect("connect to manx-bgpd");
            TcpStream::from(sock)
        });
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        Injector { stream, source }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to manx-bgpd");
    }

    /// Read one message within `limit`: `Some((type, body))`, or `None` on
    /// timeout or close.
    pub fn read(&mut self, limit: Duration) -> Option<(u8, Vec<u8>)> {
        let deadline = Instant::now() + limit;
        let mut header = [0u8; 19];
        read_exact_until(&mut self.stream, &mut header, deadline)?;
        assert_eq!(&header[..16], &[0xff; 16], "manx-bgpd sent a bad marker");
        let len = usize::from(u16::from_be_bytes([header[16], header[17]]));
        let mut body = vec![0u8; len.saturating_sub(19)];
        read_exact_until(&mut self.stream, &mut body, deadline)?;
        Some((header[18], body))
    }

    /// Skip OPEN/KEEPALIVE/UPDATE until a NOTIFICATION: `(code, subcode, data)`.
    pub fn expect_notification(&mut self, limit: Duration) -> (u8, u8, Vec<u8>) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.read(deadline.saturating_duration_since(Instant::now())) {
                Some((NOTIFICATION, body)) => return (body[0], body[1], body[2..].to_vec()),
                Some(_) => continue,
                None => break,
            }
        }
        panic!("no NOTIFICATION from manx-bgpd within {limit:?}");
    }

    /// Full handshake as AS `asn`: send OPEN, read manx-bgpd's OPEN, send KEEPALIVE.
    pub fn establish(&mut self, asn: u32) {
        self.send(&open(4, asn, 90, self.source));
        let (t, _) = self
            .read(Duration::from_secs(10))
            .expect("manx-bgpd's OPEN");
        assert_eq!(t, OPEN, "expected OPEN from manx-bgpd");
        self.send(&keepalive());
    }

    /// Read for `limit`, answering nothing; panics if a NOTIFICATION comes
    /// or the connection closes. Returns the UPDATEs seen.
    pub fn stays_up(&mut self, limit: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + limit;
        let mut updates = Vec::new();
        while Instant::now() < deadline {
            let mut peek = [0u8; 1];
            match self.stream.peek(&mut peek) {
                Ok(0) => panic!("manx-bgpd closed the session"),
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    self.send(&keepalive());
                    continue;
                }
                Err(e) => panic!("session error: {e}"),
            }
            match self.read(Duration::from_secs(2)) {
                Some((NOTIFICATION, body)) => {
                    panic!("unexpected NOTIFICATION {}/{}", body[0], body[1])
                }
                Some((UPDATE, body)) => updates.push(body),
                Some(_) => {}
                None => {}
            }
            self.send(&keepalive());
        }
        updates
    }
}

fn read_exact_until(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Option<()> {
    let mut got = 0;
    while got < buf.len() {
        if Instant::now() >= deadline {
            return None;
        }
        match stream.read(&mut buf[got..]) {
            Ok(0) => return None,
            Ok(n) => got += n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return None,
        }
    }
    Some(())
}

//! A scripted observer peer built on our codec (`bgpd::packet`): it dials
//! a manx node from its own namespace, keeps the session up, announces
//! nothing, and records every UPDATE it receives, so a test can count the
//! announcements and withdrawals of one prefix (a flap shows as a
//! withdrawal, or as a second announcement).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bgpd::packet::{
    AfiSafi, Capability, Message, Open, SessionCaps, Update, decode_message, encode_message,
};

use testkit::Netns;

/// What the observer saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The session reached Established (OPEN exchanged).
    Up,
    /// A prefix announced, with its next hop.
    Announce(String, Option<IpAddr>),
    /// A prefix withdrawn.
    Withdraw(String),
    /// End-of-RIB (RFC 4724 §2).
    EndOfRib,
    /// The session went down (why).
    Down(String),
}

/// A running observer; dropping it stops the thread and closes the session.
#[derive(Debug)]
pub struct Observer {
    stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<Event>>>,
    thread: Option<JoinHandle<()>>,
}

impl Observer {
    /// Dial `target`:179 from `source` (an address of `ns`) as AS `asn`,
    /// retrying until the session is up, then record UPDATEs.
    pub fn start(ns: &Netns, source: Ipv4Addr, target: Ipv4Addr, asn: u32) -> Observer {
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::new()));
        let path = ns.path();
        let (s, e) = (stop.clone(), events.clone());
        let thread = std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns file");
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            while !s.load(Ordering::SeqCst) {
                let why = session(source, target, asn, &s, &e);
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Some(why) = why {
                    e.lock().unwrap().push(Event::Down(why));
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        Observer {
            stop,
            events,
            thread: Some(thread),
        }
    }

    /// Everything seen so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// How many times `prefix` was announced and withdrawn.
    pub fn counts(&self, prefix: &str) -> (usize, usize) {
        let ev = self.events();
        let ann = ev
            .iter()
            .filter(|e| matches!(e, Event::Announce(p, _) if p == prefix))
            .count();
        let wd = ev
            .iter()
            .filter(|e| matches!(e, Event::Withdraw(p) if p == prefix))
            .count();
        (ann, wd)
    }

    /// Sessions established so far, and how many went down.
    pub fn sessions(&self) -> (usize, usize) {
        let ev = self.events();
        (
            ev.iter().filter(|e| **e == Event::Up).count(),
            ev.iter().filter(|e| matches!(e, Event::Down(_))).count(),
        )
    }

    /// Whether `prefix` is currently held (last event for it is an announcement).
    pub fn holds(&self, prefix: &str) -> bool {
        self.events()
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::Announce(p, _) if p == prefix => Some(true),
                Event::Withdraw(p) if p == prefix => Some(false),
                _ => None,
            })
            .unwrap_or(false)
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn send(stream: &mut TcpStream, msg: &Message, caps: &SessionCaps) -> std::io::Result<()> {
    let mut out = Vec::new();
    encode_message(msg, caps, &mut out)
        .map_err(|e| std::io::Error::other(format!("encode: {e}")))?;
    stream.write_all(&out)
}

/// One session: `None` when stopped, `Some(reason)` when it failed.
fn session(
    source: Ipv4Addr,
    target: Ipv4Addr,
    asn: u32,
    stop: &AtomicBool,
    events: &Mutex<Vec<Event>>,
) -> Option<String> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    sock.bind(&SocketAddr::new(source.into(), 0).into()).ok()?;
    let to = SocketAddr::new(target.into(), 179);
    if let Err(e) = sock.connect_timeout(&to.into(), Duration::from_secs(2)) {
        // Not up yet: not a session going down.
        tracing::debug!(error = %e, "observer connect");
        return None;
    }
    let mut stream = TcpStream::from(sock);
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .ok()?;
    // 4-octet AS, IPv4 unicast, route refresh; no graceful restart: the
    // observer never restarts, and its own session must stay up.
    let open = Open::new(
        asn,
        30,
        source,
        vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::RouteRefresh,
            Capability::FourOctetAs(asn),
        ],
    );
    let mut caps = SessionCaps::default();
    if let Err(e) = send(&mut stream, &Message::Open(open.clone()), &caps) {
        return Some(format!("send OPEN: {e}"));
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut up = false;
    let mut last_keepalive = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        if up && last_keepalive.elapsed() >= Duration::from_secs(3) {
            if let Err(e) = send(&mut stream, &Message::Keepalive, &caps) {
                return Some(format!("send KEEPALIVE: {e}"));
            }
            last_keepalive = Instant::now();
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Some("closed by the peer".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Some(format!("read: {e}")),
        }
        loop {
            let (msg, used) = match decode_message(&buf, &caps) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => return Some(format!("decode: {e}")),
            };
            buf.drain(..used);
            match msg {
                Message::Open(theirs) => {
                    caps = SessionCaps::negotiate(&open, &theirs);
                    let eor = Message::Update(Update::end_of_rib(AfiSafi::IPV4_UNICAST));
                    if let Err(e) = send(&mut stream, &Message::Keepalive, &caps)
                        .and_then(|()| send(&mut stream, &eor, &caps))
                    {
                        return Some(format!("send KEEPALIVE: {e}"));
                    }
                    up = true;
                    last_keepalive = Instant::now();
                    events.lock().unwrap().push(Event::Up);
                }
                Message::Update(u) => {
                    let mut ev = events.lock().unwrap();
                    if u.is_end_of_rib().is_some() {
                        ev.push(Event::EndOfRib);
                        continue;
                    }
                    for (_, n) in u.withdrawals() {
                        ev.push(Event::Withdraw(n.prefix.to_string()));
                    }
                    for (_, n, hop) in u.announcements() {
                        ev.push(Event::Announce(n.prefix.to_string(), hop));
                    }
                }
                Message::Notification(n) => {
                    return Some(format!("NOTIFICATION {}", n.describe()));
                }
                Message::Keepalive | Message::RouteRefresh(_) => {}
            }
        }
    }
}

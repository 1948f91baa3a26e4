//! One task per TCP connection: frames received bytes into messages for
//! the actor, and writes what the actor queued on the connection's
//! [`Outbox`].
//!
//! Memory is the point of this design: a route reflector holds a thousand
//! mostly idle sessions, so a session owns no buffer while it is idle, and
//! what a session holds is bounded whatever its peer does.
//!
//! * Reads go into one scratch buffer per worker thread ([`SCRATCH`]),
//!   borrowed only between two awaits; complete messages are decoded
//!   straight from it. Only the tail of a message split across reads is
//!   copied into the session's own `partial` buffer, which is freed as soon
//!   as it is consumed.
//! * Input is paced by TCP: decoded messages wait in the task until the
//!   actor's bounded channel takes them, and the task reads its socket
//!   again only when they are gone. A flooding peer fills its own socket
//!   buffers and the kernel slows it down; the actor never waits on a task.
//! * Reading and writing are independent: a peer that stops reading still
//!   has its KEEPALIVEs and NOTIFICATIONs read (our hold timer is fed) while
//!   our writes to it wait for the socket.
//! * Output is an [`Outbox`] shared with the actor (a mutex held for a few
//!   pushes or one take, never across an await) and a [`Notify`]: the
//!   actor never blocks on a connection. Encoded UPDATEs are written as
//!   they are (an update group's encoding is shared by every member, see
//!   `speaker/routing.rs`), batched into vectored writes; once a peer falls
//!   behind, its routes collapse into a per-prefix diff (see `outbox.rs`)
//!   that is encoded here as the socket becomes writable.
//! * A connection whose output makes no progress for the speaker's
//!   `send_stall_timeout` reports [`ConnEvent::SendStalled`]; the actor
//!   then sends Cease / Out of Resources and closes it. A close waits at
//!   most [`LINGER`] for the last NOTIFICATION to go out and the peer to
//!   close; then the socket is reset (`SO_LINGER` 0), so neither the
//!   descriptor nor bytes queued in the kernel outlive it.

mod outbox;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::{ConnId, Credit, Credits, SessionEvent, canonical};
use crate::packet::{
    AfiSafi, DecodeError, MAX_EXTENDED_MESSAGE_LEN, Message, Open, SessionCaps, Update,
    decode_message, encode_message,
};
use crate::rib::export::build_updates;
use crate::tasks::TaskGuard;
pub use outbox::BYTES_CAP;
use outbox::{Outbox, Take};

/// How long a closing connection waits for its last NOTIFICATION to be
/// written and for the peer to close its side (so that our close does not
/// turn into a reset that discards the NOTIFICATION); then it is reset.
pub const LINGER: Duration = Duration::from_secs(2);

/// Gather queued output up to about this many octets per write.
const WRITE_BATCH: usize = 64 * 1024;

/// Buffers handed to one `writev` (well under `IOV_MAX`).
const MAX_IOV: usize = 64;

/// A shared encoding shorter than this is copied into the connection's
/// own buffer instead of queued as a buffer of its own: an update group's
/// UPDATEs are often one small message each, and a batch of 64 KiB of them
/// was a thousand `Bytes` in the queue, whose capacity (never given back by
/// a `VecDeque`) was most of a reflector's memory with 1,000 clients
/// (heaptrack: 21 MiB of 27 after the table went out, 31 of 38 after a
/// minute of churn). Copying a few hundred octets costs less than the
/// iovec it saves.
const COPY_SHARED_BELOW: usize = 2048;

/// Queue slots a drained batch keeps; a larger queue is given back.
const BATCH_SLOTS_KEPT: usize = 16;

/// Reads per wake-up before the other branches get a turn.
const READS_PER_TURN: usize = 4;

/// Prefixes decoded and waiting in a connection task for the actor's
/// channel at most (about: decoding pauses once they are reached, the
/// rest of what was read stays encoded, ~4 octets per prefix instead of
/// ~28 decoded).
pub const INBOX_PREFIXES: usize = 1024;

thread_local! {
    /// Read scratch shared by every connection polled on this thread: one
    /// extended message fits.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_EXTENDED_MESSAGE_LEN]);
}

/// From a connection task to the actor.
#[derive(Debug)]
pub enum ConnEvent {
    /// A message was decoded.
    Received(Message),
    /// Decoding failed: the actor sends the error's NOTIFICATION and closes.
    /// The task reads nothing more.
    DecodeFailed(DecodeError),
    /// Output has been waiting for the socket, without a single octet
    /// written, for `after` (the stall timeout): the peer is not reading.
    SendStalled {
        /// How long.
        after: Duration,
    },
    /// The connection is gone (peer closed, I/O error, or we closed it).
    Closed(Option<String>),
}

/// What the actor and the connection task share.
#[derive(Debug, Default)]
struct Shared {
    outbox: Mutex<Outbox>,
    /// Something was queued (or a close asked).
    wake: Notify,
    /// When a complete message was last read from the peer (it may still
    /// wait for the actor's channel).
    last_rx: Mutex<Option<Instant>>,
}

impl Shared {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        // A panic while holding it leaves a consistent outbox (every
        // method finishes its edits before anything can panic).
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, f: impl FnOnce(&mut Outbox)) {
        f(&mut self.outbox());
        self.wake.notify_one();
    }
}

/// The actor's side of a connection task.
#[derive(Debug)]
pub struct ConnectionHandle {
    shared: Arc<Shared>,
    task: Option<TaskGuard>,
    /// Our end.
    pub local: SocketAddr,
    /// The peer's end.
    pub remote: SocketAddr,
}

impl ConnectionHandle {
    /// Queue a message (OPEN, KEEPALIVE, NOTIFICATION): it goes out before
    /// UPDATEs still queued.
    pub fn send(&self, msg: Message) {
        self.shared.push(|o| o.push_message(msg));
    }

    /// Whether encoded UPDATEs are taken as bytes: the peer keeps up. If
    /// not, queue the routes with [`ConnectionHandle::send_routes`].
    pub fn accepts_bytes(&self) -> bool {
        self.shared.outbox().accepts_bytes()
    }

    /// Whether an initial table's shared parts are taken (see
    /// [`ConnectionHandle::send_parts`]).
    pub fn accepts_table(&self) -> bool {
        self.shared.outbox().accepts_table()
    }

    /// Queue UPDATEs already encoded with this session's capabilities;
    /// only after [`ConnectionHandle::accepts_bytes`] said yes (only the
    /// connection's writes can turn a no into a yes, never the reverse).
    pub fn send_raw(&self, encoded: Bytes) {
        self.shared.push(|o| o.push_bytes(encoded));
    }

    /// Queue shared encoded parts (each whole messages, encoded with this
    /// session's capabilities), all but the indices in `skip` (sorted);
    /// only after [`ConnectionHandle::accepts_table`] said yes.
    pub fn send_parts(&self, parts: Arc<[Bytes]>, skip: Vec<usize>) {
        self.shared.push(|o| o.push_parts(parts, skip));
    }

    /// Queue routes (Adj-RIB-Out changes: attributes, or `None` for a
    /// withdraw) to be encoded when the socket takes them; a prefix already
    /// pending keeps one entry, its latest state.
    pub fn send_routes(&self, routes: &[crate::rib::export::Change]) {
        self.shared.push(|o| o.push_routes(routes));
    }

    /// Queue End-of-RIB for `families` after the routes pending now.
    pub fn send_end_of_rib(&self, families: impl IntoIterator<Item = AfiSafi>) {
        self.shared.push(|o| o.push_end_of_rib(families));
    }

    /// Prefixes waiting in the pending diff (for status and tests).
    pub fn pending_routes(&self) -> usize {
        self.shared.outbox().pending_routes()
    }

    /// When a complete message was last read from the peer.
    pub fn last_received(&self) -> Option<Instant> {
        *self
            .shared
            .last_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Write the queued messages (a NOTIFICATION), drop queued routes, and
    /// close. The task finishes on its own (bounded by [`LINGER`]) and then
    /// reports [`ConnEvent::Closed`]; the returned guard lets the owner
    /// wait for it, or abort it by dropping.
    pub fn close(mut self) -> Option<TaskGuard> {
        self.shared.push(Outbox::close);
        self.task.take()
    }
}

/// Start the task of one established TCP connection. `stall`: how long
/// output may wait without progress before [`ConnEvent::SendStalled`]
/// (`None`: never).
/// `credits` bound the prefixes of the events on their way to the actor
/// (see [`Credits`]).
pub fn spawn_connection(
    id: ConnId,
    stream: TcpStream,
    events: mpsc::Sender<SessionEvent>,
    credits: Credits,
    stall: Option<Duration>,
) -> io::Result<ConnectionHandle> {
    let local = canonical(stream.local_addr()?);
    let remote = canonical(stream.peer_addr()?);
    stream.set_nodelay(true)?;
    let shared = Arc::new(Shared::default());
    let task_shared = shared.clone();
    let task = TaskGuard::spawn(async move {
        let reason = run_connection(&stream, &task_shared, &events, &credits, id, stall)
            .await
            .err()
            .map(|e| e.to_string());
        // Closed before it is reported: the descriptor is gone by then.
        drop(stream);
        let _ = events
            .send(SessionEvent::Conn {
                id,
                event: ConnEvent::Closed(reason),
                credit: Credit::none(),
            })
            .await;
    });
    Ok(ConnectionHandle {
        shared,
        task: Some(task),
        local,
        remote,
    })
}

/// Negotiated parameters, learnt by watching the OPENs go by: decoding of
/// UPDATEs depends on them, and the first UPDATE can only follow both OPENs.
/// The OPENs are dropped once both are seen.
#[derive(Default)]
struct CapsTracker {
    local: Option<Box<Open>>,
    remote: Option<Box<Open>>,
    caps: SessionCaps,
}

impl CapsTracker {
    fn saw(&mut self, msg: &Message, local: bool) {
        if let Message::Open(open) = msg {
            let open = Some(Box::new(open.clone()));
            if local {
                self.local = open;
            } else {
                self.remote = open;
            }
            if let (Some(l), Some(r)) = (&self.local, &self.remote) {
                self.caps = SessionCaps::negotiate(l, r);
            }
        }
    }
}

/// The reading half's state: what was read and not decoded yet (the tail
/// of a message split across reads, or messages held back while
/// [`INBOX_PREFIXES`] are waiting).
struct Reader {
    partial: BytesMut,
    /// A decode error stopped reading.
    failed: bool,
}

impl Reader {
    /// A reader with nothing buffered.
    fn new() -> Reader {
        Reader {
            partial: BytesMut::new(),
            failed: false,
        }
    }

    /// Decode the complete messages of `partial ++ data` into `out` (up to
    /// [`INBOX_PREFIXES`] waiting there), and keep the rest encoded.
    fn ingest(&mut self, data: &[u8], tracker: &mut CapsTracker, out: &mut VecDeque<ConnEvent>) {
        if self.partial.is_empty() {
            let used = decode(data, &mut self.failed, tracker, out);
            if !self.failed && used < data.len() {
                self.partial.extend_from_slice(&data[used..]);
            }
        } else {
            self.partial.extend_from_slice(data);
            self.decode_held(tracker, out);
        }
    }

    /// Decode more of what is held (after `out` was delivered).
    fn decode_held(&mut self, tracker: &mut CapsTracker, out: &mut VecDeque<ConnEvent>) {
        if self.partial.is_empty() || self.failed {
            return;
        }
        let used = decode(&self.partial, &mut self.failed, tracker, out);
        if self.failed || used == self.partial.len() {
            // Nothing stays allocated.
            self.partial = BytesMut::new();
        } else {
            self.partial.advance(used);
        }
    }

    /// Whether a complete message is held back (decode it before reading).
    fn holds_message(&self) -> bool {
        !self.failed && complete_message_len(&self.partial).is_some()
    }
}

/// The length of the complete message at the start of `buf`, if there is
/// one (or what looks like one: a bad length is the decoder's to report).
fn complete_message_len(buf: &[u8]) -> Option<usize> {
    let len = usize::from(u16::from_be_bytes([*buf.get(16)?, *buf.get(17)?]));
    (buf.len() >= len.max(19)).then_some(len)
}

/// Prefixes an event carries: what it weighs decoded.
pub(super) fn prefixes(event: &ConnEvent) -> usize {
    use crate::packet::PathAttribute;
    let ConnEvent::Received(Message::Update(u)) = event else {
        return 0;
    };
    u.nlri.len()
        + u.withdrawn.len()
        + u.attributes
            .iter()
            .map(|a| match a {
                PathAttribute::MpReach(mp) => mp.nlri.len(),
                PathAttribute::MpUnreach(mp) => mp.withdrawn.len(),
                _ => 0,
            })
            .sum::<usize>()
}

/// Decode complete messages from `buf` into `out` until [`INBOX_PREFIXES`]
/// wait there; returns the octets used.
fn decode(
    buf: &[u8],
    failed: &mut bool,
    tracker: &mut CapsTracker,
    out: &mut VecDeque<ConnEvent>,
) -> usize {
    let mut waiting: usize = out.iter().map(prefixes).sum();
    let mut start = 0;
    loop {
        if waiting >= INBOX_PREFIXES {
            return start;
        }
        match decode_message(&buf[start..], &tracker.caps) {
            Ok(Some((msg, used))) => {
                start += used;
                tracker.saw(&msg, false);
                let ev = ConnEvent::Received(msg);
                waiting += prefixes(&ev);
                out.push_back(ev);
            }
            Ok(None) => return start,
            Err(e) => {
                out.push_back(ConnEvent::DecodeFailed(e));
                *failed = true;
                return start;
            }
        }
    }
}

/// Why a read attempt ended.
enum ReadOutcome {
    Data,
    WouldBlock,
    Eof,
}

/// One non-blocking read into this thread's scratch buffer, ingested there
/// (or discarded, without a reader: a closing connection).
fn read_once(
    stream: &TcpStream,
    reader: Option<(&mut Reader, &mut CapsTracker, &mut VecDeque<ConnEvent>)>,
) -> io::Result<ReadOutcome> {
    SCRATCH.with_borrow_mut(|buf| match stream.try_read(buf) {
        Ok(0) => Ok(ReadOutcome::Eof),
        Ok(n) => {
            if let Some((reader, tracker, out)) = reader {
                reader.ingest(&buf[..n], tracker, out);
            }
            Ok(ReadOutcome::Data)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(ReadOutcome::WouldBlock),
        Err(e) => Err(e),
    })
}

/// Encode what was taken from the outbox into buffers to write.
fn encode_takes(
    takes: Vec<Take>,
    tracker: &mut CapsTracker,
    batch: &mut VecDeque<Bytes>,
    id: ConnId,
) {
    // Messages encoded here go into one buffer until a shared part comes.
    let mut encoded: Vec<u8> = Vec::new();
    let encode = |msg: &Message, tracker: &mut CapsTracker, encoded: &mut Vec<u8>| {
        tracker.saw(msg, true);
        if let Err(e) = encode_message(msg, &tracker.caps, encoded) {
            tracing::warn!(conn = id, error = %e, "cannot encode a message; dropped");
        }
    };
    for take in takes {
        match take {
            Take::Message(msg) => encode(&msg, tracker, &mut encoded),
            Take::Bytes(b) if b.len() < COPY_SHARED_BELOW => encoded.extend_from_slice(&b),
            Take::Bytes(b) => {
                flush_encoded(&mut encoded, batch);
                batch.push_back(b);
            }
            Take::Routes(routes) => {
                for u in build_updates(routes) {
                    match u.split_to_fit(&tracker.caps) {
                        Ok(parts) => {
                            for part in parts {
                                encode(&Message::Update(part), tracker, &mut encoded);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(conn = id, error = %e, "cannot encode an UPDATE; dropped");
                        }
                    }
                }
            }
            Take::EndOfRib(families) => {
                for f in families {
                    encode(
                        &Message::Update(Update::end_of_rib(f)),
                        tracker,
                        &mut encoded,
                    );
                }
            }
        }
    }
    flush_encoded(&mut encoded, batch);
}

fn flush_encoded(encoded: &mut Vec<u8>, batch: &mut VecDeque<Bytes>) {
    if !encoded.is_empty() {
        batch.push_back(Bytes::from(std::mem::take(encoded)));
    }
}

/// Write as much of `batch` as the socket takes now, several buffers per
/// system call. Returns the octets written.
fn write_some(stream: &TcpStream, batch: &mut VecDeque<Bytes>) -> io::Result<usize> {
    let mut total = 0;
    while !batch.is_empty() {
        let r = {
            let slices: Vec<IoSlice<'_>> = batch
                .iter()
                .take(MAX_IOV)
                .map(|b| IoSlice::new(b))
                .collect();
            stream.try_write_vectored(&slices)
        };
        match r {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                total += n;
                advance(batch, n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// Drop `n` written octets from the front of `batch`.
fn advance(batch: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let Some(front) = batch.front_mut() else {
            return;
        };
        if front.len() <= n {
            n -= front.len();
            batch.pop_front();
        } else {
            let _ = front.split_to(n);
            n = 0;
        }
    }
}

/// Reset the connection when it is dropped (`SO_LINGER` 0): the
/// descriptor and whatever the kernel still holds for it go at once,
/// instead of an orphan retrying to deliver them to a peer that does not
/// read.
fn abort_on_close(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Waiting for room in the actor's channel.
type Reserve = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<mpsc::OwnedPermit<SessionEvent>, mpsc::error::SendError<()>>,
            > + Send,
    >,
>;

/// Waiting for credits for the next event's prefixes.
type Crediting = std::pin::Pin<Box<dyn std::future::Future<Output = Credit> + Send>>;

async fn run_connection(
    stream: &TcpStream,
    shared: &Shared,
    events: &mpsc::Sender<SessionEvent>,
    credits: &Credits,
    id: ConnId,
    stall: Option<Duration>,
) -> io::Result<()> {
    let mut tracker = CapsTracker::default();
    let mut reader = Reader::new();
    // Decoded, not yet taken by the actor: while anything is here, the
    // socket is not read (TCP paces the peer).
    let mut inbox: VecDeque<ConnEvent> = VecDeque::new();
    let mut batch: VecDeque<Bytes> = VecDeque::new();
    // Output waiting, with no octet written since this instant.
    let mut waiting_since: Option<Instant> = None;
    let mut stall_reported = false;
    // Closing: reset at this instant unless the peer closed first.
    let mut close_by: Option<Instant> = None;
    let mut shut_down = false;
    let mut reserving: Option<Reserve> = None;
    let mut crediting: Option<Crediting> = None;
    // Credits taken for the event at the front of the inbox.
    let mut credit: Option<Credit> = None;
    loop {
        {
            let mut outbox = shared.outbox();
            if batch.is_empty() && !outbox.is_empty() {
                let takes = outbox.take(WRITE_BATCH);
                encode_takes(takes, &mut tracker, &mut batch, id);
            }
            if outbox.closing() && close_by.is_none() {
                close_by = Some(Instant::now() + LINGER);
                // The actor forgot this connection: nothing more for it.
                inbox.clear();
                reserving = None;
                crediting = None;
                credit = None;
            }
        }
        let writing = !batch.is_empty();
        if writing {
            waiting_since.get_or_insert_with(Instant::now);
        } else {
            waiting_since = None;
            stall_reported = false;
        }
        if close_by.is_some() && !writing && !shut_down {
            // Everything went: FIN, then wait for the peer's.
            shut_down = true;
            let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
        }
        let stall_at = match (stall, waiting_since) {
            (Some(d), Some(t)) if !stall_reported && close_by.is_none() => Some(t + d),
            _ => None,
        };
        // Deliver what the channel and the credits take now; wait for the
        // rest (keeping our place in their queues across wake-ups).
        // Held-back messages are decoded as the inbox drains.
        loop {
            if inbox.is_empty() && close_by.is_none() {
                reader.decode_held(&mut tracker, &mut inbox);
                if !inbox.is_empty() {
                    *shared.last_rx.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(Instant::now());
                }
            }
            if reserving.is_some() || crediting.is_some() || inbox.is_empty() {
                break;
            }
            let want = prefixes(&inbox[0]);
            if want > 0 && credit.is_none() {
                match credits.try_take(want) {
                    Some(c) => credit = Some(c),
                    None => {
                        crediting = Some(Box::pin(credits.take(want)));
                        break;
                    }
                }
            }
            match events.try_reserve() {
                Ok(permit) => {
                    let event = inbox.pop_front().expect("inbox not empty");
                    let credit = credit.take().unwrap_or_default();
                    permit.send(SessionEvent::Conn { id, event, credit });
                }
                Err(mpsc::error::TrySendError::Full(())) => {
                    reserving = Some(Box::pin(events.clone().reserve_owned()));
                }
                Err(mpsc::error::TrySendError::Closed(())) => return Ok(()),
            }
        }
        let read =
            inbox.is_empty() && (close_by.is_some() || (!reader.failed && !reader.holds_message()));
        tokio::select! {
            permit = async { reserving.as_mut().expect("reserving").await }, if reserving.is_some() => {
                reserving = None;
                let Ok(permit) = permit else {
                    return Ok(()); // the speaker is gone
                };
                if let Some(event) = inbox.pop_front() {
                    let credit = credit.take().unwrap_or_default();
                    permit.send(SessionEvent::Conn { id, event, credit });
                }
            }
            c = async { crediting.as_mut().expect("crediting").await }, if crediting.is_some() => {
                crediting = None;
                credit = Some(c);
            }
            r = stream.writable(), if writing => {
                r?;
                if write_some(stream, &mut batch)? > 0 {
                    waiting_since = Some(Instant::now());
                    stall_reported = false;
                }
                if batch.is_empty() && batch.capacity() > BATCH_SLOTS_KEPT {
                    batch.shrink_to(BATCH_SLOTS_KEPT);
                }
            }
            r = stream.readable(), if read => {
                r?;
                for _ in 0..READS_PER_TURN {
                    let sink = (close_by.is_none() && !reader.failed)
                        .then_some((&mut reader, &mut tracker, &mut inbox));
                    match read_once(stream, sink)? {
                        ReadOutcome::Data if close_by.is_some() => continue,
                        ReadOutcome::Data => {
                            if !inbox.is_empty() {
                                *shared.last_rx.lock().unwrap_or_else(|e| e.into_inner()) =
                                    Some(Instant::now());
                                break;
                            }
                            if reader.failed {
                                break;
                            }
                        }
                        ReadOutcome::WouldBlock => break,
                        ReadOutcome::Eof if close_by.is_some() => {
                            if writing {
                                // Our NOTIFICATION cannot go any more.
                                abort_on_close(stream);
                            }
                            return Ok(());
                        }
                        ReadOutcome::Eof => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "peer closed the connection",
                            ));
                        }
                    }
                }
            }
            () = shared.wake.notified() => {}
            () = sleep_until_opt(stall_at) => {
                stall_reported = true;
                let after = waiting_since.map_or(Duration::ZERO, |t| t.elapsed());
                inbox.push_back(ConnEvent::SendStalled { after });
            }
            () = sleep_until_opt(close_by) => {
                abort_on_close(stream);
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Notification, encode_message};
    use crate::rib::PathAttrs;
    use ipnetwork::IpNetwork;

    fn encoded(msgs: &[Message]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            encode_message(m, &SessionCaps::default(), &mut out).unwrap();
        }
        out
    }

    fn received(q: &mut VecDeque<ConnEvent>) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(ConnEvent::Received(m)) = q.pop_front() {
            out.push(m);
        }
        out
    }

    /// RFC 4271 §4.1: messages are framed by their length field, whatever
    /// the TCP segmentation; a split message is completed by the next read
    /// and the partial buffer is released once consumed.
    #[test]
    fn messages_split_across_reads_are_reassembled_and_the_buffer_freed() {
        let msgs = vec![
            Message::Keepalive,
            Message::Notification(Notification::new(6, 2, b"bye".to_vec())),
            Message::Keepalive,
        ];
        let wire = encoded(&msgs);
        for cut in 1..wire.len() {
            let mut q = VecDeque::new();
            let mut tracker = CapsTracker::default();
            let mut r = Reader::new();
            r.ingest(&wire[..cut], &mut tracker, &mut q);
            r.ingest(&wire[cut..], &mut tracker, &mut q);
            assert_eq!(received(&mut q), msgs, "cut at {cut}");
            assert_eq!(r.partial.capacity(), 0, "cut at {cut}: buffer kept");
        }
    }

    #[test]
    fn a_decode_error_stops_reading_and_is_reported() {
        let mut q = VecDeque::new();
        let mut tracker = CapsTracker::default();
        let mut r = Reader::new();
        let mut bad = encoded(&[Message::Keepalive]);
        bad[0] = 0; // §6.1: marker not all ones
        r.ingest(&bad, &mut tracker, &mut q);
        assert!(r.failed);
        assert!(matches!(q.pop_front(), Some(ConnEvent::DecodeFailed(_))));
    }

    #[test]
    fn takes_are_encoded_in_order() {
        let mut o = Outbox::default();
        let parts: Arc<[Bytes]> = vec![
            Bytes::from_static(b"a"),
            Bytes::from_static(b"bb"),
            Bytes::from_static(b"ccc"),
        ]
        .into();
        o.push_parts(parts, vec![1]);
        o.push_bytes(Bytes::from_static(b"dd"));
        o.push_message(Message::Keepalive);
        let mut batch = VecDeque::new();
        encode_takes(
            o.take(WRITE_BATCH),
            &mut CapsTracker::default(),
            &mut batch,
            1,
        );
        let flat: Vec<u8> = batch.iter().flat_map(|b| b.iter().copied()).collect();
        let mut want = encoded(&[Message::Keepalive]);
        want.extend(b"acccdd");
        assert_eq!(flat, want);
        // Small shared encodings were copied: one buffer, not five.
        assert_eq!(batch.len(), 1);
    }

    /// A large shared encoding is queued as it is (no copy) between the
    /// connection's own buffers; partial writes advance across buffers.
    #[test]
    fn large_shared_encodings_are_queued_not_copied() {
        let big = Bytes::from(vec![7u8; COPY_SHARED_BELOW]);
        let mut o = Outbox::default();
        o.push_bytes(Bytes::from_static(b"ab"));
        o.push_bytes(big.clone());
        o.push_bytes(Bytes::from_static(b"cd"));
        let mut batch = VecDeque::new();
        encode_takes(
            o.take(WRITE_BATCH),
            &mut CapsTracker::default(),
            &mut batch,
            1,
        );
        assert_eq!(batch.len(), 3);
        assert_eq!(&batch[0][..], b"ab");
        assert_eq!(batch[1].as_ptr(), big.as_ptr(), "the shared buffer itself");
        assert_eq!(&batch[2][..], b"cd");
        advance(&mut batch, 1);
        assert_eq!(&batch[0][..], b"b");
        advance(&mut batch, 1 + COPY_SHARED_BELOW + 1);
        assert_eq!(batch.len(), 1);
        assert_eq!(&batch[0][..], b"d");
    }

    /// Routes from the diff are encoded as UPDATEs the peer decodes back
    /// to the same changes, End-of-RIB last.
    #[test]
    fn routes_are_encoded_as_updates() {
        let mut o = Outbox::default();
        let a = PathAttrs {
            next_hop: Some("127.0.0.9".parse().unwrap()),
            local_pref: Some(100),
            ..PathAttrs::local()
        };
        let announced: IpNetwork = "10.0.0.0/26".parse().unwrap();
        let withdrawn: IpNetwork = "10.0.0.64/26".parse().unwrap();
        o.push_routes(&[(announced, Some(Arc::new(a))), (withdrawn, None)]);
        o.push_end_of_rib([AfiSafi::IPV4_UNICAST]);
        let mut batch = VecDeque::new();
        encode_takes(
            o.take(WRITE_BATCH),
            &mut CapsTracker::default(),
            &mut batch,
            1,
        );
        let wire: Vec<u8> = batch.iter().flat_map(|b| b.iter().copied()).collect();
        let mut q = VecDeque::new();
        Reader::new().ingest(&wire, &mut CapsTracker::default(), &mut q);
        let updates: Vec<Update> = received(&mut q)
            .into_iter()
            .map(|m| match m {
                Message::Update(u) => u,
                other => panic!("not an UPDATE: {other:?}"),
            })
            .collect();
        let nlri: Vec<IpNetwork> = updates
            .iter()
            .flat_map(|u| u.nlri.iter().map(|n| n.prefix))
            .collect();
        let gone: Vec<IpNetwork> = updates
            .iter()
            .flat_map(|u| u.withdrawn.iter().map(|n| n.prefix))
            .collect();
        assert_eq!((nlri, gone), (vec![announced], vec![withdrawn]));
        assert_eq!(
            updates.last().and_then(Update::is_end_of_rib),
            Some(AfiSafi::IPV4_UNICAST)
        );
    }

    /// A connected pair on loopback; our peer's end reads nothing and has
    /// a small receive buffer, so our writes block soon.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let (peer, ours) = tokio::join!(sock.connect(l.local_addr().unwrap()), l.accept());
        (ours.unwrap().0, peer.unwrap())
    }

    async fn next_event(rx: &mut mpsc::Receiver<SessionEvent>) -> ConnEvent {
        let ev = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("an event (60 s)")
            .expect("channel open");
        match ev {
            SessionEvent::Conn { event, .. } => event,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The peer stops reading: our writes block, yet its KEEPALIVEs are
    /// still read and reported (so our hold timer is fed), the stall is
    /// reported, and a close resets the socket (the peer sees its end go)
    /// and ends the task although nothing more can be written.
    #[tokio::test]
    async fn a_peer_that_does_not_read_is_still_heard_and_can_be_closed() {
        let (ours, mut peer) = pair().await;
        let (tx, mut rx) = mpsc::channel(8);
        let h = spawn_connection(
            1,
            ours,
            tx,
            Credits::new(64),
            Some(Duration::from_millis(300)),
        )
        .unwrap();
        // Far more than the socket buffers hold.
        for _ in 0..64 {
            h.send_raw(Bytes::from(vec![0u8; 256 * 1024]));
        }
        use tokio::io::AsyncWriteExt;
        let ka = encoded(&[Message::Keepalive]);
        peer.write_all(&ka).await.unwrap();
        assert!(matches!(
            next_event(&mut rx).await,
            ConnEvent::Received(Message::Keepalive)
        ));
        assert!(h.last_received().is_some());
        assert!(matches!(
            next_event(&mut rx).await,
            ConnEvent::SendStalled { .. }
        ));
        peer.write_all(&ka).await.unwrap();
        assert!(matches!(
            next_event(&mut rx).await,
            ConnEvent::Received(Message::Keepalive)
        ));
        h.send(Message::Notification(Notification::new(6, 8, Vec::new())));
        let task = h.close().expect("task");
        tokio::time::timeout(Duration::from_secs(60), task.join())
            .await
            .expect("the closing task ends (bounded by LINGER)")
            .unwrap();
        assert!(matches!(next_event(&mut rx).await, ConnEvent::Closed(_)));
        // The peer's end: data, then the reset (or end) of the connection.
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match peer.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Input is paced: while the actor's channel is full, the task reads
    /// no more of its socket; everything arrives, in order, once the
    /// channel drains.
    #[tokio::test]
    async fn a_full_channel_stops_reading_and_nothing_is_lost() {
        let (ours, mut peer) = pair().await;
        let (tx, mut rx) = mpsc::channel(1);
        let _h = spawn_connection(1, ours, tx, Credits::new(64), None).unwrap();
        let msgs: Vec<Message> = (0..2000u16)
            .map(|i| Message::Notification(Notification::new(6, 2, i.to_be_bytes().to_vec())))
            .collect();
        let wire = encoded(&msgs);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            peer.write_all(&wire).await.unwrap();
            peer
        });
        for want in msgs {
            match next_event(&mut rx).await {
                ConnEvent::Received(m) => assert_eq!(m, want),
                other => panic!("unexpected {other:?}"),
            }
        }
        let _peer = writer.await.unwrap();
    }

    /// `n` UPDATEs of 400 /26s each, encoded.
    fn updates(n: u32) -> (Vec<u8>, Vec<Update>) {
        let a = Arc::new(PathAttrs {
            next_hop: Some("127.0.0.9".parse().unwrap()),
            local_pref: Some(100),
            ..PathAttrs::local()
        });
        let routes: Vec<crate::rib::export::Change> = (0..n * 400)
            .map(|i| {
                let net = ipnetwork::Ipv4Network::new((0x0a00_0000 + (i << 6)).into(), 26).unwrap();
                (IpNetwork::V4(net), Some(a.clone()))
            })
            .collect();
        let ups = build_updates(routes);
        assert_eq!(ups.len(), n as usize);
        let msgs: Vec<Message> = ups.iter().cloned().map(Message::Update).collect();
        (encoded(&msgs), ups)
    }

    /// Decoding pauses once INBOX_PREFIXES wait in the inbox; the rest
    /// stays encoded and is decoded, in order, as the inbox drains.
    #[test]
    fn decoding_pauses_while_the_inbox_is_full() {
        let (wire, ups) = updates(10);
        let mut q = VecDeque::new();
        let mut tracker = CapsTracker::default();
        let mut r = Reader::new();
        r.ingest(&wire, &mut tracker, &mut q);
        let waiting: usize = q.iter().map(prefixes).sum();
        assert!(
            (INBOX_PREFIXES..INBOX_PREFIXES + 400).contains(&waiting),
            "{waiting} prefixes decoded at once"
        );
        assert!(r.holds_message());
        let mut got = received(&mut q);
        while r.holds_message() {
            r.decode_held(&mut tracker, &mut q);
            got.extend(received(&mut q));
        }
        let want: Vec<Message> = ups.into_iter().map(Message::Update).collect();
        assert_eq!(got, want);
        assert_eq!(r.partial.capacity(), 0, "buffer kept");
    }

    /// UPDATEs reach the actor only as credits allow: while it holds
    /// events worth all the credits, the task delivers no more (and reads
    /// no more of its socket); as it lets them go, the rest come, in order.
    #[tokio::test]
    async fn credits_bound_the_prefixes_in_flight() {
        let (ours, mut peer) = pair().await;
        let (tx, mut rx) = mpsc::channel(1000);
        let credits = Credits::new(1000);
        let _h = spawn_connection(1, ours, tx, credits.clone(), None).unwrap();
        let (wire, ups) = updates(30);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            peer.write_all(&wire).await.unwrap();
            peer
        });
        let mut held = Vec::new();
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
                Ok(Some(SessionEvent::Conn { event, credit, .. })) => {
                    assert_eq!(credit.count(), prefixes(&event));
                    got.push(event);
                    held.push(credit);
                }
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => break,
            }
        }
        assert_eq!(got.len(), 2, "two 400-prefix UPDATEs fit 1000 credits");
        // The task waits for 400 more and holds the 200 left meanwhile
        // (FIFO: no later, smaller request takes them).
        assert_eq!(credits.available(), 0);
        drop(held);
        while got.len() < ups.len() {
            match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
                Ok(Some(SessionEvent::Conn { event, credit, .. })) => {
                    got.push(event);
                    drop(credit);
                }
                other => panic!("stalled at {}: {other:?}", got.len()),
            }
        }
        let got: Vec<Message> = got
            .into_iter()
            .map(|e| match e {
                ConnEvent::Received(m) => m,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        let want: Vec<Message> = ups.into_iter().map(Message::Update).collect();
        assert_eq!(got, want);
        assert_eq!(credits.available(), 1000);
        let _peer = writer.await.unwrap();
    }
}

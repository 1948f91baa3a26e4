//! One task per TCP connection: frames received bytes into messages and
//! writes what the actor queues.
//!
//! Memory is the point of this design: a route reflector holds a thousand
//! mostly idle sessions, so a session owns no buffer while it is idle.
//!
//! * Reads go into one scratch buffer per worker thread ([`SCRATCH`]),
//!   borrowed only between two awaits; complete messages are decoded
//!   straight from it. Only the tail of a message split across reads is
//!   copied into the session's own `partial` buffer, which is freed as soon
//!   as it is consumed.
//! * Writes send the queued [`Bytes`] as they are (an update group's
//!   encoding is shared by every member, see `speaker/routing.rs`), batched
//!   into vectored writes; a message still to be encoded gets a buffer for
//!   the time of one batch.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use super::{ConnCommand, ConnId, SessionEvent, canonical};
use crate::packet::{
    DecodeError, MAX_EXTENDED_MESSAGE_LEN, Message, Open, SessionCaps, decode_message,
    encode_message,
};
use crate::tasks::TaskGuard;

/// How long a closing connection waits for the peer to read our last
/// NOTIFICATION and close its side, so that our close does not turn into a
/// reset that discards it.
const LINGER: Duration = Duration::from_secs(2);

/// Gather queued output up to about this many octets per write.
const WRITE_BATCH: usize = 64 * 1024;

/// Buffers handed to one `writev` (well under `IOV_MAX`).
const MAX_IOV: usize = 64;

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
    /// The connection is gone (peer closed, I/O error, or we closed it).
    Closed(Option<String>),
}

/// What travels on a connection's queue; kept small (a few words) because
/// a busy reflector has many of them in flight per session.
#[derive(Debug)]
enum Queued {
    Message(Box<Message>),
    Raw(Bytes),
    /// Shared encoded parts, written in order except the indices in `skip`
    /// (sorted): an update group's table minus what this peer sent us.
    Parts(Arc<[Bytes]>, Box<[usize]>),
    Close,
}

impl From<ConnCommand> for Queued {
    fn from(c: ConnCommand) -> Queued {
        match c {
            ConnCommand::Send(m) => Queued::Message(Box::new(m)),
            ConnCommand::SendRaw(b) => Queued::Raw(b),
            ConnCommand::Close => Queued::Close,
        }
    }
}

/// The actor's side of a connection task.
#[derive(Debug)]
pub struct ConnectionHandle {
    tx: mpsc::UnboundedSender<Queued>,
    task: Option<TaskGuard>,
    /// Our end.
    pub local: SocketAddr,
    /// The peer's end.
    pub remote: SocketAddr,
}

impl ConnectionHandle {
    /// Queue a command.
    pub fn command(&self, cmd: ConnCommand) {
        let _ = self.tx.send(cmd.into());
    }

    /// Queue a message.
    pub fn send(&self, msg: Message) {
        let _ = self.tx.send(Queued::Message(Box::new(msg)));
    }

    /// Queue messages already encoded with this session's capabilities.
    pub fn send_raw(&self, encoded: Bytes) {
        let _ = self.tx.send(Queued::Raw(encoded));
    }

    /// Queue shared encoded parts (each whole messages, encoded with this
    /// session's capabilities), all but the indices in `skip` (sorted).
    pub fn send_parts(&self, parts: Arc<[Bytes]>, skip: Vec<usize>) {
        let _ = self.tx.send(Queued::Parts(parts, skip.into_boxed_slice()));
    }

    /// Flush and close. The task finishes on its own (bounded by the linger
    /// time) and then reports [`ConnEvent::Closed`]; the returned guard lets
    /// the owner wait for it, or abort it by dropping.
    pub fn close(mut self) -> Option<TaskGuard> {
        let _ = self.tx.send(Queued::Close);
        self.task.take()
    }
}

/// Start the task of one established TCP connection.
pub fn spawn_connection(
    id: ConnId,
    stream: TcpStream,
    events: mpsc::UnboundedSender<SessionEvent>,
) -> io::Result<ConnectionHandle> {
    let local = canonical(stream.local_addr()?);
    let remote = canonical(stream.peer_addr()?);
    stream.set_nodelay(true)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let task = TaskGuard::spawn(async move {
        let reason = run_connection(stream, rx, &events, id)
            .await
            .err()
            .map(|e| e.to_string());
        let _ = events.send(SessionEvent::Conn {
            id,
            event: ConnEvent::Closed(reason),
        });
    });
    Ok(ConnectionHandle {
        tx,
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

/// The reading half's state: the caps to decode with and the tail of a
/// message split across reads.
struct Reader {
    id: ConnId,
    partial: Vec<u8>,
    /// A decode error stopped reading.
    failed: bool,
}

impl Reader {
    /// A reader of connection `id` with nothing buffered.
    fn new(id: ConnId) -> Reader {
        Reader {
            id,
            partial: Vec::new(),
            failed: false,
        }
    }

    /// Decode every complete message of `partial ++ data`, report them, and
    /// keep the incomplete tail.
    fn ingest(
        &mut self,
        data: &[u8],
        tracker: &mut CapsTracker,
        events: &mpsc::UnboundedSender<SessionEvent>,
    ) {
        if self.partial.is_empty() {
            let used = self.decode(data, tracker, events);
            if !self.failed {
                self.partial.extend_from_slice(&data[used..]);
            }
        } else {
            self.partial.extend_from_slice(data);
            let buf = std::mem::take(&mut self.partial);
            let used = self.decode(&buf, tracker, events);
            if !self.failed && used < buf.len() {
                self.partial = buf;
                self.partial.drain(..used);
            }
            // Otherwise `buf` is dropped: nothing stays allocated.
        }
    }

    /// Decode complete messages from `buf`; returns the octets used.
    fn decode(
        &mut self,
        buf: &[u8],
        tracker: &mut CapsTracker,
        events: &mpsc::UnboundedSender<SessionEvent>,
    ) -> usize {
        let id = self.id;
        let mut start = 0;
        loop {
            match decode_message(&buf[start..], &tracker.caps) {
                Ok(Some((msg, used))) => {
                    start += used;
                    tracker.saw(&msg, false);
                    let _ = events.send(SessionEvent::Conn {
                        id,
                        event: ConnEvent::Received(msg),
                    });
                }
                Ok(None) => return start,
                Err(e) => {
                    let _ = events.send(SessionEvent::Conn {
                        id,
                        event: ConnEvent::DecodeFailed(e),
                    });
                    self.failed = true;
                    return start;
                }
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

/// One non-blocking read into this thread's scratch buffer, ingested there.
fn read_once(
    rd: &OwnedReadHalf,
    reader: &mut Reader,
    tracker: &mut CapsTracker,
    events: &mpsc::UnboundedSender<SessionEvent>,
) -> io::Result<ReadOutcome> {
    SCRATCH.with_borrow_mut(|buf| match rd.try_read(buf) {
        Ok(0) => Ok(ReadOutcome::Eof),
        Ok(n) => {
            reader.ingest(&buf[..n], tracker, events);
            Ok(ReadOutcome::Data)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(ReadOutcome::WouldBlock),
        Err(e) => Err(e),
    })
}

async fn run_connection(
    stream: TcpStream,
    mut cmds: mpsc::UnboundedReceiver<Queued>,
    events: &mpsc::UnboundedSender<SessionEvent>,
    id: ConnId,
) -> io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut tracker = CapsTracker::default();
    let mut reader = Reader::new(id);
    loop {
        tokio::select! {
            cmd = cmds.recv() => {
                let mut batch = VecDeque::new();
                let close = gather(cmd, &mut cmds, &mut tracker, &mut batch, id);
                write_batch(&mut wr, &mut batch).await?;
                if close {
                    return linger_close(wr, rd).await;
                }
            }
            r = rd.readable(), if !reader.failed => {
                r?;
                // Drain what is there (bounded, so that writes get a turn).
                for _ in 0..4 {
                    match read_once(&rd, &mut reader, &mut tracker, events)? {
                        ReadOutcome::Data if !reader.failed => continue,
                        ReadOutcome::Data | ReadOutcome::WouldBlock => break,
                        ReadOutcome::Eof => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "peer closed the connection",
                            ));
                        }
                    }
                }
            }
        }
    }
}

/// Turn `first` and whatever else is already queued (up to about
/// [`WRITE_BATCH`] octets) into buffers to write. Returns whether the
/// connection is to be closed after them.
fn gather(
    first: Option<Queued>,
    cmds: &mut mpsc::UnboundedReceiver<Queued>,
    tracker: &mut CapsTracker,
    batch: &mut VecDeque<Bytes>,
    id: ConnId,
) -> bool {
    let mut size = 0;
    // Messages encoded here go into one buffer until a shared part comes.
    let mut encoded: Vec<u8> = Vec::new();
    let mut next = first;
    let close = loop {
        match next {
            Some(Queued::Message(msg)) => {
                tracker.saw(&msg, true);
                let before = encoded.len();
                if let Err(e) = encode_message(&msg, &tracker.caps, &mut encoded) {
                    tracing::warn!(conn = id, error = %e, "cannot encode a message; dropped");
                }
                size += encoded.len() - before;
            }
            Some(Queued::Raw(bytes)) => {
                flush_encoded(&mut encoded, batch);
                size += bytes.len();
                batch.push_back(bytes);
            }
            Some(Queued::Parts(parts, skip)) => {
                flush_encoded(&mut encoded, batch);
                for (i, part) in parts.iter().enumerate() {
                    if skip.binary_search(&i).is_err() && !part.is_empty() {
                        size += part.len();
                        batch.push_back(part.clone());
                    }
                }
            }
            Some(Queued::Close) | None => break true,
        }
        if size > WRITE_BATCH {
            break false;
        }
        match cmds.try_recv() {
            Ok(c) => next = Some(c),
            Err(_) => break false,
        }
    };
    flush_encoded(&mut encoded, batch);
    close
}

fn flush_encoded(encoded: &mut Vec<u8>, batch: &mut VecDeque<Bytes>) {
    if !encoded.is_empty() {
        batch.push_back(Bytes::from(std::mem::take(encoded)));
    }
}

/// Write every buffer of `batch`, several per system call.
async fn write_batch(wr: &mut OwnedWriteHalf, batch: &mut VecDeque<Bytes>) -> io::Result<()> {
    while !batch.is_empty() {
        let n = {
            let slices: Vec<IoSlice<'_>> = batch
                .iter()
                .take(MAX_IOV)
                .map(|b| IoSlice::new(b))
                .collect();
            wr.write_vectored(&slices).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        advance(batch, n);
    }
    Ok(())
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

/// Half-close, then read until the peer closes (or the linger time passes),
/// so the last NOTIFICATION is delivered rather than reset away.
async fn linger_close(mut wr: OwnedWriteHalf, mut rd: OwnedReadHalf) -> io::Result<()> {
    let _ = wr.shutdown().await;
    let mut sink = [0u8; 512];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = rd.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Notification, encode_message};

    fn encoded(msgs: &[Message]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            encode_message(m, &SessionCaps::default(), &mut out).unwrap();
        }
        out
    }

    fn received(rx: &mut mpsc::UnboundedReceiver<SessionEvent>) -> Vec<Message> {
        let mut out = Vec::new();
        while let Ok(SessionEvent::Conn {
            event: ConnEvent::Received(m),
            ..
        }) = rx.try_recv()
        {
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
            let (tx, mut rx) = mpsc::unbounded_channel();
            let mut tracker = CapsTracker::default();
            let mut r = Reader::new(1);
            r.ingest(&wire[..cut], &mut tracker, &tx);
            r.ingest(&wire[cut..], &mut tracker, &tx);
            assert_eq!(received(&mut rx), msgs, "cut at {cut}");
            assert_eq!(r.partial.capacity(), 0, "cut at {cut}: buffer kept");
        }
    }

    #[test]
    fn a_decode_error_stops_reading_and_is_reported() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut tracker = CapsTracker::default();
        let mut r = Reader::new(1);
        let mut bad = encoded(&[Message::Keepalive]);
        bad[0] = 0; // §6.1: marker not all ones
        r.ingest(&bad, &mut tracker, &tx);
        assert!(r.failed);
        assert!(matches!(
            rx.try_recv(),
            Ok(SessionEvent::Conn {
                event: ConnEvent::DecodeFailed(_),
                ..
            })
        ));
    }

    #[tokio::test]
    async fn gather_keeps_order_and_skips_parts() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let parts: Arc<[Bytes]> = vec![
            Bytes::from_static(b"a"),
            Bytes::from_static(b"bb"),
            Bytes::from_static(b"ccc"),
        ]
        .into();
        tx.send(Queued::Parts(parts.clone(), vec![1].into_boxed_slice()))
            .unwrap();
        tx.send(Queued::Raw(Bytes::from_static(b"dd"))).unwrap();
        tx.send(Queued::Message(Box::new(Message::Keepalive)))
            .unwrap();
        tx.send(Queued::Close).unwrap();
        let first = rx.recv().await;
        let mut batch = VecDeque::new();
        let close = gather(first, &mut rx, &mut CapsTracker::default(), &mut batch, 1);
        assert!(close);
        let flat: Vec<u8> = batch.iter().flat_map(|b| b.iter().copied()).collect();
        let mut want = b"acccdd".to_vec();
        want.extend(encoded(&[Message::Keepalive]));
        assert_eq!(flat, want);
        // Partial writes advance across buffer boundaries.
        advance(&mut batch, 2);
        assert_eq!(&batch[0][..], b"cc");
        advance(&mut batch, 4);
        assert_eq!(batch.len(), 1);
    }
}

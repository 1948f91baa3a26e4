//! What the actor has for one connection to write, shared between the
//! actor (which only adds) and the connection task (which only takes).
//! Sans-IO: no sockets, no tasks, tested on its own.
//!
//! Memory is bounded whatever the peer does (BIRD's "buckets"):
//!
//! * `urgent` — OPEN, KEEPALIVE, NOTIFICATION: written before any UPDATE
//!   still queued (after the batch being written), so a peer's keepalives
//!   never wait behind a backlog of routes. Consecutive KEEPALIVEs collapse
//!   into one.
//! * `bytes` — encoded UPDATEs as the actor made them (shared by an update
//!   group, or an initial table's shared parts), accepted only while the
//!   peer keeps up: under [`BYTES_CAP`] octets, at most one table, and no
//!   pending diff.
//! * `pending` — once the peer falls behind, routes are no longer queued as
//!   bytes but as an Adj-RIB-Out diff: for each prefix the latest state to
//!   send (attributes, or `None` for a withdraw). A prefix announced and
//!   withdrawn a thousand times while the peer is not reading is one entry,
//!   so memory is O(table), not O(churn). The connection task encodes from
//!   it as the socket becomes writable, in prefix order round and round (a
//!   prefix keeps its place when its state changes, so constant churn on
//!   some prefixes cannot starve others).
//!
//! Order is kept: bytes are only accepted while nothing is pending, so what
//! the diff says is always newer than the bytes before it; an End-of-RIB
//! queued with a table in the diff goes out once every prefix that was
//! pending when it was queued has been written.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use ipnetwork::IpNetwork;

use crate::packet::{AfiSafi, Message};
use crate::rib::PathAttrs;

/// Encoded UPDATEs accepted as bytes while the peer keeps up; beyond this,
/// routes go to the pending diff. Enough for a burst's UPDATEs on a healthy
/// session (the socket drains it in well under a millisecond on a LAN).
pub const BYTES_CAP: usize = 256 * 1024;

/// Prefixes taken from the pending diff for one write batch.
pub const DIFF_CHUNK: usize = 1024;

/// One Adj-RIB-Out change: the prefix and its state to send (`None`:
/// withdraw). The attributes are shared with the diff they came from (and
/// with every other prefix exported alike): a pending prefix costs a
/// pointer, not a copy of its attributes.
pub type Entry = crate::rib::export::Change;

/// Encoded output as the actor queued it.
#[derive(Debug)]
enum Encoded {
    Raw(Bytes),
    /// Shared encoded parts, all but the indices in `skip` (sorted).
    Parts(Arc<[Bytes]>, Box<[usize]>),
}

/// What the connection task takes for one write batch, in order.
#[derive(Debug, PartialEq)]
pub enum Take {
    /// A message to encode (OPEN, KEEPALIVE, NOTIFICATION, ...).
    Message(Message),
    /// Encoded UPDATEs.
    Bytes(Bytes),
    /// Routes from the diff, to encode as UPDATEs.
    Routes(Vec<Entry>),
    /// End-of-RIB for these families.
    EndOfRib(Vec<AfiSafi>),
}

/// The pending Adj-RIB-Out diff: one entry per prefix (its latest state),
/// taken in prefix order by a cursor that sweeps round and round. An
/// entry is a key and a pointer (~26 octets, in a B-tree's nodes), not a
/// key, a sequence number and an index entry (~70 octets with a map and a
/// queue): a reflector's slow peer can have the whole table pending.
///
/// The sweep is fair as a queue is: a pending prefix is taken within one
/// round whatever churns elsewhere (a prefix that changes again before its
/// turn keeps its turn; one that changes after it waits at most a round).
#[derive(Debug, Default)]
struct Pending {
    routes: BTreeMap<IpNetwork, Option<Arc<PathAttrs>>>,
    /// The last prefix taken: the sweep goes on after it (from the start
    /// when `None`).
    cursor: Option<IpNetwork>,
    /// End-of-RIB due once the sweep has gone once round from where it
    /// was when the End-of-RIB was queued: every prefix pending then has
    /// been taken.
    eor: Option<Eor>,
}

#[derive(Debug)]
struct Eor {
    /// The cursor when it was queued.
    from: Option<IpNetwork>,
    /// The sweep has passed the end of the table since.
    wrapped: bool,
    families: BTreeSet<AfiSafi>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.eor.is_none()
    }

    fn insert(&mut self, prefix: IpNetwork, state: Option<Arc<PathAttrs>>) {
        // Keeps its place (the map is in prefix order); the latest state wins.
        self.routes.insert(prefix, state);
    }

    fn end_of_rib(&mut self, families: impl IntoIterator<Item = AfiSafi>) {
        let mut fams = self.eor.take().map(|e| e.families).unwrap_or_default();
        fams.extend(families);
        self.eor = Some(Eor {
            from: self.cursor,
            wrapped: false,
            families: fams,
        });
    }

    /// The next prefix of the sweep after the cursor, without wrapping.
    fn next_after_cursor(&self) -> Option<IpNetwork> {
        match self.cursor {
            None => self.routes.keys().next().copied(),
            Some(c) => self
                .routes
                .range((Bound::Excluded(c), Bound::Unbounded))
                .next()
                .map(|(k, _)| *k),
        }
    }

    fn take(&mut self, max: usize, out: &mut Vec<Take>) {
        let mut routes = Vec::new();
        while routes.len() < max && !self.routes.is_empty() {
            match self.next_after_cursor() {
                Some(prefix) => {
                    let state = self.routes.remove(&prefix).expect("a pending prefix");
                    self.cursor = Some(prefix);
                    routes.push((prefix, state));
                }
                None => {
                    // End of the table: round again from the start.
                    self.cursor = None;
                    if let Some(e) = &mut self.eor {
                        e.wrapped = true;
                    }
                }
            }
        }
        if self.routes.is_empty() {
            self.cursor = None;
        }
        if !routes.is_empty() {
            out.push(Take::Routes(routes));
        }
        let due = match &self.eor {
            None => false,
            Some(_) if self.routes.is_empty() => true,
            // Round once: past the end, and nothing left up to where it began.
            Some(e) => {
                e.wrapped
                    && (e.from.is_none()
                        || self.next_after_cursor().is_none_or(|n| Some(n) > e.from))
            }
        };
        if due && let Some(e) = self.eor.take() {
            out.push(Take::EndOfRib(e.families.into_iter().collect()));
        }
    }

    /// Forget everything; gives the memory back.
    fn clear(&mut self) {
        *self = Pending::default();
    }
}

/// One connection's output (see the module documentation).
#[derive(Debug, Default)]
pub struct Outbox {
    urgent: VecDeque<Message>,
    bytes: VecDeque<Encoded>,
    bytes_len: usize,
    pending: Pending,
    close: bool,
}

impl Outbox {
    /// Queue a message ahead of queued UPDATEs. A KEEPALIVE right behind
    /// another one is dropped (one says as much as two).
    pub fn push_message(&mut self, msg: Message) {
        if self.close {
            return;
        }
        if msg == Message::Keepalive && self.urgent.back() == Some(&Message::Keepalive) {
            return;
        }
        self.urgent.push_back(msg);
    }

    /// Whether encoded UPDATEs are taken as bytes (the peer keeps up);
    /// otherwise queue routes with [`Outbox::push_routes`]. Only the
    /// connection task's taking can change a `false` into `true`.
    pub fn accepts_bytes(&self) -> bool {
        !self.close && self.pending.is_empty() && self.bytes_len < BYTES_CAP
    }

    /// Whether a table's shared parts are taken (as bytes, and no other
    /// table queued).
    pub fn accepts_table(&self) -> bool {
        self.accepts_bytes() && !self.bytes.iter().any(|e| matches!(e, Encoded::Parts(..)))
    }

    /// Queue encoded UPDATEs; the caller checked [`Outbox::accepts_bytes`].
    pub fn push_bytes(&mut self, b: Bytes) {
        debug_assert!(self.pending.is_empty(), "bytes after a pending diff");
        if self.close || b.is_empty() {
            return;
        }
        self.bytes_len += b.len();
        self.bytes.push_back(Encoded::Raw(b));
    }

    /// Queue a table's shared parts but `skip`; the caller checked
    /// [`Outbox::accepts_table`]. They count as one table, not as bytes
    /// (the update group's members share them).
    pub fn push_parts(&mut self, parts: Arc<[Bytes]>, skip: Vec<usize>) {
        debug_assert!(self.pending.is_empty(), "bytes after a pending diff");
        if self.close {
            return;
        }
        self.bytes
            .push_back(Encoded::Parts(parts, skip.into_boxed_slice()));
    }

    /// Queue routes into the pending diff (the latest state per prefix).
    pub fn push_routes<'a>(&mut self, routes: impl IntoIterator<Item = &'a Entry>) {
        if self.close {
            return;
        }
        for (prefix, state) in routes {
            self.pending.insert(*prefix, state.clone());
        }
    }

    /// Queue End-of-RIB after the routes pending now.
    pub fn push_end_of_rib(&mut self, families: impl IntoIterator<Item = AfiSafi>) {
        if self.close {
            return;
        }
        self.pending.end_of_rib(families);
    }

    /// Close after the urgent messages (a NOTIFICATION): routes not written
    /// yet are dropped, the session is going down.
    pub fn close(&mut self) {
        self.close = true;
        self.bytes.clear();
        self.bytes_len = 0;
        self.pending.clear();
    }

    /// Whether a close was asked.
    pub fn closing(&self) -> bool {
        self.close
    }

    /// Whether anything is left to take.
    pub fn is_empty(&self) -> bool {
        self.urgent.is_empty() && self.bytes.is_empty() && self.pending.is_empty()
    }

    /// Prefixes in the pending diff.
    pub fn pending_routes(&self) -> usize {
        self.pending.routes.len()
    }

    /// Take about `budget` octets of output for one write batch: every
    /// urgent message, then queued bytes, then (when no bytes are left)
    /// up to [`DIFF_CHUNK`] routes of the diff.
    pub fn take(&mut self, budget: usize) -> Vec<Take> {
        let mut out: Vec<Take> = self.urgent.drain(..).map(Take::Message).collect();
        let mut size = 0;
        while size < budget {
            let Some(e) = self.bytes.pop_front() else {
                break;
            };
            match e {
                Encoded::Raw(b) => {
                    self.bytes_len -= b.len();
                    size += b.len();
                    out.push(Take::Bytes(b));
                }
                Encoded::Parts(parts, skip) => {
                    for (i, part) in parts.iter().enumerate() {
                        if skip.binary_search(&i).is_err() && !part.is_empty() {
                            size += part.len();
                            out.push(Take::Bytes(part.clone()));
                        }
                    }
                }
            }
        }
        if self.bytes.is_empty() && size < budget {
            self.pending.take(DIFF_CHUNK, &mut out);
        }
        if self.is_empty() {
            // Give back what the queues grew to.
            self.urgent.shrink_to_fit();
            self.bytes.shrink_to_fit();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Notification;

    fn p(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn attrs(med: u32) -> Arc<PathAttrs> {
        Arc::new(PathAttrs {
            med: Some(med),
            ..PathAttrs::local()
        })
    }

    fn routes(takes: &[Take]) -> Vec<Entry> {
        takes
            .iter()
            .filter_map(|t| match t {
                Take::Routes(r) => Some(r.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Churn while the peer is not reading costs one entry per prefix: the
    /// latest state is what goes out, in prefix order.
    #[test]
    fn churn_collapses_to_the_latest_state_per_prefix() {
        let mut o = Outbox::default();
        for round in 0..1000u32 {
            let state = (round % 2 == 0).then(|| attrs(round));
            o.push_routes(&[
                (p("10.0.0.0/26"), state.clone()),
                (p("10.0.0.64/26"), state),
            ]);
        }
        o.push_routes(&[(p("10.0.1.0/26"), Some(attrs(7)))]);
        assert_eq!(o.pending_routes(), 3);
        let t = o.take(usize::MAX);
        assert_eq!(
            routes(&t),
            vec![
                (p("10.0.0.0/26"), None),
                (p("10.0.0.64/26"), None),
                (p("10.0.1.0/26"), Some(attrs(7))),
            ]
        );
        assert!(o.is_empty());
    }

    /// Bytes are taken while the peer keeps up; past the cap (or with a
    /// diff pending) routes go to the diff, and bytes come back only once
    /// the diff is written, so nothing older overtakes anything newer.
    #[test]
    fn bytes_until_the_cap_then_the_diff_then_bytes_again() {
        let mut o = Outbox::default();
        assert!(o.accepts_bytes());
        o.push_bytes(Bytes::from(vec![1u8; BYTES_CAP]));
        assert!(!o.accepts_bytes(), "over the cap");
        o.push_routes(&[(p("10.0.0.0/26"), Some(attrs(1)))]);
        let t = o.take(16);
        assert!(matches!(&t[..], [Take::Bytes(b)] if b.len() == BYTES_CAP));
        assert!(
            !o.accepts_bytes(),
            "a diff is pending: bytes would overtake it"
        );
        let t = o.take(16);
        assert_eq!(routes(&t), vec![(p("10.0.0.0/26"), Some(attrs(1)))]);
        assert!(o.accepts_bytes());
    }

    /// Keepalives and NOTIFICATIONs go before queued routes; repeated
    /// keepalives collapse.
    #[test]
    fn urgent_messages_go_first_and_keepalives_collapse() {
        let mut o = Outbox::default();
        o.push_bytes(Bytes::from_static(b"update"));
        o.push_routes(&[(p("10.0.0.0/26"), None)]);
        for _ in 0..100 {
            o.push_message(Message::Keepalive);
        }
        let t = o.take(1);
        assert_eq!(t[0], Take::Message(Message::Keepalive));
        assert_eq!(t[1], Take::Bytes(Bytes::from_static(b"update")));
        assert_eq!(t.len(), 2, "budget used up: the diff waits");
    }

    /// RFC 4724 §2: End-of-RIB follows the initial table, even while later
    /// changes keep arriving; a later change to a table prefix keeps its
    /// place before the End-of-RIB.
    #[test]
    fn end_of_rib_follows_the_table_not_later_churn() {
        let mut o = Outbox::default();
        let table: Vec<Entry> = (0..3)
            .map(|i| (p(&format!("10.0.{i}.0/26")), Some(attrs(i))))
            .collect();
        o.push_routes(&table);
        o.push_end_of_rib([AfiSafi::IPV4_UNICAST]);
        o.push_routes(&[(p("10.0.1.0/26"), None), (p("10.0.9.0/26"), None)]);
        let mut seen = Vec::new();
        loop {
            let t = o.take(usize::MAX);
            if t.is_empty() {
                break;
            }
            seen.extend(t);
        }
        let eor = seen
            .iter()
            .position(|t| matches!(t, Take::EndOfRib(_)))
            .expect("End-of-RIB sent");
        // The table, with .1's latest state (withdrawn) in its place, is
        // before it; the later .9 fits in the same chunk.
        assert_eq!(
            routes(&seen[..eor]),
            vec![
                (p("10.0.0.0/26"), Some(attrs(0))),
                (p("10.0.1.0/26"), None),
                (p("10.0.2.0/26"), Some(attrs(2))),
                (p("10.0.9.0/26"), None),
            ]
        );
        assert_eq!(seen[eor], Take::EndOfRib(vec![AfiSafi::IPV4_UNICAST]));
    }

    /// The sweep goes on after the last prefix taken, so prefixes that
    /// change behind it wait for the next round (no churn starves the
    /// rest), and an End-of-RIB goes out once the sweep has been round
    /// once from where it was queued, not once nothing is pending.
    #[test]
    fn the_sweep_goes_round_and_end_of_rib_waits_one_round() {
        let net = |i: u32| {
            IpNetwork::V4(ipnetwork::Ipv4Network::new((0x0a00_0000 + (i << 6)).into(), 26).unwrap())
        };
        let mut pd = Pending::default();
        let take = |pd: &mut Pending| {
            let mut out = Vec::new();
            pd.take(2, &mut out);
            out.into_iter()
                .map(|t| match t {
                    Take::Routes(r) => format!(
                        "{:?}",
                        r.iter().map(|(p, _)| p.to_string()).collect::<Vec<_>>()
                    ),
                    Take::EndOfRib(_) => "EoR".to_string(),
                    other => format!("{other:?}"),
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        for i in 0..6 {
            pd.insert(net(i), Some(attrs(i)));
        }
        assert_eq!(take(&mut pd), r#"["10.0.0.0/26", "10.0.0.64/26"]"#);
        pd.end_of_rib([AfiSafi::IPV4_UNICAST]);
        // Changed behind the cursor, after the End-of-RIB was queued.
        pd.insert(net(0), None);
        pd.insert(net(1), None);
        assert_eq!(take(&mut pd), r#"["10.0.0.128/26", "10.0.0.192/26"]"#);
        pd.insert(net(3), None);
        assert_eq!(take(&mut pd), r#"["10.0.1.0/26", "10.0.1.64/26"]"#);
        // Round again: .0 and .1 come before .3 (changed later, further
        // on), and the round from .1 back to .1 is done: End-of-RIB, with
        // .3 still pending.
        assert_eq!(take(&mut pd), r#"["10.0.0.0/26", "10.0.0.64/26"] EoR"#);
        assert_eq!(take(&mut pd), r#"["10.0.0.192/26"]"#);
        assert!(pd.is_empty());
    }

    /// With a chunked diff, End-of-RIB waits for the table's last chunk.
    #[test]
    fn end_of_rib_waits_for_every_table_chunk() {
        let mut o = Outbox::default();
        let table: Vec<Entry> = (0..(DIFF_CHUNK as u32 + 10))
            .map(|i| {
                let net = ipnetwork::Ipv4Network::new((0x0a00_0000 + (i << 6)).into(), 26).unwrap();
                (IpNetwork::V4(net), Some(attrs(1)))
            })
            .collect();
        o.push_routes(&table);
        o.push_end_of_rib([AfiSafi::IPV4_UNICAST]);
        let first = o.take(usize::MAX);
        assert_eq!(routes(&first).len(), DIFF_CHUNK);
        assert!(!first.iter().any(|t| matches!(t, Take::EndOfRib(_))));
        let second = o.take(usize::MAX);
        assert_eq!(routes(&second).len(), 10);
        assert!(matches!(second.last(), Some(Take::EndOfRib(_))));
    }

    /// A close drops the routes (the session goes down) but keeps the
    /// NOTIFICATION, and nothing is queued after it.
    #[test]
    fn close_keeps_the_notification_and_drops_routes() {
        let mut o = Outbox::default();
        o.push_bytes(Bytes::from_static(b"update"));
        o.push_routes(&[(p("10.0.0.0/26"), None)]);
        let cease = Message::Notification(Notification::new(6, 8, Vec::new()));
        o.push_message(cease.clone());
        o.close();
        o.push_routes(&[(p("10.0.1.0/26"), None)]);
        o.push_message(Message::Keepalive);
        assert!(!o.accepts_bytes());
        assert_eq!(o.take(usize::MAX), vec![Take::Message(cease)]);
        assert!(o.is_empty() && o.closing());
    }

    /// One table's shared parts at a time; a second table (a ROUTE-REFRESH
    /// while the first is unread) goes to the diff.
    #[test]
    fn one_shared_table_at_a_time() {
        let mut o = Outbox::default();
        let parts: Arc<[Bytes]> = vec![
            Bytes::from_static(b"a"),
            Bytes::from_static(b"bb"),
            Bytes::from_static(b"eor"),
        ]
        .into();
        assert!(o.accepts_table());
        o.push_parts(parts.clone(), vec![1]);
        assert!(!o.accepts_table());
        assert!(o.accepts_bytes());
        let t = o.take(usize::MAX);
        assert_eq!(
            t,
            vec![
                Take::Bytes(Bytes::from_static(b"a")),
                Take::Bytes(Bytes::from_static(b"eor"))
            ]
        );
        assert!(o.accepts_table());
    }
}

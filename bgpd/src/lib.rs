//! Manx BGP speaker.
//!
//! * [`packet`] — BGP-4 messages, capabilities and path attributes: decode
//!   with `nom`, encode into a reused buffer. No I/O.
//! * [`fsm`] — the RFC 4271 §8 state machine, sans-IO.
//! * [`bfd`] — BFD (RFC 5880) Control packets and session state machine,
//!   sans-IO.
//! * [`rib`] — Adj-RIB-In, Loc-RIB best path, export rules.
//! * [`session`] — the tokio tasks that own sockets (listener, dialer, one
//!   task per connection), TCP-MD5 and GTSM.
//! * [`speaker`] — the actor that owns all peers, FSMs, timers and the RIB;
//!   [`tasks`] draws every task and channel.
//! * [`cluster`] — the peers a node has, from the datastore's `Node`s,
//!   `BGPPeer`s and `BGPConfiguration` (mesh, route reflectors).
//! * [`northbound`] — `BGPPeer`, `BGPConfiguration` and `Node.spec.bgp`
//!   read once, exhaustively, into the speaker's settings.
//! * [`config`] — the daemon's YAML; [`control`] — the local status socket
//!   and its client (`manxctl node status`); [`alloc`] — one malloc arena
//!   for the daemons.

pub mod alloc;
pub mod bfd;
pub mod cluster;
pub mod config;
pub mod control;
pub mod fsm;
pub mod northbound;
pub mod packet;
pub mod policy;
pub mod reflector;
pub mod rib;
pub mod session;
pub mod speaker;
pub mod tasks;

pub use config::{PeerConfig, PeerType, SpeakerConfig};
pub use control::{PeerStatus, RouteStatus, query_peers, query_routes};
pub use rib::{RouteFeed, RouteUpdate};
pub use speaker::{Speaker, SpeakerHandle};

//! BGP-4 codec (no I/O): messages, capabilities and path attributes.
//!
//! Decoding uses `nom` on borrowed bytes; encoding appends to a reused
//! `Vec<u8>`. Both depend on the [`SessionCaps`] negotiated in the OPEN
//! exchange (4-octet AS, ADD-PATH per family and direction, extended
//! messages). Decoding real peers' messages then encoding them again gives
//! the same bytes (see `tests/packet_captures.rs`).
//!
//! Errors: [`DecodeError`] is fatal for the session and maps to a
//! NOTIFICATION in exactly one place, [`DecodeError::notification`]. UPDATE
//! errors that RFC 7606 downgrades are not errors: the UPDATE decodes with
//! [`Update::treat_as_withdraw`] set, or without the discarded attribute.

mod aspath;
mod attribute;
mod capability;
mod error;
mod message;
mod nlri;
mod notification;
mod open;
mod split;
mod update;

pub use aspath::{AsPath, AsSegment};
pub use attribute::{
    MpReach, MpUnreach, Origin, PathAttribute, flags as attr_flags, type_code as attr_type,
};
pub use capability::{AddPathEntry, Capability, GracefulRestart, code as cap_code};
pub use error::{DecodeError, EncodeError};
pub use message::{Message, RouteRefresh, decode_message, encode_message, message_type};
pub use nlri::{Afi, AfiSafi, Nlri, Safi};
pub use notification::{Notification, notif};
pub use open::{AS_TRANS, Open, SessionCaps};
pub use update::Update;

/// Re-exported so callers name prefixes without depending on `ipnetwork`.
pub use ipnetwork::IpNetwork as Prefix;

/// TCP port (RFC 4271 §8.2.1).
pub const BGP_PORT: u16 = 179;
/// Message header length (RFC 4271 §4.1).
pub const HEADER_LEN: usize = 19;
/// Maximum message length without extended messages (RFC 4271 §4.1).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Maximum message length with extended messages (RFC 8654 §4).
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;

#[cfg(test)]
mod tests;

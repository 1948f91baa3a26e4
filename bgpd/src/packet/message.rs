//! Message header framing (RFC 4271 §4.1), KEEPALIVE (§4.4) and
//! ROUTE-REFRESH (RFC 2918 §3, RFC 7313 §3.2).

use super::error::{DecodeError, EncodeError};
use super::nlri::AfiSafi;
use super::notification::Notification;
use super::open::{Open, SessionCaps};
use super::update::Update;
use super::{HEADER_LEN, MAX_MESSAGE_LEN};

/// Message type codes (RFC 4271 §4.1, RFC 2918 §3).
pub mod message_type {
    /// OPEN.
    pub const OPEN: u8 = 1;
    /// UPDATE.
    pub const UPDATE: u8 = 2;
    /// NOTIFICATION.
    pub const NOTIFICATION: u8 = 3;
    /// KEEPALIVE.
    pub const KEEPALIVE: u8 = 4;
    /// ROUTE-REFRESH.
    pub const ROUTE_REFRESH: u8 = 5;
}

/// A BGP message. Every message starts with the header (RFC 4271 §4.1):
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                                                               |
/// +                                                               +
/// |                           Marker (all ones)                   |
/// +                                                               +
/// |                                                               |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |          Length               |      Type     |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// A KEEPALIVE is the header alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Message {
    /// Type 1.
    Open(Open),
    /// Type 2.
    Update(Update),
    /// Type 3.
    Notification(Notification),
    /// Type 4.
    Keepalive,
    /// Type 5.
    RouteRefresh(RouteRefresh),
}

impl Message {
    /// The message type code.
    pub fn type_code(&self) -> u8 {
        match self {
            Message::Open(_) => message_type::OPEN,
            Message::Update(_) => message_type::UPDATE,
            Message::Notification(_) => message_type::NOTIFICATION,
            Message::Keepalive => message_type::KEEPALIVE,
            Message::RouteRefresh(_) => message_type::ROUTE_REFRESH,
        }
    }
}

/// ROUTE-REFRESH (RFC 2918 §3; subtype RFC 7313 §3.2).
///
/// ```text
///  0       7      15      23      31
/// +-------+-------+-------+-------+
/// |      AFI      |Subtype| SAFI  |
/// +-------+-------+-------+-------+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteRefresh {
    /// The family to refresh.
    pub family: AfiSafi,
    /// 0 normal request, 1 Beginning of Route Refresh, 2 End of Route Refresh.
    pub subtype: u8,
}

impl RouteRefresh {
    /// Subtype 0: a normal route refresh request.
    pub const REQUEST: u8 = 0;
    /// Subtype 1 (RFC 7313): Beginning of Route Refresh.
    pub const BORR: u8 = 1;
    /// Subtype 2 (RFC 7313): End of Route Refresh.
    pub const EORR: u8 = 2;

    /// A normal refresh request for `family`.
    pub fn request(family: AfiSafi) -> RouteRefresh {
        RouteRefresh {
            family,
            subtype: Self::REQUEST,
        }
    }
}

const MARKER: [u8; 16] = [0xff; 16];

/// Decode one message from the front of `buf`.
///
/// `Ok(None)`: more bytes are needed. `Ok(Some((msg, consumed)))`: one
/// message. `Err`: fatal for the session; send
/// [`DecodeError::notification`] then close.
pub fn decode_message(
    buf: &[u8],
    caps: &SessionCaps,
) -> Result<Option<(Message, usize)>, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    // RFC 4271 §6.1: marker, length range, type.
    if buf[..16] != MARKER {
        return Err(DecodeError::ConnectionNotSynchronized);
    }
    let length = u16::from_be_bytes([buf[16], buf[17]]);
    let len = usize::from(length);
    let msg_type = buf[18];
    let bad_length = Err(DecodeError::BadMessageLength { length });
    // RFC 8654 §4: only UPDATE, NOTIFICATION and ROUTE-REFRESH may exceed
    // 4096 octets, and only when negotiated; OPEN and KEEPALIVE never do.
    let max = match msg_type {
        message_type::OPEN | message_type::KEEPALIVE => MAX_MESSAGE_LEN,
        _ => caps.max_message_len(),
    };
    if len < HEADER_LEN || len > max {
        return bad_length;
    }
    let min = match msg_type {
        message_type::OPEN => HEADER_LEN + 10,
        message_type::UPDATE => HEADER_LEN + 4,
        message_type::NOTIFICATION => HEADER_LEN + 2,
        message_type::KEEPALIVE => HEADER_LEN,
        // RFC 7313 §5: a bad ROUTE-REFRESH length is its own error (7/1),
        // reported once the whole message is here.
        message_type::ROUTE_REFRESH => HEADER_LEN,
        _ => return Err(DecodeError::BadMessageType { msg_type }),
    };
    if len < min || (msg_type == message_type::KEEPALIVE && len != HEADER_LEN) {
        return bad_length;
    }
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[HEADER_LEN..len];
    let msg = match msg_type {
        message_type::OPEN => Message::Open(Open::parse(body)?),
        message_type::UPDATE => Message::Update(Update::parse(body, caps)?),
        message_type::NOTIFICATION => {
            let (_, n) =
                Notification::parse(body).map_err(|_| DecodeError::BadMessageLength { length })?;
            Message::Notification(n)
        }
        message_type::KEEPALIVE => Message::Keepalive,
        _ => {
            if body.len() != 4 {
                return Err(DecodeError::InvalidRouteRefreshLength {
                    message: buf[..len].to_vec(),
                });
            }
            Message::RouteRefresh(RouteRefresh {
                family: AfiSafi::from_codes(u16::from_be_bytes([body[0], body[1]]), body[3]),
                subtype: body[2],
            })
        }
    };
    Ok(Some((msg, len)))
}

/// Encode `msg` by appending to `out`. On error `out` is left as it was.
/// Fails if the message would exceed the negotiated maximum length.
pub fn encode_message(
    msg: &Message,
    caps: &SessionCaps,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = out.len();
    let result = encode_inner(msg, caps, out, start);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_inner(
    msg: &Message,
    caps: &SessionCaps,
    out: &mut Vec<u8>,
    start: usize,
) -> Result<(), EncodeError> {
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&[0, 0, msg.type_code()]);
    match msg {
        Message::Open(open) => open.encode_body(out)?,
        Message::Update(update) => update.encode_body(caps, out)?,
        Message::Notification(n) => n.encode_body(out),
        Message::Keepalive => {}
        Message::RouteRefresh(rr) => {
            out.extend_from_slice(&rr.family.afi.code().to_be_bytes());
            out.push(rr.subtype);
            out.push(rr.family.safi.code());
        }
    }
    let len = out.len() - start;
    let max = match msg {
        Message::Open(_) | Message::Keepalive => MAX_MESSAGE_LEN,
        _ => caps.max_message_len(),
    };
    if len > max {
        return Err(EncodeError::MessageTooLong { len, max });
    }
    out[start + 16..start + 18].copy_from_slice(&(len as u16).to_be_bytes());
    Ok(())
}

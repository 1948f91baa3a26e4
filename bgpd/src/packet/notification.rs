//! NOTIFICATION message (RFC 4271 §4.5) and the code/subcode registry.

use nom::IResult;
use nom::number::complete::be_u8;

/// NOTIFICATION error codes and subcodes (RFC 4271 §4.5, IANA "BGP Error
/// (Notification) Codes" and subcode registries).
pub mod notif {
    /// Code 1.
    pub const MESSAGE_HEADER_ERROR: u8 = 1;
    /// Code 2.
    pub const OPEN_MESSAGE_ERROR: u8 = 2;
    /// Code 3.
    pub const UPDATE_MESSAGE_ERROR: u8 = 3;
    /// Code 4.
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    /// Code 5.
    pub const FSM_ERROR: u8 = 5;
    /// Code 6.
    pub const CEASE: u8 = 6;
    /// Code 7 (RFC 7313 §5).
    pub const ROUTE_REFRESH_ERROR: u8 = 7;

    /// Subcode 0 of any code.
    pub const UNSPECIFIC: u8 = 0;

    // Message Header Error subcodes (RFC 4271 §6.1).
    /// 1/1.
    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    /// 1/2.
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    /// 1/3.
    pub const BAD_MESSAGE_TYPE: u8 = 3;

    // OPEN Message Error subcodes (RFC 4271 §6.2, RFC 5492 §5).
    /// 2/1.
    pub const UNSUPPORTED_VERSION_NUMBER: u8 = 1;
    /// 2/2.
    pub const BAD_PEER_AS: u8 = 2;
    /// 2/3.
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    /// 2/4.
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    /// 2/6.
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    /// 2/7 (RFC 5492).
    pub const UNSUPPORTED_CAPABILITY: u8 = 7;

    // UPDATE Message Error subcodes (RFC 4271 §6.3).
    /// 3/1.
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    /// 3/2.
    pub const UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE: u8 = 2;
    /// 3/3.
    pub const MISSING_WELL_KNOWN_ATTRIBUTE: u8 = 3;
    /// 3/4.
    pub const ATTRIBUTE_FLAGS_ERROR: u8 = 4;
    /// 3/5.
    pub const ATTRIBUTE_LENGTH_ERROR: u8 = 5;
    /// 3/6.
    pub const INVALID_ORIGIN_ATTRIBUTE: u8 = 6;
    /// 3/8.
    pub const INVALID_NEXT_HOP_ATTRIBUTE: u8 = 8;
    /// 3/9.
    pub const OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;
    /// 3/10.
    pub const INVALID_NETWORK_FIELD: u8 = 10;
    /// 3/11.
    pub const MALFORMED_AS_PATH: u8 = 11;

    // FSM Error subcodes (RFC 6608).
    /// 5/1.
    pub const FSM_UNEXPECTED_IN_OPENSENT: u8 = 1;
    /// 5/2.
    pub const FSM_UNEXPECTED_IN_OPENCONFIRM: u8 = 2;
    /// 5/3.
    pub const FSM_UNEXPECTED_IN_ESTABLISHED: u8 = 3;

    // Cease subcodes (RFC 4486, RFC 8203).
    /// 6/1.
    pub const CEASE_MAX_PREFIXES: u8 = 1;
    /// 6/2.
    pub const CEASE_ADMIN_SHUTDOWN: u8 = 2;
    /// 6/3.
    pub const CEASE_PEER_DECONFIGURED: u8 = 3;
    /// 6/4.
    pub const CEASE_ADMIN_RESET: u8 = 4;
    /// 6/5.
    pub const CEASE_CONNECTION_REJECTED: u8 = 5;
    /// 6/6.
    pub const CEASE_OTHER_CONFIG_CHANGE: u8 = 6;
    /// 6/7.
    pub const CEASE_CONNECTION_COLLISION: u8 = 7;
    /// 6/8.
    pub const CEASE_OUT_OF_RESOURCES: u8 = 8;
    /// 6/9 (RFC 8538).
    pub const CEASE_HARD_RESET: u8 = 9;

    // ROUTE-REFRESH Message Error subcodes (RFC 7313 §5).
    /// 7/1.
    pub const INVALID_ROUTE_REFRESH_LENGTH: u8 = 1;
}

/// NOTIFICATION message body (RFC 4271 §4.5).
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// | Error code    | Error subcode |   Data (variable)             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Notification {
    /// Error code ([`notif`]).
    pub code: u8,
    /// Error subcode ([`notif`]).
    pub subcode: u8,
    /// Diagnostic data, meaning depends on code/subcode.
    pub data: Vec<u8>,
}

/// RFC 9003 §2: the shutdown communication is at most 255 octets of UTF-8.
const MAX_SHUTDOWN_MESSAGE: usize = 255;

impl Notification {
    /// A NOTIFICATION with the given code, subcode and data.
    pub fn new(code: u8, subcode: u8, data: Vec<u8>) -> Notification {
        Notification {
            code,
            subcode,
            data,
        }
    }

    /// Cease / Administrative Shutdown with a shutdown communication
    /// (RFC 8203, RFC 9003 §2): data = length octet + UTF-8 message,
    /// truncated to 255 octets on a character boundary.
    pub fn cease_shutdown(msg: &str) -> Notification {
        let mut end = msg.len().min(MAX_SHUTDOWN_MESSAGE);
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        let text = &msg.as_bytes()[..end];
        let mut data = Vec::with_capacity(text.len() + 1);
        if !text.is_empty() {
            data.push(text.len() as u8);
            data.extend_from_slice(text);
        }
        Notification::new(notif::CEASE, notif::CEASE_ADMIN_SHUTDOWN, data)
    }

    /// Cease / Hard Reset (RFC 8538 §3) carrying `inner`: its data is the
    /// inner code, subcode and data. Sent instead of a Cease that must end
    /// graceful restart when both sides set the N bit.
    pub fn hard_reset(inner: &Notification) -> Notification {
        let mut data = Vec::with_capacity(inner.data.len() + 2);
        inner.encode_body(&mut data);
        Notification::new(notif::CEASE, notif::CEASE_HARD_RESET, data)
    }

    /// Is this a Cease / Hard Reset (RFC 8538 §3)?
    pub fn is_hard_reset(&self) -> bool {
        self.code == notif::CEASE && self.subcode == notif::CEASE_HARD_RESET
    }

    /// The NOTIFICATION a Hard Reset carries, if it carries one.
    pub fn encapsulated(&self) -> Option<Notification> {
        if !self.is_hard_reset() {
            return None;
        }
        let (&code, rest) = self.data.split_first()?;
        let (&subcode, data) = rest.split_first()?;
        Some(Notification::new(code, subcode, data.to_vec()))
    }

    /// The shutdown communication of a Cease / Administrative Shutdown or
    /// Administrative Reset (RFC 9003 §2), if present and valid UTF-8; also
    /// inside a Hard Reset (RFC 8538 §3).
    pub fn shutdown_message(&self) -> Option<String> {
        if let Some(inner) = self.encapsulated() {
            return inner.shutdown_message();
        }
        if self.code != notif::CEASE
            || !matches!(
                self.subcode,
                notif::CEASE_ADMIN_SHUTDOWN | notif::CEASE_ADMIN_RESET
            )
        {
            return None;
        }
        let (&len, rest) = self.data.split_first()?;
        let text = rest.get(..usize::from(len))?;
        String::from_utf8(text.to_vec()).ok()
    }

    /// Human-readable name of the code/subcode pair, for logs.
    pub fn describe(&self) -> String {
        let code = match self.code {
            notif::MESSAGE_HEADER_ERROR => "message header error",
            notif::OPEN_MESSAGE_ERROR => "OPEN message error",
            notif::UPDATE_MESSAGE_ERROR => "UPDATE message error",
            notif::HOLD_TIMER_EXPIRED => "hold timer expired",
            notif::FSM_ERROR => "finite state machine error",
            notif::CEASE => "cease",
            notif::ROUTE_REFRESH_ERROR => "ROUTE-REFRESH message error",
            _ => "unknown error code",
        };
        format!("{code} ({}/{})", self.code, self.subcode)
    }

    pub(crate) fn parse(body: &[u8]) -> IResult<&[u8], Notification, ()> {
        let (rest, code) = be_u8(body)?;
        let (rest, subcode) = be_u8(rest)?;
        Ok((&[], Notification::new(code, subcode, rest.to_vec())))
    }

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        out.push(self.code);
        out.push(self.subcode);
        out.extend_from_slice(&self.data);
    }
}

impl std::fmt::Display for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())?;
        if let Some(msg) = self.shutdown_message() {
            write!(f, ": {msg:?}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8203 / RFC 9003 §2: length octet then UTF-8 text.
    // RFC 8538 §3: the Hard Reset's data is the encapsulated NOTIFICATION.
    #[test]
    fn hard_reset_encapsulates_the_cease() {
        let inner = Notification::cease_shutdown("node drained");
        let hr = Notification::hard_reset(&inner);
        assert_eq!((hr.code, hr.subcode), (6, 9));
        assert_eq!(&hr.data[..2], &[6, 2]);
        assert_eq!(hr.data[2..], inner.data[..]);
        assert!(hr.is_hard_reset() && !inner.is_hard_reset());
        assert_eq!(hr.encapsulated(), Some(inner));
        assert_eq!(hr.shutdown_message().as_deref(), Some("node drained"));
        // A Hard Reset without data carries nothing; no panic.
        assert_eq!(Notification::new(6, 9, vec![]).encapsulated(), None);
        assert_eq!(Notification::new(6, 9, vec![6]).encapsulated(), None);
    }

    #[test]
    fn shutdown_communication_round_trip() {
        let n = Notification::cease_shutdown("maintenance: kernel upgrade");
        assert_eq!((n.code, n.subcode), (6, 2));
        assert_eq!(n.data[0] as usize, n.data.len() - 1);
        assert_eq!(
            n.shutdown_message().as_deref(),
            Some("maintenance: kernel upgrade")
        );
    }

    // RFC 9003 §2: at most 255 octets; never cut a UTF-8 sequence.
    #[test]
    fn shutdown_communication_truncates_on_char_boundary() {
        let long = "é".repeat(200); // 400 octets
        let n = Notification::cease_shutdown(&long);
        assert_eq!(n.data[0], 254);
        assert_eq!(n.shutdown_message().unwrap().chars().count(), 127);
    }

    #[test]
    fn empty_shutdown_message_has_no_data() {
        let n = Notification::cease_shutdown("");
        assert!(n.data.is_empty());
        assert_eq!(n.shutdown_message(), None);
    }
}

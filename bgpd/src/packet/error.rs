//! The codec's error types and their one mapping to NOTIFICATION
//! code/subcode/data (RFC 4271 §6).

use std::net::Ipv4Addr;

use super::notification::{Notification, notif};

/// A decode error that is fatal for the session: send
/// [`DecodeError::notification`] and close (RFC 4271 §6).
///
/// UPDATE errors that RFC 7606 downgrades to "treat-as-withdraw" or
/// "attribute discard" are not errors: decoding succeeds and sets
/// [`Update::treat_as_withdraw`](super::Update::treat_as_withdraw) or drops
/// the attribute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// RFC 4271 §6.1: the marker is not all ones.
    #[error("message header: marker is not all ones (connection not synchronized)")]
    ConnectionNotSynchronized,
    /// RFC 4271 §6.1: length field out of range for the message type.
    #[error("message header: bad message length {length}")]
    BadMessageLength {
        /// The erroneous length field.
        length: u16,
    },
    /// RFC 4271 §6.1: unknown message type.
    #[error("message header: bad message type {msg_type}")]
    BadMessageType {
        /// The erroneous type field.
        msg_type: u8,
    },
    /// RFC 4271 §6.2: version is not 4.
    #[error("OPEN: unsupported BGP version {version}, only 4 is supported")]
    UnsupportedVersion {
        /// The version the peer bid.
        version: u8,
    },
    /// RFC 4271 §6.2: peer AS is not the configured one (checked by the FSM).
    #[error("OPEN: bad peer AS {asn}")]
    BadPeerAs {
        /// AS received.
        asn: u32,
    },
    /// RFC 4271 §6.2, RFC 6286: bad BGP identifier (checked by the FSM).
    #[error("OPEN: bad BGP identifier {id}")]
    BadBgpIdentifier {
        /// Identifier received.
        id: Ipv4Addr,
    },
    /// RFC 4271 §6.2: an optional parameter other than Capabilities (2).
    #[error("OPEN: unsupported optional parameter type {param_type}")]
    UnsupportedOptionalParameter {
        /// Parameter type received.
        param_type: u8,
    },
    /// RFC 4271 §6.2: hold time 1 or 2 seconds, or refused by config (FSM).
    #[error("OPEN: unacceptable hold time {hold_time}s")]
    UnacceptableHoldTime {
        /// Hold time received.
        hold_time: u16,
    },
    /// RFC 5492 §5: a capability we require is missing (FSM); data lists it.
    #[error("OPEN: unsupported capability")]
    UnsupportedCapability {
        /// The capability tuples (code, length, value).
        data: Vec<u8>,
    },
    /// OPEN whose optional parameters overrun their length field.
    #[error("OPEN: optional parameters are malformed ({reason})")]
    MalformedOpen {
        /// What was wrong.
        reason: &'static str,
    },
    /// RFC 4271 §6.3 / RFC 7606 §3.g: withdrawn or attribute length overruns
    /// the message, or MP_REACH/MP_UNREACH appear twice.
    #[error("UPDATE: malformed attribute list ({reason})")]
    MalformedAttributeList {
        /// What was wrong.
        reason: &'static str,
    },
    /// RFC 4271 §6.3: a well-known attribute we do not know.
    #[error("UPDATE: unrecognized well-known attribute type {type_code}")]
    UnrecognizedWellKnownAttribute {
        /// Attribute type code.
        type_code: u8,
        /// The whole attribute (flags, type, length, value).
        attribute: Vec<u8>,
    },
    /// RFC 4271 §6.3: a mandatory attribute is missing (RFC 7606 §3.d makes
    /// decode treat-as-withdraw instead; kept for callers that want it).
    #[error("UPDATE: missing well-known attribute type {type_code}")]
    MissingWellKnownAttribute {
        /// Type code of the missing attribute.
        type_code: u8,
    },
    /// RFC 4271 §6.3: flags conflict with the attribute type.
    #[error("UPDATE: attribute flags error on attribute type {type_code}")]
    AttributeFlagsError {
        /// Attribute type code.
        type_code: u8,
        /// The whole attribute.
        attribute: Vec<u8>,
    },
    /// RFC 4271 §6.3: attribute length wrong for its type.
    #[error("UPDATE: attribute length error on attribute type {type_code}")]
    AttributeLengthError {
        /// Attribute type code.
        type_code: u8,
        /// The whole attribute.
        attribute: Vec<u8>,
    },
    /// RFC 4271 §6.3: ORIGIN value undefined.
    #[error("UPDATE: invalid ORIGIN attribute")]
    InvalidOrigin {
        /// The whole attribute.
        attribute: Vec<u8>,
    },
    /// RFC 4271 §6.3: NEXT_HOP syntactically or semantically incorrect.
    #[error("UPDATE: invalid NEXT_HOP attribute")]
    InvalidNextHop {
        /// The whole attribute.
        attribute: Vec<u8>,
    },
    /// RFC 4271 §6.3, RFC 4760 §7: an optional attribute is malformed in a way
    /// that does not allow treat-as-withdraw (MP_REACH/MP_UNREACH framing).
    #[error("UPDATE: optional attribute error on attribute type {type_code} ({reason})")]
    OptionalAttributeError {
        /// Attribute type code.
        type_code: u8,
        /// What was wrong.
        reason: &'static str,
        /// The whole attribute.
        attribute: Vec<u8>,
    },
    /// RFC 4271 §6.3, RFC 7606 §5.3: the NLRI or withdrawn routes field
    /// cannot be parsed.
    #[error("UPDATE: invalid network field ({reason})")]
    InvalidNetworkField {
        /// What was wrong.
        reason: &'static str,
    },
    /// RFC 4271 §6.3: AS_PATH malformed (RFC 7606 §7.2 makes decode
    /// treat-as-withdraw instead; kept for callers that want it).
    #[error("UPDATE: malformed AS_PATH")]
    MalformedAsPath,
    /// RFC 7313 §5: ROUTE-REFRESH length is not 23.
    #[error("ROUTE-REFRESH: invalid message length")]
    InvalidRouteRefreshLength {
        /// The complete message.
        message: Vec<u8>,
    },
}

fn length_data(length: u16) -> Vec<u8> {
    length.to_be_bytes().to_vec()
}

impl DecodeError {
    /// The NOTIFICATION to send before closing (RFC 4271 §6). This is the
    /// one place that maps errors to code/subcode/data.
    pub fn notification(&self) -> Notification {
        use DecodeError as E;
        use notif::*;
        let (code, subcode, data) = match self {
            E::ConnectionNotSynchronized => {
                (MESSAGE_HEADER_ERROR, CONNECTION_NOT_SYNCHRONIZED, vec![])
            }
            // §6.1: "the Data field MUST contain the erroneous Length field".
            E::BadMessageLength { length } => (
                MESSAGE_HEADER_ERROR,
                BAD_MESSAGE_LENGTH,
                length_data(*length),
            ),
            // §6.1: "the Data field MUST contain the erroneous Type field".
            E::BadMessageType { msg_type } => {
                (MESSAGE_HEADER_ERROR, BAD_MESSAGE_TYPE, vec![*msg_type])
            }
            // §6.2: data = largest supported version (2 octets).
            E::UnsupportedVersion { .. } => {
                (OPEN_MESSAGE_ERROR, UNSUPPORTED_VERSION_NUMBER, vec![0, 4])
            }
            E::BadPeerAs { .. } => (OPEN_MESSAGE_ERROR, BAD_PEER_AS, vec![]),
            E::BadBgpIdentifier { .. } => (OPEN_MESSAGE_ERROR, BAD_BGP_IDENTIFIER, vec![]),
            E::UnsupportedOptionalParameter { .. } => {
                (OPEN_MESSAGE_ERROR, UNSUPPORTED_OPTIONAL_PARAMETER, vec![])
            }
            E::UnacceptableHoldTime { .. } => (OPEN_MESSAGE_ERROR, UNACCEPTABLE_HOLD_TIME, vec![]),
            E::UnsupportedCapability { data } => {
                (OPEN_MESSAGE_ERROR, UNSUPPORTED_CAPABILITY, data.clone())
            }
            E::MalformedOpen { .. } => (OPEN_MESSAGE_ERROR, UNSPECIFIC, vec![]),
            E::MalformedAttributeList { .. } => {
                (UPDATE_MESSAGE_ERROR, MALFORMED_ATTRIBUTE_LIST, vec![])
            }
            E::UnrecognizedWellKnownAttribute { attribute, .. } => (
                UPDATE_MESSAGE_ERROR,
                UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
                attribute.clone(),
            ),
            E::MissingWellKnownAttribute { type_code } => (
                UPDATE_MESSAGE_ERROR,
                MISSING_WELL_KNOWN_ATTRIBUTE,
                vec![*type_code],
            ),
            E::AttributeFlagsError { attribute, .. } => (
                UPDATE_MESSAGE_ERROR,
                ATTRIBUTE_FLAGS_ERROR,
                attribute.clone(),
            ),
            E::AttributeLengthError { attribute, .. } => (
                UPDATE_MESSAGE_ERROR,
                ATTRIBUTE_LENGTH_ERROR,
                attribute.clone(),
            ),
            E::InvalidOrigin { attribute } => (
                UPDATE_MESSAGE_ERROR,
                INVALID_ORIGIN_ATTRIBUTE,
                attribute.clone(),
            ),
            E::InvalidNextHop { attribute } => (
                UPDATE_MESSAGE_ERROR,
                INVALID_NEXT_HOP_ATTRIBUTE,
                attribute.clone(),
            ),
            E::OptionalAttributeError { attribute, .. } => (
                UPDATE_MESSAGE_ERROR,
                OPTIONAL_ATTRIBUTE_ERROR,
                attribute.clone(),
            ),
            E::InvalidNetworkField { .. } => (UPDATE_MESSAGE_ERROR, INVALID_NETWORK_FIELD, vec![]),
            E::MalformedAsPath => (UPDATE_MESSAGE_ERROR, MALFORMED_AS_PATH, vec![]),
            E::InvalidRouteRefreshLength { message } => (
                ROUTE_REFRESH_ERROR,
                INVALID_ROUTE_REFRESH_LENGTH,
                message.clone(),
            ),
        };
        Notification::new(code, subcode, data)
    }
}

impl From<&DecodeError> for Notification {
    fn from(err: &DecodeError) -> Notification {
        err.notification()
    }
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// RFC 4271 §4.1 / RFC 8654: the message exceeds the negotiated maximum.
    #[error(
        "message of {len} octets exceeds the maximum of {max} for this session; split the UPDATE (see Update::split_to_fit)"
    )]
    MessageTooLong {
        /// Encoded length.
        len: usize,
        /// Maximum allowed.
        max: usize,
    },
    /// A field whose length must fit 8 or 16 bits does not.
    #[error("{what} is {len} octets, more than its length field allows ({max})")]
    FieldTooLong {
        /// Which field.
        what: &'static str,
        /// Encoded length.
        len: usize,
        /// Maximum allowed.
        max: usize,
    },
    /// A prefix of the wrong family was put in a field of another family.
    #[error("{prefix} cannot be encoded in the {field}: wrong address family")]
    WrongFamily {
        /// The offending prefix or address.
        prefix: String,
        /// Which field.
        field: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4271 §6.1: bad length carries the length field; bad type the type.
    #[test]
    fn header_errors_map_to_code_1() {
        let n = DecodeError::BadMessageLength { length: 5000 }.notification();
        assert_eq!((n.code, n.subcode, n.data), (1, 2, vec![0x13, 0x88]));
        let n = DecodeError::BadMessageType { msg_type: 9 }.notification();
        assert_eq!((n.code, n.subcode, n.data), (1, 3, vec![9]));
        let n = DecodeError::ConnectionNotSynchronized.notification();
        assert_eq!((n.code, n.subcode), (1, 1));
    }

    // RFC 4271 §6.2: unsupported version carries the largest supported one.
    #[test]
    fn open_errors_map_to_code_2() {
        let n = DecodeError::UnsupportedVersion { version: 3 }.notification();
        assert_eq!((n.code, n.subcode, n.data), (2, 1, vec![0, 4]));
        let n = DecodeError::UnsupportedOptionalParameter { param_type: 1 }.notification();
        assert_eq!((n.code, n.subcode), (2, 4));
        let n = DecodeError::UnacceptableHoldTime { hold_time: 2 }.notification();
        assert_eq!((n.code, n.subcode), (2, 6));
    }

    // RFC 4271 §6.3: UPDATE subcodes, data = the erroneous attribute.
    #[test]
    fn update_errors_map_to_code_3() {
        let attr = vec![0x40, 0x63, 0];
        let n = DecodeError::UnrecognizedWellKnownAttribute {
            type_code: 0x63,
            attribute: attr.clone(),
        }
        .notification();
        assert_eq!((n.code, n.subcode, n.data), (3, 2, attr));
        let n = DecodeError::MalformedAttributeList { reason: "x" }.notification();
        assert_eq!((n.code, n.subcode), (3, 1));
        let n = DecodeError::InvalidNetworkField { reason: "x" }.notification();
        assert_eq!((n.code, n.subcode), (3, 10));
        let n = DecodeError::MalformedAsPath.notification();
        assert_eq!((n.code, n.subcode), (3, 11));
    }
}

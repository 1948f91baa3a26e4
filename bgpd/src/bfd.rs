//! BFD (RFC 5880 asynchronous mode; RFC 5881 single hop, RFC 5883
//! multihop), sans-IO: the Control packet codec and the session state
//! machine, driven by inputs and answering with outputs as [`crate::fsm`]
//! does for BGP. The UDP sockets (ports 3784/4784, TTL 255 as GTSM) and the
//! coupling to BGP sessions (RFC 5882: a BFD Down takes the BGP session
//! down at once) are the owner's.

pub mod daemon;
pub mod io;
pub mod packet;
pub mod session;

#[cfg(test)]
mod tests;

pub use packet::{ControlPacket, DecodeError, Diag, State};
pub use session::{Config, Input, Output, Session, jittered};

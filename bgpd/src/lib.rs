//! Manx BGP speaker.
//!
//! * [`packet`] — BGP-4 messages, capabilities and path attributes: decode
//!   with `nom`, encode into a reused buffer. No I/O.
//! * [`fsm`] — the RFC 4271 §8 state machine, sans-IO.

pub mod fsm;
pub mod packet;

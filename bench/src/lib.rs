//! Benchmarks against named baselines (BIRD, ip -batch, raw etcd/SQLite).
//!
//! * [`bgp_client`] — a minimal BGP client on `bgpd::packet` for load
//!   generation (`bgp-load`).
//! * [`rlimit`] — raise the open-file limit for thousands of sessions.

pub mod bgp_client;
pub mod rlimit;

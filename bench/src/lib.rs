//! Benchmarks against named baselines (BIRD, ip -batch, raw etcd/SQLite).
//!
//! * [`bgp_client`] — a minimal BGP client on `bgpd::packet` for load
//!   generation (`bgp-load`).
//! * [`reflector`] — the reflector under test (manx-bgpd or BIRD) as a
//!   child process, configured alike; RSS and descriptor counts.
//! * [`sim_peer`] — raw BGP peers for `rr-slow-peer`: one that stops
//!   reading, one that churns, one that just listens.
//! * [`rlimit`] — raise the open-file limit for thousands of sessions.

pub mod bgp_client;
pub mod reflector;
pub mod rlimit;
pub mod sim_peer;

//! Benchmarks against named baselines (BIRD, ip -batch, raw etcd/SQLite).
//!
//! * [`bgp_client`] — prefixes, client addresses and announcements shared
//!   by the load generators.
//! * [`load_client`] — long-lived iBGP load clients for `bgp-load`
//!   (convergence, churn, admission window).
//! * [`baselines`] — the reflectors `bgp-load` compares (manx-bgpd, BIRD 2,
//!   FRR, GoBGP, OpenBGPD), each configured as its documentation advises.
//! * [`procs`] — a daemon's process tree: peak RSS, CPU, listen backlog,
//!   the kernel's listen-queue overflow counters.
//! * [`reflector`] — the reflector under test (manx-bgpd or BIRD) as a
//!   child process, configured alike; RSS and descriptor counts.
//! * [`sim_peer`] — raw BGP peers for `rr-slow-peer`: one that stops
//!   reading, one that churns, one that just listens.
//! * [`rlimit`] — raise the open-file limit for thousands of sessions.

pub mod baselines;
pub mod bgp_client;
pub mod load_client;
pub mod procs;
pub mod reflector;
pub mod rlimit;
pub mod sim_peer;

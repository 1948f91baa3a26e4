//! bgpd's integration tests, one binary (each test binary links the whole
//! crate graph). Shared helpers: `support` (the two-namespace lab, peer
//! daemons, interop scenarios, a raw injector), `netns_topo` (multi-node
//! namespace topologies), `packet_support` (captures and the `bgp-rs`
//! cross-check) and `speaker_golden::peer` (the scripted peer). Data:
//! `data/captures/`, `fsm_golden/`, `speaker_golden/`.

mod netns_topo;
mod packet_support;
mod support;

mod bfd_live;
mod bfdd;
mod cluster_loopback;
mod from_datastore;
mod fsm_daemon_lifecycle;
mod fsm_golden;
mod fsm_loopback;
mod gr_sweep_clock;
mod heavy_netns_topologies;
mod interop_bird1;
mod interop_bird2;
mod interop_gobgp;
mod malformed_exabgp;
mod malformed_inject;
mod packet_captures;
mod packet_live_capture;
mod packet_mutations;
mod packet_proptest;
mod speaker_backpressure;
mod speaker_golden;

//! The end-to-end tests, one binary (each test binary links the whole crate
//! graph); the lab guard and the skip rules shared by the lab tests are in
//! `common`.
//!
//! Test names carry their module (`resilience::heavy_…`, `vm::heavy_vm_…`):
//! .config/nextest.toml's `test(heavy_vm_)` and `package(manx-e2e)` overrides
//! still select them. Every lab uses its own id (namespaces `mxlab-<id>-…`,
//! files `/run/manx-lab/<id>/`), so tests sharing this process do not collide.

mod common;

mod autodetect;
mod churn;
mod cluster_modes;
mod deploy_manifests;
mod dual_stack;
mod fast_failover;
mod lab_hygiene;
mod mixed_bird1;
mod no_ipip_kernel;
mod no_wireguard_kernel;
mod node_agent;
mod resilience;
mod runtimes;
mod vm;

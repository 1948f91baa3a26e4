//! The IPAM integration tests, one binary (each test binary links the whole
//! crate graph); the torture driver shared with benches/alloc.rs is in
//! `support`.
//!
//! Neither module re-runs this binary (the crash test spawns the
//! `manx-ipam` plugin, not itself), so neither needs a process of its own.
//! The modules are `crash` and `torture`, not `heavy_…`: test names carry
//! their module, and .config/nextest.toml's serial `test(/heavy_/)` group
//! would otherwise also take `torture_memory_small`; the heavy tests' own
//! names (`heavy_crash_…`, `heavy_torture_…`) keep them in it.

mod support;

mod crash;
mod per_process;
mod torture;

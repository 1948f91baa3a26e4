//! The IPAM integration tests, one binary (each test binary links the whole
//! crate graph); the torture driver shared with benches/alloc.rs is in
//! `support`.
//!
//! * `crash`: fault injection and kill -9 of the plugin.
//! * `torture`: many allocator tasks in one process per node.
//! * `per_process`: many `manx-ipam` processes per node at once (issue 17:
//!   the host claim lock, empty blocks released after the grace).
//! * `empty_blocks`: an allocation racing with an empty block's release,
//!   interleaved at store level.
//!
//! No module re-runs this binary (the crash and per-process tests spawn
//! the `manx-ipam` plugin, not itself), so none needs a process of its own.
//! The modules are not named `heavy_…`: test names carry their module, and
//! .config/nextest.toml's serial `test(/heavy_/)` group would otherwise
//! also take `torture_memory_small`; the heavy tests' own names
//! (`heavy_crash_…`, `heavy_torture_…`, `heavy_per_process_…`) keep them
//! in it.

mod support;

mod crash;
mod empty_blocks;
mod per_process;
mod torture;

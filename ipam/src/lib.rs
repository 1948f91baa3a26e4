//! Manx block IPAM: pure blocks, the allocator over the Datastore, check and
//! GC, and the `manx-ipam` CNI IPAM plugin.
//!
//! * [`block`] — the pure allocation block (no I/O).
//! * [`blockrw`] — typed compare-and-swap access to the IPAM keys ([`keys`]),
//!   with fault injection for crash tests.
//! * [`allocator`] — [`Ipam`]: auto-assign, assign, release; the write order
//!   that keeps crashes harmless is documented there.
//! * [`affinity`] — releasing empty blocks' affinities, reclaiming the blocks
//!   of deleted nodes.
//! * [`check`] — consistency check and leak GC.
//! * [`ops`] — the operations behind `manxctl ipam ...`.
//! * [`cni_plugin`] — the CNI IPAM plugin protocol.
//! * [`service`] — the node agent's IPAM socket (server, client, wire format).
//! * [`topology`] — pools, nodes, reservations as the allocator sees them.

pub mod affinity;
pub mod allocator;
pub mod block;
pub mod blockrw;
pub mod check;
pub mod claim;
pub mod cni_plugin;
mod commit;
pub mod error;
mod exhaustion;
pub mod keys;
pub mod ops;
pub mod release;
pub mod resources;
pub mod service;
pub mod topology;

pub use allocator::{AutoAssignArgs, AutoAssignResult, Ipam, IpamOptions};
pub use block::{Attrs, Block, IntendedUse};
pub use error::{IpamError, Result};
pub use topology::{Pool, StaticTopology, Topology};

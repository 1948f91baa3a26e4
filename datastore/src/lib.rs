//! Manx datastore: the `projectcalico.org/v3`-compatible resource model, its
//! validation and selector language, and the [`Datastore`] trait with its
//! backends (etcd v3 and an embedded SQLite store).
//!
//! Layering, bottom up:
//! * [`store`] — the revisioned key-value trait every backend implements.
//! * [`embedded`], [`etcd`], [`memory`] — the backends; [`config`] picks one
//!   from the environment the way calicoctl does.
//! * [`model`] — resource types, YAML/JSON manifests, validation.
//! * [`selector`] — Calico's label selector language.
//! * [`client`] — typed CRUD of resources over any [`Datastore`], and the key
//!   layout.

pub mod client;
pub mod config;
pub mod embedded;
mod embedded_notify;
pub mod etcd;
pub mod memory;
pub mod model;
pub mod selector;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use store::{
    Datastore, KeyValue, Listing, Revision, StoreError, WatchEvent, WatchStream, WriteOp,
};

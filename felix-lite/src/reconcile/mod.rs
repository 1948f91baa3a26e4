//! Reconcilers: desired state in, the minimal kernel writes out.

pub mod links;
pub mod routes;

pub use links::{LinkReconciler, NeighbourReconciler};
pub use routes::{RouteReconciler, RouteStats};

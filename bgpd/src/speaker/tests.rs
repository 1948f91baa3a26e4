//! Actor-level tests.

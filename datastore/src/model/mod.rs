//! Resource types in the `projectcalico.org/v3` shape.

pub mod ipam;

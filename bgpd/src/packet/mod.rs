//! BGP-4 codec (no I/O).

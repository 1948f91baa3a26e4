//! End-to-end tests: clusters of network namespaces, interop with BIRD and GoBGP

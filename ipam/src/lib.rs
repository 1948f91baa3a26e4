//! Manx block IPAM: pure blocks, the allocator over the Datastore, check and GC, and the manx-ipam CNI IPAM plugin

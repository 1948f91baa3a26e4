//! IPAM internals: IPAMBlock, BlockAffinity, IPAMHandle.

//! A worker's receive side: the inner packets of one received datagram (several of `seg`
//! bytes each after `UDP_GRO`) written to the TUN queue. With a `virtio_net_hdr` queue a
//! run of TCP segments of one flow goes as one TSO write ([`offload::tcp_run`]): the
//! kernel takes it as the GRO packet a NIC would have built, so the pod's TCP stack sees
//! one 64 KiB packet instead of 44.

use std::fs::File;
use std::io::{IoSlice, Write};

use super::Counters;
use super::offload::{self, MAX_RUN, VNET_HDR_LEN};

/// Write the packets of `data`, cut every `seg` bytes, to `tun`: runs of TCP segments
/// joined into TSO writes if the queue has a `virtio_net_hdr` (`vnet`), one write each
/// otherwise.
pub fn write_datagram(tun: &File, data: &mut [u8], seg: usize, vnet: bool, c: &mut Counters) {
    let seg = seg.clamp(1, data.len().max(1));
    let n = data.len().div_ceil(seg);
    let empty = [0u8; VNET_HDR_LEN];
    let mut k = 0;
    while k < n {
        let run = if vnet {
            offload::tcp_run(data, seg, k).filter(|r| r.count > 1)
        } else {
            None
        };
        if let Some(run) = run {
            let hdr = offload::merge_run(data, seg, k, &run).encode();
            let mut parts = [IoSlice::new(&[]); MAX_RUN + 1];
            parts[0] = IoSlice::new(&hdr);
            for j in 0..run.count {
                let p = &data[(k + j) * seg..((k + j + 1) * seg).min(data.len())];
                parts[1 + j] = IoSlice::new(if j == 0 { p } else { &p[run.header_len..] });
            }
            match (&*tun).write_vectored(&parts[..1 + run.count]) {
                Ok(_) => c.rx += run.count as u64,
                Err(_) => c.errors += 1,
            }
            k += run.count;
            continue;
        }
        let p = &data[k * seg..((k + 1) * seg).min(data.len())];
        k += 1;
        if offload::ipv4_dst(p).is_none() {
            c.rejected += 1;
            continue;
        }
        let r = if vnet {
            (&*tun).write_vectored(&[IoSlice::new(&empty), IoSlice::new(p)])
        } else {
            (&*tun).write(p)
        };
        match r {
            Ok(_) => c.rx += 1,
            Err(_) => c.errors += 1,
        }
    }
}

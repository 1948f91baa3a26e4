//! The TUN character device: create a persistent multi-queue device, attach queues.
//! `ioctl`s on `/dev/net/tun` have no safe wrapper in the workspace's crates.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
/// Every read and write starts with a `virtio_net_hdr` ([`super::offload`]).
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// `_IOW('T', 208, unsigned int)`: which offloads the reader takes.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;

/// `TUN_F_CSUM`: packets may come with a partial checksum (`NEEDS_CSUM`).
pub const TUN_F_CSUM: u32 = 0x01;
/// `TUN_F_TSO4`: TCP/IPv4 segmentation left to the reader.
pub const TUN_F_TSO4: u32 = 0x02;
/// `TUN_F_TSO6`.
pub const TUN_F_TSO6: u32 = 0x04;
/// `TUN_F_TSO_ECN`: TSO packets with CWR set.
pub const TUN_F_TSO_ECN: u32 = 0x08;
/// `TUN_F_USO4` (Linux 6.2): UDP segmentation; the kernel takes it only with USO6.
pub const TUN_F_USO4: u32 = 0x20;
/// `TUN_F_USO6`.
pub const TUN_F_USO6: u32 = 0x40;

/// The flags every opener of `udp.manx` uses: a layer-3 device without the packet-info
/// prefix, with one queue per data-path worker. Attaching with other multi-queue flags
/// fails (`EINVAL`), so felix-lite and the data path share this one definition.
pub const FLAGS: libc::c_short = IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE;

/// `struct ifreq` with the name and `ifr_flags` (the union's first member).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Open one queue of TUN `name`, creating the device if it does not exist.
pub fn open_queue(name: &str, nonblocking: bool) -> io::Result<File> {
    open_queue_with(name, nonblocking, false)
}

/// Open one queue as [`open_queue`], with a `virtio_net_hdr` on every packet if
/// `vnet_hdr`. The device's flags are set by the first queue attached (the kernel ignores
/// later ones' until every queue is closed), so all of one data path's queues agree.
pub fn open_queue_with(name: &str, nonblocking: bool, vnet_hdr: bool) -> io::Result<File> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("device name {name:?} must be 1 to 15 bytes"),
        ));
    }
    let mut opts = OpenOptions::new();
    opts.read(true).write(true);
    if nonblocking {
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let file = opts.open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: if vnet_hdr {
            FLAGS | IFF_VNET_HDR
        } else {
            FLAGS
        },
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `IfReq` lays out (40 bytes).
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// Create TUN `name` (or take the existing one) and mark it persistent, so it outlives the
/// file descriptors: felix-lite owns the device, the data path only attaches queues.
pub fn create_persistent(name: &str) -> io::Result<()> {
    let file = open_queue(name, false)?;
    // SAFETY: TUNSETPERSIST takes an integer argument by value.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETPERSIST as _, 1 as libc::c_ulong) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Tell the kernel which offloads the reader takes (`TUNSETOFFLOAD`, device-wide): 0
/// makes it segment and checksum everything itself before the read.
pub fn set_offload(queue: &File, flags: u32) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes an unsigned integer argument by value.
    let rc = unsafe {
        libc::ioctl(
            queue.as_raw_fd(),
            TUNSETOFFLOAD as _,
            libc::c_ulong::from(flags),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Offer the offloads the data path handles, the most first, and return the set the
/// kernel took: a kernel refuses a flag it does not know (`EINVAL`), so an older one
/// falls back to TSO, then to checksums only, then to none.
pub fn negotiate_offload(queue: &File) -> u32 {
    let tso = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
    for want in [tso | TUN_F_USO4 | TUN_F_USO6, tso, TUN_F_CSUM] {
        if set_offload(queue, want).is_ok() {
            return want;
        }
    }
    let _ = set_offload(queue, 0);
    0
}

/// Whether this kernel offers TUN devices (`/dev/net/tun` opens).
pub fn available() -> Result<(), io::Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map(drop)
}

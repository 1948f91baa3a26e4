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
        flags: FLAGS,
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

/// Whether this kernel offers TUN devices (`/dev/net/tun` opens).
pub fn available() -> Result<(), io::Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map(drop)
}

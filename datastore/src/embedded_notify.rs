//! Noticing other processes' commits to the embedded store's file.
//!
//! A commit from another process (a CNI plugin, manxctl) reaches this one
//! only through the file. Polling the revision every 10 ms cost every idle
//! watcher ~100 SQLite reads a second (the largest part of an idle node's
//! CPU on the embedded store). Instead an inotify watch on the database's
//! directory reports writes to `<db>` and `<db>-wal`; the poller then reads
//! the revision, and keeps reading it for a short while after the last write
//! (a commit's WAL frames land before the commit is visible to readers).
//! Without inotify (no instances left, an odd filesystem) the store says so
//! once and polls as before.
//!
//! The libc calls (inotify_init1, inotify_add_watch, read), reading an
//! event header out of the buffer and registering the descriptor with tokio
//! are the only unsafe code in the crate, each with its SAFETY note.
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// An inotify instance watching one database file and its WAL.
pub(crate) struct FileChanges {
    fd: AsyncFd<OwnedFd>,
    names: [OsString; 2],
}

impl FileChanges {
    /// Watch `db`'s directory for writes to `db` and `db-wal`.
    pub(crate) fn new(db: &Path) -> io::Result<FileChanges> {
        let dir = match db.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = db
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?
            .to_os_string();
        let mut wal = name.clone();
        wal.push("-wal");
        // SAFETY: inotify_init1 takes flags only; a non-negative result is a
        // new descriptor we own.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let c_dir = CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mask = libc::IN_MODIFY | libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_CREATE;
        // SAFETY: a valid inotify fd and a NUL-terminated path.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c_dir.as_ptr(), mask) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: an OwnedFd's as_raw_fd is its one open descriptor for as
        // long as the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(FileChanges {
            fd,
            names: [name, wal],
        })
    }

    /// Wait up to `timeout` for a write to the database or its WAL; true if
    /// one came. Events for other files (`-shm`, other databases) are read
    /// and skipped.
    pub(crate) async fn wait(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ready = tokio::time::timeout_at(deadline, self.fd.readable()).await;
            let Ok(Ok(mut guard)) = ready else {
                return false;
            };
            match guard.try_io(|fd| drain(fd.get_ref().as_raw_fd(), &self.names)) {
                Ok(Ok(true)) => return true,
                Ok(Ok(false)) => {}
                Ok(Err(_)) => return false,
                // Would block: readiness cleared, wait again.
                Err(_) => {}
            }
        }
    }
}

/// Read every queued event; whether one names a file in `names`. Returns
/// `WouldBlock` only when nothing at all was queued.
fn drain(fd: RawFd, names: &[OsString; 2]) -> io::Result<bool> {
    let mut buf = [0u8; 4096];
    let mut hit = false;
    let mut read_any = false;
    loop {
        // SAFETY: reading into a buffer we own, of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock && read_any {
                return Ok(hit);
            }
            return Err(e);
        }
        read_any = true;
        let n = n as usize;
        let mut off = 0;
        let header = std::mem::size_of::<libc::inotify_event>();
        while off + header <= n {
            // SAFETY: the kernel wrote whole events; read the header
            // unaligned out of the byte buffer.
            let ev: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
            let name_start = off + header;
            let name_end = (name_start + ev.len as usize).min(n);
            let raw = &buf[name_start..name_end];
            let name = raw.split(|b| *b == 0).next().unwrap_or(&[]);
            if ev.mask & libc::IN_Q_OVERFLOW != 0
                || names
                    .iter()
                    .any(|w| w.as_os_str() == OsStr::from_bytes(name))
            {
                hit = true;
            }
            off = name_end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_to_the_db_or_its_wal_wakes_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("manx.db");
        let changes = FileChanges::new(&db).unwrap();
        assert!(
            !changes.wait(Duration::from_millis(50)).await,
            "nothing written yet"
        );

        // Another process's SQLite writes its WAL (and the shared-memory
        // index, which must not count, nor must another database).
        std::fs::write(dir.path().join("manx.db-shm"), b"x").unwrap();
        std::fs::write(dir.path().join("other.db-wal"), b"x").unwrap();
        assert!(!changes.wait(Duration::from_millis(50)).await);
        std::fs::write(dir.path().join("manx.db-wal"), b"frames").unwrap();
        assert!(changes.wait(Duration::from_secs(5)).await);
        // The burst was drained: quiet again.
        assert!(!changes.wait(Duration::from_millis(50)).await);
        std::fs::write(&db, b"checkpoint").unwrap();
        assert!(changes.wait(Duration::from_secs(5)).await);
    }
}

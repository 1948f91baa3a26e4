//! Process-wide allocator settings for the binaries that run a speaker
//! (`manx-bgpd`, `manx-node`): call [`one_malloc_arena`] first in `main`,
//! before the tokio runtime starts any thread.

/// One glibc malloc arena, unless `MALLOC_ARENA_MAX` says otherwise. By
/// default glibc gives each thread that allocates an arena of its own (up
/// to 8 per core), and memory freed on another tokio worker than the one
/// that allocated it stays in that arena: a reflector under churn kept
/// ~2 MiB more resident for nothing (`rr-slow-peer`). The speaker's work is
/// one actor; the connection tasks allocate little, and glibc's per-thread
/// caches serve them without the arena lock.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn one_malloc_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter, under glibc's
        // own lock; it takes no pointers. Arenas already given to running
        // threads stay theirs, hence "first in main".
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Nothing to do outside glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn one_malloc_arena() {}

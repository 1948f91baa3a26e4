//! Process-wide allocator settings for the binaries that run a speaker
//! (`manx-bgpd`, `manx-node`): call [`one_malloc_arena`] first in `main`,
//! before the tokio runtime starts any thread, then [`trim_periodically`].

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

/// Give freed heap back to the kernel every `every`, on a thread of its own
/// (`malloc_trim(0)`, which also releases free pages inside the heap, not
/// only at its top). glibc returns memory on `free` only from the top of
/// the heap; after a reflector's clients flap (1% a second for 60 s at
/// K=1000) the freed Adj-RIB-In entries and encodings sit between live
/// ones and RSS stayed 40% above its pre-churn level (`bgp-load --churn`),
/// where the heap in use had come back. A trim of a ~50 MiB heap takes
/// about a millisecond.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn trim_periodically(every: std::time::Duration) {
    let spawned = std::thread::Builder::new()
        .name("malloc-trim".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                // SAFETY: malloc_trim only walks glibc's own free lists under
                // its lock and madvises free pages; it takes no pointers.
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the malloc trim thread; freed memory stays resident");
    }
}

/// Nothing to do outside glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim_periodically(_every: std::time::Duration) {}

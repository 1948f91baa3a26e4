//! Waiting for a condition without timing assertions: poll until it holds
//! or a generous deadline passes.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(50);

/// Poll `f` every [`POLL`] until it returns true (→ true) or `limit` passes
/// (→ false). `f` runs at least once, and once more at the deadline.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// [`eventually`] for an async condition, sleeping on the tokio clock (so
/// it also works under a paused test clock).
pub async fn eventually_async<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn true_at_once_and_false_after_the_limit() {
        assert!(eventually(Duration::ZERO, || true));
        let mut n = 0;
        assert!(!eventually(Duration::from_millis(120), || {
            n += 1;
            false
        }));
        assert!(n >= 2, "polled {n} times");
    }

    #[test]
    fn becomes_true() {
        let mut n = 0;
        assert!(eventually(Duration::from_secs(5), || {
            n += 1;
            n == 3
        }));
    }

    #[tokio::test(start_paused = true)]
    async fn async_variant_runs_on_the_tokio_clock() {
        let start = tokio::time::Instant::now();
        assert!(!eventually_async(Duration::from_secs(30), || async { false }).await);
        assert!(start.elapsed() >= Duration::from_secs(30));
        let mut n = 0;
        assert!(
            eventually_async(Duration::from_secs(30), || {
                n += 1;
                let done = n == 4;
                async move { done }
            })
            .await
        );
    }
}

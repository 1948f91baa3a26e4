//! Tasks and channels of the speaker.
//!
//! ```text
//!                      +-----------------------------+
//!  manx-node / daemon  |        SpeakerHandle        |
//!  ------------------> | cmd_tx: mpsc<SpeakerEvent>  |---------------------------+
//!                      +-----------------------------+                           |
//!                                                                                v
//!  +----------------+  SpeakerEvent::Accepted{stream}        +------------------------------+
//!  | listener task  |--------------------------------------->|                              |
//!  | (TcpListener,  |                                        |        speaker actor         |
//!  |  MD5 keys)     |                                        |  (speaker.rs, the ONE owner  |
//!  +----------------+                                        |   of state: peer FSMs, RIB,  |
//!                                                            |   timers, Adj-RIB-Out)       |
//!  +----------------+  SpeakerEvent::Connected / Failed      |                              |
//!  | connect task   |--------------------------------------->|  loop {                      |
//!  | (one per dial) |                                        |    select! {                 |
//!  +----------------+                                        |      event = rx.recv(),      |
//!                                                            |      sleep_until(next timer) |
//!  +----------------+  SpeakerEvent::Conn{id, Received(msg)  |    }                         |
//!  | connection     |             | DecodeFailed | Closed}   |  }                           |
//!  | task (one per  |--------------------------------------->|                              |
//!  | TCP session:   |                                        |                              |
//!  | read+decode,   |<---------------------------------------|                              |
//!  | encode+write)  |  message | shared encoded Bytes |    +------------------------------+
//!  +----------------+  Close (mpsc per connection)               |                 ^
//!                                                                | RouteUpdate     | ControlRequest
//!  +----------------+  SpeakerEvent::Control{req, reply}         v                 | + oneshot reply
//!  | control socket |------------------------------------> route_tx (optional,  |
//!  | task (Unix,    |<------------------------------------  to felix-lite)       |
//!  | JSON lines)    |  oneshot<ControlResponse>  ---------------------------------+
//!  +----------------+
//! ```
//!
//! Every spawned task is held by a [`TaskGuard`]: dropping the owner aborts the
//! task, so a removed peer or a stopped speaker leaves nothing running.
//! Channels from tasks to the actor are unbounded: the actor never blocks on a
//! task, and a task never blocks on the actor, so no cycle can deadlock; the
//! actor's work per event is small and bounded. The actor takes session
//! events in bursts (up to 256 already queued) and exports the burst's
//! Loc-RIB changes once; an update group's UPDATEs (and initial tables) are
//! encoded once and the same `Bytes` queued to every member.

use tokio::task::JoinHandle;

/// Owns a spawned task and aborts it on drop.
#[derive(Debug)]
pub struct TaskGuard<T = ()> {
    handle: Option<JoinHandle<T>>,
}

impl<T: Send + 'static> TaskGuard<T> {
    /// Spawn `fut` on the current runtime.
    pub fn spawn<F>(fut: F) -> TaskGuard<T>
    where
        F: std::future::Future<Output = T> + Send + 'static,
    {
        TaskGuard {
            handle: Some(tokio::spawn(fut)),
        }
    }

    /// Let the task run to completion on its own (it no longer aborts on drop).
    pub fn detach(mut self) {
        self.handle.take();
    }

    /// Wait for the task to finish.
    pub async fn join(mut self) -> Result<T, tokio::task::JoinError> {
        self.handle
            .take()
            .expect("handle present until join or drop")
            .await
    }

    /// Abort the task and wait until it is gone (its future dropped, and
    /// with it whatever it owned: sockets are closed when this returns).
    pub async fn abort_and_wait(mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
            let _ = h.await;
        }
    }

    /// Whether the task has finished.
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }
}

impl<T> Drop for TaskGuard<T> {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn abort_and_wait_returns_after_the_task_is_dropped() {
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let guard = TaskGuard::spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await;
        });
        guard.abort_and_wait().await;
        // No yield needed: the sender is already gone.
        assert!(matches!(
            rx.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed)
        ));
    }

    #[tokio::test]
    async fn dropping_the_guard_aborts_the_task() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let guard = TaskGuard::spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await;
        });
        drop(guard);
        // The sender is dropped when the aborted task is torn down.
        assert!(rx.await.is_err());
    }

    #[tokio::test]
    async fn detached_tasks_finish() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        TaskGuard::spawn(async move {
            tokio::task::yield_now().await;
            let _ = tx.send(7);
        })
        .detach();
        assert_eq!(rx.await.unwrap(), 7);
    }
}

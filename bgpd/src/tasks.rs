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
//!  | connection     |  |DecodeFailed | SendStalled | Closed} |  }                           |
//!  | task (one per  |--------------------------------------->|                              |
//!  | TCP session:   |                                        |                              |
//!  | read+decode,   |<---------------------------------------|                              |
//!  | encode+write)  |  Outbox (per connection, shared): msgs +------------------------------+
//!  +----------------+  | encoded Bytes | route diff | close    |                 ^
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
//! Backpressure without a cycle: tasks send to the actor on one bounded
//! channel (`SESSION_QUEUE` events, FIFO across tasks), so a flooding peer's
//! connection task waits for room and stops reading its socket, and TCP
//! slows the peer down. The actor never waits on a task: what it has for a
//! connection goes into that connection's outbox (a mutex held for a push,
//! never across an await) with a wake-up, so a task blocked on the channel
//! can never be waited on by the actor it waits for. A connection task
//! reads and writes independently (a peer that stops reading is still
//! heard), and a peer that falls behind has its routes collapse to a
//! per-prefix diff (memory O(table), not O(churn)); no write progress for
//! `send_stall_timeout` closes it with Cease / Out of Resources. The actor takes session
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

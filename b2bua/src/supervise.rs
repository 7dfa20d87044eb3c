//! Tasks that must never end.
//!
//! The engine, the SIP transports, the media relay workers and the RADIUS sockets each run as
//! one task (or, for the relay, one thread) for the life of the process. If one of them panics or returns,
//! the process would live on with its heartbeat still beating: other nodes would not sweep its
//! holds, the supervisor (systemd) would not restart it, and callers would meet silence. So
//! each such task is started through [`spawn`]: when it ends for any reason other than a
//! shutdown we asked for, a [`Failure`] is sent to the watchdog that `serve` installed, which
//! logs it and exits non-zero. Without a watchdog (a test that runs the engine in-process) the
//! failure is only logged.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A critical task that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The task's name (`engine`, `sip-udp`, `pacer`, …).
    pub task: &'static str,
    /// `panicked`, `returned` or `cancelled`.
    pub how: &'static str,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "critical task {} {}", self.task, self.how)
    }
}

static WATCHDOG: OnceLock<mpsc::UnboundedSender<Failure>> = OnceLock::new();
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Installs the process's watchdog; failures arrive on the receiver. Only the first call
/// installs one (a process has one supervisor).
pub fn watchdog() -> Option<mpsc::UnboundedReceiver<Failure>> {
    let (tx, rx) = mpsc::unbounded_channel();
    WATCHDOG.set(tx).ok().map(|_| rx)
}

/// A shutdown was asked for: critical tasks that end from now on are not failures.
pub fn stopping() {
    STOPPING.store(true, Ordering::SeqCst);
}

fn report(task: &'static str, how: &'static str) {
    if STOPPING.load(Ordering::SeqCst) {
        return;
    }
    let failure = Failure { task, how };
    tracing::error!(task, how, "{failure}: the process must restart");
    if let Some(w) = WATCHDOG.get() {
        let _ = w.send(failure);
    }
}

/// Reports its task unless disarmed: dropped by a panic's unwinding or by cancellation.
struct Guard {
    task: &'static str,
    armed: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.armed {
            let how = if std::thread::panicking() {
                "panicked"
            } else {
                "cancelled"
            };
            report(self.task, how);
        }
    }
}

/// Spawns a task that must run until shutdown; see the module documentation.
pub fn spawn<F>(task: &'static str, fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    // Made outside the task, so that a task cancelled before its first poll reports too.
    let guard = Guard { task, armed: true };
    tokio::spawn(async move {
        // A local from here on: a panic's unwinding drops it while still panicking.
        let mut guard = guard;
        fault_point(task).await;
        let out = fut.await;
        guard.armed = false;
        report(task, "returned");
        out
    })
}

/// Starts an OS thread that must run until its owner lets it go (the media relay workers,
/// which block in `epoll_wait` rather than run on the runtime). A panic is a failure as for
/// [`spawn`]; returning is not, because the thread returns only when told to (its owner was
/// dropped, as in a test that starts and stops the media layer).
pub fn thread<F>(task: &'static str, f: F) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new()
        .name(task.to_string())
        .spawn(move || {
            let mut guard = Guard { task, armed: true };
            #[cfg(debug_assertions)]
            if std::env::var("B2BUA_TEST_FAULT").is_ok_and(|t| t == task) {
                std::thread::sleep(std::time::Duration::from_millis(300));
                panic!("B2BUA_TEST_FAULT: {task} made to fail");
            }
            f();
            guard.armed = false;
        })
}

/// A test hook, in debug builds only: `B2BUA_TEST_FAULT=<task>` makes that critical task panic
/// a moment after it starts, so that a test can see the process exit.
async fn fault_point(task: &'static str) {
    #[cfg(debug_assertions)]
    if std::env::var("B2BUA_TEST_FAULT").is_ok_and(|t| t == task) {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        panic!("B2BUA_TEST_FAULT: {task} made to fail");
    }
    #[cfg(not(debug_assertions))]
    let _ = task;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_critical_task_that_panics_or_returns_is_reported() {
        // This test owns the process's watchdog; no other unit test installs one.
        let mut rx = watchdog().expect("the first watchdog");
        let _ = spawn("test-panics", async { panic!("boom") }).await;
        assert_eq!(
            rx.recv().await,
            Some(Failure {
                task: "test-panics",
                how: "panicked"
            })
        );
        spawn("test-returns", async {}).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().how, "returned");
        let h = spawn("test-cancelled", std::future::pending::<()>());
        h.abort();
        let _ = h.await;
        assert_eq!(rx.recv().await.unwrap().how, "cancelled");
    }
}

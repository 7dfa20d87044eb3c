//! Locks that survive a panic.
//!
//! A panic while a `std::sync::Mutex` is held poisons it, and the usual `lock().unwrap()` then
//! turns one bad packet into a panic in every task that touches the same state: the pacing
//! task, the inactivity scan, and then the engine. The state behind our locks is a call's media
//! counters, a port pool, a reply cache: a half-finished update there costs one call a glitch,
//! never money. So every lock in the daemon is taken through [`Lock::locked`], which takes the
//! guard back from a poisoned lock, and the panic stays with the task that had it.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Taking a mutex whatever became of its last holder.
pub trait Lock<T> {
    /// The guard, poisoned or not.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Lock<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_poisoned_lock_is_taken_back() {
        let m = Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("a bad packet");
        })
        .join();
        assert!(m.is_poisoned());
        *m.locked() += 1;
        assert_eq!(*m.locked(), 2);
    }
}

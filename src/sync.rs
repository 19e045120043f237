//! The synchronization primitives of the concurrent core, in one place.
//!
//! Normally these are parking_lot's locks and std's atomics. Built with
//! `RUSTFLAGS="--cfg loom"`, they are loom's models of the same things,
//! wrapped to parking_lot's API, so `tests/loom.rs` can explore the
//! interleavings of group commit, commit publication, row-lock waits and
//! the buffer pool. Code in the core takes its locks and atomics only from
//! here. (`FaultFs` keeps plain parking_lot: it is test scaffolding and
//! never blocks while holding its lock.)

#[cfg(not(loom))]
pub use parking_lot::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
#[cfg(not(loom))]
pub use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub use std::thread;

/// Releases an exclusive guard to the longest waiter, if any, rather than
/// to whichever thread asks next (which is often the releasing thread
/// itself, back for its next round).
#[cfg(not(loom))]
pub fn unlock_fair<T>(g: RwLockWriteGuard<'_, T>) {
    RwLockWriteGuard::unlock_fair(g);
}

#[cfg(loom)]
pub use self::model::*;

#[cfg(loom)]
mod model {
    use std::ops::{Deref, DerefMut};
    use std::time::{Duration, Instant};

    pub use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
    pub use loom::thread;

    /// loom's mutex with parking_lot's interface.
    #[derive(Debug, Default)]
    pub struct Mutex<T>(loom::sync::Mutex<T>);

    /// Guard of [`Mutex`]; `None` only while a condition variable waits.
    pub struct MutexGuard<'a, T>(Option<loom::sync::MutexGuard<'a, T>>);

    impl<T> Mutex<T> {
        /// A new mutex.
        pub fn new(v: T) -> Self {
            Mutex(loom::sync::Mutex::new(v))
        }

        /// Locks (a panic elsewhere does not poison it for us).
        pub fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard(Some(self.0.lock().unwrap_or_else(|e| e.into_inner())))
        }
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.0
                .as_deref()
                .unwrap_or_else(|| unreachable!("guard taken by a waiting condvar"))
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.0
                .as_deref_mut()
                .unwrap_or_else(|| unreachable!("guard taken by a waiting condvar"))
        }
    }

    /// Whether a timed wait timed out (loom has no time: never).
    // parking_lot's interface in full, though no loom-built caller times
    // its waits now (lock waits wait in slices: `wait_for`).
    #[allow(dead_code)]
    pub struct WaitTimeoutResult(bool);

    #[allow(dead_code)]
    impl WaitTimeoutResult {
        /// Whether the wait timed out.
        pub fn timed_out(&self) -> bool {
            self.0
        }
    }

    /// loom's condition variable with parking_lot's interface.
    #[derive(Debug, Default)]
    pub struct Condvar(loom::sync::Condvar);

    impl Condvar {
        /// A new condition variable.
        pub fn new() -> Self {
            Condvar(loom::sync::Condvar::new())
        }

        /// Waits for a notification.
        pub fn wait<T>(&self, g: &mut MutexGuard<'_, T>) {
            if let Some(inner) = g.0.take() {
                g.0 = Some(self.0.wait(inner).unwrap_or_else(|e| e.into_inner()));
            }
        }

        /// Waits for a notification; loom models no time, so no timeout.
        #[allow(dead_code)]
        pub fn wait_until<T>(
            &self,
            g: &mut MutexGuard<'_, T>,
            _deadline: Instant,
        ) -> WaitTimeoutResult {
            self.wait(g);
            WaitTimeoutResult(false)
        }

        /// As [`Condvar::wait_until`].
        pub fn wait_for<T>(
            &self,
            g: &mut MutexGuard<'_, T>,
            _timeout: Duration,
        ) -> WaitTimeoutResult {
            self.wait(g);
            WaitTimeoutResult(false)
        }

        /// Wakes every waiter.
        pub fn notify_all(&self) {
            self.0.notify_all();
        }
    }

    /// As the real `unlock_fair`; loom's scheduler picks who goes next.
    pub fn unlock_fair<T>(g: RwLockWriteGuard<'_, T>) {
        drop(g);
    }

    /// loom's reader-writer lock with parking_lot's interface.
    #[derive(Debug, Default)]
    pub struct RwLock<T>(loom::sync::RwLock<T>);

    /// Shared guard.
    pub type RwLockReadGuard<'a, T> = loom::sync::RwLockReadGuard<'a, T>;
    /// Exclusive guard.
    pub type RwLockWriteGuard<'a, T> = loom::sync::RwLockWriteGuard<'a, T>;

    impl<T> RwLock<T> {
        /// A new lock.
        pub fn new(v: T) -> Self {
            RwLock(loom::sync::RwLock::new(v))
        }

        /// Shared access.
        pub fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read().unwrap_or_else(|e| e.into_inner())
        }

        /// Exclusive access.
        pub fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.0.write().unwrap_or_else(|e| e.into_inner())
        }

        /// Shared access if no writer holds or waits for the lock.
        pub fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
            self.0.try_read().ok()
        }
    }
}

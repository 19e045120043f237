//! `Db::transaction`: the retry loop every caller of a serializable
//! engine writes, written once.
//!
//! ```text
//!   begin ─► f(&mut tx) ─► commit ─► Ok(value)
//!     ▲          │ Err         │ Err
//!     │          ▼             ▼
//!     └─ pause ◄─ retryable? (SerializationFailure, Deadlock, LockTimeout)
//!                  │ no, or the attempts are spent
//!                  ▼
//!               Err(e)
//! ```
//! Only errors [`Error::is_retryable`] names are retried: they doom the
//! transaction before it commits, so another attempt cannot apply it
//! twice. `Error::CommitOutcomeUnknown` is not among them — that commit
//! may have happened. Attempts are bounded
//! ([`crate::limits::TRANSACTION_ATTEMPTS_MAX`]), and the pause between
//! them doubles with random jitter, so that transactions that collided do
//! not collide again in lockstep.

use std::hash::BuildHasher;
use std::time::Duration;

use crate::db::Db;
use crate::error::{Error, Result};
use crate::limits::{
    TRANSACTION_ATTEMPTS_MAX, TRANSACTION_BACKOFF_MAX_MICROS, TRANSACTION_BACKOFF_MIN_MICROS,
};
use crate::options::Isolation;
use crate::txn::Transaction;

impl Db {
    /// Runs `f` in a serializable transaction and commits it, retrying
    /// from `begin` while the attempt fails with a retryable error
    /// ([`Error::is_retryable`]: a serialization failure, deadlock or
    /// lock timeout), at most [`crate::limits::TRANSACTION_ATTEMPTS_MAX`]
    /// times with a growing, jittered pause between attempts. Returns
    /// `f`'s value from the attempt that committed, or the first error
    /// that is not retryable (the transaction rolled back, or for
    /// `Error::CommitOutcomeUnknown` perhaps committed: never retried), or
    /// the last retryable one. `f` may run more than once, so it should
    /// have no effects outside the transaction.
    ///
    /// ```
    /// # fn main() -> strata::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// let db = strata::Db::open(dir.path())?;
    /// let t = db.table("t")?;
    /// let old = db.transaction(|tx| {
    ///     let old = tx.get(&t, "k")?;
    ///     tx.put(&t, "k", "new")?;
    ///     Ok(old)
    /// })?;
    /// assert_eq!(old, None);
    /// # Ok(()) }
    /// ```
    pub fn transaction<T>(&self, f: impl FnMut(&mut Transaction) -> Result<T>) -> Result<T> {
        self.transaction_with(Isolation::default(), f)
    }

    /// [`Db::transaction`] at `level`.
    pub fn transaction_with<T>(
        &self,
        level: Isolation,
        mut f: impl FnMut(&mut Transaction) -> Result<T>,
    ) -> Result<T> {
        let mut backoff = Backoff::new();
        let mut attempt = 1;
        loop {
            let mut tx = self.begin_with(level)?;
            let outcome = f(&mut tx).and_then(|value| tx.commit().map(|_| value));
            match outcome {
                Err(e) if retry(&e) && attempt < TRANSACTION_ATTEMPTS_MAX => {
                    attempt += 1;
                    // On the database's clock: a simulation's pauses take
                    // no real time.
                    self.core().engine.opts().clock.0.sleep(backoff.next());
                }
                outcome => return outcome,
            }
        }
    }
}

/// Whether another attempt may succeed where this one failed.
fn retry(e: &Error) -> bool {
    // Spelled out for the one error it must never retry, whatever
    // `is_retryable` comes to include.
    e.is_retryable() && !matches!(e, Error::CommitOutcomeUnknown { .. })
}

/// Pauses that double from the least to the greatest, each drawn at
/// random from its upper half.
struct Backoff {
    ceiling: u64,
    rng: u64,
}

impl Backoff {
    fn new() -> Backoff {
        // A fresh `RandomState` holds new random keys, so threads that
        // retry at the same moment draw different pauses.
        let seed = std::hash::RandomState::new().hash_one(std::thread::current().id());
        Backoff {
            ceiling: TRANSACTION_BACKOFF_MIN_MICROS,
            rng: seed | 1,
        }
    }

    fn next(&mut self) -> Duration {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let half = self.ceiling / 2;
        let pause = half + r % (self.ceiling - half + 1);
        self.ceiling = (self.ceiling * 2).min(TRANSACTION_BACKOFF_MAX_MICROS);
        debug_assert!(pause <= TRANSACTION_BACKOFF_MAX_MICROS);
        Duration::from_micros(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_the_ceiling_and_stay_within_it() {
        let mut b = Backoff::new();
        let mut ceiling = TRANSACTION_BACKOFF_MIN_MICROS;
        for _ in 0..40 {
            let p = b.next().as_micros() as u64;
            assert!(p >= ceiling / 2 && p <= ceiling, "{p} outside {ceiling}");
            ceiling = (ceiling * 2).min(TRANSACTION_BACKOFF_MAX_MICROS);
        }
    }
}

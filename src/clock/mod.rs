//! Time: a clock that admits its uncertainty, and the timestamps commits
//! carry.
//!
//! A [`Clock`] answers `now()` with an [`Interval`] `[earliest, latest]`
//! that contains the true time (TrueTime's contract, Spanner §3). A commit
//! takes a timestamp `ts ≥ now().latest`, strictly above every timestamp
//! the database has assigned, and becomes visible (and `commit` returns)
//! only once `now().earliest > ts`: the *commit wait*. Whatever starts
//! after that, on any machine whose clock keeps the same contract, reads
//! a `latest` above `ts`, so timestamps order commits the way real time
//! does (external consistency):
//!
//! ```text
//!   true time ───────────────────────────────────────────────────▶
//!   A:  now() = [e1 ──── l1]        commit ts = l1      wait ... e > ts → return
//!   B:                                         begin after return: now().latest > ts
//! ```
//!
//! Sources:
//! - [`FixedEpsilon`] — the system clock ± a fixed ε; the default, with
//!   ε = [`DEFAULT_EPSILON`] = 0. Why 0: every database on one machine
//!   reads the same kernel clock, so among them the clock has no error to
//!   wait out, and timestamps order their commits as real time does (the
//!   high-water mark keeps each database's own timestamps rising when the
//!   clock is stepped back); and a wider ε is paid on every commit —
//!   measured on this project's 2-core VM (`STRATA_BENCH_ONLY_TIME=1
//!   cargo bench --bench core`), ε = 1 ms takes a durable one-thread
//!   commit from about 0.2 ms to 2.2 ms, and an `Eventual` one from 4 µs
//!   to 2.1 ms. Databases on different machines must be given an ε their
//!   clocks keep (NTP within a network: about 1 ms; PTP or a cloud time
//!   service: tens of µs) or `TrueTime`.
//! - `TrueTime` (feature `truetime`) — the kernel's own error bound
//!   (`adjtimex(2)`: `maxerror`, `STA_UNSYNC`), refused past a ceiling;
//!   where AWS's ClockBound daemon publishes its segment, its bound
//!   instead (`ClockBound`, which also reads a segment at any path).
//! - [`SimClock`] — simulated time for tests: manual advance, per-instance
//!   offset and drift, steps backwards; a wait on it advances its world.
//!
//! A clock that cannot vouch for itself (unsynchronised, or an error
//! bound past its ceiling) makes `now()` fail with
//! [`Error::ClockUncertain`]; commits then fail with it before anything is
//! written, and reads, which take no timestamp yet, go on working.
//!
//! Reads as of a timestamp (`Db::begin_at`) are in `mvcc::history` and
//! `txn::as_of`. Not here yet: hybrid logical clocks.

#[cfg(feature = "truetime")]
mod clockbound;
mod sim;
#[cfg(feature = "truetime")]
mod truetime;

pub(crate) use crate::ids::nanos;
pub use crate::ids::Timestamp;
#[cfg(feature = "truetime")]
pub use clockbound::{ClockBound, Segment, CLOCKBOUND_SEGMENT};
pub use sim::SimClock;
#[cfg(feature = "truetime")]
pub use truetime::{KernelClock, TrueTime};

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// The uncertainty [`FixedEpsilon::default`] admits (and the default
/// clock's): none, right for databases that share one machine's clock
/// (see the module essay for why, and what to set across machines).
pub const DEFAULT_EPSILON: Duration = Duration::ZERO;

pub use crate::limits::COMMIT_WAIT_MAX;

/// A span of time that contains the true time: `earliest ≤ true ≤ latest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    /// No earlier than this.
    pub earliest: Timestamp,
    /// No later than this.
    pub latest: Timestamp,
}

impl Interval {
    /// `[t - ε, t + ε]`.
    pub fn around(t: Timestamp, epsilon: Duration) -> Interval {
        Interval {
            earliest: t.saturating_sub(epsilon),
            latest: t.saturating_add(epsilon),
        }
    }

    /// `latest - earliest`: twice the uncertainty.
    pub fn width(&self) -> Duration {
        self.latest.since(self.earliest)
    }
}

/// A source of time that says how far it may be off. Shared by every
/// thread of a database (`Options::clock`).
pub trait Clock: Send + Sync {
    /// An interval containing the true time, or
    /// [`Error::ClockUncertain`] when the clock cannot bound its error
    /// (unsynchronised, or past its ceiling).
    fn now(&self) -> Result<Interval>;

    /// Time on a clock that never steps backwards, from an arbitrary
    /// origin: what lock timeouts and the background worker's timers
    /// measure with. The default is the operating system's monotonic
    /// clock; a simulated clock returns its world's time, so a simulation
    /// decides when a timeout expires.
    fn monotonic(&self) -> Duration {
        process_start().elapsed()
    }

    /// Lets `d` of [`Clock::monotonic`] time pass: the thread sleeps; a
    /// simulated clock advances instead. For the pauses of loops that
    /// wait on time (the two-phase-commit coordinator's resends).
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }

    /// Returns once `now().earliest > ts` (the commit wait), or once
    /// [`Clock::monotonic`] reaches `by`: the caller took `by` from an
    /// earlier reading (its `earliest` plus the distance to `ts`), so by
    /// then the true time is past `ts` whatever this clock says now — a
    /// clock stepped back during the wait does not stall the commit for
    /// the length of the step. The default sleeps between readings, each
    /// sleep no longer than what is left to either; a simulated clock
    /// overrides it to advance its own time instead. An error from `now()`
    /// ends the wait early with that error.
    fn wait_until(&self, ts: Timestamp, by: Duration) -> Result<()> {
        // Each sleep lasts the distance still to go, so the loop ends
        // after a reading or two unless the clock is slower than the
        // sleeps; the bound stops a clock that never advances.
        for _ in 0..WAIT_READINGS_MAX {
            let e = self.now()?.earliest;
            if e > ts {
                return Ok(());
            }
            let Some(bound) = by.checked_sub(self.monotonic()).filter(|b| !b.is_zero()) else {
                return Ok(());
            };
            // A sleep lasts at least the timer slack (about 50 µs on
            // Linux): a wait shorter than that yields instead.
            let left = (ts.since(e) + Duration::from_nanos(1)).min(bound);
            if left < SPIN_BELOW {
                std::thread::yield_now();
            } else {
                self.sleep(left);
            }
        }
        Err(Error::ClockUncertain {
            reason: format!("the clock did not pass {ts} in {WAIT_READINGS_MAX} readings"),
        })
    }
}

/// Readings a commit wait takes at most before giving up on the clock.
const WAIT_READINGS_MAX: u32 = 10_000;

/// Waits shorter than this yield the processor instead of sleeping.
const SPIN_BELOW: Duration = Duration::from_micros(20);

/// The instant `Clock::monotonic` counts from, for clocks without their own.
fn process_start() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// The system clock (`SystemTime`) within a fixed ε either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedEpsilon(pub Duration);

impl Default for FixedEpsilon {
    fn default() -> Self {
        FixedEpsilon(DEFAULT_EPSILON)
    }
}

impl FixedEpsilon {
    /// The system clock now, as a timestamp.
    pub fn system_now() -> Result<Timestamp> {
        let d =
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|_| Error::ClockUncertain {
                    reason: "the system clock reads before 1970".into(),
                })?;
        Ok(Timestamp(nanos(d)))
    }
}

impl Clock for FixedEpsilon {
    fn now(&self) -> Result<Interval> {
        Ok(Interval::around(Self::system_now()?, self.0))
    }
}

/// The timestamp a commit takes: at least `now.latest`, strictly above
/// `high_water` (every timestamp this database assigned). Refused when
/// the commit would have to wait past [`COMMIT_WAIT_MAX`] for it.
pub(crate) fn commit_ts(now: Interval, high_water: Timestamp) -> Result<Timestamp> {
    // No clock's `earliest` passes the last representable time, so no
    // commit may take it (nor anything after a mark there).
    let above = high_water
        .0
        .checked_add(1)
        .map(Timestamp)
        .filter(|&t| t < Timestamp::MAX && now.latest < Timestamp::MAX)
        .ok_or_else(|| Error::ClockUncertain {
            reason: format!(
                "no timestamp is left above {high_water} (the clock reads up to {}): the end of representable time",
                now.latest
            ),
        })?;
    let ts = now.latest.max(above);
    let wait = ts.since(now.earliest);
    if wait > COMMIT_WAIT_MAX {
        return Err(Error::ClockUncertain {
            reason: format!(
                "a commit now would wait {wait:?} for its timestamp {ts} (the clock reads [{}, {}]; \
                 the database has assigned timestamps up to {high_water}); at most {COMMIT_WAIT_MAX:?} is allowed",
                now.earliest, now.latest
            ),
        });
    }
    debug_assert!(ts > high_water && ts >= now.latest);
    Ok(ts)
}

/// Checks a chosen commit timestamp (`Transaction::commit_at`,
/// `Db::commit_prepared_at`): it must be above `above` (the high-water
/// mark, or `ZERO`), not below `floor` (a prepare timestamp, or `ZERO`),
/// and no further past `now.earliest` than a commit may wait.
pub(crate) fn check_chosen(
    ts: Timestamp,
    now: Interval,
    above: Timestamp,
    floor: Timestamp,
) -> Result<()> {
    let refuse = |reason: String| Err(Error::TimestampRefused { reason });
    if ts <= above {
        return refuse(format!(
            "{ts} is not above {above}, the highest timestamp this database has assigned"
        ));
    }
    if ts < floor {
        return refuse(format!(
            "{ts} is below the transaction's prepare timestamp {floor}"
        ));
    }
    let wait = ts.since(now.earliest);
    if wait > COMMIT_WAIT_MAX {
        return refuse(format!(
            "{ts} is {wait:?} past the clock's earliest {}; a commit waits at most {COMMIT_WAIT_MAX:?}",
            now.earliest
        ));
    }
    Ok(())
}

/// A clock reading a commit takes its timestamp from, and the clock's
/// monotonic time once it was taken.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reading {
    pub now: Interval,
    /// `Clock::monotonic` after `now` was read: the true time was at least
    /// `now.earliest` then (taken before, it would count the time the
    /// reading itself took, and a wait bounded by it could end early).
    mono: Duration,
}

/// Reads `clock` for a commit.
pub(crate) fn read(clock: &dyn Clock) -> Result<Reading> {
    let now = clock.now()?;
    Ok(Reading {
        now,
        mono: clock.monotonic(),
    })
}

/// The commit timestamp under the high-water mark `high`, from `reading`
/// — or, when that reading is too old for it (taken before the latch,
/// while other commits raised the mark), from a new one, which replaces
/// it. A refusal then is the clock's.
pub(crate) fn stamp_with(
    clock: &dyn Clock,
    reading: &mut Reading,
    high: Timestamp,
) -> Result<Timestamp> {
    match commit_ts(reading.now, high) {
        Ok(ts) => Ok(ts),
        Err(_) => {
            *reading = read(clock)?;
            commit_ts(reading.now, high)
        }
    }
}

/// The commit wait: returns once `clock` says `earliest > ts`. Should the
/// clock fail during the wait (the commit is durable by then, and must
/// become visible), the wait falls back to the bound `reading` gave: the
/// true time was at least `reading.now.earliest` when it was taken, so
/// after `ts - earliest` more of monotonic time it is past `ts`.
pub(crate) fn commit_wait(clock: &dyn Clock, ts: Timestamp, reading: Reading) {
    let need = ts.since(reading.now.earliest) + Duration::from_nanos(1);
    // `commit_ts` refused timestamps further away than COMMIT_WAIT_MAX.
    debug_assert!(need <= COMMIT_WAIT_MAX + Duration::from_nanos(1));
    let by = reading.mono + need;
    if clock.wait_until(ts, by).is_ok() {
        return;
    }
    if let Some(rest) = by.checked_sub(clock.monotonic()) {
        clock.sleep(rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_ts_is_above_latest_and_the_high_water_mark() {
        let iv = Interval::around(Timestamp(1_000_000), Duration::from_nanos(100));
        assert_eq!(
            commit_ts(iv, Timestamp(5)).expect("stamp"),
            Timestamp(1_000_100)
        );
        assert_eq!(
            commit_ts(iv, Timestamp(2_000_000)).expect("stamp"),
            Timestamp(2_000_001)
        );
        let far = Timestamp(1_000_000 + nanos(COMMIT_WAIT_MAX) + 10);
        assert!(matches!(
            commit_ts(iv, far),
            Err(Error::ClockUncertain { .. })
        ));
    }

    #[test]
    fn timestamps_display_as_seconds() {
        assert_eq!(Timestamp(1_000_000_042).to_string(), "1.000000042");
        assert_eq!(Timestamp::from_nanos(7).as_nanos(), 7);
    }
}

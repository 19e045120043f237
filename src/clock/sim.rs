//! A simulated clock: time passes only when a test says so.
//!
//! Clocks made with [`SimClock::sibling`] share one *world* — the true
//! time — and each reads it through its own offset and drift, reporting
//! its own ε, as the clocks of separate machines do. `advance` moves the
//! world (every sibling sees it); `set_offset` steps one clock, backwards
//! too. A commit wait on a simulated clock advances the world by the time
//! it would have slept, at once, so tests of commit wait run without
//! sleeping and repeat exactly. Clones share everything.
//!
//! A `SimClock` reports whatever it is told to: a test makes it lie (an
//! offset past its ε) on purpose, to see what breaks.

use std::sync::Arc;
use std::time::Duration;

use super::{nanos, Clock, Interval, Timestamp};
use crate::error::{Error, Result};
// parking_lot directly, not `crate::sync`: a test tool, outside the model-checked core.
use parking_lot::Mutex;

/// Largest drift a simulated clock accepts, in parts per million (a
/// quartz oscillator is off by tens; this allows a broken one).
const DRIFT_PPM_MAX: i64 = 100_000;

/// Rounds of advancing a commit wait takes at most (drift makes a clock's
/// reading advance slower than the world; each round closes most of the gap).
const WAIT_ROUNDS_MAX: u32 = 64;

#[derive(Debug)]
struct Local {
    /// Nanoseconds the reading is ahead of the world (negative: behind),
    /// as of `anchor`.
    offset: i64,
    /// Parts per million the reading gains on the world after `anchor`.
    drift_ppm: i64,
    /// World time at which `offset` was last settled.
    anchor: u64,
    epsilon: Duration,
    unsynchronized: bool,
}

/// A manual clock for tests. See the module essay.
#[derive(Clone, Debug)]
pub struct SimClock {
    world: Arc<Mutex<u64>>,
    local: Arc<Mutex<Local>>,
}

impl SimClock {
    /// A clock in a new world whose true time is `start`, reading it
    /// exactly, with ε = 0.
    pub fn new(start: Timestamp) -> SimClock {
        SimClock {
            world: Arc::new(Mutex::new(start.as_nanos())),
            local: Arc::new(Mutex::new(Local {
                offset: 0,
                drift_ppm: 0,
                anchor: start.as_nanos(),
                epsilon: Duration::ZERO,
                unsynchronized: false,
            })),
        }
    }

    /// Another clock in the same world (another machine), with no offset
    /// or drift and this clock's ε.
    pub fn sibling(&self) -> SimClock {
        let world = *self.world.lock();
        let epsilon = self.local.lock().epsilon;
        SimClock {
            world: self.world.clone(),
            local: Arc::new(Mutex::new(Local {
                offset: 0,
                drift_ppm: 0,
                anchor: world,
                epsilon,
                unsynchronized: false,
            })),
        }
    }

    /// Moves the world's true time forward by `d` (for every sibling).
    pub fn advance(&self, d: Duration) {
        let mut w = self.world.lock();
        *w = w.saturating_add(nanos(d));
    }

    /// The world's true time.
    pub fn true_now(&self) -> Timestamp {
        Timestamp::from_nanos(*self.world.lock())
    }

    /// This clock from now on reads `nanos` ahead of true time (behind
    /// when negative). Lowering it steps the clock backwards.
    pub fn set_offset(&self, nanos: i64) {
        let world = *self.world.lock();
        let mut l = self.local.lock();
        l.offset = nanos;
        l.anchor = world;
    }

    /// This clock from now on gains `ppm` microseconds per second of true
    /// time (loses, when negative), clamped to ±100 000.
    pub fn set_drift_ppm(&self, ppm: i64) {
        let world = *self.world.lock();
        let mut l = self.local.lock();
        l.offset = Self::offset_at(&l, world);
        l.anchor = world;
        l.drift_ppm = ppm.clamp(-DRIFT_PPM_MAX, DRIFT_PPM_MAX);
    }

    /// The uncertainty this clock reports (`now()` is the reading ± ε).
    pub fn set_epsilon(&self, epsilon: Duration) {
        self.local.lock().epsilon = epsilon;
    }

    /// Makes `now()` fail as an unsynchronised clock's does (`true`), or
    /// work again.
    pub fn set_unsynchronized(&self, on: bool) {
        self.local.lock().unsynchronized = on;
    }

    fn offset_at(l: &Local, world: u64) -> i64 {
        let since = world.saturating_sub(l.anchor) as i128;
        let gained = since * l.drift_ppm as i128 / 1_000_000;
        (l.offset as i128 + gained).clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// What this clock reads (without the uncertainty).
    pub fn reading(&self) -> Timestamp {
        let world = *self.world.lock();
        let l = self.local.lock();
        let r = world as i128 + Self::offset_at(&l, world) as i128;
        Timestamp::from_nanos(r.clamp(0, u64::MAX as i128) as u64)
    }
}

impl Clock for SimClock {
    fn now(&self) -> Result<Interval> {
        let (epsilon, unsync) = {
            let l = self.local.lock();
            (l.epsilon, l.unsynchronized)
        };
        if unsync {
            return Err(Error::ClockUncertain {
                reason: "the simulated clock is unsynchronised".into(),
            });
        }
        Ok(Interval::around(self.reading(), epsilon))
    }

    /// The world's true time: it never steps back, whatever this clock's
    /// offset does.
    fn monotonic(&self) -> Duration {
        Duration::from_nanos(*self.world.lock())
    }

    /// Advances the world by `d`, at once.
    fn sleep(&self, d: Duration) {
        self.advance(d);
    }

    /// Advances the world until this clock's `earliest` passes `ts`.
    fn wait_until(&self, ts: Timestamp, _by: Duration) -> Result<()> {
        for _ in 0..WAIT_ROUNDS_MAX {
            let e = self.now()?.earliest;
            if e > ts {
                return Ok(());
            }
            self.advance(ts.since(e) + Duration::from_nanos(1));
        }
        Err(Error::ClockUncertain {
            reason: format!("the simulated clock did not pass {ts}"),
        })
    }
}

//! The kernel's clock and its own error bound (feature `truetime`).
//!
//! Linux keeps, beside the time, an estimate of how far it may be off:
//! `adjtimex(2)` reports `maxerror` (µs), which the NTP daemon resets at
//! each synchronisation and the kernel grows by 500 ppm between them, and
//! `STA_UNSYNC` when no daemon vouches for the clock. `TrueTime` reads
//! both with every `now()`, and refuses (an [`Error::ClockUncertain`])
//! an unsynchronised clock or a bound past its ceiling: a commit then
//! fails instead of taking a timestamp it cannot stand behind.
//!
//! The reading and the bound come from one `adjtimex` call, so they
//! belong together.
//!
//! Where AWS's ClockBound daemon runs (its segment at
//! [`CLOCKBOUND_SEGMENT`](super::CLOCKBOUND_SEGMENT) exists), `TrueTime`
//! takes its bound instead ([`ClockBound`](super::ClockBound)): chrony's
//! own accounting of the error, tighter than the kernel's 500 ppm guess,
//! and with a status of its own.

use std::time::Duration;

use super::{Clock, Interval, Timestamp};
use crate::error::{Error, Result};

/// The kernel's clock, within the kernel's `maxerror`, refused past
/// `ceiling` or when unsynchronised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrueTime {
    /// The largest error bound accepted.
    pub ceiling: Duration,
}

impl Default for TrueTime {
    /// A ceiling of 10 ms.
    fn default() -> Self {
        TrueTime {
            ceiling: Duration::from_millis(10),
        }
    }
}

/// What the kernel says about its clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelClock {
    /// The time.
    pub now: Timestamp,
    /// `maxerror`: the bound on the clock's error.
    pub max_error: Duration,
    /// `esterror`: the estimated error.
    pub est_error: Duration,
    /// `STA_UNSYNC` is set (or `adjtimex` returned `TIME_ERROR`).
    pub unsynchronized: bool,
}

impl TrueTime {
    /// A clock refusing error bounds past `ceiling`.
    pub fn with_ceiling(ceiling: Duration) -> TrueTime {
        TrueTime { ceiling }
    }

    /// One `adjtimex` reading.
    pub fn kernel() -> Result<KernelClock> {
        // SAFETY: `timex` is plain data for which all-zero bytes are valid
        // (modes = 0 asks the kernel to read, not to set).
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        // SAFETY: `tx` is a valid, exclusively borrowed `timex` for the call.
        let state = unsafe { libc::adjtimex(&mut tx) };
        if state < 0 {
            return Err(Error::from(std::io::Error::last_os_error()));
        }
        // With STA_NANO the time field's fraction is in nanoseconds.
        let frac_ns = if tx.status & libc::STA_NANO != 0 {
            tx.time.tv_usec as u64
        } else {
            tx.time.tv_usec as u64 * 1000
        };
        let now = (tx.time.tv_sec.max(0) as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(frac_ns);
        Ok(KernelClock {
            now: Timestamp::from_nanos(now),
            max_error: Duration::from_micros(tx.maxerror.max(0) as u64),
            est_error: Duration::from_micros(tx.esterror.max(0) as u64),
            unsynchronized: tx.status & libc::STA_UNSYNC != 0 || state == libc::TIME_ERROR,
        })
    }
}

impl Clock for TrueTime {
    fn now(&self) -> Result<Interval> {
        let segment = std::path::Path::new(super::CLOCKBOUND_SEGMENT);
        if segment.exists() {
            return super::ClockBound {
                path: segment.to_path_buf(),
                ceiling: self.ceiling,
            }
            .now();
        }
        let k = Self::kernel()?;
        if k.unsynchronized {
            return Err(Error::ClockUncertain {
                reason: format!(
                    "the kernel clock is not synchronised (adjtimex STA_UNSYNC; maxerror {:?}); start an NTP daemon",
                    k.max_error
                ),
            });
        }
        if k.max_error > self.ceiling {
            return Err(Error::ClockUncertain {
                reason: format!(
                    "the kernel clock's error bound {:?} exceeds the ceiling {:?}",
                    k.max_error, self.ceiling
                ),
            });
        }
        Ok(Interval::around(k.now, k.max_error))
    }
}

//! ClockBound's shared segment (feature `truetime`).
//!
//! AWS's ClockBound daemon reads chrony's tracking data and publishes the
//! clock's error bound in a small file it keeps mapped, by default
//! `/var/run/clockbound/shm0` (protocol version 2, native byte order):
//!
//! ```text
//!   0 magic u32 ×2 (0x414D5A4E, 0x43420200)   8 segment size u32
//!  12 version u16 (2)   14 generation u16 (odd while the daemon writes)
//!  16 as-of      i64 sec, i64 nsec   (CLOCK_MONOTONIC_COARSE)
//!  32 void-after i64 sec, i64 nsec   (CLOCK_MONOTONIC_COARSE)
//!  48 bound i64 ns (CLOCK_REALTIME's error at as-of)
//!  56 disruption marker u64   64 max drift u32 ppb   68 clock status i32
//!  72 disruption support u8
//! ```
//!
//! The bound at a later instant is the published one grown by the
//! maximum drift over the monotonic time since `as-of`; past `void-after`
//! it is not to be trusted at all. A reading copies the segment between
//! two reads of the generation and keeps it only if both are the same
//! even number (the daemon makes it odd while it writes), as the
//! daemon's own client does. Status 1 (synchronised) and 2 (free running,
//! the bound still growing by the drift) give an interval; 0 (unknown)
//! and 3 (disrupted) give `ClockUncertain`, as does anything malformed.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Clock, Interval, Timestamp};
use crate::error::{Error, Result};

/// Where the ClockBound daemon keeps its segment by default.
pub const CLOCKBOUND_SEGMENT: &str = "/var/run/clockbound/shm0";

const MAGIC: [u32; 2] = [0x414D_5A4E, 0x4342_0200];
const VERSION: u16 = 2;
/// Bytes of the segment read (through the disruption-support flag).
const LEN: usize = 73;
/// Readings of a segment the daemon keeps rewriting before giving up.
const TRIES: usize = 1000;

/// The clock as ClockBound bounds it, refused past `ceiling`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockBound {
    /// The segment's path.
    pub path: PathBuf,
    /// The largest error bound accepted.
    pub ceiling: Duration,
}

/// One consistent copy of the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Monotonic (coarse) time the bound was computed at.
    pub as_of: Duration,
    /// Monotonic (coarse) time past which the bound is void.
    pub void_after: Duration,
    /// The clock's error bound at `as_of`.
    pub bound: Duration,
    /// How fast the error may grow, in parts per billion.
    pub max_drift_ppb: u32,
    /// 0 unknown, 1 synchronised, 2 free running, 3 disrupted.
    pub status: i32,
}

impl ClockBound {
    /// The segment at `path`, with a ceiling of 10 ms.
    pub fn at(path: impl AsRef<Path>) -> ClockBound {
        ClockBound {
            path: path.as_ref().to_path_buf(),
            ceiling: Duration::from_millis(10),
        }
    }

    /// A consistent copy of the segment.
    pub fn segment(&self) -> Result<Segment> {
        let file =
            File::open(&self.path).map_err(|e| self.uncertain(format!("cannot open: {e}")))?;
        for _ in 0..TRIES {
            let before = self.generation(&file)?;
            if before % 2 == 1 {
                std::thread::yield_now();
                continue;
            }
            let mut b = [0u8; LEN];
            file.read_exact_at(&mut b, 0)
                .map_err(|e| self.uncertain(format!("cannot read: {e}")))?;
            if self.generation(&file)? == before {
                return self.decode(&b);
            }
        }
        Err(self.uncertain(format!(
            "the daemon was writing it through {TRIES} readings"
        )))
    }

    fn generation(&self, file: &File) -> Result<u16> {
        let mut g = [0u8; 2];
        file.read_exact_at(&mut g, 14)
            .map_err(|e| self.uncertain(format!("cannot read: {e}")))?;
        Ok(u16::from_ne_bytes(g))
    }

    fn decode(&self, b: &[u8; LEN]) -> Result<Segment> {
        let u32_at = |at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let i64_at = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[at..at + 8]);
            i64::from_ne_bytes(x)
        };
        if [u32_at(0), u32_at(4)] != MAGIC {
            return Err(self.uncertain("not a ClockBound segment (magic)".into()));
        }
        let version = u16::from_ne_bytes([b[12], b[13]]);
        if version != VERSION || (u32_at(8) as usize) < LEN {
            return Err(self.uncertain(format!(
                "protocol version {version}, segment of {} bytes; this build reads version {VERSION}",
                u32_at(8)
            )));
        }
        let time = |at: usize| -> Result<Duration> {
            let (s, ns) = (i64_at(at), i64_at(at + 8));
            if s < 0 || !(0..1_000_000_000).contains(&ns) {
                return Err(self.uncertain(format!("malformed time {s} s {ns} ns")));
            }
            Ok(Duration::new(s as u64, ns as u32))
        };
        let bound = i64_at(48);
        if bound < 0 {
            return Err(self.uncertain(format!("negative bound {bound} ns")));
        }
        Ok(Segment {
            as_of: time(16)?,
            void_after: time(32)?,
            bound: Duration::from_nanos(bound as u64),
            max_drift_ppb: u32_at(64),
            status: u32_at(68) as i32,
        })
    }

    fn uncertain(&self, what: String) -> Error {
        Error::ClockUncertain {
            reason: format!("ClockBound segment {}: {what}", self.path.display()),
        }
    }
}

impl Segment {
    /// The bound at monotonic time `now`: grown by the drift since
    /// `as_of`; an error if void, or if the daemon cannot bound the clock.
    pub fn bound_at(&self, now: Duration) -> std::result::Result<Duration, String> {
        match self.status {
            1 | 2 => {}
            0 => return Err("the daemon does not know the clock's state (status unknown)".into()),
            3 => return Err("the clock was disrupted (status disrupted)".into()),
            s => return Err(format!("unknown clock status {s}")),
        }
        if now > self.void_after {
            return Err(format!(
                "the bound is void since monotonic {:?} (now {now:?}): is the daemon running?",
                self.void_after
            ));
        }
        let since = now.saturating_sub(self.as_of);
        let grown = since.as_nanos() * u128::from(self.max_drift_ppb) / 1_000_000_000;
        Ok(self
            .bound
            .saturating_add(Duration::from_nanos(grown.min(u64::MAX as u128) as u64)))
    }
}

/// `CLOCK_REALTIME` and `CLOCK_MONOTONIC_COARSE`, read in that order (the
/// later monotonic reading can only grow the bound).
fn clocks() -> Result<(Timestamp, Duration)> {
    let read = |id: libc::clockid_t| -> Result<Duration> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, exclusively borrowed `timespec` for the call.
        if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
            return Err(Error::from(std::io::Error::last_os_error()));
        }
        Ok(Duration::new(
            ts.tv_sec.max(0) as u64,
            ts.tv_nsec.clamp(0, 999_999_999) as u32,
        ))
    };
    let real = read(libc::CLOCK_REALTIME)?;
    let mono = read(libc::CLOCK_MONOTONIC_COARSE)?;
    Ok((Timestamp(super::nanos(real)), mono))
}

impl Clock for ClockBound {
    fn now(&self) -> Result<Interval> {
        let segment = self.segment()?;
        let (real, mono) = clocks()?;
        let bound = segment.bound_at(mono).map_err(|e| self.uncertain(e))?;
        if bound > self.ceiling {
            return Err(self.uncertain(format!(
                "the error bound {bound:?} exceeds the ceiling {:?}",
                self.ceiling
            )));
        }
        Ok(Interval::around(real, bound))
    }
}

//! Newtypes for the numbers that mean something on disk.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Log sequence number: a byte position in the write-ahead log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

/// Transaction id. 0 means "none"; real xids start at [`Xid::FIRST`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Xid(pub u64);

impl Xid {
    /// No transaction.
    pub const NONE: Xid = Xid(0);
    /// The first xid handed out.
    pub const FIRST: Xid = Xid(1);
}

/// Index of a page in the data file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageId(pub u32);

/// Slot number within a heap page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotId(pub u16);

/// Tuple id: where a tuple version lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tid {
    /// Heap page.
    pub page: PageId,
    /// Slot in that page.
    pub slot: SlotId,
}

impl Tid {
    /// Encoded width in bytes.
    pub const LEN: usize = 6;
    /// The null link (page 0 is the meta page, never a heap page).
    pub const NULL: Tid = Tid {
        page: PageId(0),
        slot: SlotId(0),
    };

    pub(crate) fn is_null(self) -> bool {
        self.page.0 == 0
    }

    pub(crate) fn encode(self) -> [u8; 6] {
        let mut b = [0u8; 6];
        b[..4].copy_from_slice(&self.page.0.to_le_bytes());
        b[4..].copy_from_slice(&self.slot.0.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Tid> {
        let page = u32::from_le_bytes(b.get(..4)?.try_into().ok()?);
        let slot = u16::from_le_bytes(b.get(4..6)?.try_into().ok()?);
        Some(Tid {
            page: PageId(page),
            slot: SlotId(slot),
        })
    }
}

macro_rules! display_inner {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    )*};
}
display_inner!(Lsn, Xid, PageId, SlotId);

impl fmt::Display for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({},{})", self.page.0, self.slot.0)
    }
}

/// A point in time: nanoseconds since the Unix epoch (UTC). Commit
/// timestamps are these; `Timestamp::ZERO` stands for "none" (a commit
/// that wrote nothing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub(crate) u64);

impl Timestamp {
    /// The epoch itself; no commit carries it.
    pub const ZERO: Timestamp = Timestamp(0);
    /// The latest representable time (year 2554).
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// The timestamp `nanos` nanoseconds after the Unix epoch.
    pub const fn from_nanos(nanos: u64) -> Timestamp {
        Timestamp(nanos)
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The same instant as a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.0)
    }

    /// `self + d`, saturating at [`Timestamp::MAX`].
    pub fn saturating_add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(nanos(d)))
    }

    /// `self - d`, saturating at [`Timestamp::ZERO`].
    pub fn saturating_sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(nanos(d)))
    }

    /// How far `self` is past `earlier` (zero if it is not).
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// Shown as seconds and nanoseconds since the epoch, `1733572800.000000042`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:09}",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        )
    }
}

/// Nanoseconds in `d`, saturating (584 years fit).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

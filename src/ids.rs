//! Newtypes for the numbers that mean something on disk.

use std::fmt;

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

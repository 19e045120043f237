//! The common page header and page checksums.
//!
//! ```text
//!  0        4          12        16     17        24
//!  +--------+----------+---------+------+---------+------------------ ...
//!  | crc32c | lsn u64  | page id | type | (zero)  | type-specific body
//!  +--------+----------+---------+------+---------+------------------ ...
//! ```
//! The CRC covers bytes 4..PAGE_SIZE. WAL page deltas cover bytes
//! [`LOGGED_FROM`].. only: the LSN is set by the log itself and the CRC is
//! computed when the page is written out. An all-zero page is a valid,
//! never-written page (type [`PageType::Free`], LSN 0).

use crate::codec::{crc_matches, put_u32, put_u64, u32_at, u64_at};
use crate::ids::{Lsn, PageId};
use crate::limits::PAGE_SIZE;

/// The bytes of one page.
pub type PageBuf = [u8; PAGE_SIZE];
/// First byte of a page's type-specific body.
pub const HDR: usize = 24;
/// First byte covered by WAL page deltas (after crc and lsn).
pub const LOGGED_FROM: usize = 12;

const CRC: usize = 0;
const LSN: usize = 4;
const PID: usize = 12;
const TYPE: usize = 16;

/// What a page holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PageType {
    /// Never written, or zeroed.
    Free = 0,
    /// Page 0: the database's roots and counters.
    Meta = 1,
    /// Slotted page of tuple versions.
    Heap = 2,
    /// B+tree leaf.
    Leaf = 3,
    /// B+tree internal node.
    Internal = 4,
    /// A piece of a large value.
    Overflow = 5,
    /// Commit-log bits.
    Clog = 6,
    /// Directory of commit-log pages.
    ClogDir = 7,
    /// Freed, waiting for reuse (its free-map bit is set).
    Freed = 8,
    /// A free map: one bit per page.
    FreeMap = 9,
}

impl PageType {
    /// Decodes a type byte.
    pub fn from_u8(b: u8) -> Option<PageType> {
        Some(match b {
            0 => PageType::Free,
            1 => PageType::Meta,
            2 => PageType::Heap,
            3 => PageType::Leaf,
            4 => PageType::Internal,
            5 => PageType::Overflow,
            6 => PageType::Clog,
            7 => PageType::ClogDir,
            8 => PageType::Freed,
            9 => PageType::FreeMap,
            _ => return None,
        })
    }
}

/// A fresh zeroed page buffer on the heap.
pub fn zeroed() -> Box<PageBuf> {
    Box::new([0u8; PAGE_SIZE])
}

/// The LSN of the last log record applied to the page.
pub fn lsn(p: &PageBuf) -> Lsn {
    Lsn(u64_at(p, LSN).unwrap_or(0))
}

pub(crate) fn set_lsn(p: &mut PageBuf, lsn: Lsn) {
    put_u64(p, LSN, lsn.0);
}

/// The page's type byte, decoded.
pub fn page_type(p: &PageBuf) -> Option<PageType> {
    PageType::from_u8(p[TYPE])
}

/// Zeroes the body and stamps id and type; the LSN is kept so replay stays
/// idempotent.
pub fn init(p: &mut PageBuf, pid: PageId, ty: PageType) {
    p[LOGGED_FROM..].fill(0);
    put_u32(p, PID, pid.0);
    p[TYPE] = ty as u8;
}

fn checksum(p: &PageBuf) -> u32 {
    crc32c::crc32c(&p[LSN..])
}

/// Stamps the checksum just before the page goes to disk.
pub fn seal(p: &mut PageBuf) {
    let c = checksum(p);
    put_u32(p, CRC, c);
}

/// Checks a page read from disk: checksum, self-identifying page id, type.
pub fn verify(p: &PageBuf, pid: PageId) -> Result<(), String> {
    // A word at a time: during replay every page the log allocates past
    // the data file's end is read as zeros and checked here.
    if p.chunks_exact(8).all(|w| w == [0; 8]) {
        return Ok(());
    }
    let stored = u32_at(p, CRC).unwrap_or(0);
    let actual = checksum(p);
    if !crc_matches(stored, actual) {
        return Err(format!(
            "page {pid} checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"
        ));
    }
    let id = u32_at(p, PID).unwrap_or(u32::MAX);
    if id != pid.0 {
        return Err(format!(
            "page {pid} carries the id of page {id} (misdirected write)"
        ));
    }
    if page_type(p).is_none() {
        return Err(format!("page {pid} has unknown type {}", p[TYPE]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_page_verifies_and_any_flipped_bit_is_caught() {
        let mut p = zeroed();
        init(&mut p, PageId(7), PageType::Heap);
        set_lsn(&mut p, Lsn(99));
        p[100] = 42;
        seal(&mut p);
        assert_eq!(verify(&p, PageId(7)), Ok(()));
        assert!(
            verify(&p, PageId(8)).is_err(),
            "wrong page id must be caught"
        );
        for bit in [5 * 8, 100 * 8 + 3, (PAGE_SIZE - 1) * 8] {
            let mut q = p.clone();
            q[bit / 8] ^= 1 << (bit % 8);
            assert!(
                verify(&q, PageId(7)).is_err(),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn zero_page_is_valid_and_free() {
        let p = zeroed();
        assert_eq!(verify(&p, PageId(3)), Ok(()));
        assert_eq!(page_type(&p), Some(PageType::Free));
        assert_eq!(lsn(&p), Lsn(0));
    }
}

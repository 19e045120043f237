//! Which pages are free: one bit per page, in map pages at fixed places.
//!
//! ```text
//!  map k covers pages [k·MAP_BITS, (k+1)·MAP_BITS) and lives at the first
//!  of them (map 0 at page 1: page 0 is the meta page)
//!
//!  page:  0     1      2 …             MAP_BITS   MAP_BITS+1 …
//!         meta  map 0  data pages …    map 1      data pages …
//!
//!  24                                   8192
//!  | bit i: page k·MAP_BITS + i is free |
//! ```
//! A set bit means free. Bits of pages at or past the meta page's count are
//! always clear. The meta page's `free hint` is a lower bound: no page
//! below it is free, so allocation starts its search there and a database
//! without free pages never reads a map.
//!
//! Allocation takes the lowest free page. That is what lets the file
//! shrink: live pages gather at the front, and `shrink` cuts the free run at
//! the end (the data file itself is cut at the next checkpoint). A map page
//! is created when the count first reaches its place, and goes when the
//! count falls back to it.

use crate::buffer::mtr::{Mtr, PageAccess};
use crate::error::{Error, Result};
use crate::ids::PageId;
use crate::limits::PAGE_SIZE;
use crate::page::{PageBuf, PageType, HDR};

/// Pages one map page covers.
pub const MAP_BITS: u32 = ((PAGE_SIZE - HDR) * 8) as u32;

/// The maps that pages [0, `count`) need, by number: `k` covers pages
/// [k·MAP_BITS, (k+1)·MAP_BITS).
pub fn maps(count: u32) -> std::ops::Range<u32> {
    0..count.div_ceil(MAP_BITS)
}

/// The pages map `k` covers, cut at `count`.
pub fn range_of(k: u32, count: u32) -> std::ops::Range<u32> {
    let lo = k.saturating_mul(MAP_BITS);
    lo..count.min(lo.saturating_add(MAP_BITS))
}

/// The map page covering `pid`.
pub fn map_of(pid: PageId) -> PageId {
    map_page(pid.0 / MAP_BITS)
}

fn map_page(k: u32) -> PageId {
    if k == 0 {
        PageId(1)
    } else {
        PageId(k * MAP_BITS)
    }
}

/// Whether `pid` is a map page's place.
pub fn is_map(pid: PageId) -> bool {
    map_of(pid) == pid
}

/// Byte and bit of `pid` in its map page.
fn bit(pid: PageId) -> (usize, u8) {
    let i = (pid.0 % MAP_BITS) as usize;
    (HDR + i / 8, 1 << (i % 8))
}

/// Whether the map page `map` (read as `p`) marks `pid` free.
pub fn is_free(p: &PageBuf, pid: PageId) -> bool {
    let (at, mask) = bit(pid);
    p[at] & mask != 0
}

/// Starts a map page at `pid` (no page free).
pub fn create(mtr: &mut Mtr<'_>, pid: PageId) -> Result<()> {
    debug_assert!(is_map(pid));
    mtr.new_page(pid, PageType::FreeMap)?;
    Ok(())
}

fn set(mtr: &mut Mtr<'_>, pid: PageId, free: bool) -> Result<()> {
    let map = map_of(pid);
    let (at, mask) = bit(pid);
    check_map(mtr, map)?;
    let p = mtr.page_mut_in(map, &[(at, at + 1)])?;
    if free {
        p[at] |= mask;
    } else {
        p[at] &= !mask;
    }
    Ok(())
}

/// Clears the bits of pages [`from`, `to`) in the maps that stay (those
/// placed below `from`): the pages are leaving the file.
pub fn clear(mtr: &mut Mtr<'_>, from: u32, to: u32) -> Result<()> {
    let mut lo = from;
    while lo < to {
        let k = lo / MAP_BITS;
        let hi = range_of(k, to).end;
        let map = map_page(k);
        if map.0 < from {
            check_map(mtr, map)?;
            let (a, _) = bit(PageId(lo));
            let (b, _) = bit(PageId(hi - 1));
            let p = mtr.page_mut_in(map, &[(a, b + 1)])?;
            for pid in lo..hi {
                let (at, mask) = bit(PageId(pid));
                p[at] &= !mask;
            }
        }
        lo = hi;
    }
    Ok(())
}

fn check_map(mtr: &mut Mtr<'_>, map: PageId) -> Result<()> {
    if crate::page::page_type(mtr.page(map)?) != Some(PageType::FreeMap) {
        return Err(Error::corruption(
            mtr.file(),
            map.0 as u64 * PAGE_SIZE as u64,
            format!("page {map} should be a free map"),
        ));
    }
    Ok(())
}

/// Marks `pid` free.
pub fn mark_free(mtr: &mut Mtr<'_>, pid: PageId) -> Result<()> {
    set(mtr, pid, true)
}

/// Marks `pid` in use (or gone, past the count).
pub fn mark_used(mtr: &mut Mtr<'_>, pid: PageId) -> Result<()> {
    set(mtr, pid, false)
}

/// The lowest free page in [`from`, `count`), if any.
pub fn lowest(acc: &mut impl PageAccess, from: u32, count: u32) -> Result<Option<PageId>> {
    // Pages 0 (meta) and 1 (the first map) are never free; with the count
    // at 1 the first map does not exist yet.
    let mut start = from.max(2);
    while start < count {
        let k = start / MAP_BITS;
        let end = range_of(k, count).end;
        let map = map_page(k);
        let found = acc.with_page(map, |p| {
            (crate::page::page_type(p) == Some(PageType::FreeMap))
                .then(|| first_set(p, start % MAP_BITS, end - k * MAP_BITS))
        })?;
        match found {
            None => {
                return Err(Error::corruption(
                    acc.file(),
                    map.0 as u64 * PAGE_SIZE as u64,
                    format!("page {map} should be a free map"),
                ))
            }
            Some(Some(i)) => return Ok(Some(PageId(k * MAP_BITS + i))),
            Some(None) => start = end,
        }
    }
    Ok(None)
}

/// The first set bit in [`lo`, `hi`) of a map page's bits.
fn first_set(p: &PageBuf, lo: u32, hi: u32) -> Option<u32> {
    let bits = &p[HDR..];
    let mut i = lo;
    while i < hi {
        let byte = bits[(i / 8) as usize];
        if byte == 0 {
            i = (i / 8 + 1) * 8;
            continue;
        }
        if byte & (1 << (i % 8)) != 0 {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Free pages marked in [0, `count`).
pub fn count_free(acc: &mut impl PageAccess, count: u32) -> Result<u64> {
    let mut n = 0u64;
    for k in maps(count) {
        let map = map_page(k);
        if map.0 >= count {
            break;
        }
        let bits = acc.with_page(map, |p| {
            (crate::page::page_type(p) == Some(PageType::FreeMap)).then(|| {
                range_of(k, count)
                    .filter(|&pid| is_free(p, PageId(pid)))
                    .count() as u64
            })
        })?;
        n += bits.ok_or_else(|| {
            Error::corruption(
                acc.file(),
                map.0 as u64 * PAGE_SIZE as u64,
                format!("page {map} should be a free map"),
            )
        })?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_sit_at_the_start_of_their_range() {
        assert_eq!(map_of(PageId(0)), PageId(1));
        assert_eq!(map_of(PageId(2)), PageId(1));
        assert_eq!(map_of(PageId(MAP_BITS - 1)), PageId(1));
        assert_eq!(map_of(PageId(MAP_BITS)), PageId(MAP_BITS));
        assert_eq!(map_of(PageId(3 * MAP_BITS + 7)), PageId(3 * MAP_BITS));
        assert!(is_map(PageId(1)) && is_map(PageId(2 * MAP_BITS)));
        assert!(!is_map(PageId(0)) && !is_map(PageId(2)) && !is_map(PageId(MAP_BITS + 1)));
    }

    #[test]
    fn ranges_stop_at_the_count_even_at_the_largest_one() {
        assert_eq!(maps(1), 0..1);
        assert_eq!(maps(MAP_BITS + 1), 0..2);
        assert_eq!(range_of(1, MAP_BITS + 5), MAP_BITS..MAP_BITS + 5);
        let top = u32::MAX - 1;
        let last = maps(top).end - 1;
        assert_eq!(
            range_of(last, top).end,
            top,
            "no overflow past the last map"
        );
    }

    #[test]
    fn first_set_finds_the_lowest_bit_in_range() {
        let mut p = crate::page::zeroed();
        assert_eq!(first_set(&p, 0, MAP_BITS), None);
        p[HDR + 100] = 0b1010_0000;
        assert_eq!(first_set(&p, 0, MAP_BITS), Some(805));
        assert_eq!(first_set(&p, 806, MAP_BITS), Some(807));
        assert_eq!(first_set(&p, 808, MAP_BITS), None);
        assert_eq!(first_set(&p, 0, 805), None);
    }
}

//! Page changes computed and applied: the byte ranges where a page's new
//! image differs from its old one (what a mini-transaction logs), and a
//! logged change replayed onto a page (what recovery does).

use super::record::ChangeView;
use crate::limits::PAGE_SIZE;
use crate::page::{PageBuf, LOGGED_FROM};

/// Appends to `ranges` the byte ranges where `after` differs from
/// `before`, from `LOGGED_FROM` on; ranges closer than 8 bytes are merged.
/// Returns whether they cost less than a full image.
pub fn diff(before: &PageBuf, after: &PageBuf, ranges: &mut Vec<(usize, usize)>) -> bool {
    const GAP: usize = 8;
    let differs = |i: usize| before[i] != after[i];
    let from = ranges.len();
    let mut i = LOGGED_FROM;
    while i < PAGE_SIZE {
        // Skip equal 64-byte blocks, then 8-byte words: pages differ in a
        // few places, and this loop runs for every page of every record.
        if i.is_multiple_of(64) && i + 64 <= PAGE_SIZE && before[i..i + 64] == after[i..i + 64] {
            i += 64;
            continue;
        }
        if i.is_multiple_of(8) && i + 8 <= PAGE_SIZE && before[i..i + 8] == after[i..i + 8] {
            i += 8;
            continue;
        }
        if !differs(i) {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i + 1;
        let mut j = end;
        while j < PAGE_SIZE && j < end + GAP {
            if differs(j) {
                end = j + 1;
            }
            j += 1;
        }
        ranges.push((start, end));
        i = end;
    }
    fits_delta(&ranges[from..])
}

/// Whether logging the bytes in `ranges` costs less than a full image.
pub fn fits_delta(ranges: &[(usize, usize)]) -> bool {
    ranges.iter().map(|(s, e)| e - s + 4).sum::<usize>() < PAGE_SIZE / 2
}

/// Applies a change to a page body.
pub fn apply(page: &mut PageBuf, change: &ChangeView<'_>) {
    match *change {
        ChangeView::Full { head, hole, tail } => {
            let at = LOGGED_FROM + head.len();
            page[LOGGED_FROM..at].copy_from_slice(head);
            page[at..at + hole].fill(0);
            page[at + hole..].copy_from_slice(tail);
        }
        ChangeView::Runs { shift, .. } => {
            if let Some(sh) = shift {
                sh.apply(page);
            }
            for (off, bytes) in change.runs() {
                page[off..off + bytes.len()].copy_from_slice(bytes);
            }
        }
    }
}

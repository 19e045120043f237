//! The memory cached pages live in: one anonymous mapping for every
//! frame, advised to use huge pages.
//!
//! A cache of separately allocated 8 KiB pages spreads them over 4 KiB
//! pages of memory, so nearly every first touch of a cached page also
//! misses the TLB and walks the page table. In one 2 MiB-page mapping,
//! 256 frames share a TLB entry (a scratch A/B on this project's VM, 200k
//! rows: 10-row range reads 10–20% faster, full scans 10%, deletes 8–18%,
//! point reads level).
//!
//! Each frame's page is reached only through that frame's lock: the
//! guards below are the one place a page's bytes are borrowed, and the
//! lock decides whether shared or exclusive.

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use memmap2::MmapMut;

use crate::error::Result;
use crate::limits::PAGE_SIZE;
use crate::page::PageBuf;
use crate::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The mapping that holds every frame's page, kept for as long as the
/// slots that point into it.
pub struct Memory {
    map: MmapMut,
}

/// Where one frame's page lies in [`Memory`].
pub struct Slot(NonNull<PageBuf>);

// SAFETY: a slot is an address of memory owned by the pool's `Memory` for
// the pool's whole life; its bytes are only borrowed through the `RwLock`
// the slot sits in (`PageRef`, `PageMut`), which makes sharing across
// threads as safe as sharing a `RwLock<PageBuf>`.
unsafe impl Send for Slot {}
// SAFETY: as for `Send`: `&Slot` gives no access to the bytes by itself.
unsafe impl Sync for Slot {}

impl Memory {
    /// Zeroed memory for `n` pages, and a slot for each, to be put in its
    /// frame's lock.
    pub fn new(n: usize) -> Result<(Memory, Vec<Slot>)> {
        let mut map = MmapMut::map_anon(n * PAGE_SIZE)?;
        #[cfg(target_os = "linux")]
        {
            // Advice only: without huge pages the cache works the same.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        let base = map.as_mut_ptr();
        let slots = (0..n)
            .map(|i| {
                let at = base.wrapping_add(i * PAGE_SIZE).cast::<PageBuf>();
                NonNull::new(at).map(Slot)
            })
            .collect::<Option<Vec<Slot>>>()
            .ok_or(crate::error::Error::Unsupported(
                "the page cache's mapping has a null address",
            ))?;
        Ok((Memory { map }, slots))
    }

    /// Starts loading the line at byte `at` of frame `i`'s page into the
    /// CPU cache: a hit calls it as soon as it knows the frame, so the
    /// page's misses overlap the frame's own (pin count, lock) instead of
    /// following it.
    #[inline]
    pub fn prefetch(&self, i: usize, at: usize) {
        if at < PAGE_SIZE && i * PAGE_SIZE < self.map.len() {
            prefetch(self.map.as_ptr().wrapping_add(i * PAGE_SIZE + at));
        }
    }
}

/// Starts loading the cache line holding `at` (any address: a hint).
#[inline]
pub fn prefetch<T>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is a hint that reads nothing into the program
        // and never faults, whatever the address; SSE, which it needs, is
        // part of every x86_64 target.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// A frame's page, locked for reading.
pub struct PageRef<'a>(RwLockReadGuard<'a, Slot>);

/// A frame's page, locked for writing.
pub struct PageMut<'a>(RwLockWriteGuard<'a, Slot>);

/// Locks a frame's page for reading.
pub fn read(lock: &RwLock<Slot>) -> PageRef<'_> {
    PageRef(lock.read())
}

/// Locks a frame's page for reading if that needs no wait.
pub fn try_read(lock: &RwLock<Slot>) -> Option<PageRef<'_>> {
    lock.try_read().map(PageRef)
}

/// Locks a frame's page for writing.
pub fn write(lock: &RwLock<Slot>) -> PageMut<'_> {
    PageMut(lock.write())
}

impl Deref for PageRef<'_> {
    type Target = PageBuf;

    fn deref(&self) -> &PageBuf {
        // SAFETY: the slot points at PAGE_SIZE bytes of the live mapping,
        // used by this frame alone; the read lock is held for the borrow's
        // life, so no `&mut` to them exists meanwhile.
        unsafe { self.0 .0.as_ref() }
    }
}

impl Deref for PageMut<'_> {
    type Target = PageBuf;

    fn deref(&self) -> &PageBuf {
        // SAFETY: as in `PageRef`; the write lock is held.
        unsafe { self.0 .0.as_ref() }
    }
}

impl DerefMut for PageMut<'_> {
    fn deref_mut(&mut self) -> &mut PageBuf {
        // SAFETY: the slot points at PAGE_SIZE bytes of the live mapping,
        // used by this frame alone; the write lock is held for the
        // borrow's life and the borrow is unique through `&mut self`.
        unsafe { self.0 .0.as_mut() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_frame_has_its_own_zeroed_page() {
        let (_memory, slots) = Memory::new(3).expect("memory");
        let locks: Vec<RwLock<Slot>> = slots.into_iter().map(RwLock::new).collect();
        assert_eq!(locks.len(), 3);
        for (i, l) in locks.iter().enumerate() {
            assert!(read(l).iter().all(|&b| b == 0), "frame {i} starts zeroed");
            let mut w = write(l);
            w.fill(i as u8 + 1);
        }
        for (i, l) in locks.iter().enumerate() {
            let r = read(l);
            assert!(
                r.iter().all(|&b| b == i as u8 + 1),
                "frame {i} kept its bytes"
            );
        }
    }
}

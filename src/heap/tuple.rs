//! Tuple versions.
//!
//! ```text
//!  0        8        16         20         22      24     26          30
//!  | xmin   | xmax   | prev pg  | prev slot| flags | klen | vlen u32  | key | value, or overflow page u32 + tail |
//! ```
//! `xmin` created the version, `xmax` deleted or superseded it (0: nobody),
//! `prev` links to the next older version of the same key (page 0: none).
//! With `OVERFLOW` set, `vlen` is the value's full length: its first
//! `vlen - tail` bytes live in a chain of overflow pages starting at the
//! stored page id, and the rest (the tail, possibly empty) follows the
//! page id in the tuple. A tail stays in the tuple when it fits
//! (`overflow::split`): a value a few bytes past a page's worth would
//! otherwise take a second overflow page for those few bytes, where in the
//! tuple it shares a heap page with other tuples, as PostgreSQL's TOAST
//! chunks do.

use crate::codec::{put_u32, put_u64, u16_at, u32_at, u64_at};
use crate::ids::{PageId, Tid, Xid};

/// Header bytes before the key.
pub const HEADER: usize = 30;
/// Where `xmax` lies in a tuple.
pub const XMAX: std::ops::Range<usize> = 8..16;
/// The value is stored in overflow pages.
pub const OVERFLOW: u16 = 1;

/// A decoded tuple header with borrowed key and inline value bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tuple<'a> {
    /// Creating transaction.
    pub xmin: Xid,
    /// Deleting or superseding transaction (0 if none).
    pub xmax: Xid,
    /// Next older version.
    pub prev: Tid,
    /// Flag bits.
    pub flags: u16,
    /// The key.
    pub key: &'a [u8],
    /// Inline value, or the 4-byte overflow page id and the value's tail.
    pub body: &'a [u8],
    /// Full value length.
    pub vlen: u32,
}

impl<'a> Tuple<'a> {
    /// Decodes and bounds-checks tuple bytes.
    pub fn decode(b: &'a [u8]) -> Option<Tuple<'a>> {
        let xmin = Xid(u64_at(b, 0)?);
        let xmax = Xid(u64_at(b, 8)?);
        let prev = Tid::decode(b.get(16..22)?)?;
        let flags = u16_at(b, 22)?;
        let klen = u16_at(b, 24)? as usize;
        let vlen = u32_at(b, 26)?;
        let key = b.get(HEADER..HEADER + klen)?;
        let body = b.get(HEADER + klen..)?;
        let body_ok = if flags & OVERFLOW != 0 {
            body.len() >= 4 && body.len() - 4 <= vlen as usize
        } else {
            body.len() == vlen as usize
        };
        body_ok.then_some(Tuple {
            xmin,
            xmax,
            prev,
            flags,
            key,
            body,
            vlen,
        })
    }

    /// First overflow page and the bytes of the value the chain holds, if
    /// the value is stored out of line.
    pub fn overflow(&self) -> Option<(PageId, u32)> {
        (self.flags & OVERFLOW != 0).then(|| {
            let first = PageId(u32_at(self.body, 0).unwrap_or(0));
            (first, self.vlen - self.tail().len() as u32)
        })
    }

    /// The end of an out-of-line value kept in the tuple (empty for an
    /// inline value, whose bytes are all `body`).
    pub fn tail(&self) -> &'a [u8] {
        match self.flags & OVERFLOW {
            0 => &[],
            _ => self.body.get(4..).unwrap_or(&[]),
        }
    }
}

/// Encodes a new version.
pub fn encode(xmin: Xid, prev: Tid, key: &[u8], value: Inline<'_>) -> Vec<u8> {
    let page;
    let (flags, vlen, body, tail): (u16, u32, &[u8], &[u8]) = match value {
        Inline::Bytes(v) => (0, v.len() as u32, v, &[]),
        Inline::Overflow { first, chain, tail } => {
            page = first.0.to_le_bytes();
            (OVERFLOW, chain + tail.len() as u32, &page, tail)
        }
    };
    let mut t = Vec::with_capacity(HEADER + key.len() + body.len() + tail.len());
    t.extend_from_slice(&xmin.0.to_le_bytes());
    t.extend_from_slice(&0u64.to_le_bytes());
    t.extend_from_slice(&prev.encode());
    t.extend_from_slice(&flags.to_le_bytes());
    t.extend_from_slice(&(key.len() as u16).to_le_bytes());
    t.extend_from_slice(&vlen.to_le_bytes());
    t.extend_from_slice(key);
    t.extend_from_slice(body);
    t.extend_from_slice(tail);
    t
}

/// Where a new version's value goes.
pub enum Inline<'a> {
    /// In the tuple.
    Bytes(&'a [u8]),
    /// In an overflow chain, and the rest in the tuple.
    Overflow {
        /// First page of the chain.
        first: PageId,
        /// Bytes of the value the chain holds.
        chain: u32,
        /// The value's last bytes, kept in the tuple.
        tail: &'a [u8],
    },
}

/// Stamps `xmax` on tuple bytes.
pub fn set_xmax(b: &mut [u8], xmax: Xid) {
    put_u64(b, XMAX.start, xmax.0);
}

/// Rewrites the link to the older version.
pub fn set_prev(b: &mut [u8], prev: Tid) {
    put_u32(b, 16, prev.page.0);
    b[20..22].copy_from_slice(&prev.slot.0.to_le_bytes());
}

/// Repoints an overflow tuple at the rest of its chain, `chain` bytes
/// long (vacuum frees a dead value piecewise; compaction moves the chain).
/// The tail in the tuple stays, and `vlen` counts it.
pub fn set_overflow(b: &mut [u8], first: PageId, chain: u32) {
    let klen = u16_at(b, 24).unwrap_or(0) as usize;
    let tail = b.len().saturating_sub(HEADER + klen + 4) as u32;
    put_u32(b, 26, chain + tail);
    put_u32(b, HEADER + klen, first.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SlotId;

    fn tid(page: u32, slot: u16) -> Tid {
        Tid {
            page: PageId(page),
            slot: SlotId(slot),
        }
    }

    #[test]
    fn encode_decode_and_stamp() {
        let mut t = encode(Xid(5), tid(9, 3), b"key", Inline::Bytes(b"value"));
        set_xmax(&mut t, Xid(8));
        set_prev(&mut t, tid(10, 4));
        let d = Tuple::decode(&t).expect("decodes");
        assert_eq!((d.xmin, d.xmax, d.prev), (Xid(5), Xid(8), tid(10, 4)));
        assert_eq!((d.key, d.body, d.vlen), (&b"key"[..], &b"value"[..], 5));
        assert_eq!(d.overflow(), None);
        let o = encode(
            Xid(1),
            Tid::NULL,
            b"k",
            Inline::Overflow {
                first: PageId(77),
                chain: 1 << 20,
                tail: b"",
            },
        );
        let d = Tuple::decode(&o).expect("decodes");
        assert_eq!(
            (d.overflow(), d.vlen),
            (Some((PageId(77), 1 << 20)), 1 << 20)
        );
        assert_eq!(d.tail(), b"");
    }

    #[test]
    fn a_tail_stays_in_the_tuple_and_counts_in_the_length() {
        let mut o = encode(
            Xid(1),
            Tid::NULL,
            b"k",
            Inline::Overflow {
                first: PageId(77),
                chain: 8160,
                tail: b"end",
            },
        );
        let d = Tuple::decode(&o).expect("decodes");
        assert_eq!(
            (d.overflow(), d.vlen, d.tail()),
            (Some((PageId(77), 8160)), 8163, &b"end"[..])
        );
        set_overflow(&mut o, PageId(0), 0);
        let d = Tuple::decode(&o).expect("decodes");
        assert_eq!(
            (d.overflow(), d.vlen, d.tail()),
            (Some((PageId(0), 0)), 3, &b"end"[..])
        );
        // A tail longer than the value is damage.
        put_u32(&mut o, 26, 2);
        assert!(Tuple::decode(&o).is_none());
    }

    #[test]
    fn truncated_tuple_is_rejected() {
        let t = encode(Xid(5), Tid::NULL, b"key", Inline::Bytes(b"value"));
        for cut in 0..t.len() {
            assert!(Tuple::decode(&t[..cut]).is_none(), "cut at {cut} accepted");
        }
    }
}

//! Tuple versions.
//!
//! ```text
//!  0        8        16         20         22      24     26          30
//!  | xmin   | xmax   | prev pg  | prev slot| flags | klen | vlen u32  | key | value or overflow page u32 |
//! ```
//! `xmin` created the version, `xmax` deleted or superseded it (0: nobody),
//! `prev` links to the next older version of the same key (page 0: none).
//! With `OVERFLOW` set, `vlen` is the value's full length and the value
//! lives in a chain of overflow pages starting at the stored page id.

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
    /// Inline value, or the 4-byte overflow page id.
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
            body.len() == 4
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

    /// First overflow page, if the value is stored out of line.
    pub fn overflow(&self) -> Option<PageId> {
        (self.flags & OVERFLOW != 0).then(|| PageId(u32_at(self.body, 0).unwrap_or(0)))
    }
}

/// Encodes a new version.
pub fn encode(xmin: Xid, prev: Tid, key: &[u8], value: Inline<'_>) -> Vec<u8> {
    let page;
    let (flags, vlen, body): (u16, u32, &[u8]) = match value {
        Inline::Bytes(v) => (0, v.len() as u32, v),
        Inline::Overflow { first, len } => {
            page = first.0.to_le_bytes();
            (OVERFLOW, len, &page)
        }
    };
    let mut t = Vec::with_capacity(HEADER + key.len() + body.len());
    t.extend_from_slice(&xmin.0.to_le_bytes());
    t.extend_from_slice(&0u64.to_le_bytes());
    t.extend_from_slice(&prev.encode());
    t.extend_from_slice(&flags.to_le_bytes());
    t.extend_from_slice(&(key.len() as u16).to_le_bytes());
    t.extend_from_slice(&vlen.to_le_bytes());
    t.extend_from_slice(key);
    t.extend_from_slice(body);
    t
}

/// Where a new version's value goes.
pub enum Inline<'a> {
    /// In the tuple.
    Bytes(&'a [u8]),
    /// In an overflow chain.
    Overflow {
        /// First page of the chain.
        first: PageId,
        /// Value length.
        len: u32,
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

/// Repoints an overflow tuple at the rest of its chain (vacuum frees a
/// dead value piecewise).
pub fn set_overflow(b: &mut [u8], first: PageId, len: u32) {
    put_u32(b, 26, len);
    let klen = u16_at(b, 24).unwrap_or(0) as usize;
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
                len: 1 << 20,
            },
        );
        let d = Tuple::decode(&o).expect("decodes");
        assert_eq!((d.overflow(), d.vlen), (Some(PageId(77)), 1 << 20));
    }

    #[test]
    fn truncated_tuple_is_rejected() {
        let t = encode(Xid(5), Tid::NULL, b"key", Inline::Bytes(b"value"));
        for cut in 0..t.len() {
            assert!(Tuple::decode(&t[..cut]).is_none(), "cut at {cut} accepted");
        }
    }
}

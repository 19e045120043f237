//! The CRC32C frame around each log record's payload.
//!
//! ```text
//! frame:   | len u32 | crc32c u32 | payload (len bytes) |
//!            crc covers the len field and the payload
//! ```

use crate::codec::{crc_matches, u32_at};
use crate::limits::WAL_RECORD_MAX;

/// Bytes of frame header before the payload.
pub const FRAME_HDR: usize = 8;

/// Wraps a payload in a frame.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    assert!(
        payload.len() <= WAL_RECORD_MAX,
        "record exceeds WAL_RECORD_MAX"
    );
    let len = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32c::crc32c(&len);
    crc = crc32c::crc32c_append(crc, payload);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Result of looking at the bytes where a frame should start.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed<'a> {
    /// A whole, checksummed payload; the frame is `len` bytes long.
    Ok(&'a [u8], usize),
    /// Nothing there: end of data (or zero fill).
    End,
    /// A frame that is cut short or fails its checksum.
    Bad(String),
}

/// Parses the frame at the start of `b`.
pub fn unframe(b: &[u8]) -> Framed<'_> {
    if b.len() < FRAME_HDR {
        return if b.iter().all(|&x| x == 0) {
            Framed::End
        } else {
            Framed::Bad("torn frame header".into())
        };
    }
    let (Some(len), Some(crc)) = (u32_at(b, 0), u32_at(b, 4)) else {
        return Framed::Bad("torn frame header".into());
    };
    if len == 0 && crc == 0 {
        return Framed::End;
    }
    let len = len as usize;
    if len > WAL_RECORD_MAX {
        return Framed::Bad(format!("frame length {len} exceeds the record limit"));
    }
    let Some(payload) = b.get(FRAME_HDR..FRAME_HDR + len) else {
        return Framed::Bad("frame cut short".into());
    };
    let mut actual = crc32c::crc32c(&b[..4]);
    actual = crc32c::crc32c_append(actual, payload);
    if !crc_matches(crc, actual) {
        return Framed::Bad(format!(
            "frame checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"
        ));
    }
    Framed::Ok(payload, FRAME_HDR + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Xid;
    use crate::redo::record::{Kind, Record};

    fn sample() -> Record {
        let mut r = Record::bare(Kind::Commit, Xid(77), 5);
        r.key = b"the key".to_vec();
        r
    }

    #[test]
    fn record_round_trips_through_frame() {
        let rec = sample();
        let mut buf = Vec::new();
        frame(&rec.encode(), &mut buf);
        let Framed::Ok(payload, n) = unframe(&buf) else {
            panic!("frame did not parse")
        };
        assert_eq!(n, buf.len());
        assert_eq!(Record::decode(payload), Ok(rec));
    }

    #[test]
    fn every_truncation_and_bit_flip_is_detected() {
        let mut buf = Vec::new();
        frame(&sample().encode(), &mut buf);
        for cut in 1..buf.len() {
            assert!(
                !matches!(unframe(&buf[..cut]), Framed::Ok(..)),
                "cut at {cut} accepted"
            );
        }
        for byte in (0..buf.len()).step_by(97) {
            let mut b = buf.clone();
            b[byte] ^= 0x10;
            assert!(
                !matches!(unframe(&b), Framed::Ok(..)),
                "flip at byte {byte} accepted"
            );
        }
    }

    #[test]
    fn zero_fill_is_end_of_log() {
        assert_eq!(unframe(&[0u8; 64]), Framed::End);
        assert_eq!(unframe(&[]), Framed::End);
    }
}

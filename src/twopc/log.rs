//! The coordinator's decision log: records appended to one file and
//! forced to disk before the messages they allow are sent.
//!
//! ```text
//! frame:   | len u32 | crc32c u32 | count u16 | record * count |   crc covers the rest
//! record:  | kind u8 | gid_len u8 | gid | (kind 1: n u16 | participant u32 * n)
//!                                           (kind 5: commit ts u64) |
//!            kind 1 PREPARED, 5 COMMITTED at ts, 3 ABORTED, 4 ENDED;
//!            kind 2 COMMITTED without a timestamp (read, no longer written)
//! ```
//! One append is one frame, followed by an fsync, so only the last frame
//! can be torn: a bad frame with no valid frame after it is a torn tail
//! and is cut; a bad frame followed by a valid one is `Error::Corruption`
//! naming the file and offset.
//! Opening rewrites the file with only the records of unfinished
//! transactions (through a temporary file and a rename), so it stays as
//! small as the work in flight.

use std::path::Path;
use std::sync::Arc;

use super::machine::{Entry, Pid};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::io::{Vfs, VfsFile};
use crate::limits::{GID_MAX, TWOPC_PARTICIPANTS_MAX};

fn encode(r: &Entry, p: &mut Vec<u8>) {
    let (kind, gid) = match r {
        Entry::Prepared { gid, .. } => (1u8, gid),
        Entry::Committed { gid, .. } => (5, gid),
        Entry::Aborted { gid } => (3, gid),
        Entry::Ended { gid } => (4, gid),
    };
    p.push(kind);
    p.push(gid.len() as u8);
    p.extend_from_slice(gid.as_bytes());
    if let Entry::Prepared { participants, .. } = r {
        p.extend_from_slice(&(participants.len() as u16).to_le_bytes());
        for x in participants {
            p.extend_from_slice(&x.to_le_bytes());
        }
    }
    if let Entry::Committed { ts, .. } = r {
        p.extend_from_slice(&ts.as_nanos().to_le_bytes());
    }
}

/// Encodes records as one frame.
pub fn frame(records: &[Entry]) -> Vec<u8> {
    let mut p = (records.len() as u16).to_le_bytes().to_vec();
    for r in records {
        encode(r, &mut p);
    }
    let len = (p.len() as u32).to_le_bytes();
    let mut crc = crc32c::crc32c(&len);
    crc = crc32c::crc32c_append(crc, &p);
    let mut f = Vec::with_capacity(8 + p.len());
    f.extend_from_slice(&len);
    f.extend_from_slice(&crc.to_le_bytes());
    f.extend_from_slice(&p);
    f
}

/// Decodes one record from the front of `p`; returns it and the rest.
fn decode(p: &[u8]) -> Option<(Entry, &[u8])> {
    let (&kind, rest) = p.split_first()?;
    let (&n, rest) = rest.split_first()?;
    let n = n as usize;
    if n == 0 || n > GID_MAX || rest.len() < n {
        return None;
    }
    let gid = String::from_utf8(rest[..n].to_vec()).ok()?;
    let rest = &rest[n..];
    match kind {
        1 => {
            let count = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?) as usize;
            if count > TWOPC_PARTICIPANTS_MAX {
                return None;
            }
            let body = rest.get(2..2 + 4 * count)?;
            let participants = body
                .chunks_exact(4)
                .map(|c| c.try_into().ok().map(Pid::from_le_bytes))
                .collect::<Option<Vec<_>>>()?;
            Some((
                Entry::Prepared { gid, participants },
                &rest[2 + 4 * count..],
            ))
        }
        2 => Some((
            Entry::Committed {
                gid,
                ts: Timestamp::ZERO,
            },
            rest,
        )),
        5 => {
            let ts = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
            Some((
                Entry::Committed {
                    gid,
                    ts: Timestamp::from_nanos(ts),
                },
                &rest[8..],
            ))
        }
        3 => Some((Entry::Aborted { gid }, rest)),
        4 => Some((Entry::Ended { gid }, rest)),
        _ => None,
    }
}

/// Decodes a frame's payload: its records, all of them or none.
fn decode_all(p: &[u8]) -> Option<Vec<Entry>> {
    let count = u16::from_le_bytes(p.get(..2)?.try_into().ok()?) as usize;
    let mut rest = &p[2..];
    let mut out = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let (r, more) = decode(rest)?;
        out.push(r);
        rest = more;
    }
    rest.is_empty().then_some(out)
}

/// The frame at `at`: `None` if it is not a whole frame with a matching
/// checksum; else its records (`None` if they do not decode) and length.
fn frame_at(bytes: &[u8], at: usize) -> Option<(Option<Vec<Entry>>, usize)> {
    let len = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(at + 4..at + 8)?.try_into().ok()?);
    let p = bytes.get(at + 8..(at + 8).checked_add(len)?)?;
    let c = crc32c::crc32c_append(crc32c::crc32c(&bytes[at..at + 4]), p);
    (c == crc && len >= 2).then(|| (decode_all(p), 8 + len))
}

/// Decodes a whole log; returns the records and the length of the valid
/// prefix (a torn last frame is not part of it).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<(Vec<Entry>, u64)> {
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        match frame_at(bytes, at) {
            Some((Some(rs), n)) => {
                records.extend(rs);
                at += n;
            }
            Some((None, _)) => {
                return Err(Error::corruption(
                    path,
                    at as u64,
                    "decision log record has a valid checksum but does not decode",
                ))
            }
            None => {
                // Torn only if no whole frame follows: appends are synced
                // one frame at a time, so only the last can be torn.
                if !(at + 1..bytes.len()).any(|o| frame_at(bytes, o).is_some()) {
                    break;
                }
                return Err(Error::corruption(
                    path,
                    at as u64,
                    "damaged decision log record before the end of the log",
                ));
            }
        }
    }
    Ok((records, at as u64))
}

/// The decision log of one coordinator.
pub struct DecisionLog {
    file: Box<dyn VfsFile>,
    end: u64,
}

impl DecisionLog {
    /// Opens (or creates) the log at `path`; returns it with the records
    /// of transactions not yet ended, in log order.
    pub fn open(vfs: Arc<dyn Vfs>, path: &Path) -> Result<(DecisionLog, Vec<Entry>)> {
        // Its I/O errors name their operation and path, as the engine's do.
        let vfs: Arc<dyn Vfs> = Arc::new(crate::io::Named(vfs));
        let mut records = Vec::new();
        if vfs.exists(path)? {
            let f = vfs.open(path, false)?;
            let len = f.len()?;
            let mut bytes = vec![0u8; len as usize];
            let mut got = 0;
            while got < bytes.len() {
                let n = f.read_at(&mut bytes[got..], got as u64)?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            bytes.truncate(got);
            records = parse(path, &bytes)?.0;
        }
        let ended: std::collections::HashSet<String> = records
            .iter()
            .filter(|r| matches!(r, Entry::Ended { .. }))
            .map(|r| r.gid().to_owned())
            .collect();
        records.retain(|r| !ended.contains(r.gid()));
        // Rewrite: only what is unfinished, made durable before it
        // replaces the old log.
        let tmp = path.with_extension("tmp");
        let f = vfs.open(&tmp, true)?;
        f.set_len(0)?;
        let bytes = if records.is_empty() {
            Vec::new()
        } else {
            frame(&records)
        };
        f.write_at(&bytes, 0)?;
        f.sync()?;
        drop(f);
        vfs.rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            vfs.sync_dir(dir)?;
        }
        let file = vfs.open(path, false)?;
        Ok((
            DecisionLog {
                file,
                end: bytes.len() as u64,
            },
            records,
        ))
    }

    /// Appends `records` and forces them to disk.
    pub fn append(&mut self, records: &[Entry]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let bytes = frame(records);
        self.file.write_at(&bytes, self.end)?;
        self.file.sync()?;
        self.end += bytes.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Entry> {
        vec![
            Entry::Prepared {
                gid: "a".into(),
                participants: vec![0, 1, 2],
            },
            Entry::Committed {
                gid: "a".into(),
                ts: Timestamp::from_nanos(1_796_601_600_000_000_007),
            },
            Entry::Ended { gid: "a".into() },
            Entry::Aborted { gid: "b".into() },
        ]
    }

    #[test]
    fn frames_round_trip_and_a_torn_tail_is_cut() {
        let bytes: Vec<u8> = sample().chunks(1).flat_map(frame).collect();
        let p = Path::new("log");
        let (r, end) = parse(p, &bytes).expect("parse");
        assert_eq!(r, sample());
        assert_eq!(end, bytes.len() as u64);
        for cut in 0..bytes.len() {
            let (r, end) = parse(p, &bytes[..cut]).expect("a torn tail is not an error");
            assert!(r.len() < 4 && end <= cut as u64);
            assert_eq!(r[..], sample()[..r.len()]);
        }
    }

    #[test]
    fn a_commit_record_carries_its_timestamp_and_an_old_one_reads_as_zero() {
        let mut with = Vec::new();
        encode(&sample()[1], &mut with);
        assert_eq!(with[0], 5);
        assert_eq!(
            with[with.len() - 8..],
            1_796_601_600_000_000_007u64.to_le_bytes()
        );
        let old = [2u8, 1, b'a'];
        let (e, rest) = decode(&old).expect("a COMMITTED of an older log");
        assert_eq!(
            e,
            Entry::Committed {
                gid: "a".into(),
                ts: Timestamp::ZERO
            }
        );
        assert!(rest.is_empty());
        assert!(decode(&with[..with.len() - 1]).is_none(), "a cut timestamp");
    }

    #[test]
    fn damage_before_the_end_is_corruption_with_the_offset() {
        let first = frame(&sample()[..2]);
        let mut bytes = first.clone();
        bytes.extend(frame(&sample()[2..]));
        let mut torn = bytes.clone();
        torn[first.len() + 9] ^= 0xFF;
        let (r, end) =
            parse(Path::new("log"), &torn).expect("damage in the last frame is a torn tail");
        assert_eq!((r.len(), end), (2, first.len() as u64));
        bytes[9] ^= 0xFF;
        match parse(Path::new("log"), &bytes) {
            Err(Error::Corruption { offset, .. }) => assert_eq!(offset, 0),
            other => panic!("expected corruption, got {other:?}"),
        }
    }
}

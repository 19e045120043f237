//! Segment files: `wal/<start lsn, 16 hex digits>.wal`, each opening with a
//! 16-byte header (`STRWAL01`, start LSN u64). A segment holds the log bytes
//! from its start LSN up to the next segment's start.

use std::path::{Path, PathBuf};

use crate::codec::u64_at;
use crate::error::{Error, Result};
use crate::io::{Vfs, VfsFile};

/// Bytes of segment header.
pub const SEG_HDR: u64 = 16;
const MAGIC: &[u8; 8] = b"STRWAL01";

/// File name of the segment starting at `start`.
pub fn path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:016x}.wal"))
}

/// Start LSNs of the segments in `dir`, ascending.
pub fn list(vfs: &dyn Vfs, dir: &Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for p in vfs.list(dir)? {
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(hex) = name.strip_suffix(".wal") else {
            continue;
        };
        if hex.len() == 16 {
            if let Ok(start) = u64::from_str_radix(hex, 16) {
                out.push(start);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Creates a segment file with its header; the caller syncs the directory.
pub fn create(vfs: &dyn Vfs, dir: &Path, start: u64) -> Result<Box<dyn VfsFile>> {
    let f = vfs.open(&path(dir, start), true)?;
    f.set_len(0)?;
    let mut hdr = [0u8; SEG_HDR as usize];
    hdr[..8].copy_from_slice(MAGIC);
    hdr[8..].copy_from_slice(&start.to_le_bytes());
    f.write_at(&hdr, 0)?;
    Ok(f)
}

/// Checks a segment's header; `Ok(false)` when the header is missing or
/// torn (a segment created just before a crash).
pub fn header_ok(file: &dyn VfsFile, p: &Path, start: u64) -> Result<bool> {
    let mut hdr = [0u8; SEG_HDR as usize];
    let n = file.read_at(&mut hdr, 0)?;
    if n < hdr.len() || &hdr[..8] != MAGIC {
        return Ok(false);
    }
    match u64_at(&hdr, 8) {
        Some(s) if s == start => Ok(true),
        _ => Err(Error::corruption(
            p,
            8,
            format!(
                "segment header names LSN {:?}, file name {start}",
                u64_at(&hdr, 8)
            ),
        )),
    }
}

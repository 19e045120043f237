//! The control file: where recovery starts.
//!
//! ```text
//!  0          8         12          16          24           32
//!  | STRATACT | version | page size | redo lsn  | next xid   | crc32c of 0..32 |
//! ```
//! Written whole to `CONTROL.tmp`, fsynced, renamed over `CONTROL`, and the
//! directory fsynced: a crash leaves either the old or the new file, never
//! a mix.
//!
//! Creating a database writes [`Control::CREATING`] (redo LSN 0) before any
//! other file, and its first checkpoint replaces it. No checkpoint records
//! LSN 0 (the log opens with a segment header), so a control file naming
//! it marks a creation that has not finished, and database files without
//! a control file were never made by creation: they are refused, not
//! taken for an interrupted creation.

use std::path::Path;

use crate::codec::{crc_matches, u32_at, u64_at};
use crate::error::{Error, Result};
use crate::ids::{Lsn, Xid};
use crate::io::Vfs;
use crate::limits::PAGE_SIZE;
use crate::store::meta::FORMAT_VERSION;

const MAGIC: &[u8; 8] = b"STRATACT";
const LEN: usize = 36;
/// File name of the control file.
pub const NAME: &str = "CONTROL";

/// Contents of the control file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Control {
    /// Replay starts here.
    pub redo: Lsn,
    /// Xids below this may be in use.
    pub next_xid: Xid,
}

impl Control {
    /// What creation writes first: a creation under way. No open has
    /// returned yet, so nothing in the directory was acknowledged.
    pub const CREATING: Control = Control {
        redo: Lsn(0),
        next_xid: Xid::FIRST,
    };

    /// Whether this marks a creation that has not finished.
    pub fn creating(&self) -> bool {
        self.redo == Lsn(0)
    }
}

fn encode(c: &Control) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[..8].copy_from_slice(MAGIC);
    b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
    b[16..24].copy_from_slice(&c.redo.0.to_le_bytes());
    b[24..32].copy_from_slice(&c.next_xid.0.to_le_bytes());
    let crc = crc32c::crc32c(&b[..32]);
    b[32..].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8], path: &Path) -> Result<Control> {
    if b.len() < LEN {
        return Err(Error::corruption(
            path,
            0,
            format!("control file is {} bytes, expected {LEN}", b.len()),
        ));
    }
    if &b[..8] != MAGIC {
        return Err(Error::IncompatibleFormat {
            reason: format!("{} is not a strata control file", path.display()),
        });
    }
    let crc = u32_at(b, 32).unwrap_or(0);
    if !crc_matches(crc, crc32c::crc32c(&b[..32])) {
        return Err(Error::corruption(
            path,
            32,
            "control file checksum mismatch",
        ));
    }
    let version = u32_at(b, 8).unwrap_or(0);
    if version != FORMAT_VERSION {
        return Err(Error::IncompatibleFormat {
            reason: format!("format version {version}; this build reads version {FORMAT_VERSION}"),
        });
    }
    let ps = u32_at(b, 12).unwrap_or(0);
    if ps as usize != PAGE_SIZE {
        return Err(Error::IncompatibleFormat {
            reason: format!("page size {ps}, this build uses {PAGE_SIZE}"),
        });
    }
    Ok(Control {
        redo: Lsn(u64_at(b, 16).unwrap_or(0)),
        next_xid: Xid(u64_at(b, 24).unwrap_or(0)),
    })
}

/// Reads the control file; `None` if there is none.
pub fn read(vfs: &dyn Vfs, dir: &Path) -> Result<Option<Control>> {
    let path = dir.join(NAME);
    if !vfs.exists(&path)? {
        return Ok(None);
    }
    let f = vfs.open_read(&path)?;
    let mut b = [0u8; LEN];
    let n = f.read_at(&mut b, 0)?;
    decode(&b[..n], &path).map(Some)
}

/// Replaces the control file crash-atomically.
pub fn write(vfs: &dyn Vfs, dir: &Path, c: &Control) -> Result<()> {
    let tmp = dir.join("CONTROL.tmp");
    let f = vfs.open(&tmp, true)?;
    f.set_len(0)?;
    f.write_at(&encode(c), 0)?;
    f.sync()?;
    drop(f);
    vfs.rename(&tmp, &dir.join(NAME))?;
    vfs.sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::RealFs;

    #[test]
    fn round_trip_and_damage() {
        let tmp = tempfile::tempdir().expect("tmp");
        let c = Control {
            redo: Lsn(1234),
            next_xid: Xid(99),
        };
        write(&RealFs, tmp.path(), &c).expect("write");
        assert_eq!(read(&RealFs, tmp.path()).expect("read"), Some(c));
        let mut b = encode(&c);
        b[17] ^= 1;
        assert!(matches!(
            decode(&b, Path::new("x")),
            Err(Error::Corruption { .. })
        ));
        let mut b = encode(&c);
        b[8] = 99;
        let crc = crc32c::crc32c(&b[..32]);
        b[32..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode(&b, Path::new("x")),
            Err(Error::IncompatibleFormat { .. })
        ));
        assert!(matches!(
            decode(b"SQLite format 3\0 and more bytes here....", Path::new("x")),
            Err(Error::IncompatibleFormat { .. })
        ));
    }
}

//! `strata waldump`: one line per log record, for debugging recovery.
//!
//! Reads the log files directly (no database open, no lock), so it works on
//! a database that will not open, and on one in use (whose last record may
//! then be cut off mid-write: that is where the dump ends).
//!
//! The log is physical: a record names the pages it changes, not the table
//! and key, so lines show pages and sizes. `op` says why a page record was
//! written (put, delete, vacuum, ...).

use std::io::{BufWriter, Write};
use std::path::Path;

use strata::io::RealFs;
use strata::wal::reader::LogReader;
use strata::wal::record::{Change, Kind, Op};
use strata::wal::segment;
use strata::Lsn;

use crate::{Failure, Outcome};

pub fn run(dir: &Path, from: Option<u64>) -> Outcome {
    let wal_dir = dir.join(strata::WAL_DIR);
    if !wal_dir.is_dir() {
        return Err(Failure {
            message: format!(
                "{} holds no strata log ({} is missing)",
                dir.display(),
                wal_dir.display()
            ),
            status: 2,
        });
    }
    let starts = segment::list(&RealFs, &wal_dir)?;
    let Some(&first) = starts.first() else {
        return Err(Failure::new(format!(
            "{} holds no log segments",
            wal_dir.display()
        )));
    };
    let from = from.unwrap_or(first);
    // Records are read from the start of the segment holding `from`.
    let Some(&seg) = starts.iter().rev().find(|&&s| s <= from) else {
        return Err(Failure::new(format!(
            "LSN {from} is older than the log: it starts at {first}"
        )));
    };
    let mut reader = LogReader::open(&RealFs, &wal_dir, Lsn(seg))?;
    let out = std::io::stdout();
    let mut out = BufWriter::new(out.lock());
    let mut shown = 0u64;
    while let Some(e) = reader.next_entry()? {
        if e.start.0 < from {
            continue;
        }
        let r = &e.record;
        let op = match (r.kind, Op::from_u8(r.op)) {
            (Kind::Pages, Some(op)) => format!(" op={op:?}"),
            (Kind::Pages, None) => format!(" op=unknown({})", r.op),
            _ => String::new(),
        };
        let aux = match r.kind {
            Kind::XidHighWater => format!(" below_xid={}", r.aux),
            Kind::DurableMark => format!(" durable_to={}", r.aux),
            _ => String::new(),
        };
        let mut pages = String::new();
        let mut bytes = 0usize;
        for (pid, change) in &r.pages {
            match change {
                Change::Full(b) => {
                    bytes += b.len();
                    pages.push_str(&format!(" {pid}:full"));
                }
                Change::Delta(ranges) => {
                    let n: usize = ranges.iter().map(|(_, b)| b.len()).sum();
                    bytes += n;
                    pages.push_str(&format!(" {pid}:{}x{n}B", ranges.len()));
                }
            }
        }
        writeln!(
            out,
            "lsn={} len={} kind={:?}{op} xid={}{aux} pages={} page_bytes={bytes}{}",
            e.start,
            e.end.0 - e.start.0,
            r.kind,
            r.xid,
            r.pages.len(),
            if pages.is_empty() {
                String::new()
            } else {
                format!(" [{}]", pages.trim_start())
            }
        )?;
        shown += 1;
    }
    out.flush()?;
    let end = reader
        .end
        .map_or(String::new(), |l| format!(", log ends at LSN {l}"));
    eprintln!("{shown} records{end}");
    Ok(())
}

//! `strata waldump`: one line per log record, for debugging recovery.
//!
//! Reads the log files directly (no database open, no lock), so it works on
//! a database that will not open, and on one in use (whose last record may
//! then be cut off mid-write: that is where the dump ends).
//!
//! The log is physical: a record holds the page changes recovery applies.
//! `op` says why a page record was written (put, delete, vacuum, ...), and
//! put and delete records also name their table and key. Table names come
//! from opening the database read-only; when it cannot be opened (in use,
//! damaged) tables show as `#<id>`.

use std::io::{BufWriter, Write};
use std::path::Path;

use strata::internals::redo::record::{Change, Kind, Op};
use strata::internals::wal::reader::LogReader;
use strata::internals::wal::segment;
use strata::Lsn;
use strata::RealFs;

use crate::escape::escape;
use crate::{Failure, Outcome};

/// (log id, name) of every table, if the database opens read-only.
fn table_names(dir: &Path) -> Vec<(u64, String)> {
    let opened = crate::read_only(dir).and_then(|db| strata::internals::table_log_ids(&db));
    opened.unwrap_or_else(|e| {
        eprintln!("(table names unavailable, shown as #id: {e})");
        Vec::new()
    })
}

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
    let names = table_names(dir);
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
        let aux = match (r.kind, Op::from_u8(r.op)) {
            (Kind::XidHighWater, _) => format!(" below_xid={}", r.aux),
            (Kind::DurableMark, _) => format!(" durable_to={}", r.aux),
            (Kind::Pages, Some(Op::Put | Op::Delete)) => {
                let table = names
                    .iter()
                    .find(|(id, _)| *id == r.aux)
                    .map_or_else(|| format!("#{}", r.aux), |(_, n)| escape(n.as_bytes()));
                format!(" table={table} key={}", escape(&r.key))
            }
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
                Change::Delta(ranges) | Change::Shifted(_, ranges) => {
                    let n: usize = ranges.iter().map(|(_, b)| b.len()).sum();
                    bytes += n;
                    let shift = match change {
                        Change::Shifted(sh, _) => {
                            format!("shift{}@{}->{}+", sh.len, sh.from, sh.to)
                        }
                        _ => String::new(),
                    };
                    pages.push_str(&format!(" {pid}:{shift}{}x{n}B", ranges.len()));
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

//! `strata stat` and `strata verify`: what a database holds, and whether it
//! is sound, in words.
//!
//! `stat` on a damaged database prints every figure it could collect,
//! marks the tables whose walk stopped at damage, lists the damage, and
//! exits with status 1.

use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use strata::{Db, Error};

use crate::{Failure, Outcome};

pub fn stat(db: &Db, dir: &Path) -> Outcome {
    let s = db.stats()?;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!("database      {}", dir.display());
    println!(
        "format        version {}, {} KiB pages",
        s.format_version,
        s.page_size / 1024
    );
    println!(
        "data file     {:.1} MiB, {} pages allocated, {} free ({:.1} MiB)",
        mib(s.data_file_bytes),
        s.pages,
        s.free_pages,
        mib(s.free_pages * s.page_size as u64)
    );
    println!(
        "heap          {} pages, {:.1} MiB unused inside them",
        s.heap_pages,
        mib(s.heap_free_bytes)
    );
    println!(
        "log           {:.1} MiB in {} segment(s), LSN {} .. {}",
        mib(s.wal_bytes),
        s.wal_segments,
        s.wal_start,
        s.wal_end
    );
    println!(
        "checkpoint    redo point LSN {} ({} log bytes to replay after a crash)",
        s.checkpoint_redo,
        s.wal_end.0.saturating_sub(s.checkpoint_redo.0)
    );
    println!("next xid      {}", s.next_xid);
    println!(
        "timestamps    newest {} (commits and reads as of a timestamp); history from {}",
        s.newest_ts, s.history_horizon
    );
    println!(
        "cache         {:.0} MiB (this tool's open: {} page reads, {} page writes)",
        mib(s.cache_bytes as u64),
        s.page_reads,
        s.page_writes
    );
    println!(
        "dead versions {:.1}% of all versions (what vacuum would remove now)",
        s.dead_share() * 100.0
    );
    println!();
    println!(
        "{:<24} {:>12} {:>12} {:>12} {:>8}",
        "table", "rows", "keys", "versions", "dead"
    );
    for t in &s.tables {
        println!(
            "{:<24} {:>12} {:>12} {:>12} {:>8}{}",
            crate::escape::word(t.name.as_bytes()),
            t.rows,
            t.keys,
            t.versions,
            t.dead_versions,
            if t.damage.is_some() {
                "  DAMAGED: counted up to the damage"
            } else {
                ""
            }
        );
    }
    if s.tables.is_empty() {
        println!("(no tables)");
    }
    println!();
    if s.prepared.is_empty() {
        println!("prepared      none in doubt");
    } else {
        println!(
            "prepared      {} in doubt (decide with commit_prepared / rollback_prepared):",
            s.prepared.len()
        );
        for p in &s.prepared {
            let age = p.prepared_at.elapsed().map(|d| d.as_secs()).unwrap_or(0);
            println!("  {}  xid {}  prepared {age} s ago", p.gid, p.xid);
        }
    }
    if s.damage.is_empty() {
        return Ok(());
    }
    println!();
    println!("damage        {} damaged page(s) met:", s.damage.len());
    for e in &s.damage {
        println!("  {}", damage_line(e));
    }
    Err(Failure::new(format!(
        "DAMAGED: {} damaged page(s); the figures above leave out what lies behind them\n\
         `strata verify` checks everything; `strata dump --salvage` saves every row still readable",
        s.damage.len()
    )))
}

/// Where a `Corruption` is and what it is, in one line.
fn damage_line(e: &Error) -> String {
    match e {
        Error::Corruption {
            file,
            offset,
            reason,
        } => format!(
            "{} at byte {offset} (page {}): {reason}",
            file.display(),
            offset / strata::limits::PAGE_SIZE as u64
        ),
        e => e.to_string(),
    }
}

pub fn verify(dir: &Path) -> Outcome {
    // Damage found while opening (replaying the log) is damage too.
    let db = match crate::read_only(dir) {
        Ok(db) => db,
        Err(e @ Error::Corruption { .. }) => return Err(damaged(e, dir)),
        Err(e) => return Err(Failure::open(dir, e)),
    };
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} verifying {bar:40} {pos}/{len} pages {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let result = db.check_integrity_with(&mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    match result {
        Ok(r) => {
            println!("clean: no damage found");
            println!(
                "  {} pages: {} B+tree, {} heap, {} overflow, {} commit log, {} free, {} leaked",
                r.pages,
                r.btree_pages,
                r.heap_pages,
                r.overflow_pages,
                r.clog_pages,
                r.free_pages,
                r.leaked_pages
            );
            println!(
                "  {} tables, {} keys, {} versions, {} prepared transactions",
                r.tables, r.keys, r.versions, r.prepared
            );
            if r.leaked_pages > 0 {
                println!("  leaked pages hold no data (space only, e.g. after a crash mid-write)");
            }
            Ok(())
        }
        Err(e @ Error::Corruption { .. }) => Err(damaged(e, dir)),
        Err(e) => Err(Failure::new(format!("verify failed: {e}"))),
    }
}

fn damaged(e: Error, dir: &Path) -> Failure {
    if !matches!(e, Error::Corruption { .. }) {
        return e.into();
    }
    Failure::new(format!(
        "DAMAGED: {}\n\
         restore from a backup, or save every row still readable with \
         `strata dump --salvage {} > rows.dump` (it reports what it skips)",
        damage_line(&e),
        dir.display()
    ))
}

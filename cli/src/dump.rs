//! `strata dump` and `strata load`: a portable, line-oriented text form of
//! a database's rows.
//!
//! ```text
//! strata-dump 1
//! table<TAB>users
//! row<TAB>alice<TAB>42
//! row<TAB>bob\x00<TAB>{"age":\x2017}      (keys and values escaped, see escape.rs)
//! table<TAB>orders
//! end<TAB>2                                (rows in the whole dump)
//! ```
//! The dump is taken from one read snapshot, so it is a consistent copy
//! even while others write. `load` puts the rows (an existing key is
//! overwritten), committing every `--batch` rows, and checks the trailer,
//! so a cut-off dump is reported rather than taken as complete.
//!
//! `dump --salvage` writes the same format from a damaged database: every
//! row still readable (the trailer counts those), with each damaged page
//! it stepped over reported on stderr — file, byte offset, page, and the
//! rows lost with it (by key, or as a key range when a B+tree node is
//! gone). Its output loads like any dump.

use std::io::{BufRead, BufWriter, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use strata::internals::salvage::{self, Lost, Skipped};
use strata::{Db, Table, Transaction};

use crate::escape::{escape, unescape, word};
use crate::{table_seen, Failure, Outcome};

const HEADER: &str = "strata-dump 1";

pub fn dump(db: &Db, tx: &Transaction, only: Option<&str>) -> Outcome {
    // The tables the transaction sees: for a read as of a timestamp,
    // those that existed then, under the names they had.
    let tables = match only {
        Some(name) => vec![table_seen(db, tx, name)?],
        None => tx
            .table_names()?
            .iter()
            .map(|n| db.table(n))
            .collect::<Result<_, _>>()?,
    };
    // One transaction for every table (`main::reader`): a consistent copy.
    let out = std::io::stdout();
    let mut out = BufWriter::new(out.lock());
    writeln!(out, "{HEADER}")?;
    let mut rows = 0u64;
    for t in &tables {
        writeln!(out, "table\t{}", escape(t.name().as_bytes()))?;
        for row in tx.scan(t, ..)? {
            let (k, v) = row?;
            writeln!(out, "row\t{}\t{}", escape(&k), escape(&v))?;
            rows += 1;
        }
    }
    writeln!(out, "end\t{rows}")?;
    out.flush()?;
    Ok(())
}

/// `dump`, stepping over damaged pages: every readable row on stdout,
/// what was skipped on stderr; a failure (status 1) if anything was.
pub fn salvage(db: &Db, only: Option<&str>) -> Outcome {
    let tx = db.begin_with(strata::Isolation::Snapshot)?;
    let (tables, mut skipped) = salvage::tables(&tx)?;
    let mut report = Vec::new();
    for s in skipped.drain(..) {
        report.push(("the table list".to_string(), s));
    }
    let tables: Vec<Table> = match only {
        Some(name) => match tables.into_iter().find(|t| t.name() == name) {
            Some(t) => vec![t],
            None => return Err(Failure::new(format!("no table {name:?} found"))),
        },
        None => tables,
    };
    let out = std::io::stdout();
    let mut out = BufWriter::new(out.lock());
    writeln!(out, "{HEADER}")?;
    let mut rows = 0u64;
    for t in &tables {
        writeln!(out, "table\t{}", escape(t.name().as_bytes()))?;
        let skipped = salvage::rows(&tx, t, &mut |k, v| {
            writeln!(out, "row\t{}\t{}", escape(k), escape(v))?;
            rows += 1;
            Ok(())
        })?;
        report.extend(
            skipped
                .into_iter()
                .map(|s| (format!("table {}", word(t.name().as_bytes())), s)),
        );
    }
    writeln!(out, "end\t{rows}")?;
    out.flush()?;
    if report.is_empty() {
        eprintln!("salvaged {rows} rows; no damaged page met");
        return Ok(());
    }
    for (whose, s) in &report {
        eprintln!("{}", skipped_line(whose, s));
    }
    let known: u64 = report.iter().filter_map(|(_, s)| s.rows_lost()).sum();
    let ranges = report
        .iter()
        .filter(|(_, s)| s.rows_lost().is_none())
        .count();
    let mut lost = format!("{known} rows could not be read");
    if ranges > 0 {
        lost.push_str(&format!(", nor any row in the {ranges} key range(s) above"));
    }
    Err(Failure::new(format!(
        "salvaged {rows} rows; skipped {} damaged page(s); {lost}",
        report.len()
    )))
}

/// One skipped page, in words: where, why, and what was lost.
fn skipped_line(whose: &str, s: &Skipped) -> String {
    let lost = match &s.lost {
        Lost::Keys { from, to } => {
            let from = from
                .as_deref()
                .map_or_else(|| "the first".to_string(), word);
            let to = to.as_deref().map_or_else(
                || "to the last".to_string(),
                |k| format!("up to, not including, {}", word(k)),
            );
            format!("every row with a key from {from} {to} (how many is unknown)")
        }
        Lost::Rows(keys) => {
            const SHOWN: usize = 10;
            let mut named: Vec<String> = keys.iter().take(SHOWN).map(|k| word(k)).collect();
            if keys.len() > SHOWN {
                named.push(format!("and {} more", keys.len() - SHOWN));
            }
            format!("{} row(s): {}", keys.len(), named.join(" "))
        }
    };
    format!(
        "skipped page {} of {} at byte {} ({whose}): {}; lost {lost}",
        s.page,
        s.file.display(),
        s.offset,
        s.reason
    )
}

/// Refuses a terminal as the dump to load (a forgotten `< dump`), before
/// anything is opened or created.
pub fn stdin_is_a_dump() -> Outcome {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        return Err(Failure::new(
            "load reads a dump from stdin: strata load DIR < dump (or strata dump OTHER | strata load DIR)",
        ));
    }
    Ok(())
}

pub fn load(db: &Db, batch: usize) -> Outcome {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} loading: {pos} rows ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let result = load_lines(db, batch, &bar);
    bar.finish_and_clear();
    let rows = result?;
    eprintln!("loaded {rows} rows");
    Ok(())
}

fn load_lines(db: &Db, batch: usize, bar: &ProgressBar) -> Result<u64, Failure> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let at = |n: usize, what: String| Failure::new(format!("dump line {n}: {what}"));
    match lines.next().transpose()? {
        Some(h) if h == HEADER => {}
        _ => {
            return Err(at(
                1,
                format!("not a strata dump (expected the line {HEADER:?})"),
            ))
        }
    }
    let mut table = None;
    let mut tx = db.begin()?;
    let (mut rows, mut pending) = (0u64, 0usize);
    let mut end = None;
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        let line = line?;
        if end.is_some() {
            return Err(at(n, "text after the end line".into()));
        }
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["table", name] => {
                let name = unescape(name).map_err(|e| at(n, e))?;
                let name =
                    String::from_utf8(name).map_err(|_| at(n, "table name is not UTF-8".into()))?;
                let t = db.table(&name)?;
                // A table line makes the table, with rows or without.
                tx.create_table(&t).map_err(|e| at(n, e.to_string()))?;
                table = Some(t);
            }
            ["row", k, v] => {
                let t = table
                    .as_ref()
                    .ok_or_else(|| at(n, "row before any table line".into()))?;
                let k = unescape(k).map_err(|e| at(n, e))?;
                let v = unescape(v).map_err(|e| at(n, e))?;
                tx.put(t, k, v).map_err(|e| at(n, e.to_string()))?;
                rows += 1;
                pending += 1;
                bar.inc(1);
                if pending >= batch {
                    tx.commit()?;
                    tx = db.begin()?;
                    pending = 0;
                }
            }
            ["end", count] => {
                let count: u64 = count
                    .parse()
                    .map_err(|_| at(n, format!("bad row count {count:?}")))?;
                end = Some(count);
            }
            _ => {
                return Err(at(
                    n,
                    "expected `table`, `row` or `end` and tab-separated fields".into(),
                ))
            }
        }
    }
    tx.commit()?;
    match end {
        Some(count) if count == rows => Ok(rows),
        Some(count) => Err(Failure::new(format!(
            "the dump says {count} rows but holds {rows}; all {rows} were loaded"
        ))),
        None => Err(Failure::new(format!(
            "the dump ends without its `end` line (cut short?); the {rows} rows before the cut were loaded"
        ))),
    }
}

//! `strata shell`: an interactive prompt over one open database.
//!
//! Outside `begin` … `commit`/`rollback` every command runs in its own
//! transaction (autocommit). Arguments are separated by spaces; a
//! single- or double-quoted argument may hold spaces; escapes (escape.rs)
//! give any byte. Keys and values are printed as `strata` prints them
//! (escape.rs's `word`), so they paste back. Line editing and history come from rustyline; with stdin not a
//! terminal, commands are read line by line (scripts, tests).

use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;
use strata::{Db, Isolation, Transaction};

use crate::escape::word;
use crate::scan::ShellScan;
use crate::{arg, existing_table, Failure, Outcome};

const HELP: &str = "\
commands:
  tables                          list the tables
  get TABLE KEY                   print a value
  put TABLE KEY VALUE             set a key (creates the table)
  delete TABLE KEY                remove a key
  scan TABLE [--from K] [--to K] [--prefix P] [--reverse] [--limit N]
                                  rows as `strata scan` prints them (default limit 100)
  begin [LEVEL]                   start a transaction (LEVEL: serializable, snapshot, read-committed)
  commit | rollback               end it
  isolation [LEVEL]               show or set the level for begin and autocommit
  help | quit
keys and values: \\\\ \\t \\n \\r \\xHH escapes; 'single' or \"double\" quotes keep spaces";

/// History kept between shell runs (`$STRATA_HISTORY`, else
/// `~/.strata_history`); scripts piped in leave none.
fn history_file() -> Option<std::path::PathBuf> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return None;
    }
    std::env::var_os("STRATA_HISTORY")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".strata_history"))
        })
}

pub fn run(db: Db) -> Outcome {
    let mut editor = DefaultEditor::new().map_err(|e| Failure::new(format!("terminal: {e}")))?;
    let history = history_file();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let mut shell = Shell {
        db,
        tx: None,
        level: Isolation::Serializable,
    };
    println!(
        "strata shell on {} — `help` lists commands",
        shell.db.path().display()
    );
    loop {
        let prompt = if shell.tx.is_some() {
            "strata*> "
        } else {
            "strata> "
        };
        let line = match editor.readline(prompt) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(Failure::new(format!("reading input: {e}"))),
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line);
        match words(line) {
            Ok(w) if matches!(w.first().map(String::as_str), Some("quit" | "exit")) => break,
            Ok(w) => {
                if let Err(e) = shell.command(&w) {
                    println!("error: {}", e.message);
                }
            }
            Err(e) => println!("error: {e}"),
        }
    }
    if shell.tx.take().is_some() {
        println!("open transaction rolled back");
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(())
}

/// Splits a line into arguments: spaces separate; single or double
/// quotes group, the other kind standing for itself inside them (as a
/// POSIX shell's do, so what `strata` prints pastes back here too).
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for c in line.chars() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                started = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if started {
                    out.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            (_, c) => {
                cur.push(c);
                started = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unclosed {q} quote"));
    }
    if started {
        out.push(cur);
    }
    Ok(out)
}

/// The shell's state: the database, the open transaction, the level.
struct Shell {
    db: Db,
    tx: Option<Transaction>,
    level: Isolation,
}

/// What `begin` at `level` did, in words. The xid is not known yet: a
/// transaction takes one at its first write (`commit` reports it).
fn began(level: Isolation) -> &'static str {
    match level {
        Isolation::Serializable => {
            "began a serializable transaction (one snapshot, read/write dependencies checked; xid at its first write)"
        }
        Isolation::Snapshot => {
            "began a snapshot transaction (one snapshot for every read; xid at its first write)"
        }
        Isolation::ReadCommitted => {
            "began a read-committed transaction (a new snapshot for each command; xid at its first write)"
        }
    }
}

fn level(name: &str) -> Result<Isolation, Failure> {
    match name.to_ascii_lowercase().as_str() {
        "serializable" | "ser" => Ok(Isolation::Serializable),
        "snapshot" | "si" | "repeatable-read" => Ok(Isolation::Snapshot),
        "read-committed" | "rc" => Ok(Isolation::ReadCommitted),
        _ => Err(Failure::new(format!(
            "unknown isolation level {name:?}: serializable, snapshot or read-committed"
        ))),
    }
}

impl Shell {
    fn command(&mut self, w: &[String]) -> Result<(), Failure> {
        let args: Vec<&str> = w.iter().map(String::as_str).collect();
        match args.as_slice() {
            ["help"] => println!("{HELP}"),
            ["tables"] => {
                for n in self.db.table_names()? {
                    println!("{}", word(n.as_bytes()));
                }
            }
            ["isolation"] => println!("{:?}", self.level),
            ["isolation", l] => self.level = level(l)?,
            ["begin"] | ["begin", _] => {
                if self.tx.is_some() {
                    return Err(Failure::new(
                        "a transaction is already open: commit or rollback first",
                    ));
                }
                let l = match args.get(1) {
                    Some(l) => level(l)?,
                    None => self.level,
                };
                self.tx = Some(self.db.begin_with(l)?);
                println!("{}", began(l));
            }
            ["commit"] => {
                let tx = self
                    .tx
                    .take()
                    .ok_or_else(|| Failure::new("no open transaction"))?;
                let info = tx.commit()?;
                println!("committed (xid {}, lsn {})", info.xid, info.lsn);
            }
            ["rollback"] => {
                let tx = self
                    .tx
                    .take()
                    .ok_or_else(|| Failure::new("no open transaction"))?;
                tx.rollback()?;
                println!("rolled back");
            }
            ["get", t, k] => {
                let t = existing_table(&self.db, t)?;
                let k = arg(k)?;
                match self.run(|tx| tx.get(&t, &k))? {
                    Some(v) => println!("{}", word(&v)),
                    None => println!("(not found)"),
                }
            }
            ["put", t, k, v] => {
                let t = self.db.table(t)?;
                let (k, v) = (arg(k)?, arg(v)?);
                self.run(|tx| tx.put(&t, &k, &v))?;
                println!("ok");
            }
            ["delete", t, k] => {
                let t = existing_table(&self.db, t)?;
                let k = arg(k)?;
                let existed = self.run(|tx| tx.delete(&t, &k))?;
                println!("{}", if existed { "deleted" } else { "(not found)" });
            }
            ["scan", ..] => self.scan(&args)?,
            _ => {
                return Err(Failure::new(format!(
                    "unknown command or wrong arguments: {}; `help` lists commands",
                    w.join(" ")
                )))
            }
        }
        Ok(())
    }

    /// Runs `f` in the open transaction, or in one of its own committed
    /// right after (autocommit). A retryable error dooms an open
    /// transaction: say so.
    fn run<R>(
        &mut self,
        f: impl FnOnce(&mut Transaction) -> strata::Result<R>,
    ) -> Result<R, Failure> {
        let doomed = |e: strata::Error| {
            if e.is_retryable() {
                Failure::new(format!("{e}; the transaction can only roll back now"))
            } else {
                e.into()
            }
        };
        match &mut self.tx {
            Some(tx) => f(tx).map_err(doomed),
            None => {
                let mut tx = self.db.begin_with(self.level)?;
                let r = f(&mut tx)?;
                tx.commit()?;
                Ok(r)
            }
        }
    }

    /// `scan`, with the options of `strata scan` (parsed by the same
    /// definition) and a default limit.
    fn scan(&mut self, args: &[&str]) -> Result<(), Failure> {
        use clap::Parser;
        let ShellScan { table, opts } = match ShellScan::try_parse_from(args) {
            Ok(s) => s,
            Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
                println!("{}", e.to_string().trim_end());
                return Ok(());
            }
            Err(e) => {
                let msg = e.to_string();
                let msg = msg.trim_end();
                return Err(Failure::new(msg.strip_prefix("error: ").unwrap_or(msg)));
            }
        };
        let limit = opts.limit.unwrap_or(100);
        let t = existing_table(&self.db, &table)?;
        let bounds = opts.bounds()?;
        let rows = self.run(|tx| {
            opts.rows(tx, &t, bounds)?
                .take(limit.saturating_add(1))
                .collect::<strata::Result<Vec<_>>>()
        })?;
        for (k, v) in rows.iter().take(limit) {
            println!("{}\t{}", word(k), word(v));
        }
        if rows.len() > limit {
            println!("(more rows; raise the limit)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::words;

    #[test]
    fn words_split_on_spaces_and_quotes_group() {
        assert_eq!(words("put t  k v").expect("ok"), ["put", "t", "k", "v"]);
        assert_eq!(
            words("put t \"a b\" \"\"").expect("ok"),
            ["put", "t", "a b", ""]
        );
        assert!(words("get t \"open").is_err());
        assert_eq!(
            words("put t 'a \"b\"' \"it's\"").expect("ok"),
            ["put", "t", "a \"b\"", "it's"]
        );
        assert!(words("get t 'open").is_err());
    }
}

//! The options that choose a scan's rows, shared by `strata scan` and the
//! shell's `scan` so the two take the same ones: `--from`, `--to`,
//! `--prefix` (all escaped, all applying at once), `--reverse`, `--limit`.

use std::ops::Bound;

use strata::{KeyRange, Prefix, Table, Transaction};

use crate::{arg, key_range, Failure, KeyBounds};

#[derive(clap::Args, Debug, Default)]
pub struct ScanOpts {
    /// First key (inclusive, escaped).
    #[arg(long, allow_hyphen_values = true)]
    pub from: Option<String>,
    /// End key (exclusive, escaped).
    #[arg(long, allow_hyphen_values = true)]
    pub to: Option<String>,
    /// Only keys that start with this prefix (escaped); with --from and --to, the keys in both.
    #[arg(long, allow_hyphen_values = true)]
    pub prefix: Option<String>,
    /// Largest keys first.
    #[arg(long)]
    pub reverse: bool,
    /// At most this many rows.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// The shell's `scan TABLE [OPTIONS]`, parsed as the command line is.
#[derive(clap::Parser, Debug)]
#[command(name = "scan", about = "Print the rows of a key range")]
pub struct ShellScan {
    /// Table name.
    pub table: String,
    #[command(flatten)]
    pub opts: ScanOpts,
}

type Row = (Vec<u8>, Vec<u8>);

impl ScanOpts {
    /// The key range the options select.
    pub fn bounds(&self) -> Result<KeyBounds, Failure> {
        let (lo, hi) = key_range(self.from.as_deref(), self.to.as_deref())?;
        let Some(p) = &self.prefix else {
            return Ok((lo, hi));
        };
        let (plo, phi) = Prefix(arg(p)?).into_bounds();
        Ok((higher_lo(lo, plo), lower_hi(hi, phi)))
    }

    /// The rows of `t` in `bounds` (from `bounds()`), in the order the
    /// options ask for.
    pub fn rows<'t>(
        &self,
        tx: &'t Transaction,
        t: &Table,
        bounds: KeyBounds,
    ) -> strata::Result<Box<dyn Iterator<Item = strata::Result<Row>> + 't>> {
        let scan = tx.scan(t, bounds)?;
        Ok(match self.reverse {
            true => Box::new(scan.rev()),
            false => Box::new(scan),
        })
    }
}

/// The key a lower bound starts at, and whether it is excluded.
fn lo_key(b: &Bound<Vec<u8>>) -> Option<(&[u8], bool)> {
    match b {
        Bound::Included(k) => Some((k, false)),
        Bound::Excluded(k) => Some((k, true)),
        Bound::Unbounded => None,
    }
}

/// The tighter of two lower bounds.
fn higher_lo(a: Bound<Vec<u8>>, b: Bound<Vec<u8>>) -> Bound<Vec<u8>> {
    match (lo_key(&a), lo_key(&b)) {
        (None, _) => b,
        (_, None) => a,
        // At one key, an excluded bound is the higher.
        (Some(x), Some(y)) if y > x => b,
        _ => a,
    }
}

/// The tighter of two upper bounds.
fn lower_hi(a: Bound<Vec<u8>>, b: Bound<Vec<u8>>) -> Bound<Vec<u8>> {
    // At one key, an excluded upper bound is the lower: order (key, !excluded).
    let key = |b: &Bound<Vec<u8>>| lo_key(b).map(|(k, ex)| (k.to_vec(), !ex));
    match (key(&a), key(&b)) {
        (None, _) => b,
        (_, None) => a,
        (Some(x), Some(y)) if y < x => b,
        _ => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inc(k: &[u8]) -> Bound<Vec<u8>> {
        Bound::Included(k.to_vec())
    }

    fn exc(k: &[u8]) -> Bound<Vec<u8>> {
        Bound::Excluded(k.to_vec())
    }

    #[test]
    fn bounds_intersect() {
        assert_eq!(higher_lo(inc(b"a"), inc(b"b")), inc(b"b"));
        assert_eq!(higher_lo(inc(b"b"), exc(b"b")), exc(b"b"));
        assert_eq!(higher_lo(Bound::Unbounded, inc(b"a")), inc(b"a"));
        assert_eq!(lower_hi(exc(b"c"), exc(b"b")), exc(b"b"));
        assert_eq!(lower_hi(inc(b"b"), exc(b"b")), exc(b"b"));
        assert_eq!(lower_hi(exc(b"b"), Bound::Unbounded), exc(b"b"));
        let opts = ScanOpts {
            from: Some("ab".into()),
            prefix: Some("a".into()),
            ..ScanOpts::default()
        };
        let Ok(b) = opts.bounds() else {
            panic!("bounds refused")
        };
        assert_eq!(b, (inc(b"ab"), exc(b"b")));
    }
}

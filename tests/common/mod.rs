#![allow(dead_code)]
use std::time::Duration;

use strata::{Db, Options};

pub fn open(dir: &std::path::Path) -> Db {
    Db::open_with(
        dir,
        Options::default()
            .cache_size(4 << 20)
            .lock_timeout(Some(Duration::from_secs(2))),
    )
    .expect("open")
}

pub fn rows(tx: &strata::Transaction, t: &strata::Table) -> Vec<(Vec<u8>, Vec<u8>)> {
    tx.scan(t, ..)
        .expect("scan")
        .collect::<Result<_, _>>()
        .expect("rows")
}

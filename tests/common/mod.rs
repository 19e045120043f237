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

/// Bitwise CRC-32C (Castagnoli), independent of the engine's implementation,
/// for tests that forge checksummed bytes.
pub fn crc32c(b: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in b {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

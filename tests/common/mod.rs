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

/// The table `name`, created (committed) if it did not exist.
pub fn create(db: &Db, name: &str) -> strata::Table {
    let t = db.table(name).expect("table");
    let mut tx = db.begin().expect("begin");
    tx.create_table(&t).expect("create");
    tx.commit().expect("commit");
    t
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

/// Copies a database directory without its lock file: what `kill -9`
/// would leave behind, since commits are fsynced before they return.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else if e.file_name() != "LOCK" {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy");
        }
    }
}

/// Every file under `dir` with its bytes, in path order.
pub fn snapshot_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).expect("read");
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    out
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `RssAnon`, `VmHWM`…);
/// 0 where there is none (not Linux).
pub fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.split(':').next() == Some(field))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// A cycle in a dependency graph (adjacency lists), if any: iterative
/// depth-first search.
pub fn find_cycle(g: &[Vec<usize>]) -> Option<Vec<usize>> {
    let mut colour = vec![0u8; g.len()];
    let mut parent = vec![usize::MAX; g.len()];
    for start in 0..g.len() {
        if colour[start] != 0 {
            continue;
        }
        let mut stack = vec![(start, 0usize)];
        colour[start] = 1;
        while let Some((v, i)) = stack.pop() {
            if i < g[v].len() {
                stack.push((v, i + 1));
                let u = g[v][i];
                match colour[u] {
                    0 => {
                        colour[u] = 1;
                        parent[u] = v;
                        stack.push((u, 0));
                    }
                    1 => {
                        let mut cycle = vec![u, v];
                        let mut x = v;
                        while x != u && parent[x] != usize::MAX {
                            x = parent[x];
                            cycle.push(x);
                        }
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                colour[v] = 2;
            }
        }
    }
    None
}

/// One transaction of the long-reader soaks: reads key `i % 1000` and
/// writes key `7i % 1000`. Whether it committed; a failure must be a
/// retryable one.
pub fn soak_step(db: &Db, t: &strata::Table, i: u64) -> bool {
    let mut tx = db.begin().expect("begin");
    let r = (|| {
        tx.get(t, format!("k{}", i % 1000))?;
        tx.put(t, format!("k{}", (i * 7) % 1000), i.to_le_bytes())?;
        tx.commit().map(drop)
    })();
    match r {
        Ok(()) => true,
        Err(e) => {
            assert!(e.is_retryable(), "transaction {i}: {e}");
            false
        }
    }
}

/// A seeded xorshift generator of numbers below its argument.
pub fn xorshift(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut seed = seed | 1;
    move |m: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % m
    }
}

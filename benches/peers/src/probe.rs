//! What the machine itself allows, measured beside the engines: the
//! ceilings their figures are read against.
//!
//! - `fsync`: the file system's fastest durable write, the bound on one
//!   thread's durable commits.
//! - `group_commit`: durable commits from many threads with no database at
//!   all, only a shared log buffer, one leader that writes and fsyncs each
//!   batch, and a wake-up for everyone it made durable. Nothing an engine
//!   adds can make its commits cheaper than this, so its rate over the
//!   one-thread rate is the most a group commit can scale on the machine.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The file system's fastest durable write: a 4 KiB block of a file
/// already zero-filled (so no new length waits on the journal) overwritten
/// and fdatasync'ed, 1 000 times; writes per second.
pub fn fsync(dir: &Path) -> f64 {
    const N: usize = 1000;
    std::fs::create_dir_all(dir).expect("dir");
    let f = std::fs::File::create(dir.join("probe")).expect("probe");
    f.write_all_at(&vec![0u8; N * 4096], 0).expect("zero-fill");
    f.sync_all().expect("fsync");
    let block = [7u8; 4096];
    let t = Instant::now();
    for i in 0..N {
        f.write_all_at(&block, (i * 4096) as u64).expect("write");
        f.sync_data().expect("fdatasync");
    }
    N as f64 / t.elapsed().as_secs_f64()
}

/// When the leader of a group commit starts its write.
#[derive(Clone, Copy, PartialEq)]
pub enum Leader {
    /// At once, with whatever is queued: strata's scheme (and redb's,
    /// SQLite's, PostgreSQL's default).
    AtOnce,
    /// Once every thread has queued a commit, or 200 µs passed: the best
    /// batching there is, at the price of a delay a real engine cannot
    /// know how to size (PostgreSQL's `commit_delay`).
    WaitsForAll,
}

/// Longest a `WaitsForAll` leader waits.
const WAIT_MAX: Duration = Duration::from_micros(200);
/// Size of one commit record.
const RECORD: usize = 128;
/// The log file's length; writes wrap around in it, so every write
/// overwrites blocks the file already has, as `fsync` does.
const LOG_BYTES: u64 = 64 << 20;

struct Log {
    buf: Vec<u8>,
    /// Bytes appended and bytes durable, from the start.
    end: u64,
    durable: u64,
    /// Commits queued since the last write began.
    queued: usize,
    writing: bool,
}

/// `threads` threads making `total` commits between them: commits per
/// second.
pub fn group_commit(dir: &Path, threads: usize, total: usize, leader: Leader) -> f64 {
    std::fs::create_dir_all(dir).expect("dir");
    let f = std::fs::File::create(dir.join("group-commit")).expect("log");
    f.write_all_at(&vec![0u8; LOG_BYTES as usize], 0)
        .expect("zero-fill");
    f.sync_all().expect("fsync");
    let log = Mutex::new(Log {
        buf: Vec::new(),
        end: 0,
        durable: 0,
        queued: 0,
        writing: false,
    });
    let made_durable = Condvar::new();
    let per = total / threads;
    let t = Instant::now();
    std::thread::scope(|sc| {
        for _ in 0..threads {
            sc.spawn(|| {
                for _ in 0..per {
                    commit(&f, &log, &made_durable, threads, leader);
                }
            });
        }
    });
    (threads * per) as f64 / t.elapsed().as_secs_f64()
}

/// Queues one record and returns once it is durable, writing it (and
/// everything queued with it) if no other thread is.
fn commit(
    f: &std::fs::File,
    log: &Mutex<Log>,
    made_durable: &Condvar,
    threads: usize,
    leader: Leader,
) {
    let mut g = log.lock().expect("log");
    g.buf.extend_from_slice(&[7u8; RECORD]);
    g.end += RECORD as u64;
    g.queued += 1;
    let mine = g.end;
    while g.durable < mine {
        if g.writing {
            g = made_durable.wait(g).expect("log");
            continue;
        }
        g.writing = true;
        if leader == Leader::WaitsForAll {
            let since = Instant::now();
            while g.queued < threads && since.elapsed() < WAIT_MAX {
                drop(g);
                std::thread::yield_now();
                g = log.lock().expect("log");
            }
        }
        g.queued = 0;
        let batch = std::mem::take(&mut g.buf);
        let (start, end) = (g.end - batch.len() as u64, g.end);
        drop(g);
        f.write_all_at(&batch, start % (LOG_BYTES - batch.len() as u64))
            .expect("write");
        f.sync_data().expect("fdatasync");
        g = log.lock().expect("log");
        g.durable = end;
        g.writing = false;
        made_durable.notify_all();
    }
}

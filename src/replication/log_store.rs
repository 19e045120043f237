//! [`LogStore`]: openraft's `RaftLogStorage` over [`RaftLog`], with a
//! flusher thread that lets appends share fsyncs.
//!
//! ```text
//!  append(batch, cb) ──write frames──▶ segment files (page cache)
//!        └──(files, cb)──▶ flusher queue ──▶ flusher: take all, sync each
//!                                             file once, then cb(Ok) each
//! ```
//!
//! An append returns once its frames are written; openraft learns they are
//! durable through the callback ([`LogFlushed`]), which the flusher calls
//! only after syncing every file the batch touched. Appends arriving while
//! a sync runs wait for the next one together: one fsync for all of them.
//! Any failure on the write path — a failed sync, here or in the log, a
//! failed write, truncation, purge or vote — poisons the log
//! ([`Poison`]): the callbacks waiting fail, and so does every later
//! append, truncation, purge and vote (the log can no longer say what is
//! on disk). An append that fails still calls its callback, with the
//! error.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, LogId, StorageError, StorageIOError, Vote};
use parking_lot::{Condvar, Mutex};

use super::log::{Poison, PurgeBound, RaftLog};
use super::{blocking, Entry, TypeConfig};
use crate::error::{Error, Result};
use crate::io::{RealFs, Vfs, VfsFile};

type StoreResult<T> = std::result::Result<T, StorageError<u64>>;

#[derive(Default)]
struct Queue {
    files: Vec<Arc<dyn VfsFile>>,
    callbacks: Vec<LogFlushed<TypeConfig>>,
    stop: bool,
    /// Syncs done (for tests: appends sharing them).
    syncs: u64,
}

struct Flusher {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// The log's: every sync goes through it, and once poisoned the
    /// callbacks fail without a sync.
    poison: Poison,
}

impl Flusher {
    fn run(&self) {
        loop {
            let (files, callbacks) = {
                let mut q = self.queue.lock();
                while q.callbacks.is_empty() && !q.stop {
                    self.wake.wait(&mut q);
                }
                if q.callbacks.is_empty() && q.stop {
                    return;
                }
                (
                    std::mem::take(&mut q.files),
                    std::mem::take(&mut q.callbacks),
                )
            };
            let mut result = self.poison.check().map_err(|e| e.to_string());
            for f in &files {
                if result.is_err() {
                    break;
                }
                result = self.poison.sync(f.as_ref()).map_err(|e| e.to_string());
            }
            self.queue.lock().syncs += 1;
            for cb in callbacks {
                cb.log_io_completed(result.clone().map_err(std::io::Error::other));
            }
        }
    }
}

struct Shared {
    log: Mutex<RaftLog>,
    flusher: Arc<Flusher>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.flusher.queue.lock().stop = true;
        self.flusher.wake.notify_all();
        if let Some(t) = self.thread.lock().take() {
            // A flusher that panicked has nothing left to report.
            let _ = t.join();
        }
    }
}

/// The Raft log store of a node: openraft's `RaftLogStorage` and
/// `RaftLogReader` (clones share the log).
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

/// A strata error as openraft's storage error (its message keeps the file
/// and offset of a `Corruption`).
pub(crate) fn io_err(e: &Error) -> StorageError<u64> {
    StorageIOError::write_logs(AnyError::new(e)).into()
}

fn vote_err(e: &Error) -> StorageError<u64> {
    StorageIOError::write_vote(AnyError::new(e)).into()
}

fn read_err(e: &Error) -> StorageError<u64> {
    StorageIOError::read_logs(AnyError::new(e)).into()
}

impl LogStore {
    /// Opens (creating) the log in `dir`, purging only up to `bound`
    /// (the state machine's: [`super::StateMachine::purge_bound`]).
    pub fn open(dir: impl AsRef<Path>, bound: PurgeBound) -> Result<LogStore> {
        Self::open_vfs(Arc::new(RealFs), dir.as_ref(), bound)
    }

    /// [`open`](Self::open) through `vfs`.
    pub fn open_vfs(vfs: Arc<dyn Vfs>, dir: &Path, bound: PurgeBound) -> Result<LogStore> {
        let log = RaftLog::open(vfs, dir, bound)?;
        let flusher = Arc::new(Flusher {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            poison: log.poison(),
        });
        let f = flusher.clone();
        let thread = std::thread::Builder::new()
            .name("strata-raft-flush".into())
            .spawn(move || f.run())
            .map_err(|e| Error::io("spawn the Raft log flusher", dir, e))?;
        Ok(LogStore {
            shared: Arc::new(Shared {
                log: Mutex::new(log),
                flusher,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Starts a new segment past this many bytes (tests use small ones).
    pub fn set_segment_size(&self, bytes: u64) {
        self.shared.log.lock().set_segment_size(bytes);
    }

    /// The fsyncs appends have waited for so far.
    pub fn append_syncs(&self) -> u64 {
        self.shared.flusher.queue.lock().syncs
    }

    /// The purge point the disk holds (entries up to it are gone for good).
    pub fn purged_on_disk(&self) -> Option<LogId<u64>> {
        self.shared.log.lock().purged_physical()
    }

    /// The segment files, in order.
    pub fn segment_paths(&self) -> Vec<std::path::PathBuf> {
        self.shared.log.lock().segment_paths()
    }

    /// Reads the entries in `[lo, hi)` (synchronously).
    pub fn entries(&self, lo: u64, hi: u64) -> Result<Vec<Entry>> {
        self.shared.log.lock().read(lo, hi)
    }

    fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
        let lo = match range.start_bound() {
            Bound::Included(&x) => x,
            Bound::Excluded(&x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let hi = match range.end_bound() {
            Bound::Included(&x) => x.saturating_add(1),
            Bound::Excluded(&x) => x,
            Bound::Unbounded => u64::MAX,
        };
        (lo, hi)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry>> {
        let (lo, hi) = Self::bounds(&range);
        let shared = self.shared.clone();
        blocking(move || shared.log.lock().read(lo, hi), read_err).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StoreResult<LogState<TypeConfig>> {
        // The log's lock is held across fsyncs: waited for on the blocking
        // pool, not on a runtime thread (so for every call here).
        let shared = self.shared.clone();
        let (last_purged_log_id, last_log_id) =
            blocking(move || Ok(shared.log.lock().state()), read_err).await?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StoreResult<()> {
        let shared = self.shared.clone();
        let vote = *vote;
        blocking(move || shared.log.lock().save_vote(&vote), vote_err).await
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<u64>>> {
        let shared = self.shared.clone();
        blocking(move || Ok(shared.log.lock().vote()), vote_err).await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let shared = self.shared.clone();
        blocking(
            move || {
                let files = {
                    let mut log = shared.log.lock();
                    let written = log.append(&entries).and_then(|files| {
                        // A purge the bound held back may go further now.
                        log.purge_physical().map(|()| files)
                    });
                    match written {
                        Ok(files) => files,
                        Err(e) => {
                            // Told, not dropped: openraft waits on it.
                            callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                            return Err(e);
                        }
                    }
                };
                let mut q = shared.flusher.queue.lock();
                for f in files {
                    if !q.files.iter().any(|g| Arc::ptr_eq(g, &f)) {
                        q.files.push(f);
                    }
                }
                q.callbacks.push(callback);
                shared.flusher.wake.notify_one();
                Ok(())
            },
            io_err,
        )
        .await
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StoreResult<()> {
        let shared = self.shared.clone();
        blocking(move || shared.log.lock().truncate(log_id.index), io_err).await
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StoreResult<()> {
        let shared = self.shared.clone();
        blocking(move || shared.log.lock().purge(log_id), io_err).await
    }
}

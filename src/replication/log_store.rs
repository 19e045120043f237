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
//! A failed sync fails its callbacks and every later append (the log can
//! no longer say what is on disk).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, LogId, StorageError, StorageIOError, Vote};
use parking_lot::{Condvar, Mutex};

use super::log::{PurgeBound, RaftLog};
use super::{blocking, Entry, TypeConfig};
use crate::error::{Error, Result};
use crate::io::{RealFs, Vfs, VfsFile};

type StoreResult<T> = std::result::Result<T, StorageError<u64>>;

#[derive(Default)]
struct Queue {
    files: Vec<Arc<dyn VfsFile>>,
    callbacks: Vec<LogFlushed<TypeConfig>>,
    stop: bool,
    failed: Option<String>,
    /// Syncs done (for tests: appends sharing them).
    syncs: u64,
}

struct Flusher {
    queue: Mutex<Queue>,
    wake: Condvar,
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
            let mut result = Ok(());
            for f in &files {
                if let Err(e) = f.sync() {
                    result = Err(e.to_string());
                    break;
                }
            }
            {
                let mut q = self.queue.lock();
                q.syncs += 1;
                if let Err(e) = &result {
                    q.failed = Some(e.clone());
                }
            }
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
        let (last_purged_log_id, last_log_id) = self.shared.log.lock().state();
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
        Ok(self.shared.log.lock().vote())
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
                if let Some(cause) = shared.flusher.queue.lock().failed.clone() {
                    return Err(Error::Poisoned { cause });
                }
                let files = {
                    let mut log = shared.log.lock();
                    let files = log.append(&entries)?;
                    // A purge the bound held back may go further now.
                    log.purge_physical()?;
                    files
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

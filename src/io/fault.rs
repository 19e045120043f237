//! `FaultFs`: an in-memory file system that remembers what is durable and
//! what is not, so tests can cut the power at any operation and look at
//! what survives, and can make any operation fail.
//!
//! ```text
//!   write/set_len ──► volatile content ──sync──► durable content
//!   create/rename/remove ──► volatile names ──sync_dir──► durable names
//! ```
//! A *power-loss image* starts from the durable content and names; every
//! write or size change since the file's last sync is kept, dropped, or
//! torn (some of its 512-byte sectors kept), independently — so later
//! writes can survive without earlier ones, which is how reordering looks
//! on disk; every create, rename and remove since its directory's last
//! sync is kept or lost. A directory made by `create_dir_all` is such a
//! name in its parent: when it is lost, so is everything under it.
//! A *process-crash image* keeps everything written.
//! The choices come from a seeded generator: the same seed gives the same
//! image.
//!
//! Mutating operations (write, sync, set_len, create, rename, remove,
//! sync_dir) are numbered from 1. `crash_at(n)` makes operation n and every
//! later one fail, as if the machine stopped there; `fail_at` injects EIO
//! or ENOSPC at one operation or from it on.
//!
//! A failed fsync behaves as Linux's does: the writes it was to make
//! durable are dropped from the durable path (their pages are marked clean
//! and stay only in the page cache), and the next fsync reports success
//! without them. An engine that retried the fsync and carried on would
//! lose them, and a power-loss image shows it.
//!
//! `hold(op, until, timeout)` orders two threads' I/O: the first operation
//! matching `op` waits, before it takes effect, until an operation
//! matching `until` begins (or the timeout passes), so a test can make,
//! say, an eviction's page write land after a checkpoint's CONTROL.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{Vfs, VfsFile, VfsLock};
use crate::error::{Error, Result};

const SECTOR: u64 = 512;

/// Which error an injected fault raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// EIO: the device failed.
    Io,
    /// ENOSPC: the device is full.
    NoSpace,
}

#[derive(Clone, Debug)]
enum Pending {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Clone, Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

#[derive(Clone, Debug)]
enum NameOp {
    Link(PathBuf, u64),
    Rename(PathBuf, PathBuf),
    Unlink(PathBuf),
}

/// The kinds of mutating operation, for [`FaultFs::hold`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// A write to a file.
    Write,
    /// An fsync of a file.
    Sync,
    /// A truncation or extension of a file.
    SetLen,
    /// The creation of a file.
    Create,
    /// A rename (matched by its target's name).
    Rename,
    /// A file's removal.
    Remove,
    /// An fsync of a directory.
    SyncDir,
}

/// An operation a hold names: its kind, on a path ending in `file` (the
/// empty string matches every path).
#[derive(Clone, Copy, Debug)]
pub struct OpMatch {
    /// The operation's kind.
    pub kind: OpKind,
    /// The end of the path it acts on, e.g. `"data.strata"` or `"CONTROL"`.
    pub file: &'static str,
}

impl OpMatch {
    fn matches(&self, kind: OpKind, path: &Path) -> bool {
        self.kind == kind && path.to_string_lossy().ends_with(self.file)
    }
}

/// Where a hold is: armed, holding a thread's operation, or done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Armed,
    Holding,
    /// Let go: `true` when the awaited operation completed, `false` when
    /// the timeout passed first.
    Released(bool),
}

struct HoldShared {
    op: OpMatch,
    until: OpMatch,
    timeout: Duration,
    phase: Mutex<Phase>,
    changed: Condvar,
}

impl HoldShared {
    fn set(&self, phase: Phase) {
        *self.phase.lock() = phase;
        self.changed.notify_all();
    }
}

/// A hold set by [`FaultFs::hold`].
pub struct Hold {
    shared: Arc<HoldShared>,
}

impl Hold {
    /// Waits (at most `timeout`) until an operation is being held; whether
    /// one is.
    pub fn wait_holding(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut phase = self.shared.phase.lock();
        while *phase == Phase::Armed {
            if self
                .shared
                .changed
                .wait_until(&mut phase, deadline)
                .timed_out()
            {
                break;
            }
        }
        *phase != Phase::Armed
    }

    /// `Some(true)` once the held operation was let go by the awaited one
    /// beginning,
    /// `Some(false)` if by the timeout, `None` while armed or holding.
    pub fn released(&self) -> Option<bool> {
        match *self.shared.phase.lock() {
            Phase::Released(by_event) => Some(by_event),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Fault {
    at: u64,
    kind: FaultKind,
    persistent: bool,
}

#[derive(Default)]
struct State {
    inodes: HashMap<u64, Inode>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    pending_names: Vec<(PathBuf, NameOp)>,
    next_inode: u64,
    ops: u64,
    crash_at: Option<u64>,
    fault: Option<Fault>,
    locks: HashMap<PathBuf, u64>,
    next_lock: u64,
    holds: Vec<Arc<HoldShared>>,
    /// Directories made by `create_dir_all` (others are taken to exist).
    dirs: BTreeSet<PathBuf>,
}

/// The fault-injecting file system. Clones share one state.
#[derive(Clone, Default)]
pub struct FaultFs {
    state: Arc<Mutex<State>>,
}

fn parent(p: &Path) -> PathBuf {
    p.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn apply_name(names: &mut BTreeMap<PathBuf, u64>, op: &NameOp) {
    match op {
        NameOp::Link(p, ino) => {
            names.insert(p.clone(), *ino);
        }
        NameOp::Rename(from, to) => {
            if let Some(ino) = names.remove(from) {
                names.insert(to.clone(), ino);
                move_under(names, from, to);
            }
        }
        NameOp::Unlink(p) => {
            names.remove(p);
        }
    }
}

/// Moves the names below directory `from` below `to` (a directory's
/// rename: its entries go with it, durable or not as they were).
fn move_under<V: Copy>(names: &mut BTreeMap<PathBuf, V>, from: &Path, to: &Path) {
    let below: Vec<(PathBuf, V)> = names
        .iter()
        .filter(|(p, _)| p.starts_with(from) && p.as_path() != from)
        .map(|(p, &v)| (p.clone(), v))
        .collect();
    for (p, v) in below {
        names.remove(&p);
        if let Ok(rest) = p.strip_prefix(from) {
            names.insert(to.join(rest), v);
        }
    }
}

/// `p` with its prefix `from` replaced by `to`, if it has it.
fn moved(p: &Path, from: &Path, to: &Path) -> PathBuf {
    match p.strip_prefix(from) {
        Ok(rest) if rest.as_os_str().is_empty() => to.to_path_buf(),
        Ok(rest) => to.join(rest),
        Err(_) => p.to_path_buf(),
    }
}

/// Runs one mutating operation: lets go of the holds that waited for it
/// to begin, then waits itself if a hold takes it. Both happen under the
/// state lock, so an operation taken by one hold while it lets go of
/// another is the one that lets go (no other can slip in between).
fn mutate<T>(
    state: &Mutex<State>,
    kind: OpKind,
    path: &Path,
    f: impl FnOnce(&mut State) -> Result<T>,
) -> Result<T> {
    let held = {
        let mut s = state.lock();
        let held = s.take_hold(kind, path);
        s.starting(kind, path, held.as_ref());
        held
    };
    if let Some(h) = held {
        let deadline = Instant::now() + h.timeout;
        let mut phase = h.phase.lock();
        while *phase == Phase::Holding {
            if h.changed.wait_until(&mut phase, deadline).timed_out() {
                *phase = Phase::Released(false);
                h.changed.notify_all();
            }
        }
    }
    f(&mut state.lock())
}

/// Drops the names under a made directory that is not among `names`
/// (lost in a power loss); returns the made directories that remain.
fn drop_orphans(names: &mut BTreeMap<PathBuf, u64>, dirs: &BTreeSet<PathBuf>) -> BTreeSet<PathBuf> {
    let lost: Vec<PathBuf> = dirs
        .iter()
        .filter(|d| !names.contains_key(*d))
        .cloned()
        .collect();
    names.retain(|p, _| !p.ancestors().skip(1).any(|a| lost.iter().any(|d| d == a)));
    dirs.iter()
        .filter(|d| names.contains_key(*d))
        .cloned()
        .collect()
}

fn write_into(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let end = offset as usize + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[offset as usize..end].copy_from_slice(bytes);
}

/// Small seeded generator (xorshift64*): images are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
}

impl State {
    /// Counts a mutating operation and decides whether it fails.
    fn op(&mut self) -> Result<()> {
        self.ops += 1;
        if self.crash_at.is_some_and(|c| self.ops >= c) {
            return Err(Error::from(std::io::Error::other(
                "FaultFs: the machine has stopped",
            )));
        }
        if let Some(f) = self.fault {
            if self.ops == f.at || (f.persistent && self.ops > f.at) {
                let e = match f.kind {
                    FaultKind::Io => std::io::Error::from_raw_os_error(5),
                    FaultKind::NoSpace => std::io::Error::from_raw_os_error(28),
                };
                return Err(Error::from(e));
            }
        }
        Ok(())
    }

    /// The hold, if any, that takes an operation about to start.
    fn take_hold(&mut self, kind: OpKind, path: &Path) -> Option<Arc<HoldShared>> {
        let h = self
            .holds
            .iter()
            .find(|h| *h.phase.lock() == Phase::Armed && h.op.matches(kind, path))?;
        h.set(Phase::Holding);
        Some(h.clone())
    }

    /// Lets go of the operations held until one like this began (but not
    /// of `own`, the hold that takes this very operation).
    fn starting(&mut self, kind: OpKind, path: &Path, own: Option<&Arc<HoldShared>>) {
        self.holds.retain(|h| {
            if own.is_some_and(|o| Arc::ptr_eq(o, h)) {
                return true;
            }
            let mut phase = h.phase.lock();
            match *phase {
                Phase::Holding if h.until.matches(kind, path) => {
                    *phase = Phase::Released(true);
                    h.changed.notify_all();
                    false
                }
                Phase::Released(_) => false,
                _ => true,
            }
        });
    }

    fn lookup(&self, p: &Path) -> Result<u64> {
        self.names.get(p).copied().ok_or_else(|| {
            Error::io(
                "find",
                p,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })
    }
}

impl FaultFs {
    /// An empty file system.
    pub fn new() -> FaultFs {
        FaultFs::default()
    }

    /// Mutating operations performed so far.
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// Operation `n` (counted from 1) and every later one fail: the machine stops there.
    pub fn crash_at(&self, n: u64) {
        self.state.lock().crash_at = Some(n);
    }

    /// Operation `n` fails with `kind`; with `persistent`, every later one too.
    pub fn fail_at(&self, n: u64, kind: FaultKind, persistent: bool) {
        self.state.lock().fault = Some(Fault {
            at: n,
            kind,
            persistent,
        });
    }

    /// Removes injected faults and crash points.
    pub fn heal(&self) {
        let mut s = self.state.lock();
        s.fault = None;
        s.crash_at = None;
    }

    /// Holds the first operation matching `op` (from any thread) before it
    /// takes effect, until an operation matching `until` begins or
    /// `timeout` passes. Images taken from this file system carry no holds.
    pub fn hold(&self, op: OpMatch, until: OpMatch, timeout: Duration) -> Hold {
        let shared = Arc::new(HoldShared {
            op,
            until,
            timeout,
            phase: Mutex::new(Phase::Armed),
            changed: Condvar::new(),
        });
        self.state.lock().holds.push(shared.clone());
        Hold { shared }
    }

    /// What a power loss now would leave on disk; `seed` picks which
    /// unsynced work survives. The image starts with no faults.
    pub fn power_loss_image(&self, seed: u64) -> FaultFs {
        let s = self.state.lock();
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut names = s.durable_names.clone();
        for (_, op) in &s.pending_names {
            if rng.one_in(2) {
                apply_name(&mut names, op);
            }
        }
        let dirs = drop_orphans(&mut names, &s.dirs);
        let mut inodes = HashMap::new();
        for &ino in names.values() {
            let Some(node) = s.inodes.get(&ino) else {
                continue;
            };
            let mut data = node.durable.clone();
            for p in &node.pending {
                match (p, rng.next() % 3) {
                    (_, 0) => {} // lost
                    (Pending::SetLen(len), _) => data.resize(*len as usize, 0),
                    (Pending::Write { offset, bytes }, 1) => write_into(&mut data, *offset, bytes),
                    (Pending::Write { offset, bytes }, _) => {
                        // Torn: each sector of the write independently.
                        let mut at = *offset;
                        let end = offset + bytes.len() as u64;
                        while at < end {
                            let next = ((at / SECTOR) + 1) * SECTOR;
                            let piece = next.min(end);
                            if rng.one_in(2) {
                                let from = (at - offset) as usize;
                                write_into(
                                    &mut data,
                                    at,
                                    &bytes[from..from + (piece - at) as usize],
                                );
                            }
                            at = piece;
                        }
                    }
                }
            }
            inodes.insert(
                ino,
                Inode {
                    data: data.clone(),
                    durable: data,
                    pending: Vec::new(),
                },
            );
        }
        Self::image(names, inodes, s.next_inode, dirs)
    }

    /// What a power loss now would leave if nothing unsynced survived:
    /// the durable content and names alone (the worst case, without
    /// chance).
    pub fn synced_image(&self) -> FaultFs {
        let s = self.state.lock();
        let mut names = s.durable_names.clone();
        let dirs = drop_orphans(&mut names, &s.dirs);
        let inodes = names
            .values()
            .filter_map(|ino| {
                s.inodes.get(ino).map(|n| {
                    let data = n.durable.clone();
                    (
                        *ino,
                        Inode {
                            data: data.clone(),
                            durable: data,
                            pending: Vec::new(),
                        },
                    )
                })
            })
            .collect();
        Self::image(names, inodes, s.next_inode, dirs)
    }

    /// What killing the process now would leave: everything written.
    pub fn process_crash_image(&self) -> FaultFs {
        let s = self.state.lock();
        let inodes = s
            .names
            .values()
            .filter_map(|ino| {
                s.inodes.get(ino).map(|n| {
                    (
                        *ino,
                        Inode {
                            data: n.data.clone(),
                            durable: n.data.clone(),
                            pending: Vec::new(),
                        },
                    )
                })
            })
            .collect();
        Self::image(s.names.clone(), inodes, s.next_inode, s.dirs.clone())
    }

    fn image(
        names: BTreeMap<PathBuf, u64>,
        inodes: HashMap<u64, Inode>,
        next_inode: u64,
        dirs: BTreeSet<PathBuf>,
    ) -> FaultFs {
        let state = State {
            inodes,
            durable_names: names.clone(),
            names,
            next_inode,
            dirs,
            ..Default::default()
        };
        FaultFs {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// The current (volatile) content of a file, for tests that damage it.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state.lock();
        s.names
            .get(path)
            .and_then(|i| s.inodes.get(i))
            .map(|n| n.data.clone())
    }

    /// Replaces a file's content durably (damage for tests).
    pub fn write_file(&self, path: &Path, data: Vec<u8>) {
        let mut s = self.state.lock();
        if let Some(ino) = s.names.get(path).copied() {
            s.inodes.insert(
                ino,
                Inode {
                    data: data.clone(),
                    durable: data,
                    pending: Vec::new(),
                },
            );
        }
    }

    /// Paths of the files that exist now.
    pub fn files(&self) -> Vec<PathBuf> {
        let s = self.state.lock();
        s.names
            .keys()
            .filter(|p| !s.dirs.contains(*p))
            .cloned()
            .collect()
    }
}

struct FaultFile {
    state: Arc<Mutex<State>>,
    ino: u64,
    /// The name it was opened by (holds match on it).
    path: PathBuf,
}

impl FaultFile {
    fn mutate<T>(&self, kind: OpKind, f: impl FnOnce(&mut Inode) -> T) -> Result<T> {
        mutate(&self.state, kind, &self.path, |s| {
            s.op()?;
            Ok(f(s.inodes.entry(self.ino).or_default()))
        })
    }
}

impl Inode {
    /// Makes the pending changes durable, in order. (The content can still
    /// differ from the durable bytes afterwards: writes dropped by a failed
    /// fsync stay in the content alone.)
    fn settle(&mut self) {
        for p in std::mem::take(&mut self.pending) {
            match p {
                Pending::Write { offset, bytes } => write_into(&mut self.durable, offset, &bytes),
                Pending::SetLen(len) => self.durable.resize(len as usize, 0),
            }
        }
    }
}

impl VfsFile for FaultFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let s = self.state.lock();
        let data = s
            .inodes
            .get(&self.ino)
            .map(|n| n.data.as_slice())
            .unwrap_or(&[]);
        let start = (offset as usize).min(data.len());
        let n = (data.len() - start).min(buf.len());
        buf[..n].copy_from_slice(&data[start..start + n]);
        buf[n..].fill(0);
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.mutate(OpKind::Write, |node| {
            write_into(&mut node.data, offset, buf);
            node.pending.push(Pending::Write {
                offset,
                bytes: buf.to_vec(),
            });
        })
    }

    fn sync(&self) -> Result<()> {
        mutate(&self.state, OpKind::Sync, &self.path, |s| {
            let stopped = s.crash_at.is_some_and(|c| s.ops + 1 >= c);
            let r = s.op();
            let node = s.inodes.entry(self.ino).or_default();
            match r {
                Ok(()) => node.settle(),
                // Linux marks the pages clean after a failed fsync: what it
                // was to make durable never reaches the disk unless written
                // again, and the next fsync does not report it.
                Err(_) if !stopped => node.pending.clear(),
                Err(_) => {}
            }
            r
        })
    }

    fn set_len(&self, len: u64) -> Result<()> {
        self.mutate(OpKind::SetLen, |node| {
            node.data.resize(len as usize, 0);
            node.pending.push(Pending::SetLen(len));
        })
    }

    fn len(&self) -> Result<u64> {
        Ok(self
            .state
            .lock()
            .inodes
            .get(&self.ino)
            .map_or(0, |n| n.data.len() as u64))
    }
}

struct FaultLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    id: u64,
}

impl VfsLock for FaultLock {}

impl Drop for FaultLock {
    fn drop(&mut self) {
        let mut s = self.state.lock();
        if s.locks.get(&self.path) == Some(&self.id) {
            s.locks.remove(&self.path);
        }
    }
}

impl Vfs for FaultFs {
    fn open(&self, path: &Path, create: bool) -> Result<Box<dyn VfsFile>> {
        let found = self.state.lock().names.get(path).copied();
        let ino = match found {
            Some(ino) => ino,
            None if create => mutate(&self.state, OpKind::Create, path, |s| {
                s.op()?;
                s.next_inode += 1;
                let ino = s.next_inode;
                s.inodes.insert(ino, Inode::default());
                s.names.insert(path.to_path_buf(), ino);
                s.pending_names
                    .push((parent(path), NameOp::Link(path.to_path_buf(), ino)));
                Ok(ino)
            })?,
            None => self.state.lock().lookup(path)?,
        };
        Ok(Box::new(FaultFile {
            state: self.state.clone(),
            ino,
            path: path.to_path_buf(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        mutate(&self.state, OpKind::Rename, to, |s| {
            s.op()?;
            let ino = s.lookup(from)?;
            s.names.remove(from);
            s.names.insert(to.to_path_buf(), ino);
            if s.dirs.remove(from) {
                // A made directory moves with what is below it, and the
                // name changes not yet synced below it go along.
                move_under(&mut s.names, from, to);
                let made: Vec<PathBuf> = s
                    .dirs
                    .iter()
                    .filter(|d| d.starts_with(from))
                    .cloned()
                    .collect();
                for d in made {
                    s.dirs.remove(&d);
                    s.dirs.insert(moved(&d, from, to));
                }
                s.dirs.insert(to.to_path_buf());
                for (dir, op) in &mut s.pending_names {
                    if dir.starts_with(from) {
                        *dir = moved(dir, from, to);
                        match op {
                            NameOp::Link(p, _) | NameOp::Unlink(p) => *p = moved(p, from, to),
                            NameOp::Rename(a, b) => {
                                *a = moved(a, from, to);
                                *b = moved(b, from, to);
                            }
                        }
                    }
                }
            }
            s.pending_names.push((
                parent(to),
                NameOp::Rename(from.to_path_buf(), to.to_path_buf()),
            ));
            Ok(())
        })
    }

    fn remove(&self, path: &Path) -> Result<()> {
        mutate(&self.state, OpKind::Remove, path, |s| {
            s.op()?;
            s.lookup(path)?;
            s.names.remove(path);
            s.pending_names
                .push((parent(path), NameOp::Unlink(path.to_path_buf())));
            Ok(())
        })
    }

    fn remove_dir(&self, dir: &Path) -> Result<()> {
        mutate(&self.state, OpKind::Remove, dir, |s| {
            s.op()?;
            s.lookup(dir)?;
            if s.names.keys().any(|p| parent(p) == dir) {
                return Err(std::io::Error::from(std::io::ErrorKind::DirectoryNotEmpty).into());
            }
            s.names.remove(dir);
            s.pending_names
                .push((parent(dir), NameOp::Unlink(dir.to_path_buf())));
            Ok(())
        })
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        mutate(&self.state, OpKind::SyncDir, dir, |s| {
            s.op()?;
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut s.pending_names)
                .into_iter()
                .partition(|(d, _)| d == dir);
            for (_, op) in &mine {
                apply_name(&mut s.durable_names, op);
            }
            s.pending_names = rest;
            Ok(())
        })
    }

    fn lock(&self, path: &Path) -> Result<Box<dyn VfsLock>> {
        let mut s = self.state.lock();
        if s.locks.contains_key(path) {
            return Err(Error::Locked { path: parent(path) });
        }
        s.next_lock += 1;
        let id = s.next_lock;
        s.locks.insert(path.to_path_buf(), id);
        Ok(Box::new(FaultLock {
            state: self.state.clone(),
            path: path.to_path_buf(),
            id,
        }))
    }

    fn create_dir_all(&self, dir: &Path) -> Result<()> {
        let mut s = self.state.lock();
        let mut missing: Vec<&Path> = dir
            .ancestors()
            .take_while(|a| a.parent().is_some() && !s.names.contains_key(*a))
            .collect();
        missing.reverse();
        for d in missing {
            s.op()?;
            s.next_inode += 1;
            let ino = s.next_inode;
            s.inodes.insert(ino, Inode::default());
            s.names.insert(d.to_path_buf(), ino);
            s.pending_names
                .push((parent(d), NameOp::Link(d.to_path_buf(), ino)));
            s.dirs.insert(d.to_path_buf());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        Ok(self
            .state
            .lock()
            .names
            .keys()
            .filter(|p| parent(p) == dir)
            .cloned()
            .collect())
    }

    fn exists(&self, path: &Path) -> Result<bool> {
        Ok(self.state.lock().names.contains_key(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renamed_directory_takes_what_is_below_it() {
        let fs = FaultFs::new();
        let (tmp, to) = (Path::new("/p/.t.import/db"), Path::new("/p/t"));
        fs.create_dir_all(&tmp.join("wal")).expect("mkdir");
        fs.sync_dir(Path::new("/")).expect("sync");
        fs.sync_dir(Path::new("/p")).expect("sync");
        fs.sync_dir(Path::new("/p/.t.import")).expect("sync");
        fs.sync_dir(tmp).expect("sync");
        let f = fs.open(&tmp.join("wal/seg"), true).expect("create");
        f.write_at(b"log", 0).expect("write");
        f.sync().expect("sync");
        fs.sync_dir(&tmp.join("wal")).expect("sync");
        // Not yet synced in its directory when the rename comes.
        let g = fs.open(&tmp.join("data"), true).expect("create");
        g.write_at(b"pages", 0).expect("write");
        g.sync().expect("sync");
        fs.rename(tmp, to).expect("rename");
        assert_eq!(
            fs.read_file(&to.join("wal/seg")).as_deref(),
            Some(&b"log"[..])
        );
        assert!(fs.list(tmp).expect("list").is_empty());
        fs.sync_dir(to).expect("sync the moved directory");
        fs.sync_dir(Path::new("/p")).expect("sync the rename");
        for seed in 0..16 {
            let img = fs.power_loss_image(seed);
            assert_eq!(
                img.read_file(&to.join("wal/seg")).as_deref(),
                Some(&b"log"[..])
            );
            assert_eq!(
                img.read_file(&to.join("data")).as_deref(),
                Some(&b"pages"[..])
            );
            assert_eq!(img.read_file(&tmp.join("wal/seg")), None);
        }
    }

    #[test]
    fn synced_data_survives_unsynced_may_not() {
        let fs = FaultFs::new();
        let dir = Path::new("/db");
        let f = fs.open(&dir.join("a"), true).expect("create");
        f.write_at(b"durable!", 0).expect("write");
        f.sync().expect("sync");
        fs.sync_dir(dir).expect("sync dir");
        f.write_at(&[7u8; 4096], 8).expect("write");
        let mut saw = [false; 2];
        for seed in 0..64 {
            let img = fs.power_loss_image(seed);
            let data = img
                .read_file(&dir.join("a"))
                .expect("file survives: its name was synced");
            assert_eq!(&data[..8], b"durable!");
            saw[(data.len() > 8) as usize] = true;
        }
        assert_eq!(
            saw,
            [true, true],
            "unsynced writes should sometimes survive and sometimes not"
        );
        assert_eq!(
            fs.process_crash_image()
                .read_file(&dir.join("a"))
                .map(|d| d.len()),
            Some(8 + 4096)
        );
    }

    #[test]
    fn unsynced_names_can_vanish_and_faults_fire() {
        let fs = FaultFs::new();
        let dir = Path::new("/db");
        let f = fs.open(&dir.join("new"), true).expect("create");
        f.sync().expect("sync");
        let lost = (0..64)
            .filter(|&s| fs.power_loss_image(s).read_file(&dir.join("new")).is_none())
            .count();
        assert!(
            lost > 0 && lost < 64,
            "an unsynced create should sometimes be lost ({lost}/64)"
        );
        let n = fs.ops();
        fs.fail_at(n + 1, FaultKind::Io, false);
        assert!(f.write_at(b"x", 0).is_err());
        assert!(f.write_at(b"x", 0).is_ok(), "a one-off fault fires once");
        fs.crash_at(fs.ops() + 1);
        assert!(
            f.sync().is_err() && f.write_at(b"y", 0).is_err(),
            "nothing works after the crash point"
        );
    }

    // Guards the fsyncgate model: a write whose fsync failed must not be
    // made durable by a later fsync that succeeds.
    #[test]
    fn a_failed_fsync_drops_its_writes_as_linux_does() {
        let fs = FaultFs::new();
        let dir = Path::new("/db");
        let f = fs.open(&dir.join("a"), true).expect("create");
        f.write_at(b"old!", 0).expect("write");
        f.sync().expect("sync");
        fs.sync_dir(dir).expect("sync dir");
        f.write_at(b"new!", 0).expect("write");
        fs.fail_at(fs.ops() + 1, FaultKind::Io, false);
        assert!(f.sync().is_err(), "the injected fsync failure");
        f.sync().expect("the next fsync reports success");
        for seed in 0..32 {
            let img = fs.power_loss_image(seed);
            assert_eq!(
                img.read_file(&dir.join("a")).expect("file"),
                b"old!",
                "image {seed}: a write dropped by a failed fsync came back"
            );
        }
        assert_eq!(
            fs.process_crash_image().read_file(&dir.join("a")),
            Some(b"new!".to_vec()),
            "the page cache still holds it"
        );
        f.write_at(b"new!", 0).expect("write again");
        f.sync().expect("sync");
        assert_eq!(
            fs.power_loss_image(1).read_file(&dir.join("a")),
            Some(b"new!".to_vec())
        );
    }

    #[test]
    fn a_hold_makes_one_operation_wait_for_another() {
        let fs = FaultFs::new();
        let a = fs.open(Path::new("/db/a"), true).expect("create");
        let b = fs.open(Path::new("/db/b"), true).expect("create");
        let hold = fs.hold(
            OpMatch {
                kind: OpKind::Write,
                file: "a",
            },
            OpMatch {
                kind: OpKind::Sync,
                file: "b",
            },
            Duration::from_secs(60),
        );
        std::thread::scope(|s| {
            let t = s.spawn(|| a.write_at(b"late", 0));
            assert!(hold.wait_holding(Duration::from_secs(60)));
            assert_eq!(
                fs.read_file(Path::new("/db/a")),
                Some(vec![]),
                "held before it took effect"
            );
            b.write_at(b"x", 0).expect("write b");
            assert_eq!(hold.released(), None, "a write of b does not let it go");
            b.sync().expect("sync b");
            t.join().expect("thread").expect("held write");
        });
        assert_eq!(hold.released(), Some(true));
        assert_eq!(fs.read_file(Path::new("/db/a")), Some(b"late".to_vec()));
        // Only the first matching operation is held; a timeout lets go too.
        a.write_at(b"more", 0).expect("not held");
        let h = fs.hold(
            OpMatch {
                kind: OpKind::Write,
                file: "a",
            },
            OpMatch {
                kind: OpKind::Remove,
                file: "never",
            },
            Duration::from_millis(10),
        );
        a.write_at(b"t", 0).expect("held until the timeout");
        assert_eq!(h.released(), Some(false));
    }

    #[test]
    fn a_made_directory_is_lost_with_its_files_unless_its_parent_is_synced() {
        let fs = FaultFs::new();
        let dir = Path::new("/d/db");
        fs.create_dir_all(dir).expect("mkdir");
        let f = fs.open(&dir.join("a"), true).expect("create");
        f.sync().expect("sync");
        fs.sync_dir(dir).expect("sync dir");
        let lost = (0..64)
            .filter(|&s| fs.power_loss_image(s).read_file(&dir.join("a")).is_none())
            .count();
        assert!(lost > 0, "the file's directory was never made durable");
        fs.sync_dir(Path::new("/")).expect("sync /");
        fs.sync_dir(Path::new("/d")).expect("sync /d");
        assert!((0..64).all(|s| fs.power_loss_image(s).read_file(&dir.join("a")).is_some()));
        assert_eq!(fs.files(), vec![dir.join("a")], "directories are not files");
    }
}

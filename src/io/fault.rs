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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

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
            }
        }
        NameOp::Unlink(p) => {
            names.remove(p);
        }
    }
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
            return Err(Error::Io(std::io::Error::other(
                "FaultFs: the machine has stopped",
            )));
        }
        if let Some(f) = self.fault {
            if self.ops == f.at || (f.persistent && self.ops > f.at) {
                let e = match f.kind {
                    FaultKind::Io => std::io::Error::from_raw_os_error(5),
                    FaultKind::NoSpace => std::io::Error::from_raw_os_error(28),
                };
                return Err(Error::Io(e));
            }
        }
        Ok(())
    }

    fn lookup(&self, p: &Path) -> Result<u64> {
        self.names.get(p).copied().ok_or_else(|| {
            Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{}", p.display()),
            ))
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
        let mut s = self.state.lock();
        s.op()?;
        let node = s.inodes.entry(self.ino).or_default();
        write_into(&mut node.data, offset, buf);
        node.pending.push(Pending::Write {
            offset,
            bytes: buf.to_vec(),
        });
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        let mut s = self.state.lock();
        s.op()?;
        let node = s.inodes.entry(self.ino).or_default();
        node.durable = node.data.clone();
        node.pending.clear();
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<()> {
        let mut s = self.state.lock();
        s.op()?;
        let node = s.inodes.entry(self.ino).or_default();
        node.data.resize(len as usize, 0);
        node.pending.push(Pending::SetLen(len));
        Ok(())
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
        let mut s = self.state.lock();
        let ino = match s.names.get(path) {
            Some(&ino) => ino,
            None if create => {
                s.op()?;
                s.next_inode += 1;
                let ino = s.next_inode;
                s.inodes.insert(ino, Inode::default());
                s.names.insert(path.to_path_buf(), ino);
                s.pending_names
                    .push((parent(path), NameOp::Link(path.to_path_buf(), ino)));
                ino
            }
            None => s.lookup(path)?,
        };
        Ok(Box::new(FaultFile {
            state: self.state.clone(),
            ino,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let mut s = self.state.lock();
        s.op()?;
        let ino = s.lookup(from)?;
        s.names.remove(from);
        s.names.insert(to.to_path_buf(), ino);
        s.pending_names.push((
            parent(to),
            NameOp::Rename(from.to_path_buf(), to.to_path_buf()),
        ));
        Ok(())
    }

    fn remove(&self, path: &Path) -> Result<()> {
        let mut s = self.state.lock();
        s.op()?;
        s.lookup(path)?;
        s.names.remove(path);
        s.pending_names
            .push((parent(path), NameOp::Unlink(path.to_path_buf())));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        let mut s = self.state.lock();
        s.op()?;
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut s.pending_names)
            .into_iter()
            .partition(|(d, _)| d == dir);
        for (_, op) in &mine {
            apply_name(&mut s.durable_names, op);
        }
        s.pending_names = rest;
        Ok(())
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

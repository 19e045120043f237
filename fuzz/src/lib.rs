//! Shared code of the fuzz targets: interpreting fuzz input as operation
//! sequences with crash points, and as database files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata::io::{FaultFs, Vfs};
use strata::{Db, Options};

/// The database directory inside `FaultFs`.
pub const DIR: &str = "/db";

/// Options for fuzzing: no background thread (repeatable I/O order), small
/// log segments so recycling happens.
pub fn options() -> Options {
    Options::default()
        .background(false)
        .cache_size(0)
        .wal_segment_size(64 << 10)
}

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
}

fn open(fs: &FaultFs) -> strata::Result<(Db, strata::Table)> {
    let db = Db::open_vfs(Arc::new(fs.clone()), Path::new(DIR), options())?;
    let t = db.table("t")?;
    Ok((db, t))
}

fn contents(db: &Db, t: &strata::Table) -> strata::Result<Model> {
    let tx = db.begin()?;
    let rows = tx.scan(t, ..)?.collect::<strata::Result<Model>>()?;
    Ok(rows)
}

/// Random operations against a model, with machine stops in the middle of
/// operations. After each stop a power-loss image is recovered and must
/// hold every acknowledged commit, and nothing else but possibly the one
/// commit that was in flight; the integrity check must pass.
pub fn ops_crash(data: &[u8]) {
    let mut input = Input(data);
    let mut fs = FaultFs::new();
    let Ok((mut db, mut t)) = open(&fs) else {
        panic!("a fresh database must open")
    };
    let mut model = Model::new();
    let mut pending: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    let mut tx = None;
    while let Some(op) = input.byte() {
        let key = vec![b'k', input.byte().unwrap_or(0) % 24];
        let in_doubt = op % 9 == 4;
        let result: strata::Result<()> = (|| {
            match op % 9 {
                0..=2 => {
                    let len = match input.byte().unwrap_or(0) {
                        255 => 20_000,
                        n => n as usize * 9,
                    };
                    let value = vec![op; len];
                    tx.get_or_insert(db.begin()?).put(&t, &key, &value)?;
                    pending.push((key, Some(value)));
                }
                3 => {
                    tx.get_or_insert(db.begin()?).delete(&t, &key)?;
                    pending.push((key, None));
                }
                4 => {
                    if let Some(tx) = tx.take() {
                        tx.commit()?;
                        for (k, v) in pending.drain(..) {
                            match v {
                                Some(v) => model.insert(k, v),
                                None => model.remove(&k),
                            };
                        }
                    }
                }
                5 => {
                    if let Some(tx) = tx.take() {
                        tx.rollback()?;
                    }
                    pending.clear();
                }
                6 => db.checkpoint()?,
                7 => {
                    db.vacuum()?;
                }
                _ => fs.crash_at(fs.ops() + 1 + input.byte().unwrap_or(0) as u64 % 16),
            }
            Ok(())
        })();
        if result.is_ok() {
            continue;
        }
        // The machine stopped (or an operation failed on the way there).
        let mut doubt = model.clone();
        if in_doubt {
            for (k, v) in pending.drain(..) {
                match v {
                    Some(v) => doubt.insert(k, v),
                    None => doubt.remove(&k),
                };
            }
        }
        drop(tx.take());
        pending.clear();
        drop(db);
        fs = fs.power_loss_image(input.byte().unwrap_or(0) as u64);
        let reopened = open(&fs).unwrap_or_else(|e| panic!("recovery failed: {e}"));
        (db, t) = reopened;
        let got = contents(&db, &t).unwrap_or_else(|e| panic!("reading after recovery: {e}"));
        assert!(
            got == model || got == doubt,
            "recovered data differs from every acknowledged state"
        );
        db.check_integrity()
            .unwrap_or_else(|e| panic!("integrity after recovery: {e}"));
        model = got;
    }
}

/// Files of a database, serialized: entries of
/// `kind u8 | len u32 | [start lsn u64, for log segments] | bytes`,
/// kind 0 = CONTROL, 1 = data file, 2 = log segment.
pub fn files_from_bytes(data: &[u8]) -> FaultFs {
    let fs = FaultFs::new();
    let mut rest = data;
    while rest.len() >= 5 {
        let kind = rest[0];
        let len = u32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        rest = &rest[5..];
        let path = match kind % 3 {
            0 => PathBuf::from(DIR).join("CONTROL"),
            1 => PathBuf::from(DIR).join("data.strata"),
            _ => {
                if rest.len() < 8 {
                    break;
                }
                let start = u64::from_le_bytes(rest[..8].try_into().unwrap_or([0; 8]));
                rest = &rest[8..];
                PathBuf::from(DIR)
                    .join("wal")
                    .join(format!("{start:016x}.wal"))
            }
        };
        let bytes = &rest[..len.min(rest.len())];
        rest = &rest[bytes.len()..];
        if let Ok(f) = fs.open(&path, true) {
            let _ = f.write_at(bytes, 0);
            let _ = f.sync();
        }
    }
    let _ = fs.sync_dir(Path::new(DIR));
    let _ = fs.sync_dir(&Path::new(DIR).join("wal"));
    fs
}

/// The inverse of [`files_from_bytes`], for seeding the corpus.
pub fn files_to_bytes(fs: &FaultFs) -> Vec<u8> {
    let mut out = Vec::new();
    for path in fs.files() {
        let Some(data) = fs.read_file(&path) else {
            continue;
        };
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let (kind, start) = match name {
            "CONTROL" => (0u8, None),
            "data.strata" => (1, None),
            n if n.ends_with(".wal") => {
                (2, u64::from_str_radix(n.trim_end_matches(".wal"), 16).ok())
            }
            _ => continue,
        };
        out.push(kind);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        if let Some(s) = start {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out.extend_from_slice(&data);
    }
    out
}

/// Opening arbitrary files must give `Ok` or an `Error`; whatever opens
/// must read, vacuum and check without panicking.
pub fn open_bytes(data: &[u8]) {
    let fs = files_from_bytes(data);
    let Ok(db) = Db::open_vfs(Arc::new(fs), Path::new(DIR), options()) else {
        return;
    };
    if let Ok(names) = db.table_names() {
        for name in names.iter().take(8) {
            let Ok(t) = db.table(name) else { continue };
            if let Ok(tx) = db.begin() {
                if let Ok(scan) = tx.scan(&t, ..) {
                    for row in scan.take(10_000) {
                        if row.is_err() {
                            break;
                        }
                    }
                }
                let _ = tx.get(&t, b"k");
            }
        }
    }
    let _ = db.check_integrity();
    let _ = db.vacuum();
    let _ = db.checkpoint();
}

/// The decoders of log records and pages, on arbitrary bytes.
pub fn decoders(data: &[u8]) {
    use strata::btree::node;
    use strata::buffer::page::{self, PageBuf};
    use strata::heap;
    use strata::ids::{PageId, SlotId};
    use strata::wal::record::{apply, unframe, Framed, Record, RecordRef};

    let _ = Record::decode(data);
    let payload = match unframe(data) {
        Framed::Ok(payload, _) => payload,
        _ => data,
    };
    // What the decoder accepts, replay applies: no change may reach
    // outside a page.
    if let Ok(rec) = RecordRef::parse(payload) {
        let mut page: Box<PageBuf> = page::zeroed();
        for (_, change) in rec.changes() {
            apply(&mut page, &change);
        }
    }
    let mut p: Box<PageBuf> = page::zeroed();
    let n = data.len().min(p.len());
    p[..n].copy_from_slice(&data[..n]);
    let _ = page::verify(&p, PageId(1));
    let _ = (
        node::cells(&p),
        node::search(&p, b"key"),
        node::free_space(&p),
    );
    for i in 0..node::count(&p).min(64) {
        let _ = (node::key(&p, i), node::value(&p, i), node::child(&p, i));
    }
    let _ = heap::page::used_slots(&p);
    for s in 0..64 {
        if let Some(t) = heap::page::get(&p, SlotId(s)) {
            let _ = heap::tuple::Tuple::decode(t);
        }
    }
    let mut q = p.clone();
    let _ = node::insert(&mut q, 0, &node::leaf_cell(b"k", b"v"));
    let _ = node::remove(&mut q, 0);
    let mut h = p;
    let _ = heap::page::insert(&mut h, &[1; 40]);
    heap::page::remove(&mut h, SlotId(0));
}

/// The two-phase-commit coordinator's state machine under a hostile
/// schedule: messages delivered out of order, duplicated or lost, votes
/// either way, time passing, the coordinator crashing (restored from its
/// decision log, possibly with a torn last append whose messages were
/// never sent) and participants losing their in-flight messages. Then the
/// network heals; every transaction must end with one outcome at every
/// participant, the logged one.
pub fn coordinator(data: &[u8]) {
    use strata::twopc::{frame, parse, Input, Machine, Message, Record};

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum P {
        Prepared,
        Committed,
        Aborted,
    }
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    let n = 1 + next().unwrap_or(0) as u32 % 4;
    let txns = 1 + next().unwrap_or(0) as usize % 3;
    let (timeout, resend) = (50, 10);
    let mut m = Machine::new(timeout, resend);
    // The decision log's bytes; where its last append starts; whether a
    // message of that append went out (then it cannot be torn).
    #[derive(Default)]
    struct Disk {
        log: Vec<u8>,
        last_frame: usize,
        last_sent: bool,
    }
    fn pump(m: &mut Machine, net: &mut Vec<(u32, Message)>, d: &mut Disk) {
        let r = m.ready();
        if !r.persist.is_empty() {
            d.last_frame = d.log.len();
            d.log.extend(frame(&r.persist));
            d.last_sent = r.send.is_empty();
        }
        net.extend(r.send);
    }
    let mut disk = Disk {
        last_sent: true,
        ..Disk::default()
    };
    let mut net: Vec<(u32, Message)> = Vec::new();
    let mut state: BTreeMap<(String, u32), P> = BTreeMap::new();
    let mut now = 0u64;
    for t in 0..txns {
        m.step(Input::Begin {
            gid: format!("g{t}"),
            participants: (0..n).collect(),
        });
    }
    let path = Path::new("decisions");
    let deliver = |m: &mut Machine,
                   state: &mut BTreeMap<(String, u32), P>,
                   to: u32,
                   msg: Message,
                   yes: bool| {
        match msg {
            Message::Prepare(g) => {
                let s = state.entry((g.clone(), to)).or_insert(if yes {
                    P::Prepared
                } else {
                    P::Aborted
                });
                let vote = *s == P::Prepared;
                if *s != P::Committed {
                    m.step(Input::Vote {
                        gid: g,
                        from: to,
                        yes: vote,
                    });
                }
            }
            Message::Commit(g) => {
                let s = state.entry((g.clone(), to)).or_insert(P::Aborted);
                assert!(
                    *s != P::Aborted,
                    "commit sent to a participant that never prepared {g}"
                );
                *s = P::Committed;
                m.step(Input::Ack { gid: g, from: to });
            }
            Message::Rollback(g) => {
                let s = state.entry((g.clone(), to)).or_insert(P::Aborted);
                assert!(*s != P::Committed, "rollback of committed {g}");
                *s = P::Aborted;
                m.step(Input::Ack { gid: g, from: to });
            }
        }
    };
    while let Some(op) = next() {
        pump(&mut m, &mut net, &mut disk);
        match op % 8 {
            0..=3 if !net.is_empty() => {
                let i = next().unwrap_or(0) as usize % net.len();
                let (to, msg) = if op % 8 == 3 {
                    net[i].clone() // duplicated
                } else {
                    net.swap_remove(i)
                };
                disk.last_sent = true;
                if op % 8 != 2 {
                    let yes = next().unwrap_or(0) % 4 != 0;
                    deliver(&mut m, &mut state, to, msg, yes);
                } // else lost
            }
            4 => {
                now += u64::from(next().unwrap_or(0));
                m.step(Input::Tick(now));
            }
            5 => {
                // The coordinator crashes; a torn last append is possible
                // only if none of its messages went out.
                if !disk.last_sent && next().unwrap_or(0) % 2 == 0 {
                    let span = disk.log.len() - disk.last_frame;
                    let cut = disk.last_frame + next().unwrap_or(0) as usize % span;
                    disk.log.truncate(cut);
                }
                let (records, end) = parse(path, &disk.log).expect("the decision log parses");
                disk.log.truncate(end as usize);
                net.clear();
                m = Machine::restore(&records, now, timeout, resend);
                disk.last_sent = true;
            }
            6 => {
                // A participant restarts: its in-flight messages are lost,
                // then it reports what it holds in doubt.
                let p = u32::from(next().unwrap_or(0)) % n;
                net.retain(|(to, _)| *to != p);
                let gids = state
                    .iter()
                    .filter(|((_, q), s)| *q == p && **s == P::Prepared)
                    .map(|((g, _), _)| g.clone())
                    .collect();
                m.step(Input::InDoubt { from: p, gids });
            }
            _ => {}
        }
    }
    // The network heals.
    for _ in 0..10_000 {
        pump(&mut m, &mut net, &mut disk);
        if let Some((to, msg)) = net.pop() {
            deliver(&mut m, &mut state, to, msg, true);
        } else if m.open() == 0 {
            break;
        } else {
            now += resend;
            m.step(Input::Tick(now));
        }
    }
    assert_eq!(m.open(), 0, "the coordinator never finished");
    let (records, _) = parse(path, &disk.log).expect("the decision log parses");
    for t in 0..txns {
        let g = format!("g{t}");
        let committed = records
            .iter()
            .any(|r| matches!(r, Record::Committed { gid } if *gid == g));
        for p in 0..n {
            let s = state.get(&(g.clone(), p)).copied();
            match s {
                Some(P::Committed) => assert!(committed, "{g} committed at {p} without a decision"),
                Some(P::Prepared) => panic!("{g} left in doubt at {p}"),
                Some(P::Aborted) | None => assert!(!committed, "{g} logged committed, not at {p}"),
            }
        }
    }
}

//! Shared code of the fuzz targets: interpreting fuzz input as operation
//! sequences with crash points, and as database files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata::fault::FaultFs;
use strata::Vfs;
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
/// operations. An operation fails only once the machine has stopped: keys
/// and values are within their limits and one transaction runs at a time,
/// so no error is expected otherwise. After each stop a power-loss image is
/// recovered and must hold every acknowledged commit, and nothing else but
/// possibly the one commit that was in flight; the integrity check must pass.
pub fn ops_crash(data: &[u8]) {
    let mut input = Input(data);
    let mut fs = FaultFs::new();
    let Ok((mut db, mut t)) = open(&fs) else {
        panic!("a fresh database must open")
    };
    let mut model = Model::new();
    let mut pending: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    let mut tx = None;
    // The operation count at which the machine stops, once one is chosen.
    let mut stop: Option<u64> = None;
    while let Some(op) = input.byte() {
        let key = vec![b'k', input.byte().unwrap_or(0) % 24];
        let in_doubt = op % 9 == 4;
        let result: strata::Result<()> = (|| {
            match op % 9 {
                0..=2 => {
                    let len = match input.byte().unwrap_or(0) {
                        // A tail past whole pages in the tuple, and one too
                        // long for it (the whole value in the chain).
                        254 => 20_000,
                        255 => 30_000,
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
                _ => {
                    let at = fs.ops() + 1 + input.byte().unwrap_or(0) as u64 % 16;
                    fs.crash_at(at);
                    stop = Some(at);
                }
            }
            Ok(())
        })();
        let Err(e) = result else { continue };
        assert!(
            stop.is_some_and(|at| fs.ops() >= at),
            "an operation failed while the machine ran: {e}"
        );
        // The machine stopped.
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
        stop = None;
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

/// Errors that damaged or foreign files may give. With a file system that
/// injects no faults and one thread, any other kind (an I/O error, a lock
/// timeout, a serialization failure) is a bug.
fn damage(e: &strata::Error) -> bool {
    matches!(
        e,
        strata::Error::Corruption { .. } | strata::Error::IncompatibleFormat { .. }
    )
}

/// Bytes for a message: their length and first few.
fn short(b: &[u8]) -> String {
    format!("{} bytes {:x?}", b.len(), &b[..b.len().min(12)])
}

/// Reads of one table, and whether they contradict each other. A sound
/// B+tree (keys ascending within their parents' bounds, as the integrity
/// check verifies) has one answer per key: a scan yields keys strictly
/// ascending, a range scan yields exactly the full scan's rows in its range,
/// and `get` returns what the scan returned. Every error is damage.
fn read_table(db: &Db, t: &strata::Table, pick: usize) -> Option<String> {
    use std::ops::Bound::{Excluded, Included};
    let check = |e: strata::Error| -> Option<String> {
        assert!(damage(&e), "a read of arbitrary files gave {e}");
        None
    };
    let tx = match db.begin() {
        Ok(tx) => tx,
        Err(e) => return check(e),
    };
    let mut rows: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let scan = match tx.scan(t, ..) {
        Ok(scan) => scan,
        Err(e) => return check(e),
    };
    for row in scan.take(10_000) {
        match row {
            Ok(r) => rows.push(r),
            Err(e) => return check(e),
        }
    }
    if let Some(w) = rows.windows(2).find(|w| w[0].0 >= w[1].0) {
        return Some(format!(
            "scan yields {} before {}",
            short(&w[0].0),
            short(&w[1].0)
        ));
    }
    for (k, v) in rows.iter().take(64) {
        match tx.get(t, k) {
            Ok(Some(got)) if got == *v => {}
            Ok(got) => {
                return Some(format!(
                    "get {} gives {:?}, the scan {}",
                    short(k),
                    got.as_deref().map(short),
                    short(v)
                ))
            }
            Err(e) => return check(e),
        }
    }
    if rows.len() >= 10_000 {
        return None; // the full scan was cut short: ranges cannot be compared
    }
    if !rows.iter().any(|(k, _)| k == b"k") {
        match tx.get(t, b"k") {
            Ok(None) => {}
            Ok(Some(v)) => return Some(format!("get finds k = {}, the scan does not", short(&v))),
            Err(e) => return check(e),
        }
    }
    // An empty table has no range to compare.
    let lo = rows.get(pick % rows.len().max(1)).map(|r| r.0.clone())?;
    let hi = rows[(pick / 7) % rows.len()].0.clone();
    let ranges = [
        (Included(lo.clone()), Excluded(hi.clone())),
        (Excluded(lo), Included(hi)),
    ];
    for range in ranges {
        let want: Vec<_> = rows
            .iter()
            .filter(|(k, _)| std::ops::RangeBounds::contains(&range, k))
            .cloned()
            .collect();
        let got = match tx.scan(t, range.clone()) {
            Ok(scan) => scan.take(10_000).collect::<strata::Result<Vec<_>>>(),
            Err(e) => Err(e),
        };
        match got {
            Ok(got) if got == want => {}
            Ok(got) => {
                return Some(format!(
                    "range {:?} scans {} rows, the full scan has {} in it",
                    (
                        range.0.as_ref().map(|k| short(k)),
                        range.1.as_ref().map(|k| short(k))
                    ),
                    got.len(),
                    want.len()
                ))
            }
            Err(e) => return check(e),
        }
    }
    None
}

/// The visible rows of every table (up to a bound), or `None` after an error.
fn all_rows(db: &Db) -> Option<Vec<(String, Model)>> {
    let mut out = Vec::new();
    for name in db.table_names().ok()?.into_iter().take(8) {
        let t = db.table(&name).ok()?;
        let tx = db.begin().ok()?;
        let rows = tx
            .scan(&t, ..)
            .ok()?
            .take(10_000)
            .collect::<strata::Result<Model>>();
        out.push((name, rows.ok()?));
    }
    Some(out)
}

/// Opening arbitrary files gives a database or an error of damage. What
/// opens must answer reads consistently unless its integrity check reports
/// Corruption (the check is how damage that passes every checksum is
/// found); vacuum and a checkpoint of a sound database change no visible
/// row and leave it sound.
pub fn open_bytes(data: &[u8]) {
    let fs = files_from_bytes(data);
    let db = match Db::open_vfs(Arc::new(fs), Path::new(DIR), options()) {
        Ok(db) => db,
        Err(e) => {
            assert!(damage(&e), "opening arbitrary files gave {e}");
            return;
        }
    };
    let sound = match db.check_integrity() {
        Ok(_) => true,
        Err(e) => {
            assert!(
                matches!(e, strata::Error::Corruption { .. }),
                "the integrity check gave {e}"
            );
            false
        }
    };
    let pick = data
        .iter()
        .fold(0usize, |h, &b| h.wrapping_mul(31).wrapping_add(b as usize));
    match db.table_names() {
        Ok(names) => {
            for name in names.iter().take(8) {
                let t = match db.table(name) {
                    Ok(t) => t,
                    Err(e) => {
                        assert!(damage(&e), "opening listed table {name:?} gave {e}");
                        continue;
                    }
                };
                if let Some(contradiction) = read_table(&db, &t, pick) {
                    assert!(!sound, "integrity passes, yet {contradiction}");
                }
            }
        }
        Err(e) => assert!(damage(&e), "listing tables gave {e}"),
    }
    let before = if sound { all_rows(&db) } else { None };
    for (what, r) in [
        ("vacuum", db.vacuum().map(drop)),
        ("checkpoint", db.checkpoint()),
    ] {
        if let Err(e) = r {
            assert!(damage(&e), "{what} gave {e}");
            return;
        }
    }
    if let Some(before) = before {
        assert_eq!(
            all_rows(&db).as_ref(),
            Some(&before),
            "vacuum changed what reads see"
        );
        if let Err(e) = db.check_integrity() {
            panic!("a sound database fails its integrity check after vacuum: {e}");
        }
    }
}

/// The decoders of log records and pages, on arbitrary bytes.
pub fn decoders(data: &[u8]) {
    use strata::internals::btree::node;
    use strata::internals::heap;
    use strata::internals::ids::{PageId, SlotId};
    use strata::internals::page::{self, PageBuf};
    use strata::internals::redo::diff::apply;
    use strata::internals::redo::record::{Record, RecordRef};
    use strata::internals::wal::frame::{unframe, Framed};

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
            if let Some(t) = heap::tuple::Tuple::decode(t) {
                let _ = (t.overflow(), t.tail());
            }
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
/// decision log, whose last append may be torn — whatever it holds, with or
/// without messages — unless something sent after it went out) and participants losing their in-flight messages. Then the
/// network heals; every transaction must end with one outcome at every
/// participant, the logged one.
pub fn coordinator(data: &[u8]) {
    use strata::internals::twopc::{frame, parse, Input, Machine, Message, Entry};
    use strata::clock::Timestamp;

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
    // The decision log's bytes; where its last append starts; the number
    // of the `Ready` that made it; whether it is durable. A driver persists
    // a `Ready`'s records before it sends that `Ready`'s messages, and
    // handles each `Ready` after the one before, so the last append is
    // durable once a message of its `Ready` or of a later one has gone out
    // (delivered, duplicated or lost). Until then a crash may tear it,
    // whether or not it carried messages.
    #[derive(Default)]
    struct Disk {
        log: Vec<u8>,
        last_frame: usize,
        last_ready: u64,
        durable: bool,
        readies: u64,
    }
    fn pump(m: &mut Machine, net: &mut Vec<(u32, Message, u64)>, d: &mut Disk) {
        let r = m.ready();
        d.readies += 1;
        if !r.persist.is_empty() {
            d.last_frame = d.log.len();
            d.log.extend(frame(&r.persist));
            d.last_ready = d.readies;
            d.durable = false;
        }
        net.extend(r.send.into_iter().map(|(to, msg)| (to, msg, d.readies)));
    }
    let mut disk = Disk {
        durable: true,
        ..Disk::default()
    };
    let mut net: Vec<(u32, Message, u64)> = Vec::new();
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
                        ts: Timestamp::from_nanos(1_000 + u64::from(to)),
                    });
                }
            }
            Message::Commit(g, ts) => {
                assert!(
                    ts >= Timestamp::from_nanos(1_000 + u64::from(n - 1)),
                    "{g} committed at {ts}, below a vote's timestamp"
                );
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
                let (to, msg, ready) = if op % 8 == 3 {
                    net[i].clone() // duplicated
                } else {
                    net.swap_remove(i)
                };
                if ready >= disk.last_ready {
                    disk.durable = true;
                }
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
                // The coordinator crashes, possibly tearing its last
                // append if that is not known to be durable.
                if !disk.durable && next().unwrap_or(0) % 2 == 0 {
                    let span = disk.log.len() - disk.last_frame;
                    let cut = disk.last_frame + next().unwrap_or(0) as usize % span;
                    disk.log.truncate(cut);
                }
                let (records, end) = parse(path, &disk.log).expect("the decision log parses");
                disk.log.truncate(end as usize);
                net.clear();
                m = Machine::restore(&records, now, timeout, resend);
                disk.durable = true;
            }
            6 => {
                // A participant restarts: its in-flight messages are lost,
                // then it reports what it holds in doubt.
                let p = u32::from(next().unwrap_or(0)) % n;
                net.retain(|(to, _, _)| *to != p);
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
        if let Some((to, msg, _)) = net.pop() {
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
            .any(|r| matches!(r, Entry::Committed { gid, .. } if *gid == g));
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

//! Crash-point testing: run a workload on `FaultFs`, stop the machine at
//! every mutating I/O operation, and check what recovery makes of several
//! power-loss images of each point (some of them crashed again during
//! recovery): every acknowledged commit present, no partial transaction,
//! integrity check clean. One workload creates, drops and renames tables
//! inside its transactions: acknowledged creations are there, others not,
//! and after a vacuum no page is left that nothing refers to.
//!
//! `STRATA_CRASH_POINTS=all` visits every operation of every workload;
//! by default every workload is sampled (about 40 points each; the
//! concurrent one 30), and `.ci/run` runs the full sweep.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use strata::fault::FaultFs;
use strata::{Db, Options};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

const DIR: &str = "/db";
const IMAGES: u64 = 3;

fn opts() -> Options {
    Options::default()
        .background(false)
        .cache_size(0)
        .wal_segment_size(64 << 10)
        .lock_timeout(Some(std::time::Duration::from_secs(1)))
}

#[derive(Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Del(Vec<u8>),
    /// A put into another table (creating it if need be).
    PutIn(&'static str, Vec<u8>, Vec<u8>),
    DropTable(&'static str),
    RenameTable(&'static str, &'static str),
}

/// Where the model keeps the rows of table `name` (other than "t").
fn side_key(name: &str, k: &[u8]) -> Vec<u8> {
    [format!("@{name}/").as_bytes(), k].concat()
}

#[derive(Clone)]
enum Step {
    Txn(Vec<Op>),
    Rollback(Vec<Op>),
    Checkpoint,
    Vacuum,
    /// Two-phase commit: prepare under a gid (`c…` will commit, `r…` roll back).
    Prepare(&'static str, Vec<Op>),
    /// The decision for a prepared gid.
    Decide(&'static str),
    /// Close and reopen the database.
    Reopen,
}

fn commits(gid: &str) -> bool {
    gid.starts_with('c')
}

fn put(k: impl Into<Vec<u8>>, v: impl Into<Vec<u8>>) -> Op {
    Op::Put(k.into(), v.into())
}

/// Model states: `states[i]` is the table after `i` committed transactions.
fn states(steps: &[Step]) -> Vec<Model> {
    let mut m = Model::new();
    let mut out = vec![m.clone()];
    let mut prepared = std::collections::HashMap::new();
    for step in steps {
        let ops = match step {
            Step::Txn(ops) => Some(ops),
            Step::Prepare(gid, ops) => {
                prepared.insert(*gid, ops);
                None
            }
            Step::Decide(gid) if commits(gid) => prepared.get(gid).copied(),
            _ => None,
        };
        if let Some(ops) = ops {
            model_apply(&mut m, ops);
            let n = out.len() as u64;
            m.insert(b"~counter".to_vec(), n.to_le_bytes().to_vec());
            out.push(m.clone());
        }
    }
    out
}

/// Applies a transaction's ops to the model.
fn model_apply(m: &mut Model, ops: &[Op]) {
    for op in ops {
        match op {
            Op::Put(k, v) => {
                m.insert(k.clone(), v.clone());
            }
            Op::Del(k) => {
                m.remove(k);
            }
            Op::PutIn(name, k, v) => {
                m.insert(side_key(name, k), v.clone());
            }
            Op::DropTable(name) => {
                m.retain(|k, _| !k.starts_with(&side_key(name, b"")));
            }
            Op::RenameTable(from, to) => {
                let rows: Vec<_> = m
                    .iter()
                    .filter_map(|(k, v)| {
                        let rest = k.strip_prefix(&side_key(from, b"")[..])?;
                        Some((side_key(to, rest), v.clone()))
                    })
                    .collect();
                m.retain(|k, _| !k.starts_with(&side_key(from, b"")));
                m.extend(rows);
            }
        }
    }
}

fn apply(
    db: &Db,
    tx: &mut strata::Transaction,
    t: &strata::Table,
    ops: &[Op],
) -> strata::Result<()> {
    for op in ops {
        match op {
            Op::Put(k, v) => tx.put(t, k, v)?,
            Op::Del(k) => {
                tx.delete(t, k)?;
            }
            Op::PutIn(name, k, v) => tx.put(&db.table(name)?, k, v)?,
            Op::DropTable(name) => {
                tx.drop_table(&db.table(name)?)?;
            }
            Op::RenameTable(from, to) => tx.rename_table(&db.table(from)?, to)?,
        }
    }
    Ok(())
}

fn done() -> strata::CommitInfo {
    strata::CommitInfo {
        xid: strata::Xid::NONE,
        lsn: strata::Lsn(0),
        ts: strata::clock::Timestamp::ZERO,
    }
}

/// Acknowledged commits, and the gid whose prepare was acknowledged but
/// not its decision (with whether the decision was attempted).
type Acked = (u64, Option<(&'static str, bool)>);

/// Runs the workload until the first error.
fn run(fs: &FaultFs, steps: &[Step]) -> Acked {
    let open = || Db::open_vfs(Arc::new(fs.clone()), Path::new(DIR), opts());
    let Ok(mut db) = open() else {
        return (0, None);
    };
    let Ok(mut t) = db.table("t") else {
        return (0, None);
    };
    let mut acked = 0u64;
    let mut pending = None;
    for step in steps {
        if let (Step::Decide(gid), Some((p, _))) = (step, pending) {
            pending = Some((p, p == *gid));
        }
        let r = match step {
            Step::Txn(ops) => db.begin().and_then(|mut tx| {
                apply(&db, &mut tx, &t, ops)?;
                tx.put(&t, b"~counter", (acked + 1).to_le_bytes())?;
                tx.commit()
            }),
            Step::Rollback(ops) => db.begin().and_then(|mut tx| {
                apply(&db, &mut tx, &t, ops)?;
                tx.rollback()?;
                Ok(done())
            }),
            Step::Checkpoint => db.checkpoint().map(|_| done()),
            Step::Vacuum => db.vacuum().map(|_| done()),
            Step::Prepare(gid, ops) => db.begin().and_then(|mut tx| {
                apply(&db, &mut tx, &t, ops)?;
                tx.put(&t, b"~counter", (acked + 1).to_le_bytes())?;
                tx.prepare(gid).map(|_| done())
            }),
            Step::Decide(gid) if commits(gid) => db.commit_prepared(gid).map(|_| done()),
            Step::Decide(gid) => db.rollback_prepared(gid).map(|_| done()),
            Step::Reopen => {
                drop(db);
                match open().and_then(|d| Ok((d.table("t")?, d))) {
                    Ok((table, d)) => {
                        (t, db) = (table, d);
                        continue;
                    }
                    Err(_) => return (acked, pending),
                }
            }
        };
        match (r, step) {
            (Ok(_), Step::Txn(_)) => acked += 1,
            (Ok(_), Step::Prepare(gid, _)) => pending = Some((*gid, false)),
            (Ok(_), Step::Decide(gid)) => {
                pending = None;
                acked += u64::from(commits(gid));
            }
            (Ok(_), _) => {}
            (Err(_), _) => break,
        }
    }
    (acked, pending)
}

/// Opens an image and checks it against the model. A transaction left in
/// doubt must be the one whose prepare was acknowledged (if its decision
/// was not); it is decided here and must then be whole.
/// The rows of every other table are checked too (`side_key`); with
/// `vacuum`, a vacuum pass runs before the integrity check.
fn verify(img: &FaultFs, states: &[Model], acked: Acked, what: &str, vacuum: bool) {
    let db = match Db::open_vfs(Arc::new(img.clone()), Path::new(DIR), opts()) {
        Ok(db) => db,
        Err(e) => panic!("{what}: recovery failed: {e}"),
    };
    let in_doubt: Vec<String> = db
        .prepared_transactions()
        .unwrap_or_else(|e| panic!("{what}: prepared: {e}"))
        .into_iter()
        .map(|p| p.gid)
        .collect();
    assert!(in_doubt.len() <= 1, "{what}: in doubt: {in_doubt:?}");
    let (mut acked, pending) = acked;
    if let Some((g, deciding)) = pending {
        if !in_doubt.iter().any(|d| d == g) {
            assert!(deciding, "{what}: acknowledged prepare {g} lost");
            // Decided durably before the crash: a commit must show.
            acked += u64::from(commits(g));
        }
    }
    for gid in &in_doubt {
        if commits(gid) {
            db.commit_prepared(gid)
                .unwrap_or_else(|e| panic!("{what}: commit {gid}: {e}"));
        } else {
            db.rollback_prepared(gid)
                .unwrap_or_else(|e| panic!("{what}: rollback {gid}: {e}"));
        }
    }
    let t = db
        .table("t")
        .unwrap_or_else(|e| panic!("{what}: table: {e}"));
    let tx = db.begin().expect("begin");
    let mut got: Model = tx
        .scan(&t, ..)
        .unwrap_or_else(|e| panic!("{what}: scan: {e}"))
        .map(|r| r.unwrap_or_else(|e| panic!("{what}: row: {e}")))
        .collect();
    let names = db
        .table_names()
        .unwrap_or_else(|e| panic!("{what}: names: {e}"));
    for name in names.iter().filter(|n| *n != "t") {
        let side = db.table(name).expect("table");
        for row in tx.scan(&side, ..).expect("scan") {
            let (k, v) = row.unwrap_or_else(|e| panic!("{what}: row of {name}: {e}"));
            got.insert(side_key(name, &k), v);
        }
    }
    let c = got.get(&b"~counter"[..]).map_or(0, |v| {
        u64::from_le_bytes(v[..8].try_into().expect("8 bytes"))
    });
    assert!(
        c >= acked,
        "{what}: acknowledged commit {acked} lost (found {c})"
    );
    assert!(
        (c as usize) < states.len(),
        "{what}: counter {c} beyond the workload"
    );
    assert!(
        got == states[c as usize],
        "{what}: state differs from the model after {c} commits"
    );
    drop(tx);
    if vacuum {
        db.vacuum()
            .unwrap_or_else(|e| panic!("{what}: vacuum: {e}"));
    }
    let report = db
        .check_integrity()
        .unwrap_or_else(|e| panic!("{what}: integrity: {e}"));
    assert_eq!(report.leaked_pages, 0, "{what}: pages nothing refers to");
}

fn explore(name: &str, steps: &[Step]) -> FaultFs {
    let model = states(steps);
    let full = FaultFs::new();
    let acked = run(&full, steps);
    // Table changes leave pages that only vacuum frees.
    let tables = steps.iter().any(|s| match s {
        Step::Txn(ops) | Step::Rollback(ops) => {
            ops.iter().any(|o| !matches!(o, Op::Put(..) | Op::Del(..)))
        }
        _ => false,
    });
    assert_eq!(
        acked.0 as usize,
        model.len() - 1,
        "{name}: the workload fails without faults"
    );
    let total = full.ops();
    verify(
        &full.process_crash_image(),
        &model,
        acked,
        &format!("{name}: clean run"),
        tables,
    );
    let every = std::env::var("STRATA_CRASH_POINTS").is_ok_and(|v| v == "all");
    let stride = if every { 1 } else { (total / 40).max(1) };
    let (mut points, mut images) = (0, 0);
    let mut n = 1;
    while n <= total {
        let fs = FaultFs::new();
        fs.crash_at(n);
        let acked = run(&fs, steps);
        for seed in 0..IMAGES {
            let what = format!("{name}: crash at op {n}/{total}, image {seed}");
            let mut img = fs.power_loss_image(n * 31 + seed);
            if seed == IMAGES - 1 {
                // Crash again in the middle of recovery, then recover for real.
                let probe = img.power_loss_image(0);
                let before = probe.ops();
                drop(Db::open_vfs(
                    Arc::new(probe.clone()),
                    Path::new(DIR),
                    opts(),
                ));
                let recovery_ops = probe.ops() - before;
                img.crash_at(img.ops() + 1 + (n * 7919) % recovery_ops.max(1));
                drop(Db::open_vfs(Arc::new(img.clone()), Path::new(DIR), opts()));
                img = img.power_loss_image(n + seed);
            }
            verify(&img, &model, acked, &what, tables);
            images += 1;
        }
        points += 1;
        n += stride;
    }
    eprintln!("{name}: {total} operations, {points} crash points, {images} images recovered");
    full
}

#[test]
fn single_row_transactions() {
    let steps: Vec<Step> = (0..30u32)
        .map(|i| Step::Txn(vec![put(format!("k{}", i % 7), format!("v{i}"))]))
        .collect();
    explore("single-row", &steps);
}

#[test]
fn tables_are_created_dropped_and_renamed_in_transactions() {
    let row = |t: &'static str, k: &str, v: &str| Op::PutIn(t, k.into(), v.into());
    let steps = vec![
        Step::Txn(vec![row("a", "k1", "1")]),
        Step::Txn(vec![row("b", "k", "1"), row("a", "k2", "2")]),
        Step::Rollback(vec![row("c", "k", "never")]),
        Step::Txn(vec![Op::RenameTable("a", "c")]),
        Step::Checkpoint,
        Step::Txn(vec![Op::DropTable("b"), put("x", "y")]),
        Step::Rollback(vec![Op::DropTable("c")]),
        Step::Vacuum,
        Step::Txn(vec![row("b", "k", "again")]),
        Step::Txn(vec![Op::RenameTable("c", "a"), Op::DropTable("b")]),
        Step::Vacuum,
        Step::Reopen,
        Step::Txn(
            (0..30u32)
                .map(|i| Op::PutIn("d", format!("k{i:02}").into(), vec![4; 400]))
                .collect(),
        ),
        Step::Rollback(vec![Op::PutIn("e", b"big".to_vec(), vec![5; 20_000])]),
        Step::Txn(vec![Op::DropTable("d")]),
        Step::Vacuum,
    ];
    explore("tables", &steps);
}

#[test]
fn large_transactions_split_pages() {
    let mut steps = Vec::new();
    for round in 0..3u32 {
        let ops = (0..400u32)
            .map(|i| {
                put(
                    format!("key{:05}", (i * 7919 + round) % 1000),
                    vec![round as u8; 150],
                )
            })
            .chain([put(format!("big{round}"), vec![9u8; 30_000])])
            .collect();
        steps.push(Step::Txn(ops));
        if round == 1 {
            steps.push(Step::Checkpoint);
        }
    }
    explore("large", &steps);
}

#[test]
fn updates_deletes_and_vacuum() {
    let mut steps = vec![Step::Txn(
        (0..120u32)
            .map(|i| put(format!("k{i:03}"), vec![1; 60]))
            .collect(),
    )];
    for r in 0..6u32 {
        let mut ops: Vec<Op> = (0..20u32)
            .map(|i| put(format!("k{:03}", (i * 6 + r) % 120), vec![r as u8; 80]))
            .collect();
        ops.extend(
            (0..10u32).map(|i| Op::Del(format!("k{:03}", (i * 11 + r * 3) % 120).into_bytes())),
        );
        steps.push(Step::Txn(ops.clone()));
        steps.push(Step::Rollback(ops));
        if r % 2 == 1 {
            steps.push(Step::Vacuum);
        }
    }
    // A value past a page, replaced and then deleted: vacuum frees its
    // overflow pages (a page it forgets shows as leaked).
    steps.push(Step::Txn(vec![put("big", vec![7; 20_000])]));
    steps.push(Step::Txn(vec![put("big", vec![8; 30])]));
    steps.push(Step::Txn(vec![Op::Del(b"big".to_vec())]));
    steps.push(Step::Vacuum);
    explore("update-delete-vacuum", &steps);
}

#[test]
fn the_data_file_is_cut_and_grows_again() {
    let big = |i: u32, b: u8| put(format!("big{i}"), vec![b; 20_000]);
    let steps = vec![
        Step::Txn(
            (0..40u32)
                .map(|i| put(format!("k{i:03}"), vec![1; 100]))
                .collect(),
        ),
        Step::Txn((0..6u32).map(|i| big(i, 2)).collect()),
        Step::Checkpoint,
        Step::Txn(
            (0..6u32)
                .map(|i| Op::Del(format!("big{i}").into_bytes()))
                .collect(),
        ),
        Step::Vacuum,
        Step::Checkpoint,
        Step::Txn((0..3u32).map(|i| big(i, 3)).collect()),
        Step::Checkpoint,
    ];
    let fs = explore("cut-and-grow", &steps);
    let len = |fs: &FaultFs| {
        fs.read_file(&Path::new(DIR).join(strata::DATA_FILE))
            .map_or(0, |d| d.len())
    };
    // At its peak the file held 26 pages; uncut, it would end there.
    assert!(
        len(&fs) <= 20 * 8192,
        "the workload never cut the data file ({} bytes)",
        len(&fs)
    );
}

#[test]
fn compaction_moves_rows_nodes_and_commit_log_pages() {
    let key = |i: u32| format!("{:08x}", i.wrapping_mul(2_654_435_761));
    let mut steps = vec![Step::Txn(
        (0..900u32).map(|i| put(key(i), vec![1; 150])).collect(),
    )];
    steps.push(Step::Txn(
        (0..900u32).map(|i| put(key(i), vec![2; 150])).collect(),
    ));
    steps.push(Step::Vacuum);
    steps.push(Step::Txn(
        (0..900u32)
            .step_by(2)
            .map(|i| Op::Del(key(i).into_bytes()))
            .collect(),
    ));
    steps.push(Step::Vacuum);
    steps.push(Step::Checkpoint);
    steps.push(Step::Txn(
        (0..50u32).map(|i| put(key(i), vec![3; 150])).collect(),
    ));
    let fs = explore("compaction", &steps);
    let len = fs
        .read_file(&Path::new(DIR).join(strata::DATA_FILE))
        .map_or(0, |d| d.len());
    // Uncompacted, the file ends at 54 pages.
    assert!(
        len <= 40 * 8192,
        "the workload never compacted ({len} bytes)"
    );
}

#[test]
fn compaction_moves_large_values() {
    // Three overflow pages a value; a quarter of the values stay, spread
    // over the file, and compaction moves their pages down.
    let big = |i: u32| put(format!("big{i:02}"), vec![i as u8; 20_000]);
    let steps = vec![
        Step::Txn((0..40u32).map(big).collect()),
        Step::Checkpoint,
        Step::Txn(
            (0..40u32)
                .filter(|i| i % 4 != 0)
                .map(|i| Op::Del(format!("big{i:02}").into_bytes()))
                .collect(),
        ),
        Step::Vacuum,
        Step::Checkpoint,
        Step::Txn(vec![put("after", vec![5; 100]), big(1)]),
    ];
    let fs = explore("compaction-overflow", &steps);
    let len = fs
        .read_file(&Path::new(DIR).join(strata::DATA_FILE))
        .map_or(0, |d| d.len());
    // Uncompacted, the file ends past 120 pages; the 11 values left need 33.
    assert!(
        len <= 60 * 8192,
        "the workload never moved an overflow page ({len} bytes)"
    );
}

#[test]
fn compaction_relinks_a_chain_from_a_page_that_stays() {
    // A first pass moves the first pages of some chains below its limit;
    // a second, lower limit then moves the rest, relinking them from a
    // page that stays where it is (chains are allocated backward, so a
    // single pass only ever moves a chain's first pages).
    let big = |i: u32| put(format!("big{i:02}"), vec![i as u8; 20_000]);
    let del = |v: &[u32]| {
        Step::Txn(
            v.iter()
                .map(|i| Op::Del(format!("big{i:02}").into_bytes()))
                .collect(),
        )
    };
    let steps = vec![
        Step::Txn((0..40u32).map(big).collect()),
        del(&[
            4, 7, 9, 10, 11, 12, 14, 15, 17, 19, 21, 22, 23, 24, 25, 26, 27, 30, 32, 35, 36, 37,
        ]),
        Step::Vacuum,
        del(&[0, 8, 13, 16, 18, 20, 31, 34, 38, 39]),
        Step::Vacuum,
        Step::Checkpoint,
        Step::Txn(vec![put("after", vec![5; 100])]),
    ];
    explore("relink-in-place", &steps);
}

#[test]
fn checkpoints_recycle_the_log() {
    let mut steps = Vec::new();
    for r in 0..8u32 {
        steps.push(Step::Txn(
            (0..60u32)
                .map(|i| put(format!("k{:03}", (i + r * 13) % 200), vec![r as u8; 300]))
                .collect(),
        ));
        if r % 3 == 2 {
            steps.push(Step::Checkpoint);
        }
    }
    let fs = explore("checkpoint-recycle", &steps);
    let first = Path::new(DIR).join("wal").join(format!("{:016x}.wal", 0));
    let segments = fs
        .files()
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .count();
    assert!(
        !fs.files().contains(&first) && segments >= 1,
        "the workload never recycled a log segment"
    );
}

/// Runs the workload through errors: transactions whose commit fails are
/// left out of the model; after the database reports `Poisoned` or
/// `CommitOutcomeUnknown`, nothing more is attempted. Returns the model of
/// what committed, the in-doubt transaction (its commit reported its
/// outcome unknown), and whether the database was poisoned.
fn run_through_faults(fs: &FaultFs, steps: &[Step], fault_at: u64) -> (Model, Option<Model>, bool) {
    let mut model = Model::new();
    let Ok(db) = Db::open_vfs(Arc::new(fs.clone()), Path::new(DIR), opts()) else {
        return (model, None, false);
    };
    let Ok(t) = db.table("t") else {
        return (model, None, false);
    };
    let mut n = 0u64;
    for step in steps {
        let r = match step {
            Step::Txn(ops) => {
                n += 1;
                let mut after = model.clone();
                model_apply(&mut after, ops);
                after.insert(b"~counter".to_vec(), n.to_le_bytes().to_vec());
                let r = db.begin().and_then(|mut tx| {
                    apply(&db, &mut tx, &t, ops)?;
                    tx.put(&t, b"~counter", n.to_le_bytes())?;
                    tx.commit()
                });
                match r {
                    Ok(_) => {
                        model = after;
                        Ok(())
                    }
                    // Its record may or may not have reached the log.
                    Err(strata::Error::CommitOutcomeUnknown { .. }) => {
                        return (model, Some(after), true)
                    }
                    // Poisoned before its record was appended: not committed.
                    Err(strata::Error::Poisoned { .. }) => return (model, None, true),
                    Err(e) => Err(e),
                }
            }
            Step::Rollback(ops) => db.begin().and_then(|mut tx| {
                apply(&db, &mut tx, &t, ops)?;
                tx.rollback()
            }),
            Step::Checkpoint => db.checkpoint(),
            Step::Vacuum => db.vacuum().map(drop),
            // The fault-injection workloads have no two-phase steps.
            Step::Prepare(..) | Step::Decide(_) | Step::Reopen => Ok(()),
        };
        if let Err(e) = r {
            if matches!(e, strata::Error::Poisoned { .. }) || db.poison_cause().is_some() {
                return (model, None, true);
            }
            // Not on the durability path: the engine must stay usable.
        }
    }
    // The counted run includes closing the database: a fault numbered past
    // the workload's operations fires in the checks below (a write there
    // fails and poisons, as it should), not in the workload. Only the
    // restart checks apply then.
    if fs.ops() < fault_at {
        return (model, None, false);
    }
    // Still healthy: what it shows must be exactly what committed.
    let tx = db.begin().expect("healthy database begins");
    let live: Model = tx
        .scan(&t, ..)
        .expect("scan")
        .map(|r| r.expect("row"))
        .collect();
    assert!(
        live == model,
        "the running database shows other data than what committed"
    );
    drop(tx);
    db.check_integrity()
        .expect("running database stays consistent");
    // No failed transaction left a row lock behind: every key can be
    // written again (then rolled back) within the lock timeout.
    let mut probe = db.begin().expect("begin");
    for key in live.keys() {
        probe
            .put(&t, key, b"probe")
            .unwrap_or_else(|e| panic!("row lock leaked by a failed transaction: {e}"));
    }
    probe.rollback().expect("rollback");
    (model, None, false)
}

fn faults_everywhere(name: &str, steps: &[Step], kind: strata::fault::FaultKind, persistent: bool) {
    let full = FaultFs::new();
    assert_eq!(
        run(&full, steps).0 as usize,
        states(steps).len() - 1,
        "{name}: the workload fails without faults"
    );
    let total = full.ops();
    let stride = if std::env::var("STRATA_CRASH_POINTS").is_ok_and(|v| v == "all") {
        1
    } else {
        (total / 40).max(1)
    };
    let mut poisoned_count = 0;
    let mut n = 1;
    while n <= total {
        let fs = FaultFs::new();
        fs.fail_at(n, kind, persistent);
        let (model, in_doubt, poisoned) = run_through_faults(&fs, steps, n);
        poisoned_count += poisoned as u32;
        // Whatever happened, a restart recovers what committed.
        fs.heal();
        for img in [fs.process_crash_image(), fs.power_loss_image(n)] {
            let db = Db::open_vfs(Arc::new(img), Path::new(DIR), opts())
                .unwrap_or_else(|e| panic!("{name}: fault at op {n}: reopen failed: {e}"));
            let t = db.table("t").expect("table");
            let tx = db.begin().expect("begin");
            let got: Model = tx
                .scan(&t, ..)
                .expect("scan")
                .map(|r| r.expect("row"))
                .collect();
            let ok = got == model || in_doubt.as_ref() == Some(&got);
            assert!(ok, "{name}: fault at op {n}: recovered data matches neither the committed state nor the in-doubt one");
            drop(tx);
            let report = db
                .check_integrity()
                .unwrap_or_else(|e| panic!("{name}: fault at op {n}: integrity: {e}"));
            assert_eq!(
                report.leaked_pages, 0,
                "{name}: fault at op {n}: leaked pages"
            );
        }
        n += stride;
    }
    eprintln!(
        "{name}: {kind:?} (persistent: {persistent}) injected at {} of {total} operations, {poisoned_count} poisoned the database",
        total.div_ceil(stride)
    );
}

#[test]
fn eio_at_every_operation_single_row() {
    let steps: Vec<Step> = (0..20u32)
        .map(|i| Step::Txn(vec![put(format!("k{}", i % 5), format!("v{i}"))]))
        .collect();
    faults_everywhere("single-row", &steps, strata::fault::FaultKind::Io, false);
}

#[test]
fn enospc_from_every_operation_on() {
    let steps: Vec<Step> = (0..20u32)
        .map(|i| Step::Txn(vec![put(format!("k{}", i % 5), vec![i as u8; 700])]))
        .collect();
    faults_everywhere(
        "single-row",
        &steps,
        strata::fault::FaultKind::NoSpace,
        true,
    );
}

#[test]
fn eio_at_every_operation_with_checkpoints_and_vacuum() {
    let mut steps = vec![Step::Txn(
        (0..80u32)
            .map(|i| put(format!("k{i:03}"), vec![1; 100]))
            .collect(),
    )];
    for r in 0..4u32 {
        steps.push(Step::Txn(
            (0..15u32)
                .map(|i| put(format!("k{:03}", (i * 5 + r) % 80), vec![r as u8; 120]))
                .collect(),
        ));
        steps.push(Step::Txn(vec![Op::Del(
            format!("k{:03}", r * 9).into_bytes(),
        )]));
        steps.push(if r % 2 == 0 {
            Step::Checkpoint
        } else {
            Step::Vacuum
        });
    }
    faults_everywhere(
        "checkpoint-vacuum",
        &steps,
        strata::fault::FaultKind::Io,
        false,
    );
}

/// Thread `w`'s transaction `i` writes key `w/(i % 4)` and its counter.
fn concurrent_run(fs: &FaultFs, threads: u64, txns: u64) -> Vec<u64> {
    let Ok(db) = Db::open_vfs(Arc::new(fs.clone()), Path::new(DIR), opts()) else {
        return vec![0; threads as usize];
    };
    let Ok(t) = db.table("t") else {
        return vec![0; threads as usize];
    };
    // Made before the writers start: first writers of a new table would
    // meet as creators of one catalog row, and all but one fail.
    let created = db.begin().and_then(|mut tx| {
        tx.create_table(&t)?;
        tx.commit()
    });
    if created.is_err() {
        return vec![0; threads as usize];
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|w| {
                let (db, t) = (db.clone(), t.clone());
                s.spawn(move || {
                    let mut acked = 0;
                    for i in 1..=txns {
                        let r = db.begin().and_then(|mut tx| {
                            tx.put(&t, format!("{w}/{}", i % 4), i.to_le_bytes())?;
                            tx.put(&t, format!("{w}/counter"), i.to_le_bytes())?;
                            tx.commit()
                        });
                        match r {
                            Ok(_) => acked = i,
                            Err(_) => break,
                        }
                    }
                    acked
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer"))
            .collect()
    })
}

#[test]
fn concurrent_writers() {
    let (threads, txns) = (4u64, 15u64);
    let full = FaultFs::new();
    assert_eq!(
        concurrent_run(&full, threads, txns),
        vec![txns; threads as usize]
    );
    let total = full.ops();
    let mut points = 0;
    let every = std::env::var("STRATA_CRASH_POINTS").is_ok_and(|v| v == "all");
    let stride = if every {
        1
    } else {
        (total as usize / 30).max(1)
    };
    for n in (1..=total).step_by(stride) {
        let fs = FaultFs::new();
        fs.crash_at(n);
        let acked = concurrent_run(&fs, threads, txns);
        for seed in 0..2 {
            let img = fs.power_loss_image(n * 3 + seed);
            let db = Db::open_vfs(Arc::new(img), Path::new(DIR), opts())
                .unwrap_or_else(|e| panic!("crash at op {n}: recovery failed: {e}"));
            let t = db.table("t").expect("table");
            let tx = db.begin().expect("begin");
            let num = |k: String| {
                tx.get(&t, k)
                    .expect("get")
                    .map_or(0, |v| u64::from_le_bytes(v[..8].try_into().expect("8")))
            };
            for w in 0..threads {
                let c = num(format!("{w}/counter"));
                assert!(
                    c >= acked[w as usize],
                    "crash at op {n}: thread {w} acknowledged {} but recovered {c}",
                    acked[w as usize]
                );
                for k in 0..4 {
                    // The newest transaction of this thread that wrote key k.
                    let want = (1..=c).rev().find(|i| i % 4 == k).unwrap_or(0);
                    assert_eq!(
                        num(format!("{w}/{k}")),
                        want,
                        "crash at op {n}: thread {w} key {k} torn from its transaction"
                    );
                }
            }
            drop(tx);
            let report = db
                .check_integrity()
                .unwrap_or_else(|e| panic!("crash at op {n}: integrity: {e}"));
            assert_eq!(report.leaked_pages, 0, "crash at op {n}: leaked pages");
        }
        points += 1;
    }
    eprintln!(
        "concurrent writers: {total} operations, {points} crash points, {} images",
        points * 2
    );
}

/// Two-phase commit on one participant: prepares, decisions both ways, a
/// restart and a checkpoint while a transaction is in doubt. (Every
/// transaction writes `~counter`, so nothing else commits while one is in
/// doubt: it holds that row's lock.)
#[test]
fn prepared_transactions() {
    let ops = |r: u32| -> Vec<Op> {
        (0..15u32)
            .map(|i| put(format!("k{:02}", (i * 7 + r) % 40), vec![r as u8; 90]))
            .collect()
    };
    let steps = vec![
        Step::Txn(ops(0)),
        Step::Prepare("c1", ops(1)),
        Step::Reopen,
        Step::Decide("c1"),
        Step::Prepare("r2", ops(2)),
        Step::Decide("r2"),
        Step::Prepare("c3", ops(3)),
        Step::Checkpoint,
        Step::Decide("c3"),
        Step::Vacuum,
    ];
    explore("two-phase", &steps);
}

/// Commits one row to the database in `fs` and reads it back after a
/// reopen.
fn commit_and_read_back(fs: &FaultFs, what: &str) {
    let open = || {
        Db::open_vfs(Arc::new(fs.clone()), Path::new(DIR), opts())
            .unwrap_or_else(|e| panic!("{what}: open failed: {e}"))
    };
    let db = open();
    let t = db.table("t").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "k", "v").expect("put");
    tx.commit().expect("commit");
    drop(db);
    let db = open();
    let t = db.table("t").expect("table");
    let got = db.begin().expect("begin").get(&t, "k").expect("get");
    assert_eq!(got.as_deref(), Some(&b"v"[..]), "{what}: commit lost");
}

/// Guards against creation leaving the new directory's entry in its parent unsynced: a power loss lost the directory and its commits.
#[test]
fn a_new_database_directory_survives_power_loss() {
    let fs = FaultFs::new();
    let dir = Path::new("/data/db");
    let db = Db::open_vfs(Arc::new(fs.clone()), dir, opts()).expect("create");
    let t = db.table("t").expect("table");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "k", "v").expect("put");
    tx.commit().expect("commit");
    for seed in 0..16 {
        let img = fs.power_loss_image(seed);
        let db = Db::open_vfs(Arc::new(img), dir, opts())
            .unwrap_or_else(|e| panic!("image {seed}: reopen failed: {e}"));
        let t = db.table("t").expect("table");
        let got = db.begin().expect("begin").get(&t, "k").expect("get");
        assert_eq!(
            got.as_deref(),
            Some(&b"v"[..]),
            "image {seed}: an acknowledged commit was lost with its directory"
        );
    }
}

/// Guards against a crash during creation leaving files that the next open refuses (a data file or log without CONTROL) or cannot use.
#[test]
fn a_crash_at_every_point_of_creation_leaves_a_directory_that_opens() {
    let full = FaultFs::new();
    let db = Db::open_vfs(Arc::new(full.clone()), Path::new(DIR), opts()).expect("create");
    let total = full.ops();
    drop(db);
    for n in 1..=total {
        let fs = FaultFs::new();
        fs.crash_at(n);
        assert!(
            Db::open_vfs(Arc::new(fs.clone()), Path::new(DIR), opts()).is_err(),
            "op {n} of {total} is part of the creation"
        );
        commit_and_read_back(
            &fs.process_crash_image(),
            &format!("crash at op {n}/{total}, process crash"),
        );
        for seed in 0..IMAGES {
            let img = fs.power_loss_image(n * 31 + seed);
            commit_and_read_back(&img, &format!("crash at op {n}/{total}, image {seed}"));
        }
    }
    eprintln!("creation: {total} operations, each crashed at");
}

/// Guards against a retried creation making durable only the parent of
/// the database's directory: the first open made `/a/b/db` and failed at
/// its first directory fsync, the retry found the directory and synced
/// `/a/b` alone, and a power loss took `/a` with every commit under it.
#[test]
fn a_retried_creation_makes_every_parent_durable() {
    let fs = FaultFs::new();
    let dir = Path::new("/a/b/db");
    // The three directories are operations 1 to 3; the first fsync is 4.
    fs.fail_at(4, strata::fault::FaultKind::Io, false);
    assert!(Db::open_vfs(Arc::new(fs.clone()), dir, opts()).is_err());
    {
        let db = Db::open_vfs(Arc::new(fs.clone()), dir, opts()).expect("open again");
        let t = db.table("t").expect("table");
        let mut tx = db.begin().expect("begin");
        tx.put(&t, b"k", b"v").expect("put");
        tx.commit().expect("commit");
    }
    let db = Db::open_vfs(Arc::new(fs.synced_image()), dir, opts()).expect("open the image");
    let t = db.table("t").expect("table");
    let tx = db.begin_read().expect("begin");
    assert_eq!(
        tx.get(&t, b"k").expect("get").as_deref(),
        Some(&b"v"[..]),
        "an acknowledged commit is gone after power loss"
    );
}

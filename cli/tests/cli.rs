//! The `strata` tool, run as a user runs it: each subcommand on a real
//! database, dump → load round trip, read-only commands that change no
//! file, verify on a damaged copy, and plain-words errors.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{copy_dir, rows, snapshot_files};
use strata::{Db, Options};

fn strata(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run strata");
    let input = stdin.unwrap_or_default().to_vec();
    let mut pipe = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer");
    out
}

fn ok(args: &[&str]) -> String {
    let out = strata(args, None);
    assert!(
        out.status.success(),
        "strata {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Two tables (binary keys, a value past a page, a deleted and an updated
/// row) and one prepared transaction, left as a crash image: the copy's
/// log still has to be replayed.
fn sample(tmp: &Path) -> std::path::PathBuf {
    let live = tmp.join("live");
    let db = Db::open_with(&live, Options::default().background(false)).expect("open");
    let users = db.table("users").expect("users");
    let blobs = db.table("blobs").expect("blobs");
    let mut tx = db.begin().expect("begin");
    for i in 0..300u32 {
        tx.put(&users, format!("user{i:04}"), format!("{{\"n\": {i}}}"))
            .expect("put");
    }
    tx.put(&users, b"bin\x00\xff\tkey\n", b"\\value\r")
        .expect("put");
    tx.put(&blobs, "big", vec![7u8; 20_000]).expect("put");
    tx.commit().expect("commit");
    let mut tx = db.begin().expect("begin");
    tx.delete(&users, "user0000").expect("delete");
    tx.put(&users, "user0001", "updated").expect("update");
    tx.commit().expect("commit");
    let mut tx = db.begin().expect("begin");
    tx.put(&blobs, "pending", "in doubt").expect("put");
    tx.prepare("transfer-7").expect("prepare");
    let copy = tmp.join("db");
    copy_dir(&live, &copy);
    copy
}

type Tables = Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>;

fn all_rows(dir: &Path) -> Tables {
    let db = Db::open_with(dir, Options::default().read_only(true)).expect("open");
    // Snapshot: a Serializable reader fails on tables a recovered prepared
    // transaction wrote.
    let tx = db.begin_with(strata::Isolation::Snapshot).expect("read");
    let mut out = Vec::new();
    for name in db.table_names().expect("names") {
        let t = db.table(&name).expect("table");
        out.push((name, rows(&tx, &t)));
    }
    out
}

#[test]
fn read_only_commands_report_and_change_no_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = sample(tmp.path());
    let before = snapshot_files(&db);

    let stat = ok(&["stat", s(&db)]);
    let version = format!(
        "format        version {}",
        strata::internals::store::meta::FORMAT_VERSION
    );
    assert!(stat.contains(&version), "{stat}");
    let users = stat
        .lines()
        .find(|l| l.starts_with("users"))
        .expect("users line");
    let figures: Vec<&str> = users.split_whitespace().collect();
    assert_eq!(
        &figures[1..4],
        ["300", "301", "302"],
        "rows, keys, versions: {users}"
    );
    assert!(
        stat.contains("1 in doubt") && stat.contains("transfer-7"),
        "{stat}"
    );

    let verify = ok(&["verify", s(&db)]);
    assert!(verify.starts_with("clean"), "{verify}");
    // 303: the prepared transaction's key is indexed (invisible until decided).
    assert!(verify.contains("2 tables, 303 keys"), "{verify}");

    assert_eq!(ok(&["get", s(&db), "users", "user0001"]), "updated\n");
    assert_eq!(
        ok(&["get", s(&db), "users", "bin\\x00\\xff\\tkey\\n"]),
        "\\\\value\\r\n"
    );
    let raw = strata(
        &["get", s(&db), "users", "bin\\x00\\xff\\tkey\\n", "--raw"],
        None,
    );
    assert_eq!(raw.stdout, b"\\value\r");
    let scan = ok(&[
        "scan",
        s(&db),
        "users",
        "--from",
        "user0001",
        "--to",
        "user0004",
    ]);
    assert_eq!(
        scan,
        "user0001\tupdated\nuser0002\t{\"n\": 2}\nuser0003\t{\"n\": 3}\n"
    );
    assert_eq!(
        ok(&["scan", s(&db), "users", "--limit", "2"])
            .lines()
            .count(),
        2
    );

    let wal = ok(&["waldump", s(&db)]);
    let lsns: Vec<u64> = wal
        .lines()
        .map(|l| {
            let f = l.split_whitespace().next().expect("field");
            f.strip_prefix("lsn=")
                .expect("lsn first")
                .parse()
                .expect("number")
        })
        .collect();
    assert!(
        lsns.len() > 10 && lsns.windows(2).all(|w| w[0] < w[1]),
        "{wal}"
    );
    assert!(
        wal.contains("kind=Commit") && wal.contains("op=Prepared"),
        "{wal}"
    );
    assert!(wal.contains("op=Put xid="), "{wal}");
    assert!(wal.contains(" table=users key=user0001 "), "{wal}");
    assert!(wal.contains("op=Delete") && wal.contains(" table=users key=user0000 "));
    assert!(
        wal.contains(" table=users key=bin\\x00\\xff\\tkey\\n "),
        "{wal}"
    );
    let mid = lsns[lsns.len() / 2];
    let tail = ok(&["waldump", s(&db), "--from", &mid.to_string()]);
    assert_eq!(tail.lines().count(), lsns.len() - lsns.len() / 2);

    let dump = ok(&["dump", s(&db)]);
    assert!(
        dump.starts_with("strata-dump 1\n") && dump.ends_with("end\t301\n"),
        "{dump}"
    );
    let one = ok(&["dump", s(&db), "--table", "blobs"]);
    assert!(one.contains("table\tblobs\n") && !one.contains("users") && one.ends_with("end\t1\n"));

    assert!(
        snapshot_files(&db) == before,
        "a read-only command changed the files"
    );
}

#[test]
fn dump_then_load_round_trips_exactly() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = sample(tmp.path());
    let dump = ok(&["dump", s(&db)]);
    let copy = tmp.path().join("loaded");
    let out = strata(&["load", s(&copy), "--batch", "7"], Some(dump.as_bytes()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("loaded 301 rows"));
    assert_eq!(all_rows(&copy), all_rows(&db));
    assert_eq!(ok(&["dump", s(&copy)]), dump);
}

// Guards against `load` losing a dumped table that has no rows (tables
// come into being with a write) and against readers creating the table
// they were asked about.
#[test]
fn load_creates_empty_tables_and_readers_create_none() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("db");
    let dump = b"strata-dump 1\ntable\tempty\ntable\tt\nrow\tk\tv\nend\t1\n";
    let out = strata(&["load", s(&dir)], Some(dump));
    assert!(out.status.success(), "{}", stderr(&out));
    let missing = strata(&["get", s(&dir), "nope", "k"], None);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("no table \"nope\""),
        "{}",
        stderr(&missing)
    );
    let db = Db::open(&dir).expect("open");
    assert_eq!(db.table_names().expect("names"), vec!["empty", "t"]);
}

#[test]
fn load_refuses_bad_and_cut_short_dumps() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("db");
    let bad = strata(
        &["load", s(&dir)],
        Some(b"strata-dump 1\ntable\tt\nrow\tk\n"),
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("dump line 3"), "{}", stderr(&bad));
    let cut = strata(
        &["load", s(&dir)],
        Some(b"strata-dump 1\ntable\tt\nrow\tk\tv\n"),
    );
    assert_eq!(cut.status.code(), Some(1));
    assert!(
        stderr(&cut).contains("without its `end` line"),
        "{}",
        stderr(&cut)
    );
    let foreign = strata(&["load", s(&dir)], Some(b"hello\n"));
    assert!(stderr(&foreign).contains("not a strata dump"));
}

#[test]
fn edits_checkpoint_and_vacuum() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("db");
    ok(&["put", "--create", s(&dir), "t", "a", "1"]);
    ok(&["put", s(&dir), "t", "a", "2"]);
    ok(&["put", s(&dir), "t", "b", "x y"]);
    assert_eq!(ok(&["get", s(&dir), "t", "a"]), "2\n");
    ok(&["delete", s(&dir), "t", "b"]);
    let gone = strata(&["delete", s(&dir), "t", "b"], None);
    assert_eq!(gone.status.code(), Some(1));
    assert!(stderr(&gone).contains("no key b"));
    ok(&["checkpoint", s(&dir)]);
    let vacuum = ok(&["vacuum", s(&dir)]);
    assert!(vacuum.contains("removed 2 versions and 1 keys"), "{vacuum}");
    assert_eq!(ok(&["scan", s(&dir), "t"]), "a\t2\n");
}

#[test]
fn shell_runs_transactions_from_a_script() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("db");
    let script = "put t k1 v1\n\
                  begin snapshot\n\
                  put t k2 \"two words\"\n\
                  get t k2\n\
                  rollback\n\
                  get t k2\n\
                  begin\n\
                  delete t k1\n\
                  commit\n\
                  get t k1\n\
                  put t k3 \\x00\n\
                  scan t\n\
                  frobnicate\n\
                  isolation sideways\n\
                  tables\n";
    let out = strata(&["shell", "--create", s(&dir)], Some(script.as_bytes()));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let said: Vec<&str> = text
        .lines()
        .map(|l| {
            l.trim_start_matches("strata*> ")
                .trim_start_matches("strata> ")
        })
        .filter(|l| !l.is_empty() && !l.starts_with("strata shell"))
        .collect();
    assert_eq!(
        said[..6],
        [
            "ok",
            "ok",
            "two words",
            "rolled back",
            "(not found)",
            "deleted"
        ],
        "{text}"
    );
    assert!(said[6].starts_with("committed (xid "), "{text}");
    assert_eq!(said[7..9], ["(not found)", "ok"], "{text}");
    assert_eq!(said[9], "k3\t\\x00");
    assert!(said[10].starts_with("error: unknown command"), "{text}");
    assert!(
        said[11].starts_with("error: unknown isolation level"),
        "{text}"
    );
    assert_eq!(said[12], "t");
    assert_eq!(ok(&["get", s(&dir), "t", "k3"]), "\\x00\n");
}

#[test]
fn verify_reports_damage_with_status_one() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = sample(tmp.path());
    ok(&["checkpoint", s(&db)]);
    let damaged = tmp.path().join("damaged");
    copy_dir(&db, &damaged);
    // The last page of the data file: a heap or overflow page of the
    // sample, read only by a full walk.
    let data = damaged.join(strata::DATA_FILE);
    let mut bytes = std::fs::read(&data).expect("read");
    let page = strata::limits::PAGE_SIZE;
    let last = bytes.len() / page - 1;
    for b in &mut bytes[last * page + 100..last * page + 140] {
        *b ^= 0x5a;
    }
    std::fs::write(&data, &bytes).expect("write");
    let out = strata(&["verify", s(&damaged)], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("DAMAGED") && err.contains(strata::DATA_FILE),
        "{err}"
    );
    assert!(err.contains(&format!("page {last}")), "{err}");
    assert_eq!(strata(&["verify", s(&db)], None).status.code(), Some(0));
}

#[test]
fn errors_are_plain_words_with_the_right_status() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("db");
    ok(&["put", "--create", s(&dir), "t", "k", "v"]);
    let db = Db::open(&dir).expect("open");
    let locked = strata(&["stat", s(&dir)], None);
    assert_eq!(locked.status.code(), Some(2));
    assert!(
        stderr(&locked).contains("already open"),
        "{}",
        stderr(&locked)
    );
    assert!(!stderr(&locked).contains("panicked"));
    // waldump reads the log of a database in use; only table names are lost.
    let wal = strata(&["waldump", s(&dir)], None);
    assert!(wal.status.success(), "{}", stderr(&wal));
    assert!(String::from_utf8_lossy(&wal.stdout).contains(" table=#"));
    assert!(stderr(&wal).contains("table names unavailable"));
    drop(db);
    let missing = strata(&["verify", s(&tmp.path().join("nothing"))], None);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("holds no strata database"));
    let table = strata(&["get", s(&dir), "nope", "k"], None);
    assert_eq!(table.status.code(), Some(1));
    assert!(
        stderr(&table).contains("no table \"nope\"") && stderr(&table).contains("its tables: t")
    );
    let escape = strata(&["get", s(&dir), "t", "\\q"], None);
    assert!(stderr(&escape).contains("bad escape"));
    let usage = strata(&["frobnicate"], None);
    assert_eq!(usage.status.code(), Some(2));
}

//! The `strata` tool, run as a user runs it: each subcommand on a real
//! database, dump → load round trip, read-only commands that change no
//! file, verify, stat and a salvaging dump on damaged copies, printed
//! keys that paste back, and plain-words errors.

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
        "'\\\\value\\r'\n"
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
        "user0001\tupdated\nuser0002\t'{\"n\": 2}'\nuser0003\t'{\"n\": 3}'\n"
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
    assert_eq!(said[0], "ok", "{text}");
    // `begin` says what it began; the xid comes with the first write.
    assert_eq!(
        said[1],
        "began a snapshot transaction (one snapshot for every read; xid at its first write)",
        "{text}"
    );
    assert_eq!(
        said[2..6],
        ["ok", "'two words'", "rolled back", "(not found)"],
        "{text}"
    );
    assert!(
        said[6].starts_with("began a serializable transaction"),
        "{text}"
    );
    assert_eq!(said[7], "deleted", "{text}");
    assert!(said[8].starts_with("committed (xid "), "{text}");
    assert_eq!(said[9..11], ["(not found)", "ok"], "{text}");
    assert_eq!(said[11], "k3\t'\\x00'");
    assert!(said[12].starts_with("error: unknown command"), "{text}");
    assert!(
        said[13].starts_with("error: unknown isolation level"),
        "{text}"
    );
    assert_eq!(said[14], "t");
    assert_eq!(ok(&["get", s(&dir), "t", "k3"]), "'\\x00'\n");
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
    let said = stderr(&locked);
    // Said once: neither the directory nor "open" twice over, and what
    // works meanwhile.
    assert_eq!(said.matches(" is open").count(), 1, "{said}");
    assert_eq!(said.matches("already open").count(), 0, "{said}");
    assert!(!said.contains("close that handle"), "{said}");
    assert!(
        said.contains(&format!("`strata waldump {}`", s(&dir))),
        "{said}"
    );
    assert!(said.contains("copy of the directory"), "{said}");
    assert!(!said.contains("panicked"));
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

const PAGE: usize = strata::limits::PAGE_SIZE;

/// A checkpointed database of one table `t`: keys `k00000` … `k01999`,
/// each with a 100-byte value naming it: several B+tree leaves under an
/// internal root, and a few dozen heap pages.
fn many_rows(dir: &Path) -> Vec<(String, String)> {
    let db = Db::open_with(dir, Options::default().background(false)).expect("open");
    let t = db.table("t").expect("t");
    let rows: Vec<(String, String)> = (0..2000)
        .map(|i| (format!("k{i:05}"), format!("{i:0>100}")))
        .collect();
    let mut tx = db.begin().expect("begin");
    for (k, v) in &rows {
        tx.put(&t, k, v).expect("put");
    }
    tx.commit().expect("commit");
    db.close().expect("close");
    rows
}

/// The first page of type `ty` whose bytes hold `needle`, in the data
/// file of `dir`.
fn page_holding(dir: &Path, ty: strata::internals::page::PageType, needle: &[u8]) -> usize {
    let bytes = std::fs::read(dir.join(strata::DATA_FILE)).expect("read");
    (0..bytes.len() / PAGE)
        .find(|&p| {
            let page: &[u8; PAGE] = bytes[p * PAGE..(p + 1) * PAGE].try_into().expect("page");
            strata::internals::page::page_type(page) == Some(ty)
                && page.windows(needle.len()).any(|w| w == needle)
        })
        .expect("such a page")
}

/// Flips bytes inside page `page` of `dir`'s data file.
fn damage(dir: &Path, page: usize) {
    let data = dir.join(strata::DATA_FILE);
    let mut bytes = std::fs::read(&data).expect("read");
    for b in &mut bytes[page * PAGE + 200..page * PAGE + 240] {
        *b ^= 0x5a;
    }
    std::fs::write(&data, &bytes).expect("write");
}

/// The rows of a dump's text, by key.
fn dumped(dump: &str) -> std::collections::BTreeMap<String, String> {
    dump.lines()
        .filter_map(|l| l.strip_prefix("row\t"))
        .map(|l| {
            let (k, v) = l.split_once('\t').expect("key and value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn dump_salvage_steps_over_damaged_pages_and_names_what_they_cost() {
    use strata::internals::page::PageType;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("db");
    let rows = many_rows(&dir);
    let heap = page_holding(&dir, PageType::Heap, b"k00500");
    let leaf = page_holding(&dir, PageType::Leaf, b"k01500");
    damage(&dir, heap);
    damage(&dir, leaf);
    let file = dir.join(strata::DATA_FILE);

    // A plain dump stops at the damage and says what to do instead.
    let plain = strata(&["dump", s(&dir)], None);
    assert_eq!(plain.status.code(), Some(1));
    assert!(
        stderr(&plain).contains("dump --salvage"),
        "{}",
        stderr(&plain)
    );

    let out = strata(&["dump", "--salvage", s(&dir)], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = stderr(&out);
    let dump = String::from_utf8(out.stdout).expect("utf-8");
    let got = dumped(&dump);
    for (k, v) in &got {
        assert_eq!(Some(v), rows.iter().find(|(rk, _)| rk == k).map(|(_, v)| v));
    }
    assert!(dump.ends_with(&format!("end\t{}\n", got.len())), "{dump}");

    // The leaf: named by page and offset, its loss a key range.
    let at = |p: usize| format!("page {p} of {} at byte {}", file.display(), p * PAGE);
    let leaf_line = report
        .lines()
        .find(|l| l.contains(&at(leaf)))
        .unwrap_or_else(|| panic!("leaf {leaf} not reported: {report}"));
    let range = leaf_line
        .split_once("every row with a key from ")
        .expect("a key range")
        .1;
    let (from, rest) = range
        .split_once(" up to, not including, ")
        .expect("range end");
    let to = rest.split_whitespace().next().expect("end key");
    let in_range = |k: &str| k >= from && k < to;
    assert!(in_range("k01500"), "{leaf_line}");
    // The heap page: its keys from readable leaves, named and counted.
    let heap_line = report
        .lines()
        .find(|l| l.contains(&at(heap)))
        .unwrap_or_else(|| panic!("heap page {heap} not reported: {report}"));
    let lost: usize = heap_line
        .split_once("lost ")
        .and_then(|(_, l)| l.split_once(" row(s): "))
        .map(|(n, _)| n.parse().expect("count"))
        .expect("a row count");
    let missing: Vec<&String> = rows
        .iter()
        .map(|(k, _)| k)
        .filter(|k| !got.contains_key(*k))
        .collect();
    assert!(missing.iter().any(|k| in_range(k)));
    let behind_heap: Vec<&&String> = missing.iter().filter(|k| !in_range(k)).collect();
    assert!(!behind_heap.is_empty());
    assert_eq!(
        behind_heap.len(),
        lost,
        "every key lost outside the leaf's range is counted: {heap_line}"
    );
    assert!(heap_line.contains(behind_heap[0].as_str()), "{heap_line}");
    assert!(report.contains(&format!(
        "salvaged {} rows; skipped 2 damaged page(s); {lost} rows could not be read",
        got.len()
    )));

    // What was salvaged loads.
    let copy = tmp.path().join("copy");
    let load = strata(&["load", s(&copy)], Some(dump.as_bytes()));
    assert!(load.status.success(), "{}", stderr(&load));
    assert_eq!(
        ok(&["tables", s(&copy), "--rows"]),
        format!("t\t{}\n", got.len())
    );
}

#[test]
fn stat_reports_damage_with_every_figure_it_could_read() {
    use strata::internals::page::PageType;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("db");
    many_rows(&dir);
    let db = Db::open(&dir).expect("open");
    let other = db.table("other").expect("other");
    let mut tx = db.begin().expect("begin");
    tx.put(&other, "a", "1").expect("put");
    tx.commit().expect("commit");
    db.close().expect("close");
    let heap = page_holding(&dir, PageType::Heap, b"k00500");
    damage(&dir, heap);

    let out = strata(&["stat", s(&dir)], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(text.contains("format        version"), "{text}");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no line for {name}: {text}"))
            .to_string()
    };
    assert!(line("t").contains("DAMAGED"), "{text}");
    assert!(!line("other").contains("DAMAGED"), "{text}");
    assert_eq!(line("other").split_whitespace().nth(1), Some("1"));
    let file = dir.join(strata::DATA_FILE);
    assert!(
        text.contains(&format!(
            "{} at byte {} (page {heap})",
            file.display(),
            heap * PAGE
        )),
        "{text}"
    );
    assert!(err.contains("dump --salvage"), "{err}");
}

#[test]
fn tables_lists_names_and_counts_rows() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = sample(tmp.path());
    assert_eq!(ok(&["tables", s(&db)]), "blobs\nusers\n");
    // The prepared transaction's row is in doubt, not counted.
    assert_eq!(ok(&["tables", s(&db), "--rows"]), "blobs\t1\nusers\t300\n");
    let empty = tmp.path().join("empty");
    ok(&["put", "--create", s(&empty), "t", "k", "v"]);
    ok(&["delete", s(&empty), "t", "k"]);
    assert_eq!(ok(&["tables", s(&empty), "--rows"]), "t\t0\n");
}

#[test]
fn put_reads_the_value_from_stdin_byte_for_byte() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("db");
    let value: Vec<u8> = (0..=255u8).chain(b"\n\n\r\n".iter().copied()).collect();
    let out = strata(&["put", "--create", s(&dir), "t", "k", "-"], Some(&value));
    assert!(out.status.success(), "{}", stderr(&out));
    let raw = strata(&["get", s(&dir), "t", "k", "--raw"], None);
    assert_eq!(raw.stdout, value);
    let empty = strata(&["put", s(&dir), "t", "e", "-"], Some(b""));
    assert!(empty.status.success());
    assert_eq!(ok(&["get", s(&dir), "t", "e"]), "''\n");
    // A lone dash as the value itself, and keys that look like options.
    ok(&["put", s(&dir), "t", "-k", "\\x2d"]);
    assert_eq!(ok(&["get", s(&dir), "t", "-k", "--raw"]), "-");
}

/// Keys and values meant to trip a shell or the prompt's word splitting.
const AWKWARD: &[&[u8]] = &[
    b"two words",
    b"it's",
    b"say \"hi\"",
    b"back\\slash",
    b"tab\there",
    b"nl\n",
    b"\x00\xff",
    b"$HOME *.rs #x ~ {a,b} ;|&",
    b"-",
    b"-n",
    b"",
];

#[test]
fn printed_keys_and_values_paste_back_into_a_shell_and_the_prompt() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("db");
    let db = Db::open(&dir).expect("open");
    let t = db.table("t").expect("t");
    let mut tx = db.begin().expect("begin");
    for (i, v) in AWKWARD.iter().enumerate() {
        let key = if v.is_empty() {
            b"empty".to_vec()
        } else {
            v.to_vec()
        };
        tx.put(&t, key, format!("{i}")).expect("put");
        tx.put(&t, format!("value{i:02}"), v).expect("put");
    }
    tx.commit().expect("commit");
    db.close().expect("close");

    let bin = env!("CARGO_BIN_EXE_strata");
    let scan = ok(&["scan", s(&dir), "t"]);
    assert_eq!(scan.lines().count(), 2 * AWKWARD.len());
    let mut script = String::new();
    for line in scan.lines() {
        let (k, v) = line.split_once('\t').expect("key<TAB>value");
        // Pasted into a POSIX shell: the same value comes back.
        let get = Command::new("sh")
            .arg("-c")
            .arg(format!("'{bin}' get '{}' t {k}", s(&dir)))
            .output()
            .expect("sh");
        assert!(get.status.success(), "{k}: {}", stderr(&get));
        assert_eq!(
            String::from_utf8_lossy(&get.stdout),
            format!("{v}\n"),
            "{k}"
        );
        // And put back under a new key: the same bytes.
        let put = Command::new("sh")
            .arg("-c")
            .arg(format!("'{bin}' put '{}' copy {k} {v}", s(&dir)))
            .output()
            .expect("sh");
        assert!(put.status.success(), "{k} {v}: {}", stderr(&put));
        script.push_str(&format!("get t {k}\n"));
    }
    // Pasted into `strata shell`: the same values again.
    let out = strata(&["shell", s(&dir)], Some(script.as_bytes()));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let said: Vec<&str> = text
        .lines()
        .map(|l| l.trim_start_matches("strata> "))
        .filter(|l| !l.is_empty() && !l.starts_with("strata shell"))
        .collect();
    let values: Vec<&str> = scan
        .lines()
        .map(|l| l.split_once('\t').expect("tab").1)
        .collect();
    assert_eq!(said, values, "{text}");
    assert_eq!(ok(&["scan", s(&dir), "copy"]), scan);
}

/// `scan --prefix` (prefixes ending in 0xFF bytes included), `--reverse`,
/// both with `--from`/`--limit`, against the rows they must print; and the
/// shell's `scan`, given the same options, prints the same lines.
#[test]
fn scan_takes_a_prefix_and_runs_backwards_and_the_shell_scan_takes_the_same_options() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("db");
    let mut keys: Vec<&[u8]> = vec![
        b"a",
        b"a\xff",
        b"a\xff\xff",
        b"a\xff\x00",
        b"ab",
        b"b",
        b"\xff",
        b"\xff\xff",
        b"\xfe",
    ];
    {
        let db = Db::open_with(&dir, Options::default().create(true)).expect("open");
        let t = db.table("t").expect("table");
        let mut tx = db.begin().expect("begin");
        for (i, k) in keys.iter().enumerate() {
            tx.put(&t, k, i.to_string()).expect("put");
        }
        tx.commit().expect("commit");
    }
    keys.sort();
    // The unfiltered scan prints one line per key, in key order.
    let all = ok(&["scan", s(&dir), "t"]);
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), keys.len(), "{all}");
    let rows: Vec<(&[u8], &str)> = keys.iter().copied().zip(lines).collect();
    let expect = |keep: &dyn Fn(&[u8]) -> bool, reverse: bool, limit: usize| -> String {
        let mut kept: Vec<&str> = rows.iter().filter(|r| keep(r.0)).map(|r| r.1).collect();
        if reverse {
            kept.reverse();
        }
        kept.iter().take(limit).map(|l| format!("{l}\n")).collect()
    };
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--prefix", "a\\xff"],
            expect(&|k| k.starts_with(b"a\xff"), false, 99),
        ),
        (
            vec!["--prefix", "\\xff", "--reverse"],
            expect(&|k| k.starts_with(b"\xff"), true, 99),
        ),
        (
            vec!["--prefix", "a\\xff\\xff"],
            expect(&|k| k.starts_with(b"a\xff\xff"), false, 99),
        ),
        (vec!["--reverse"], expect(&|_| true, true, 99)),
        (
            vec!["--reverse", "--limit", "2"],
            expect(&|_| true, true, 2),
        ),
        (
            vec!["--prefix", "a", "--from", "a\\xff", "--reverse"],
            expect(&|k| k.starts_with(b"a") && k >= &b"a\xff"[..], true, 99),
        ),
        (vec!["--prefix", ""], expect(&|_| true, false, 99)),
    ];
    let mut script = String::new();
    let mut printed = String::new();
    for (args, want) in &cases {
        let mut cmd = vec!["scan", s(&dir), "t"];
        cmd.extend(args);
        let got = ok(&cmd);
        assert_eq!(&got, want, "strata scan {args:?}");
        assert!(!got.is_empty(), "{args:?} selects rows");
        let quoted: Vec<String> = args.iter().map(|a| format!("\"{a}\"")).collect();
        script.push_str(&format!("scan t {}\n", quoted.join(" ")));
        printed.push_str(&got);
    }
    let out = strata(&["shell", s(&dir)], Some(script.as_bytes()));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let said: Vec<&str> = text
        .lines()
        .map(|l| l.trim_start_matches("strata> "))
        .filter(|l| !l.is_empty() && !l.starts_with("strata shell"))
        .collect();
    // The shell, with a limit, says when rows are left.
    let more = "(more rows; raise the limit)";
    assert_eq!(said.iter().filter(|l| **l == more).count(), 1, "{text}");
    let said: String = said
        .iter()
        .filter(|l| **l != more)
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        said, printed,
        "the shell's scan prints what `strata scan` prints"
    );
}

#[test]
fn get_scan_and_dump_read_as_of_a_timestamp() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("db");
    let (first, second) = {
        let db = Db::open_with(&dir, Options::default().background(false)).expect("open");
        let t = db.table("t").expect("t");
        let mut tx = db.begin().expect("begin");
        tx.put(&t, "a", "1").expect("put");
        tx.put(&t, "b", "1").expect("put");
        let first = tx.commit().expect("commit").ts;
        let mut tx = db.begin().expect("begin");
        tx.put(&t, "a", "2").expect("put");
        tx.delete(&t, "b").expect("delete");
        let u = db.table("u").expect("u");
        tx.put(&u, "x", "y").expect("put");
        let old = db.table("old").expect("old");
        tx.put(&old, "o", "1").expect("put");
        let second = tx.commit().expect("commit").ts;
        // After `second`: `old` renamed, `u` dropped.
        let mut tx = db.begin().expect("begin");
        tx.rename_table(&old, "new").expect("rename");
        tx.drop_table(&u).expect("drop");
        tx.commit().expect("commit");
        db.close().expect("close");
        (first.to_string(), second.to_string())
    };
    let d = s(&dir);
    assert_eq!(ok(&["get", d, "t", "a", "--as-of", &first]), "1\n");
    assert_eq!(ok(&["get", d, "t", "a", "--as-of", &second]), "2\n");
    assert_eq!(ok(&["scan", d, "t", "--as-of", &first]), "a\t1\nb\t1\n");
    assert_eq!(ok(&["scan", d, "t", "--as-of", &second]), "a\t2\n");
    let dump = ok(&["dump", d, "--as-of", &first]);
    assert_eq!(
        dump, "strata-dump 1\ntable\tt\nrow\ta\t1\nrow\tb\t1\nend\t2\n",
        "u did not exist yet"
    );
    // Tables as they were: `u` (dropped since) and `old` (renamed since).
    assert_eq!(ok(&["get", d, "u", "x", "--as-of", &second]), "y\n");
    assert_eq!(ok(&["scan", d, "old", "--as-of", &second]), "o\t1\n");
    assert_eq!(
        ok(&["dump", d, "--as-of", &second]),
        "strata-dump 1\ntable\told\nrow\to\t1\ntable\tt\nrow\ta\t2\ntable\tu\nrow\tx\ty\nend\t3\n"
    );
    let gone = strata(&["get", d, "u", "x"], None);
    assert!(
        stderr(&gone).contains("its tables: new, t"),
        "{}",
        stderr(&gone)
    );
    let stat = ok(&["stat", d]);
    assert!(stat.contains("newest "), "{stat}");
    // The tool opens read-only: it cannot fix an answer past every
    // timestamp the database assigned.
    let later = strata(&["get", d, "t", "a", "--as-of", "4102444800"], None);
    assert!(
        stderr(&later).contains("read-only open serves reads only at timestamps"),
        "{}",
        stderr(&later)
    );
    let bad = strata(&["get", d, "t", "a", "--as-of", "yesterday"], None);
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("not a timestamp: yesterday"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn backup_then_restore_round_trips_with_prepared_transactions() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = sample(tmp.path());
    let before = snapshot_files(&db);
    let file = tmp.path().join("db.snap");
    let said = ok(&["backup", s(&db), s(&file)]);
    assert!(said.contains("1 prepared transactions in doubt"), "{said}");
    assert_eq!(
        snapshot_files(&db),
        before,
        "backup changed the database's files"
    );
    assert!(!tmp.path().join("db.snap.partial").exists());
    let copy = tmp.path().join("restored");
    let said = ok(&["restore", s(&file), s(&copy)]);
    assert!(said.contains("restored"), "{said}");
    assert_eq!(ok(&["dump", s(&copy)]), ok(&["dump", s(&db)]));
    assert_eq!(all_rows(&copy), all_rows(&db));
    let stat = ok(&["stat", s(&copy)]);
    assert!(stat.contains("transfer-7"), "{stat}");

    // Into a directory that holds a database: refused, in plain words.
    let out = strata(&["restore", s(&file), s(&copy)], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("a strata database is there already")
            && err.contains("choose a new or empty directory")
            && !err.contains("no strata database"),
        "{err}"
    );

    // Over an existing backup: refused without --force, replaced with it.
    let out = strata(&["backup", s(&db), s(&file)], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    let said = ok(&["backup", "--force", s(&db), s(&file)]);
    assert!(said.contains("backed up"), "{said}");

    // A damaged backup: named, with the offset, and nothing restored.
    let mut bytes = std::fs::read(&file).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&file, &bytes).expect("write");
    let other = tmp.path().join("other");
    let out = strata(&["restore", s(&file), s(&other)], None);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(err.contains(s(&file)) && err.contains("at byte"), "{err}");
    assert!(err.contains("nothing was restored"), "{err}");
    assert!(!other.exists());
}

//! The `strata` tool creates a database only when asked: `load`, or
//! `--create` on `put` and `shell`. Every other command on a mistyped
//! path says there is no database there and leaves the file system as it
//! was.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn strata(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run strata");
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer");
    out
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Guards against `strata delete` on a typo creating a database, then
/// saying "no table".
#[test]
fn commands_on_a_mistyped_path_create_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let typo = tmp.path().join("dbb");
    let file = tmp.path().join("backup.snap");
    let commands: [&[&str]; 10] = [
        &["put", s(&typo), "t", "k", "v"],
        &["delete", s(&typo), "t", "k"],
        &["shell", s(&typo)],
        &["checkpoint", s(&typo)],
        &["vacuum", s(&typo)],
        &["get", s(&typo), "t", "k"],
        &["scan", s(&typo), "t"],
        &["stat", s(&typo)],
        &["dump", s(&typo)],
        &["backup", s(&typo), s(&file)],
    ];
    for args in commands {
        let out = strata(args, b"");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("no strata database") && err.contains(s(&typo)),
            "{args:?}: {err}"
        );
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
}

#[test]
fn load_and_create_make_a_database() {
    let tmp = tempfile::tempdir().expect("tmp");
    let made = tmp.path().join("made");
    let out = strata(&["put", "--create", s(&made), "t", "k", "v"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = strata(&["dump", s(&made)], b"");
    assert!(dump.status.success());
    let loaded = tmp.path().join("loaded");
    let out = strata(&["load", s(&loaded)], &dump.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = strata(&["get", s(&loaded), "t", "k"], b"");
    assert_eq!(String::from_utf8_lossy(&got.stdout), "v\n");
    let shell = strata(
        &["shell", "--create", s(&tmp.path().join("sh"))],
        b"put t a b\n",
    );
    assert!(
        shell.status.success(),
        "{}",
        String::from_utf8_lossy(&shell.stderr)
    );
    // Existing databases need no flag.
    let out = strata(&["put", s(&made), "t", "k2", "v2"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn create_refuses_a_directory_of_other_files() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(tmp.path().join("report.pdf"), "x").expect("write");
    let out = strata(&["put", "--create", s(tmp.path()), "t", "k", "v"], b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("report.pdf"), "{err}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).expect("ls").collect();
    assert_eq!(left.len(), 1, "files were added");
}

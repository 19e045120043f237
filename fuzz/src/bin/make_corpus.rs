//! Writes seed inputs for the fuzz targets into `corpus/<target>/`.
//! Run from `fuzz/`: `cargo run --bin make_corpus`.

use std::path::Path;
use std::sync::Arc;

use strata::fault::FaultFs;
use strata::Db;
use strata_fuzz::{files_to_bytes, options, DIR};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("seed");
}

/// A copy of `image` whose every page, log-frame and control-file
/// checksum is `strata::internals::FUZZ_CRC`, which fuzzing builds accept: mutations
/// of this seed reach the decoders instead of stopping at a checksum.
fn with_fuzz_crcs(image: &FaultFs) -> FaultFs {
    let magic = strata::internals::FUZZ_CRC.to_le_bytes();
    let out = image.synced_image();
    for path in out.files() {
        let Some(mut bytes) = out.read_file(&path) else {
            continue;
        };
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "CONTROL" && bytes.len() >= 36 {
            bytes[32..36].copy_from_slice(&magic);
        } else if name == "data.strata" {
            for page in bytes.chunks_mut(8192) {
                if page.len() == 8192 && page.iter().any(|&b| b != 0) {
                    page[..4].copy_from_slice(&magic);
                }
            }
        } else if name.ends_with(".wal") {
            // Frames of `len u32 | crc u32 | payload` after the 16-byte
            // segment header, up to the zeros past the log's end.
            let mut at = 16;
            while let Some(len) = bytes.get(at..at + 4) {
                let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
                if len == 0 || at + 8 + len > bytes.len() {
                    break;
                }
                bytes[at + 4..at + 8].copy_from_slice(&magic);
                at += 8 + len;
            }
        }
        out.write_file(&path, bytes);
    }
    out
}

fn main() {
    // A small database, with a checkpoint in the middle so both pages and
    // log carry data.
    let fs = FaultFs::new();
    {
        let db = Db::open_vfs(Arc::new(fs.clone()), Path::new(DIR), options()).expect("open");
        let t = db.table("t").expect("table");
        let mut tx = db.begin().expect("begin");
        for i in 0..60u32 {
            tx.put(
                &t,
                format!("k{i:03}"),
                vec![i as u8; (i * 13 % 200) as usize],
            )
            .expect("put");
        }
        tx.commit().expect("commit");
        db.checkpoint().expect("checkpoint");
        let mut tx = db.begin().expect("begin");
        tx.put(&t, "big", vec![7u8; 20_000]).expect("put");
        tx.delete(&t, "k005").expect("delete");
        tx.commit().expect("commit");
        // Catalog rows of every kind: a renamed table, a dropped one.
        let (u, w) = (db.table("u").expect("u"), db.table("w").expect("w"));
        let mut tx = db.begin().expect("begin");
        tx.put(&u, "k", "v").expect("put");
        tx.put(&w, "k", "v").expect("put");
        tx.commit().expect("commit");
        let mut tx = db.begin().expect("begin");
        tx.rename_table(&u, "v").expect("rename");
        tx.drop_table(&w).expect("drop");
        tx.commit().expect("commit");
        std::mem::forget(db); // a crash: no final checkpoint
    }
    let image = fs.process_crash_image();
    write("open_bytes", "small-db", &files_to_bytes(&image));
    write(
        "open_bytes",
        "small-db-fuzz-crc",
        &files_to_bytes(&with_fuzz_crcs(&image)),
    );
    let data = image
        .read_file(&Path::new(DIR).join("data.strata"))
        .expect("data");
    for (i, page) in data.chunks(8192).take(6).enumerate() {
        write("decoders", &format!("page-{i}"), page);
    }
    for path in image
        .files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
    {
        let log = image.read_file(&path).expect("segment");
        write(
            "decoders",
            "log-segment-head",
            &log[16..log.len().min(16 + 4096)],
        );
    }
    // Operation sequences: puts, commits, a checkpoint, crash points.
    write(
        "ops_crash",
        "puts-commit",
        &[0, 1, 10, 1, 2, 20, 4, 0, 4, 0],
    );
    write(
        "ops_crash",
        "crash-mid-commit",
        &[0, 3, 30, 2, 4, 40, 8, 0, 2, 4, 0, 7],
    );
    write(
        "ops_crash",
        "checkpoint-vacuum",
        &[0, 1, 255, 4, 0, 3, 1, 4, 0, 6, 0, 7, 0, 8, 5, 1, 0, 4, 0],
    );
    write(
        "ops_crash",
        "rollback",
        &[1, 5, 9, 5, 0, 2, 6, 4, 0, 8, 1, 3],
    );
    // Schedules for the coordinator's state machine: pseudo-random bytes
    // (the target reads every byte as a choice).
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for (i, len) in [16usize, 64, 256, 1024].into_iter().enumerate() {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        write("coordinator", &format!("schedule-{i}"), &bytes);
    }
}

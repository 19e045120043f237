//! `Db::check_integrity` finds a sound database sound and names damage.

mod common;

use std::os::unix::fs::FileExt;

use common::open;
use strata::Error;

fn populated(dir: &std::path::Path) -> strata::Db {
    let db = open(dir);
    let t = db.table("t").expect("t");
    let u = db.table("u").expect("u");
    let mut tx = db.begin().expect("begin");
    for i in 0..3000u32 {
        tx.put(&t, format!("k{i:05}"), vec![i as u8; (i % 300) as usize])
            .expect("put");
    }
    tx.put(&u, "big", vec![5u8; 100_000]).expect("put");
    tx.commit().expect("commit");
    let mut tx = db.begin().expect("begin");
    for i in (0..3000u32).step_by(2) {
        tx.put(&t, format!("k{i:05}"), "updated").expect("put");
    }
    for i in (0..3000u32).step_by(7) {
        tx.delete(&t, format!("k{i:05}")).expect("delete");
    }
    tx.commit().expect("commit");
    let mut tx = db.begin().expect("begin");
    tx.put(&t, "rolled back", "x").expect("put");
    tx.rollback().expect("rollback");
    db
}

#[test]
fn sound_database_checks_clean_before_and_after_vacuum() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = populated(tmp.path());
    let r = db.check_integrity().expect("clean");
    assert_eq!(r.tables, 2);
    assert_eq!(
        r.keys,
        3001 + 1,
        "index entries, including deleted and rolled-back keys"
    );
    assert!(r.versions > r.keys, "updates left older versions: {r:?}");
    assert!(r.overflow_pages >= 12, "{r:?}");
    assert_eq!(r.leaked_pages, 0, "{r:?}");
    db.vacuum().expect("vacuum");
    let r = db.check_integrity().expect("clean after vacuum");
    assert_eq!(r.keys, 3000 - 429 + 1, "{r:?}");
    assert_eq!(
        r.versions, r.keys,
        "one version per key after vacuum: {r:?}"
    );
    assert_eq!(r.leaked_pages, 0, "{r:?}");
    assert_eq!(
        r.pages,
        r.btree_pages
            + r.heap_pages
            + r.overflow_pages
            + r.clog_pages
            + r.free_pages
            + r.free_map_pages
            + 1
    );
    drop(db);
    let db = open(tmp.path());
    assert_eq!(
        db.check_integrity().expect("clean after reopen").keys,
        3000 - 429 + 1
    );
}

/// Edits the first page of type `ty` in a checkpointed copy of
/// `populated`, re-stamps its checksum, and returns the page's offset and
/// what `check_integrity` says.
fn damaged(ty: u8, edit: impl FnOnce(&mut [u8])) -> (u64, strata::Result<strata::IntegrityReport>) {
    let tmp = tempfile::tempdir().expect("tmp");
    {
        let db = populated(tmp.path());
        db.checkpoint().expect("checkpoint");
    }
    let path = tmp.path().join("data.strata");
    let bytes = std::fs::read(&path).expect("read");
    let page_size = 8192;
    let target = (0..bytes.len() / page_size)
        .find(|&i| bytes[i * page_size + 16] == ty)
        .expect("a page of that type");
    let mut page = bytes[target * page_size..(target + 1) * page_size].to_vec();
    edit(&mut page);
    let crc = common::crc32c(&page[4..]);
    page[..4].copy_from_slice(&crc.to_le_bytes());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    f.write_all_at(&page, (target * page_size) as u64)
        .expect("write");
    drop(f);
    let db = open(tmp.path());
    ((target * page_size) as u64, db.check_integrity())
}

#[test]
fn damage_that_passes_checksums_is_still_found() {
    // Rewrite a heap tuple's key with a valid page checksum: only the
    // cross-check between index and heap can notice.
    let (at, found) = damaged(2, |page| {
        // First slot's tuple: key starts 30 bytes into the tuple.
        let off = u16::from_le_bytes([page[32], page[33]]) as usize;
        page[off + 30] ^= 0x01;
    });
    match found {
        Err(Error::Corruption { offset, reason, .. }) => assert_eq!(offset, at, "{reason}"),
        other => panic!("damage not found: {other:?}"),
    }
}

#[test]
fn a_slot_head_that_disagrees_with_its_key_is_found() {
    // A wrong head misdirects searches without breaking the key order, so
    // only comparing each head with its cell's key can notice.
    let (at, found) = damaged(3, |page| {
        // First slot (byte 36): offset u16, then the head u32.
        page[38] ^= 0x01;
    });
    match found {
        Err(Error::Corruption { offset, reason, .. }) => {
            assert_eq!(offset, at, "{reason}");
            assert!(reason.contains("malformed"), "{reason}");
        }
        other => panic!("damage not found: {other:?}"),
    }
}

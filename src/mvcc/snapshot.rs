//! Snapshots and the one visibility function.
//!
//! A snapshot is (xmin, xmax, xip): every xid below `xmin` had finished when
//! it was taken, every xid at or above `xmax` had not started, and `xip`
//! lists the xids in between that were still running. A transaction's
//! effects are visible to the snapshot iff it committed and had finished
//! when the snapshot was taken. [`visible`] is the only place that decides
//! whether a tuple version is visible; everything else calls it.

use std::sync::Arc;

use crate::buffer::mtr::PageAccess;
use crate::error::Result;
use crate::ids::Xid;

/// Commit status of a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Running (or, after a crash, never finished: see `Clog`).
    InProgress,
    /// Committed.
    Committed,
    /// Rolled back, or lost in a crash before its commit record was durable.
    Aborted,
}

/// Where commit statuses come from (the commit log; a map in tests).
pub trait StatusOf {
    /// Status of `xid`.
    fn status(&self, xid: Xid) -> Status;

    /// Called by a reader once out of the page it judged a version in:
    /// true if some of the statuses it gave were provisional (a read as of
    /// a timestamp had not yet looked up a commit's timestamp, which it
    /// now has), so the version must be judged again.
    fn settle(&self, _acc: &mut impl PageAccess) -> Result<bool> {
        Ok(false)
    }
}

/// A consistent view of which transactions had committed at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Every xid below this had finished.
    pub xmin: Xid,
    /// Every xid at or above this had not started.
    pub xmax: Xid,
    /// Running xids in [xmin, xmax), sorted.
    pub xip: Arc<[Xid]>,
}

impl Snapshot {
    /// Whether the effects of `x` are visible: `x` committed before the
    /// snapshot was taken, or `x` is the reader itself (`me`).
    pub fn sees(&self, x: Xid, me: Xid, clog: &impl StatusOf) -> bool {
        if x == me && me != Xid::NONE {
            return true;
        }
        if x >= self.xmax || x == Xid::NONE {
            return false;
        }
        if x >= self.xmin && self.xip.binary_search(&x).is_ok() {
            return false;
        }
        clog.status(x) == Status::Committed
    }
}

/// What a reader makes of one tuple version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The version is the one the reader sees.
    Visible,
    /// Its creator is visible but so is its deletion: the key does not
    /// exist for the reader (older versions are superseded too).
    Deleted,
    /// Its creator is not visible: look at the next older version.
    Invisible,
}

/// PostgreSQL's rule: a version is visible iff its creator is visible to
/// the snapshot (committed before it, or the reader itself) and its
/// deleter (if any) is not.
pub fn visible(xmin: Xid, xmax: Xid, snap: &Snapshot, me: Xid, clog: &impl StatusOf) -> Seen {
    if !snap.sees(xmin, me, clog) {
        return Seen::Invisible;
    }
    if xmax != Xid::NONE && snap.sees(xmax, me, clog) {
        return Seen::Deleted;
    }
    Seen::Visible
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Map(HashMap<u64, Status>);
    impl StatusOf for Map {
        fn status(&self, x: Xid) -> Status {
            *self.0.get(&x.0).unwrap_or(&Status::InProgress)
        }
    }

    fn clog() -> Map {
        use Status::*;
        // 1,2,3 committed; 4 aborted; 5 running; 6 committed after the snapshot.
        Map([
            (1, Committed),
            (2, Committed),
            (3, Committed),
            (4, Aborted),
            (5, InProgress),
            (6, Committed),
        ]
        .into())
    }

    /// Taken while 5 and 6 were running; 7 had not started.
    fn snap() -> Snapshot {
        Snapshot {
            xmin: Xid(5),
            xmax: Xid(7),
            xip: vec![Xid(5), Xid(6)].into(),
        }
    }

    const ME: Xid = Xid(8);

    fn v(xmin: u64, xmax: u64) -> Seen {
        visible(Xid(xmin), Xid(xmax), &snap(), ME, &clog())
    }

    #[test]
    fn creator_committed_before_snapshot_is_visible() {
        assert_eq!(v(1, 0), Seen::Visible);
    }

    #[test]
    fn creator_aborted_is_invisible() {
        assert_eq!(v(4, 0), Seen::Invisible);
    }

    #[test]
    fn creator_in_progress_set_is_invisible_even_if_committed_since() {
        assert_eq!(v(5, 0), Seen::Invisible);
        assert_eq!(
            v(6, 0),
            Seen::Invisible,
            "committed after the snapshot: still invisible"
        );
    }

    #[test]
    fn creator_at_or_above_xmax_is_invisible() {
        assert_eq!(v(7, 0), Seen::Invisible);
        assert_eq!(v(100, 0), Seen::Invisible);
    }

    #[test]
    fn deletion_by_visible_transaction_hides_the_version() {
        assert_eq!(v(1, 2), Seen::Deleted);
    }

    #[test]
    fn deletion_by_invisible_transaction_does_not() {
        assert_eq!(v(1, 4), Seen::Visible, "aborted deleter");
        assert_eq!(v(1, 5), Seen::Visible, "running deleter");
        assert_eq!(
            v(1, 6),
            Seen::Visible,
            "deleter committed after the snapshot"
        );
        assert_eq!(v(1, 9), Seen::Visible, "deleter started after the snapshot");
    }

    #[test]
    fn own_writes_are_visible_and_own_deletes_hide() {
        assert_eq!(v(ME.0, 0), Seen::Visible, "own insert, though ME >= xmax");
        assert_eq!(v(ME.0, ME.0), Seen::Deleted, "own insert then own delete");
        assert_eq!(
            v(1, ME.0),
            Seen::Deleted,
            "own delete of a committed version"
        );
    }

    #[test]
    fn no_reader_xid_sees_only_committed() {
        let s = snap();
        assert_eq!(
            visible(Xid(1), Xid(0), &s, Xid::NONE, &clog()),
            Seen::Visible
        );
        assert_eq!(
            visible(Xid(0), Xid(0), &s, Xid::NONE, &clog()),
            Seen::Invisible,
            "xid 0 never created anything"
        );
    }
}

//! The Raft log's bytes: entries, membership, the vote, commands
//! (FORMAT.md, "The Raft log"). Little-endian fixed-width integers,
//! length-prefixed byte strings; every decoder checks every length against
//! what is left and refuses trailing bytes. Nothing read is trusted.

use std::collections::{BTreeMap, BTreeSet};

use openraft::{BasicNode, CommittedLeaderId, EntryPayload, LeaderId, LogId, Membership, Vote};

use super::command::{Command, ReadRange, TxnBody, Write};
use super::{Entry, TypeConfig};
use crate::clock::Timestamp;
use crate::limits::{GID_MAX, KEY_MAX, TABLE_NAME_MAX, VALUE_MAX};

/// Version of the Raft log's bytes (segment header and meta file); its own,
/// independent of the data file's `FORMAT_VERSION`.
pub const RAFT_LOG_VERSION: u32 = 1;

const KIND_BLANK: u8 = 0;
const KIND_NORMAL: u8 = 1;
const KIND_MEMBERSHIP: u8 = 2;

const CMD_TXN: u8 = 1;
const CMD_PREPARE: u8 = 2;
const CMD_COMMIT_PREPARED: u8 = 3;
const CMD_ROLLBACK_PREPARED: u8 = 4;

/// Most voter sets of a joint membership, nodes of a membership, reads and
/// writes of one command: bounds a decoder checks before allocating.
const ITEMS_MAX: usize = 1 << 20;
/// Longest node address.
const ADDR_MAX: usize = 4096;

/// A decoder's complaint; the caller adds the file and offset.
pub type DecodeResult<T> = std::result::Result<T, String>;

/// Appends little-endian fields.
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        // Every byte string encoded is bounded by a limit far below 4 GiB
        // (KEY_MAX, VALUE_MAX, TABLE_NAME_MAX, GID_MAX, ADDR_MAX).
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn count(&mut self, n: usize) {
        self.u32(n as u32);
    }
}

/// Reads what [`Writer`] wrote, refusing anything short or oversized.
pub struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `b`.
    pub fn new(b: &'a [u8]) -> Self {
        Reader { b, at: 0 }
    }
    fn take(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        let end = self.at.checked_add(n).ok_or("length overflows")?;
        let s = self.b.get(self.at..end).ok_or_else(|| {
            format!(
                "{n} bytes wanted at byte {}, {} left",
                self.at,
                self.b.len() - self.at
            )
        })?;
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> DecodeResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> DecodeResult<u32> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> DecodeResult<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn bytes(&mut self, max: usize, what: &str) -> DecodeResult<Vec<u8>> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(format!("{what} of {n} bytes exceeds {max}"));
        }
        Ok(self.take(n)?.to_vec())
    }
    fn string(&mut self, max: usize, what: &str) -> DecodeResult<String> {
        String::from_utf8(self.bytes(max, what)?).map_err(|_| format!("{what} is not UTF-8"))
    }
    fn count(&mut self, what: &str) -> DecodeResult<usize> {
        let n = self.u32()? as usize;
        if n > ITEMS_MAX {
            return Err(format!("{n} {what} exceed {ITEMS_MAX}"));
        }
        Ok(n)
    }
    fn flag(&mut self, what: &str) -> DecodeResult<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            x => Err(format!("{what} flag {x} is neither 0 nor 1")),
        }
    }
    /// Fails unless every byte was read.
    pub fn finish(&self) -> DecodeResult<()> {
        if self.at != self.b.len() {
            return Err(format!("{} trailing bytes", self.b.len() - self.at));
        }
        Ok(())
    }
}

/// Encodes a log id: term, leader node, index.
fn put_log_id(w: &mut Writer, id: &LogId<u64>) {
    w.u64(id.leader_id.term);
    w.u64(id.leader_id.node_id);
    w.u64(id.index);
}

fn get_log_id(r: &mut Reader<'_>) -> DecodeResult<LogId<u64>> {
    let term = r.u64()?;
    let node = r.u64()?;
    let index = r.u64()?;
    Ok(LogId::new(CommittedLeaderId::new(term, node), index))
}

/// `flag | log id` for an optional log id.
pub fn put_opt_log_id(w: &mut Writer, id: Option<&LogId<u64>>) {
    match id {
        Some(id) => {
            w.u8(1);
            put_log_id(w, id);
        }
        None => w.u8(0),
    }
}

/// Reads what [`put_opt_log_id`] wrote.
pub fn get_opt_log_id(r: &mut Reader<'_>) -> DecodeResult<Option<LogId<u64>>> {
    if r.flag("log id")? {
        Ok(Some(get_log_id(r)?))
    } else {
        Ok(None)
    }
}

/// A timestamp: nanoseconds, u64.
pub fn put_ts(w: &mut Writer, ts: Timestamp) {
    w.u64(ts.as_nanos());
}

/// Reads what [`put_ts`] wrote.
pub fn get_ts(r: &mut Reader<'_>) -> DecodeResult<Timestamp> {
    Ok(Timestamp::from_nanos(r.u64()?))
}

/// `flag | term u64 | node u64 | committed u8` for an optional vote.
pub fn put_opt_vote(w: &mut Writer, v: Option<&Vote<u64>>) {
    match v {
        Some(v) => {
            w.u8(1);
            w.u64(v.leader_id.term);
            w.u64(v.leader_id.node_id);
            w.u8(u8::from(v.committed));
        }
        None => w.u8(0),
    }
}

/// Reads what [`put_opt_vote`] wrote.
pub fn get_opt_vote(r: &mut Reader<'_>) -> DecodeResult<Option<Vote<u64>>> {
    if !r.flag("vote")? {
        return Ok(None);
    }
    let term = r.u64()?;
    let node = r.u64()?;
    let committed = r.flag("vote committed")?;
    Ok(Some(Vote {
        leader_id: LeaderId::new(term, node),
        committed,
    }))
}

/// The voter sets (one, or two while joint) and the nodes with addresses.
pub fn put_membership(w: &mut Writer, m: &Membership<u64, BasicNode>) {
    let configs = m.get_joint_config();
    w.count(configs.len());
    for set in configs {
        w.count(set.len());
        for id in set {
            w.u64(*id);
        }
    }
    let nodes: Vec<_> = m.nodes().collect();
    w.count(nodes.len());
    for (id, node) in nodes {
        w.u64(*id);
        w.bytes(node.addr.as_bytes());
    }
}

/// Reads what [`put_membership`] wrote.
pub fn get_membership(r: &mut Reader<'_>) -> DecodeResult<Membership<u64, BasicNode>> {
    let n = r.count("voter sets")?;
    let mut configs = Vec::with_capacity(n.min(4));
    for _ in 0..n {
        let k = r.count("voters")?;
        let mut set = BTreeSet::new();
        for _ in 0..k {
            set.insert(r.u64()?);
        }
        configs.push(set);
    }
    let n = r.count("nodes")?;
    let mut nodes = BTreeMap::new();
    for _ in 0..n {
        let id = r.u64()?;
        let addr = r.string(ADDR_MAX, "node address")?;
        nodes.insert(id, BasicNode { addr });
    }
    Ok(Membership::new(configs, nodes))
}

/// An entry: `log id | kind u8 | body` (body: a command, a membership or
/// nothing).
pub fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut w = Writer::default();
    put_log_id(&mut w, &e.log_id);
    match &e.payload {
        EntryPayload::Blank => w.u8(KIND_BLANK),
        EntryPayload::Normal(c) => {
            w.u8(KIND_NORMAL);
            put_command(&mut w, c);
        }
        EntryPayload::Membership(m) => {
            w.u8(KIND_MEMBERSHIP);
            put_membership(&mut w, m);
        }
    }
    w.0
}

/// Reads what [`encode_entry`] wrote.
pub fn decode_entry(b: &[u8]) -> DecodeResult<Entry> {
    let mut r = Reader::new(b);
    let log_id = get_log_id(&mut r)?;
    let payload = match r.u8()? {
        KIND_BLANK => EntryPayload::<TypeConfig>::Blank,
        KIND_NORMAL => EntryPayload::Normal(get_command(&mut r)?),
        KIND_MEMBERSHIP => EntryPayload::Membership(get_membership(&mut r)?),
        k => return Err(format!("unknown entry kind {k}")),
    };
    r.finish()?;
    Ok(Entry { log_id, payload })
}

fn put_body(w: &mut Writer, b: &TxnBody) {
    w.u64(b.snapshot_ts.as_nanos());
    w.count(b.reads.len());
    for r in &b.reads {
        w.bytes(r.table.as_bytes());
        w.bytes(&r.start);
        match &r.end {
            Some(end) => {
                w.u8(1);
                w.bytes(end);
            }
            None => w.u8(0),
        }
    }
    w.count(b.writes.len());
    for x in &b.writes {
        w.bytes(x.table.as_bytes());
        w.bytes(&x.key);
        match &x.value {
            Some(v) => {
                w.u8(1);
                w.bytes(v);
            }
            None => w.u8(0),
        }
    }
}

fn get_body(r: &mut Reader<'_>) -> DecodeResult<TxnBody> {
    let snapshot_ts = Timestamp::from_nanos(r.u64()?);
    let n = r.count("read ranges")?;
    let mut reads = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let table = r.string(TABLE_NAME_MAX, "table name")?;
        // A range bound may be one byte past the longest key (a point read's
        // end).
        let start = r.bytes(KEY_MAX + 1, "range start")?;
        let end = if r.flag("range end")? {
            Some(r.bytes(KEY_MAX + 1, "range end")?)
        } else {
            None
        };
        reads.push(ReadRange { table, start, end });
    }
    let n = r.count("writes")?;
    let mut writes = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let table = r.string(TABLE_NAME_MAX, "table name")?;
        let key = r.bytes(KEY_MAX, "key")?;
        let value = if r.flag("write")? {
            Some(r.bytes(VALUE_MAX, "value")?)
        } else {
            None
        };
        writes.push(Write { table, key, value });
    }
    Ok(TxnBody {
        snapshot_ts,
        reads,
        writes,
    })
}

/// A command: `tag u8 | fields` (FORMAT.md).
pub fn put_command(w: &mut Writer, c: &Command) {
    match c {
        Command::Transaction { body, commit_ts } => {
            w.u8(CMD_TXN);
            w.u64(commit_ts.as_nanos());
            put_body(w, body);
        }
        Command::Prepare { gid, body } => {
            w.u8(CMD_PREPARE);
            w.bytes(gid.as_bytes());
            put_body(w, body);
        }
        Command::CommitPrepared { gid, ts } => {
            w.u8(CMD_COMMIT_PREPARED);
            w.bytes(gid.as_bytes());
            w.u64(ts.as_nanos());
        }
        Command::RollbackPrepared { gid } => {
            w.u8(CMD_ROLLBACK_PREPARED);
            w.bytes(gid.as_bytes());
        }
    }
}

/// Reads what [`put_command`] wrote.
pub fn get_command(r: &mut Reader<'_>) -> DecodeResult<Command> {
    Ok(match r.u8()? {
        CMD_TXN => {
            let commit_ts = Timestamp::from_nanos(r.u64()?);
            Command::Transaction {
                body: get_body(r)?,
                commit_ts,
            }
        }
        CMD_PREPARE => Command::Prepare {
            gid: r.string(GID_MAX, "gid")?,
            body: get_body(r)?,
        },
        CMD_COMMIT_PREPARED => Command::CommitPrepared {
            gid: r.string(GID_MAX, "gid")?,
            ts: Timestamp::from_nanos(r.u64()?),
        },
        CMD_ROLLBACK_PREPARED => Command::RollbackPrepared {
            gid: r.string(GID_MAX, "gid")?,
        },
        t => return Err(format!("unknown command tag {t}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<Entry> {
        let id = |t, i| LogId::new(CommittedLeaderId::new(t, 3), i);
        let body = TxnBody {
            snapshot_ts: Timestamp::from_nanos(17),
            reads: vec![
                ReadRange::point("t", b"k"),
                ReadRange {
                    table: "u".into(),
                    start: vec![],
                    end: None,
                },
            ],
            writes: vec![
                Write {
                    table: "t".into(),
                    key: b"k".to_vec(),
                    value: Some(b"v".to_vec()),
                },
                Write {
                    table: "t".into(),
                    key: b"j".to_vec(),
                    value: None,
                },
            ],
        };
        let mut nodes = BTreeMap::new();
        nodes.insert(1, BasicNode::new("a:1"));
        nodes.insert(2, BasicNode::new("b:2"));
        let configs = vec![BTreeSet::from([1, 2]), BTreeSet::from([2])];
        vec![
            Entry {
                log_id: id(1, 0),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: id(2, 1),
                payload: EntryPayload::Membership(Membership::new(configs, nodes)),
            },
            Entry {
                log_id: id(2, 2),
                payload: EntryPayload::Normal(Command::Transaction {
                    body: body.clone(),
                    commit_ts: Timestamp::from_nanos(99),
                }),
            },
            Entry {
                log_id: id(2, 3),
                payload: EntryPayload::Normal(Command::Prepare {
                    gid: "g".into(),
                    body,
                }),
            },
            Entry {
                log_id: id(2, 4),
                payload: EntryPayload::Normal(Command::CommitPrepared {
                    gid: "g".into(),
                    ts: Timestamp::from_nanos(5),
                }),
            },
            Entry {
                log_id: id(2, 5),
                payload: EntryPayload::Normal(Command::RollbackPrepared { gid: "h".into() }),
            },
        ]
    }

    #[test]
    fn entries_round_trip_and_every_cut_is_refused() {
        for e in entries() {
            let b = encode_entry(&e);
            let back = decode_entry(&b);
            assert_eq!(back.as_ref().map(|x| &x.log_id), Ok(&e.log_id));
            assert_eq!(back.map(|x| x.payload), Ok(e.payload.clone()));
            for cut in 0..b.len() {
                assert!(decode_entry(&b[..cut]).is_err(), "cut at {cut} accepted");
            }
            let mut longer = b.clone();
            longer.push(0);
            assert!(decode_entry(&longer).is_err(), "trailing byte accepted");
        }
    }

    #[test]
    fn votes_and_log_ids_round_trip() {
        let mut w = Writer::default();
        let v = Vote::new_committed(7, 2);
        put_opt_vote(&mut w, Some(&v));
        put_opt_vote(&mut w, None);
        let id = LogId::new(CommittedLeaderId::new(7, 2), 40);
        put_opt_log_id(&mut w, Some(&id));
        put_opt_log_id(&mut w, None);
        let mut r = Reader::new(&w.0);
        assert_eq!(get_opt_vote(&mut r), Ok(Some(v)));
        assert_eq!(get_opt_vote(&mut r), Ok(None));
        assert_eq!(get_opt_log_id(&mut r), Ok(Some(id)));
        assert_eq!(get_opt_log_id(&mut r), Ok(None));
        assert_eq!(r.finish(), Ok(()));
    }
}

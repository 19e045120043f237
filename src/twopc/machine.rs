//! The coordinator's protocol as a sans-IO state machine.
//!
//! ```text
//!   (no record) ──begin──► PREPARED ──all voted yes──► COMMITTED ──all acked──► ENDED
//!                              │                                              ▲
//!                              └──a no, or the vote deadline──► ABORTED ──────┘
//! ```
//! Inputs are events (`begin`, votes, acknowledgements, the time, reports
//! of participants' in-doubt transactions); outputs are collected in a
//! [`Ready`]: records for the decision log and messages for participants.
//! The driver must make `persist` durable before it sends `send`: the
//! decision reaches the log before any participant hears it, the point of
//! no return.
//!
//! Recovery is [`Machine::restore`] from the logged records, exactly:
//! COMMITTED without ENDED → commit is sent again to every participant;
//! PREPARED without a decision → aborted (presumed abort) and rollback
//! sent to every participant; no record → the transaction never started.
//! Participants' in-doubt transactions that the log does not know are
//! rolled back.
//!
//! The commit timestamp is chosen as Spanner's coordinator does: each yes
//! vote carries the participant's prepare timestamp raised to the
//! driver's clock reading (`now().latest`) when the vote arrived, and the
//! commit timestamp is the highest of them — at least every prepare
//! timestamp and the coordinator's `latest` at the decision. It is logged
//! with COMMITTED and sent with every commit, the same after a restart.
//!
//! Messages may be lost, duplicated, delayed or reordered: votes and
//! acknowledgements are idempotent, decisions are sent again every
//! `resend` until acknowledged, a vote for an unknown transaction is
//! answered with rollback.

use std::collections::{BTreeMap, BTreeSet};

use crate::clock::Timestamp;

/// A participant's index in the coordinator's list.
pub type Pid = u32;

/// An entry of the decision log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Phase one began: prepare goes to these participants.
    Prepared {
        /// Global transaction id.
        gid: String,
        /// Who takes part.
        participants: Vec<Pid>,
    },
    /// Decided: commit, at timestamp `ts`.
    Committed {
        /// Global transaction id.
        gid: String,
        /// The commit timestamp every participant commits at (`ZERO` in
        /// a record of a log written before timestamps: each participant
        /// then stamps its own).
        ts: Timestamp,
    },
    /// Decided: roll back.
    Aborted {
        /// Global transaction id.
        gid: String,
    },
    /// Every participant acknowledged the decision: forget the transaction.
    Ended {
        /// Global transaction id.
        gid: String,
    },
}

impl Entry {
    /// The transaction the record is about.
    pub fn gid(&self) -> &str {
        match self {
            Entry::Prepared { gid, .. }
            | Entry::Committed { gid, .. }
            | Entry::Aborted { gid }
            | Entry::Ended { gid } => gid,
        }
    }
}

/// A message to a participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Phase one: prepare the work of `gid`, and vote.
    Prepare(String),
    /// Phase two: commit the prepared `gid` at the timestamp, and
    /// acknowledge.
    Commit(String, Timestamp),
    /// Phase two: roll back `gid` (prepared or not), and acknowledge.
    Rollback(String),
}

/// How a transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Committed at every participant.
    Committed,
    /// Rolled back at every participant.
    Aborted,
}

/// What the driver must do next: persist (durably), then send.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Records to append to the decision log and make durable first.
    pub persist: Vec<Entry>,
    /// Then messages to send.
    pub send: Vec<(Pid, Message)>,
    /// Transactions whose outcome was decided (reported once each).
    pub decided: Vec<(String, Outcome)>,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.persist.is_empty() && self.send.is_empty() && self.decided.is_empty()
    }
}

/// An event for the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Start two-phase commit of `gid` across `participants`.
    Begin {
        /// Global transaction id (new).
        gid: String,
        /// Who takes part.
        participants: Vec<Pid>,
    },
    /// A participant's vote.
    Vote {
        /// Transaction.
        gid: String,
        /// Voter.
        from: Pid,
        /// Prepared (yes) or failed to (no).
        yes: bool,
        /// With a yes: the voter's prepare timestamp, raised to the
        /// driver's clock's `now().latest` when the vote arrived; the
        /// commit timestamp is the highest of these. Ignored with a no.
        ts: Timestamp,
    },
    /// A participant applied the decision (or had nothing to apply).
    Ack {
        /// Transaction.
        gid: String,
        /// Who.
        from: Pid,
    },
    /// The time, in milliseconds of the driver's clock.
    Tick(u64),
    /// The transactions of ours a participant holds prepared.
    InDoubt {
        /// Who.
        from: Pid,
        /// Their gids.
        gids: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Voting {
        yes: BTreeSet<Pid>,
        deadline: u64,
        /// The highest timestamp the yes votes carried.
        ts: Timestamp,
    },
    Deciding {
        outcome: Outcome,
        acked: BTreeSet<Pid>,
        resend_at: u64,
        /// The commit timestamp (`ZERO` for an abort).
        ts: Timestamp,
    },
}

#[derive(Clone, Debug)]
struct Txn {
    participants: Vec<Pid>,
    phase: Phase,
}

/// The coordinator's state.
#[derive(Debug)]
pub struct Machine {
    txns: BTreeMap<String, Txn>,
    ready: Ready,
    now: u64,
    vote_timeout: u64,
    resend: u64,
}

impl Machine {
    /// An empty coordinator: votes are awaited `vote_timeout` ms, decisions
    /// sent again every `resend` ms until acknowledged.
    pub fn new(vote_timeout: u64, resend: u64) -> Machine {
        Machine {
            txns: BTreeMap::new(),
            ready: Ready::default(),
            now: 0,
            vote_timeout,
            resend: resend.max(1),
        }
    }

    /// The coordinator after a restart, from its logged records (in log
    /// order) at time `now`: unfinished decisions are sent again, undecided
    /// transactions are aborted.
    pub fn restore(records: &[Entry], now: u64, vote_timeout: u64, resend: u64) -> Machine {
        let mut m = Machine::new(vote_timeout, resend);
        m.now = now;
        for r in records {
            match r {
                Entry::Prepared { gid, participants } => {
                    m.txns.insert(
                        gid.clone(),
                        Txn {
                            participants: participants.clone(),
                            phase: Phase::Voting {
                                yes: BTreeSet::new(),
                                deadline: now,
                                ts: Timestamp::ZERO,
                            },
                        },
                    );
                }
                Entry::Committed { gid, .. } | Entry::Aborted { gid } => {
                    let (outcome, ts) = match r {
                        Entry::Committed { ts, .. } => (Outcome::Committed, *ts),
                        _ => (Outcome::Aborted, Timestamp::ZERO),
                    };
                    if let Some(t) = m.txns.get_mut(gid) {
                        t.phase = Phase::Deciding {
                            outcome,
                            acked: BTreeSet::new(),
                            resend_at: now,
                            ts,
                        };
                    }
                }
                Entry::Ended { gid } => {
                    m.txns.remove(gid);
                }
            }
        }
        let undecided: Vec<String> = m
            .txns
            .iter()
            .filter(|(_, t)| matches!(t.phase, Phase::Voting { .. }))
            .map(|(g, _)| g.clone())
            .collect();
        for gid in undecided {
            m.decide(&gid, Outcome::Aborted);
        }
        let deciding: Vec<String> = m.txns.keys().cloned().collect();
        for gid in deciding {
            m.send_decision(&gid);
        }
        m
    }

    /// Takes what the driver must do now.
    pub fn ready(&mut self) -> Ready {
        std::mem::take(&mut self.ready)
    }

    /// Transactions not yet ended.
    pub fn open(&self) -> usize {
        self.txns.len()
    }

    /// Whether `gid` is still being coordinated.
    pub fn knows(&self, gid: &str) -> bool {
        self.txns.contains_key(gid)
    }

    /// Feeds one event.
    pub fn step(&mut self, input: Input) {
        match input {
            Input::Begin { gid, participants } => self.begin(gid, participants),
            Input::Vote { gid, from, yes, ts } => self.vote(gid, from, yes, ts),
            Input::Ack { gid, from } => self.ack(&gid, from),
            Input::Tick(now) => self.tick(now),
            Input::InDoubt { from, gids } => {
                for gid in gids {
                    if !self.txns.contains_key(&gid) {
                        // No record (or ended): presumed abort.
                        self.ready.send.push((from, Message::Rollback(gid)));
                    }
                }
            }
        }
    }

    fn begin(&mut self, gid: String, participants: Vec<Pid>) {
        if self.txns.contains_key(&gid) {
            return;
        }
        let mut participants = participants;
        participants.sort_unstable();
        participants.dedup();
        self.ready.persist.push(Entry::Prepared {
            gid: gid.clone(),
            participants: participants.clone(),
        });
        for &p in &participants {
            self.ready.send.push((p, Message::Prepare(gid.clone())));
        }
        let deadline = self.now.saturating_add(self.vote_timeout);
        self.txns.insert(
            gid.clone(),
            Txn {
                participants,
                phase: Phase::Voting {
                    yes: BTreeSet::new(),
                    deadline,
                    ts: Timestamp::ZERO,
                },
            },
        );
        self.maybe_commit(&gid);
    }

    fn vote(&mut self, gid: String, from: Pid, yes: bool, at: Timestamp) {
        let Some(t) = self.txns.get_mut(&gid) else {
            if yes {
                // Decided and forgotten, or never ours: presumed abort. A
                // participant that committed answers "unknown", harmlessly.
                self.ready.send.push((from, Message::Rollback(gid)));
            }
            return;
        };
        if !t.participants.contains(&from) {
            return;
        }
        match &mut t.phase {
            Phase::Voting { yes: ayes, ts, .. } => {
                if yes {
                    ayes.insert(from);
                    *ts = (*ts).max(at);
                    self.maybe_commit(&gid);
                } else {
                    self.decide(&gid, Outcome::Aborted);
                    self.send_decision(&gid);
                }
            }
            // A late or duplicated vote: the decision is already out.
            Phase::Deciding { .. } => {}
        }
    }

    fn maybe_commit(&mut self, gid: &str) {
        let all = self.txns.get(gid).is_some_and(|t| match &t.phase {
            Phase::Voting { yes, .. } => t.participants.iter().all(|p| yes.contains(p)),
            Phase::Deciding { .. } => false,
        });
        if all {
            self.decide(gid, Outcome::Committed);
            self.send_decision(gid);
        }
    }

    fn decide(&mut self, gid: &str, outcome: Outcome) {
        let Some(t) = self.txns.get_mut(gid) else {
            return;
        };
        let ts = match (&t.phase, outcome) {
            (Phase::Voting { ts, .. }, Outcome::Committed) => *ts,
            _ => Timestamp::ZERO,
        };
        t.phase = Phase::Deciding {
            outcome,
            acked: BTreeSet::new(),
            resend_at: self.now,
            ts,
        };
        let gid = gid.to_owned();
        self.ready.persist.push(match outcome {
            Outcome::Committed => Entry::Committed {
                gid: gid.clone(),
                ts,
            },
            Outcome::Aborted => Entry::Aborted { gid: gid.clone() },
        });
        self.ready.decided.push((gid, outcome));
    }

    /// Sends the decision to every participant that has not acknowledged.
    fn send_decision(&mut self, gid: &str) {
        let now = self.now;
        let resend = self.resend;
        let Some(t) = self.txns.get_mut(gid) else {
            return;
        };
        let Phase::Deciding {
            outcome,
            acked,
            resend_at,
            ts,
        } = &mut t.phase
        else {
            return;
        };
        *resend_at = now.saturating_add(resend);
        for &p in &t.participants {
            if !acked.contains(&p) {
                let m = match outcome {
                    Outcome::Committed => Message::Commit(gid.to_owned(), *ts),
                    Outcome::Aborted => Message::Rollback(gid.to_owned()),
                };
                self.ready.send.push((p, m));
            }
        }
    }

    fn ack(&mut self, gid: &str, from: Pid) {
        let Some(t) = self.txns.get_mut(gid) else {
            return;
        };
        let Phase::Deciding { acked, .. } = &mut t.phase else {
            return; // an ack before any decision: a stray message
        };
        if t.participants.contains(&from) {
            acked.insert(from);
        }
        if t.participants.iter().all(|p| acked.contains(p)) {
            self.txns.remove(gid);
            self.ready.persist.push(Entry::Ended {
                gid: gid.to_owned(),
            });
        }
    }

    fn tick(&mut self, now: u64) {
        self.now = self.now.max(now);
        let now = self.now;
        let mut late = Vec::new();
        let mut resend = Vec::new();
        for (gid, t) in &self.txns {
            match &t.phase {
                Phase::Voting { deadline, .. } if *deadline <= now => late.push(gid.clone()),
                Phase::Deciding { resend_at, .. } if *resend_at <= now => resend.push(gid.clone()),
                _ => {}
            }
        }
        for gid in late {
            self.decide(&gid, Outcome::Aborted);
            self.send_decision(&gid);
        }
        for gid in resend {
            self.send_decision(&gid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn begin(m: &mut Machine, gid: &str, n: Pid) -> Ready {
        m.step(Input::Begin {
            gid: gid.into(),
            participants: (0..n).collect(),
        });
        m.ready()
    }

    /// The timestamp participant `p`'s yes vote carries in these tests.
    fn vote_ts(p: Pid) -> Timestamp {
        Timestamp::from_nanos(1_000 + u64::from(3 - p % 4) * 7)
    }

    fn vote(m: &mut Machine, gid: &str, from: Pid, yes: bool) -> Ready {
        m.step(Input::Vote {
            gid: gid.into(),
            from,
            yes,
            ts: vote_ts(from),
        });
        m.ready()
    }

    #[test]
    fn the_decision_is_logged_before_it_is_sent_and_ended_after_all_acks() {
        let mut m = Machine::new(1000, 100);
        let r = begin(&mut m, "g", 2);
        assert_eq!(r.persist.len(), 1, "PREPARED first");
        assert_eq!(r.send.len(), 2, "prepare to both");
        assert!(
            vote(&mut m, "g", 0, true).is_empty(),
            "one vote decides nothing"
        );
        let r = vote(&mut m, "g", 1, true);
        assert_eq!(
            r.persist,
            [Entry::Committed {
                gid: "g".into(),
                ts: vote_ts(0).max(vote_ts(1)),
            }],
            "the decision, at the highest vote's timestamp, is in the same Ready as the commits, to be persisted first"
        );
        assert_eq!(r.send.len(), 2);
        assert!(
            r.send
                .iter()
                .all(|(_, m)| *m == Message::Commit("g".into(), vote_ts(0))),
            "every participant commits at the logged timestamp: {:?}",
            r.send
        );
        assert_eq!(r.decided, [("g".into(), Outcome::Committed)]);
        m.step(Input::Ack {
            gid: "g".into(),
            from: 0,
        });
        assert!(m.ready().persist.is_empty());
        m.step(Input::Ack {
            gid: "g".into(),
            from: 1,
        });
        assert_eq!(m.ready().persist, [Entry::Ended { gid: "g".into() }]);
        assert_eq!(m.open(), 0);
    }

    #[test]
    fn a_no_vote_or_the_deadline_aborts() {
        let mut m = Machine::new(1000, 100);
        begin(&mut m, "no", 2);
        let r = vote(&mut m, "no", 1, false);
        assert_eq!(r.persist, [Entry::Aborted { gid: "no".into() }]);
        assert_eq!(r.send.len(), 2, "rollback to both, voted or not");
        begin(&mut m, "slow", 2);
        vote(&mut m, "slow", 0, true);
        m.step(Input::Tick(999));
        assert!(m.ready().persist.is_empty(), "not yet");
        m.step(Input::Tick(1000));
        let r = m.ready();
        assert_eq!(r.persist, [Entry::Aborted { gid: "slow".into() }]);
        assert!(r
            .send
            .iter()
            .all(|(_, msg)| *msg == Message::Rollback("slow".into())));
        let r = vote(&mut m, "slow", 1, true);
        assert!(r.is_empty(), "a late yes changes nothing");
    }

    #[test]
    fn restore_follows_the_log_exactly() {
        let p = |g: &str| Entry::Prepared {
            gid: g.into(),
            participants: vec![0, 1],
        };
        let log = vec![
            p("committed"),
            Entry::Committed {
                gid: "committed".into(),
                ts: Timestamp::from_nanos(77),
            },
            p("undecided"),
            p("ended"),
            Entry::Aborted {
                gid: "ended".into(),
            },
            Entry::Ended {
                gid: "ended".into(),
            },
        ];
        let mut m = Machine::restore(&log, 0, 1000, 100);
        let r = m.ready();
        assert_eq!(
            r.persist,
            [Entry::Aborted {
                gid: "undecided".into()
            }],
            "presumed abort, logged"
        );
        let mut sent = r.send.clone();
        sent.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        assert_eq!(
            sent,
            [
                (
                    0,
                    Message::Commit("committed".into(), Timestamp::from_nanos(77))
                ),
                (0, Message::Rollback("undecided".into())),
                (
                    1,
                    Message::Commit("committed".into(), Timestamp::from_nanos(77))
                ),
                (1, Message::Rollback("undecided".into())),
            ]
        );
        assert!(!m.knows("ended"));
        m.step(Input::InDoubt {
            from: 1,
            gids: vec!["ended".into(), "committed".into(), "stranger".into()],
        });
        let r = m.ready();
        assert_eq!(
            r.send,
            [
                (1, Message::Rollback("ended".into())),
                (1, Message::Rollback("stranger".into())),
            ],
            "in-doubt transactions the log does not know are rolled back"
        );
    }

    /// A small deterministic network: messages are dropped, duplicated and
    /// reordered by a seeded generator; participants vote yes unless told
    /// otherwise and apply decisions idempotently. Every run must end with
    /// one outcome applied everywhere, equal to the one the log decided.
    #[test]
    fn lossy_duplicating_reordering_network_still_agrees() {
        for seed in 1..300u64 {
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let n = 3;
            let refuse = next() % 4 == 0;
            let mut m = Machine::new(50, 10);
            let mut net: Vec<(Pid, Message)> = Vec::new();
            let mut log: Vec<Entry> = Vec::new();
            let mut applied: Vec<Option<Outcome>> = vec![None; n as usize];
            m.step(Input::Begin {
                gid: "g".into(),
                participants: (0..n).collect(),
            });
            let mut now = 0;
            for _ in 0..2000 {
                let r = m.ready();
                log.extend(r.persist);
                net.extend(r.send);
                if net.is_empty() || next() % 5 == 0 {
                    now += 7;
                    m.step(Input::Tick(now));
                    continue;
                }
                let i = (next() % net.len() as u64) as usize;
                let (to, msg) = if next() % 4 == 0 {
                    net[i].clone() // duplicated: stays in flight
                } else {
                    net.swap_remove(i)
                };
                if next() % 3 == 0 {
                    continue; // lost
                }
                let p = to as usize;
                match msg {
                    Message::Prepare(g) => m.step(Input::Vote {
                        gid: g,
                        from: to,
                        yes: !(refuse && to == 1) && applied[p].is_none(),
                        ts: vote_ts(to),
                    }),
                    Message::Commit(g, ts) => {
                        let top = (0..n).map(vote_ts).max();
                        assert_eq!(Some(ts), top, "seed {seed}: the commit timestamp");
                        assert_ne!(applied[p], Some(Outcome::Aborted), "seed {seed}");
                        applied[p] = Some(Outcome::Committed);
                        m.step(Input::Ack { gid: g, from: to });
                    }
                    Message::Rollback(g) => {
                        assert_ne!(applied[p], Some(Outcome::Committed), "seed {seed}");
                        applied[p] = Some(Outcome::Aborted);
                        m.step(Input::Ack { gid: g, from: to });
                    }
                }
                if m.open() == 0 {
                    break;
                }
            }
            assert_eq!(m.open(), 0, "seed {seed}: never ended");
            log.extend(m.ready().persist);
            let decided = log.iter().find_map(|r| match r {
                Entry::Committed { .. } => Some(Outcome::Committed),
                Entry::Aborted { .. } => Some(Outcome::Aborted),
                _ => None,
            });
            assert!(decided.is_some(), "seed {seed}: no decision logged");
            assert!(
                applied.iter().all(|a| *a == decided),
                "seed {seed}: {applied:?} vs {decided:?}"
            );
            if refuse {
                assert_eq!(decided, Some(Outcome::Aborted), "seed {seed}");
            }
            assert_eq!(log.last(), Some(&Entry::Ended { gid: "g".into() }));
        }
    }
}

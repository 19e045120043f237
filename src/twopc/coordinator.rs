//! The thin loop that drives the state machine: it persists what the
//! machine asks (the decision log, fsynced), then delivers messages to
//! participants and feeds their answers and the time back.
//!
//! Each call to [`Coordinator::step`] does one unit of I/O, so a test (or
//! the example) can stop anywhere between the phases, drop the coordinator
//! as a crash would, and open it again: [`Coordinator::open`] restores the
//! machine from the log, asks every participant which of this
//! coordinator's transactions it holds in doubt, and finishes them.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::log::DecisionLog;
use super::machine::{Entry, Input, Machine, Message, Outcome, Pid};
use super::participant::Participant;
use crate::clock::{Clock, FixedEpsilon, Timestamp};
use crate::error::{Error, Result};
use crate::io::Vfs;
use crate::limits::TWOPC_PARTICIPANTS_MAX;

/// The clock of a coordinator opened without one: the system's.
fn default_clock() -> Arc<dyn Clock> {
    Arc::new(FixedEpsilon::default())
}

/// Timing of a coordinator.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How long phase one waits for votes before it aborts.
    pub vote_timeout: Duration,
    /// How often an unacknowledged decision is sent again.
    pub resend: Duration,
    /// How long [`Coordinator::execute`] waits for acknowledgements after
    /// the decision before it returns (delivery goes on at later calls and
    /// at the next open).
    pub ack_wait: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            vote_timeout: Duration::from_secs(5),
            resend: Duration::from_millis(100),
            ack_wait: Duration::from_secs(5),
        }
    }
}

/// A two-phase-commit coordinator over participants of one kind.
pub struct Coordinator<P: Participant> {
    name: String,
    machine: Machine,
    log: DecisionLog,
    participants: Vec<P>,
    work: HashMap<(String, Pid), P::Work>,
    outbox: VecDeque<(Pid, Message)>,
    /// Outcomes decided in this run, with the commit timestamp (`ZERO`
    /// for an abort), until `finish` reports them.
    decided: HashMap<String, (Outcome, Timestamp)>,
    epoch: u128,
    seq: u64,
    /// Where its timeouts and resends read time, and how it sleeps.
    clock: Arc<dyn Clock>,
    /// `clock.monotonic()` at the open: the machine's ticks count from it.
    started: Duration,
    timing: Timing,
}

impl<P: Participant> Coordinator<P> {
    /// Opens the coordinator `name` with its decision log at `log_path`,
    /// and finishes what a previous run left: decisions logged but not
    /// acknowledged are sent again, undecided transactions are rolled
    /// back, and participants' in-doubt transactions of this coordinator
    /// that the log does not know are rolled back.
    pub fn open(
        vfs: Arc<dyn Vfs>,
        log_path: &Path,
        name: &str,
        participants: Vec<P>,
        timing: Timing,
    ) -> Result<Self> {
        Self::open_with_clock(vfs, log_path, name, participants, timing, default_clock())
    }

    /// [`Coordinator::open`] with its timeouts, resends and pauses on
    /// `clock` (its monotonic time and `Clock::sleep`): a simulated clock
    /// runs them without waiting.
    pub fn open_with_clock(
        vfs: Arc<dyn Vfs>,
        log_path: &Path,
        name: &str,
        participants: Vec<P>,
        timing: Timing,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let mut c = Self::restore_with_clock(vfs, log_path, name, participants, timing, clock)?;
        c.settle()?;
        Ok(c)
    }

    /// Like [`Coordinator::open`] but only queues the work of recovery;
    /// [`Coordinator::step`] carries it out (tests crash in the middle).
    pub fn restore(
        vfs: Arc<dyn Vfs>,
        log_path: &Path,
        name: &str,
        participants: Vec<P>,
        timing: Timing,
    ) -> Result<Self> {
        Self::restore_with_clock(vfs, log_path, name, participants, timing, default_clock())
    }

    /// [`Coordinator::restore`] on `clock`, as [`Coordinator::open_with_clock`].
    pub fn restore_with_clock(
        vfs: Arc<dyn Vfs>,
        log_path: &Path,
        name: &str,
        participants: Vec<P>,
        timing: Timing,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        if name.is_empty() || name.len() > 64 || name.contains('/') {
            return Err(Error::Unsupported(
                "coordinator names are 1..=64 bytes, no '/'",
            ));
        }
        if participants.len() > TWOPC_PARTICIPANTS_MAX {
            return Err(Error::Unsupported(
                "more participants than TWOPC_PARTICIPANTS_MAX",
            ));
        }
        let (log, records) = DecisionLog::open(vfs, log_path)?;
        let machine = Machine::restore(
            &records,
            0,
            timing.vote_timeout.as_millis() as u64,
            timing.resend.as_millis() as u64,
        );
        let mut c = Coordinator {
            name: name.to_owned(),
            machine,
            log,
            participants,
            work: HashMap::new(),
            outbox: VecDeque::new(),
            decided: HashMap::new(),
            // Gids carry the opening time, so they never repeat across runs:
            // the system's wall clock, which a simulated clock restarted at
            // the same instant would not be.
            epoch: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros()),
            seq: 0,
            started: clock.monotonic(),
            clock,
            timing,
        };
        let prefix = format!("{name}/");
        for (i, p) in c.participants.iter().enumerate() {
            // An unreachable participant keeps its in-doubt transactions
            // until a later open reaches it.
            if let Ok(gids) = p.in_doubt() {
                let gids = gids
                    .into_iter()
                    .filter(|g| g.starts_with(&prefix))
                    .collect();
                c.machine.step(Input::InDoubt {
                    from: i as Pid,
                    gids,
                });
            }
        }
        Ok(c)
    }

    /// Runs `work` (one item per participant, in order) as one atomic
    /// transaction: prepares every item, logs the decision, then applies
    /// it everywhere, a commit at one commit timestamp: at least every
    /// participant's prepare timestamp and this coordinator's clock's
    /// `now().latest`, logged with the decision; a commit is reported only
    /// once the clock's `earliest` has passed it (commit wait). Returns the
    /// outcome once decided and acknowledged
    /// (or after `Timing::ack_wait`; the decision is final either way).
    pub fn execute(&mut self, work: Vec<P::Work>) -> Result<Outcome> {
        let gid = self.begin(work)?;
        self.finish(&gid)
    }

    /// Starts phase one of a new transaction; returns its gid. Drive it
    /// with [`Coordinator::step`] or [`Coordinator::finish`].
    pub fn begin(&mut self, work: Vec<P::Work>) -> Result<String> {
        if work.len() != self.participants.len() {
            return Err(Error::Unsupported(
                "execute takes one work item per participant",
            ));
        }
        self.seq += 1;
        let gid = format!("{}/{}-{}", self.name, self.epoch, self.seq);
        for (i, w) in work.into_iter().enumerate() {
            self.work.insert((gid.clone(), i as Pid), w);
        }
        self.machine.step(Input::Begin {
            gid: gid.clone(),
            participants: (0..self.participants.len() as Pid).collect(),
        });
        Ok(gid)
    }

    /// Steps until `gid` is decided and acknowledged by everyone, or
    /// acknowledgements took longer than `Timing::ack_wait`.
    pub fn finish(&mut self, gid: &str) -> Result<Outcome> {
        let mut since = None;
        loop {
            if let Some(&(o, ts)) = self.decided.get(gid) {
                let now = self.clock.monotonic();
                let t = *since.get_or_insert(now);
                if !self.machine.knows(gid) || now.saturating_sub(t) >= self.timing.ack_wait {
                    self.decided.remove(gid);
                    if o == Outcome::Committed {
                        // Commit wait: nobody hears "committed" before the
                        // commit timestamp has passed on this clock, so a
                        // transaction that starts afterwards anywhere gets a
                        // later timestamp (external consistency). An error
                        // reading the clock reaches the caller; the
                        // decision stands.
                        let now = self.clock.now()?;
                        let by = self.clock.monotonic()
                            + ts.since(now.earliest)
                            + std::time::Duration::from_nanos(1);
                        self.clock.wait_until(ts, by)?;
                    }
                    return Ok(o);
                }
            }
            if !self.step()? {
                return Err(Error::Unsupported(
                    "transaction unknown to this coordinator",
                ));
            }
        }
    }

    /// Does one unit of work: persist what the machine decided (fsync),
    /// or deliver one message, or let time pass. Returns `false` when
    /// there is nothing left to do.
    pub fn step(&mut self) -> Result<bool> {
        let ready = self.machine.ready();
        if !ready.is_empty() {
            // The decision log first: nobody hears a decision that a crash
            // could still take back.
            self.log.append(&ready.persist)?;
            self.outbox.extend(ready.send);
            for (gid, o) in ready.decided {
                let ts = ready
                    .persist
                    .iter()
                    .find_map(|e| match e {
                        Entry::Committed { gid: g, ts } if *g == gid => Some(*ts),
                        _ => None,
                    })
                    .unwrap_or(Timestamp::ZERO);
                self.decided.insert(gid, (o, ts));
            }
            return Ok(true);
        }
        if let Some((to, msg)) = self.outbox.pop_front() {
            self.deliver(to, msg);
            return Ok(true);
        }
        if self.machine.open() == 0 {
            return Ok(false);
        }
        // Waiting on time (a vote deadline, a resend): sleep a little.
        self.clock
            .sleep(self.timing.resend.min(Duration::from_millis(10)));
        let now = self.clock.monotonic().saturating_sub(self.started);
        let now = now.as_millis() as u64;
        self.machine.step(Input::Tick(now));
        Ok(true)
    }

    /// Steps until nothing is left in flight, or `Timing::ack_wait`
    /// passed (a participant that stays unreachable).
    pub fn settle(&mut self) -> Result<()> {
        let deadline = self.clock.monotonic() + self.timing.ack_wait;
        while self.step()? && self.clock.monotonic() < deadline {}
        Ok(())
    }

    fn deliver(&mut self, to: Pid, msg: Message) {
        let Some(p) = self.participants.get(to as usize) else {
            return;
        };
        match msg {
            Message::Prepare(gid) => {
                // A duplicate prepare finds no work left: ignored.
                if let Some(w) = self.work.remove(&(gid.clone(), to)) {
                    // The vote carries the prepare timestamp raised to
                    // this clock's `latest`: the commit timestamp, their
                    // maximum, is at least both. No clock, no yes.
                    let at = p.prepare(&gid, w).and_then(|pts| {
                        let latest = self.clock.now()?.latest;
                        Ok(pts.max(latest))
                    });
                    let (yes, ts) = match at {
                        Ok(ts) => (true, ts),
                        Err(_) => (false, Timestamp::ZERO),
                    };
                    self.machine.step(Input::Vote {
                        gid,
                        from: to,
                        yes,
                        ts,
                    });
                }
            }
            Message::Commit(gid, ts) => {
                let r = p.commit_prepared(&gid, ts);
                self.acked(gid, to, r);
            }
            Message::Rollback(gid) => {
                // Work never prepared is dropped, which rolls it back.
                self.work.remove(&(gid.clone(), to));
                let r = p.rollback_prepared(&gid);
                self.acked(gid, to, r);
            }
        }
    }

    /// A decision applied (or found already applied) is acknowledged; any
    /// other failure is not, and the decision is sent again later.
    fn acked(&mut self, gid: String, from: Pid, r: Result<()>) {
        if matches!(r, Ok(()) | Err(Error::UnknownTransaction)) {
            self.machine.step(Input::Ack { gid, from });
        }
    }
}

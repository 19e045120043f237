//! When background work runs. Pure decisions, carried out by the
//! maintenance worker (`worker.rs`), so they can be tested without a database.

use std::time::Duration;

/// Vacuum once dead versions exceed a floor plus a fifth of the keys the
/// last pass saw (PostgreSQL's autovacuum rule: `threshold + 0.2 * rows`),
/// so a large database is not rescanned for a handful of updates.
pub fn should_vacuum(dead: u64, keys_last_pass: u64, threshold: u64) -> bool {
    threshold > 0 && dead >= threshold.saturating_add(keys_last_pass / 5)
}

/// Checkpoint when the interval has passed (and there is log to cover) or
/// enough log has accumulated since the last redo point.
pub fn should_checkpoint(
    since_last: Duration,
    interval: Duration,
    log_since_redo: u64,
    log_limit: u64,
) -> bool {
    (since_last >= interval && log_since_redo > 0) || log_since_redo >= log_limit
}

/// The longest a failed piece of background work waits before its next try.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// How long background work that failed `failures` times in a row (for a
/// reason that may pass) waits before its next try: a tick, doubled for
/// each further failure, at most `RETRY_MAX`. A read error that persists
/// (a bad sector) is then reported a few times a minute, not every tick.
pub fn retry_after(failures: u32, tick: Duration) -> Duration {
    let doubled = tick.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_job_waits_longer_each_time_up_to_a_minute() {
        let tick = Duration::from_millis(100);
        assert_eq!(retry_after(1, tick), tick);
        assert_eq!(retry_after(2, tick), 2 * tick);
        assert_eq!(retry_after(4, tick), 8 * tick);
        assert_eq!(retry_after(30, tick), RETRY_MAX);
        assert_eq!(retry_after(u32::MAX, Duration::MAX), RETRY_MAX);
    }

    #[test]
    fn vacuum_scales_with_table_size_and_can_be_disabled() {
        assert!(!should_vacuum(9_999, 0, 10_000));
        assert!(should_vacuum(10_000, 0, 10_000));
        assert!(
            !should_vacuum(10_000, 1_000_000, 10_000),
            "a million keys need 210k dead versions"
        );
        assert!(should_vacuum(210_000, 1_000_000, 10_000));
        assert!(
            !should_vacuum(u64::MAX, 0, 0),
            "threshold 0 disables background vacuum"
        );
    }

    #[test]
    fn checkpoint_on_time_or_volume_but_not_when_idle() {
        let s = Duration::from_secs;
        assert!(should_checkpoint(s(31), s(30), 1, 1 << 30));
        assert!(
            !should_checkpoint(s(31), s(30), 0, 1 << 30),
            "nothing logged: nothing to checkpoint"
        );
        assert!(!should_checkpoint(s(5), s(30), 100, 1 << 30));
        assert!(should_checkpoint(s(5), s(30), 1 << 30, 1 << 30));
    }
}

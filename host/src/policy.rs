//! What a failed batch leads to: the route's error policy (`[route.errors]`)
//! as one pure decision, so every path has a table test.
//!
//! Retry with backoff; then pause, or isolate the failing record — the one
//! the handler names with `poison(index)`, or the one left when the batch
//! window is halved until a single record fails — and dead-letter it.

use std::time::Duration;

use crate::config::{ErrorPolicy, OnError};

/// What failed, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The handler said the partition cannot go on (`fatal`).
    Fatal,
    /// The handler named the record at this index of the batch (`poison`).
    Poison(usize),
    /// Anything else: `retry`, a trap, a limit. Possibly transient.
    Other,
}

/// Where a partition stands with its current batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attempts {
    /// Failed attempts counted against `retries`.
    pub failed: u32,
    /// While isolating a failing record: the batch window, and the offset
    /// after the failed batch (isolation ends once the partition is there).
    pub isolating: Option<Isolation>,
}

/// A smaller batch window, kept until the partition reaches `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Isolation {
    /// Most records per batch while isolating.
    pub window: u32,
    /// The offset after the batch that failed first.
    pub end: u64,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Read the batch again after `delay` (with the window in `Attempts`).
    Retry {
        /// How long to wait first.
        delay: Duration,
    },
    /// Dead-letter the batch's first record in the checkpoint that moves
    /// past it: isolation (or the handler's `poison`) has brought the
    /// failing record to the head of the batch.
    DeadLetter,
    /// Stop the partition until it is resumed or gets a new version.
    Pause(PauseCause),
}

/// Why a partition pauses: said after the failure's own reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseCause {
    /// The handler returned `fatal`.
    Fatal,
    /// `poison` named an index past the batch's end.
    PoisonOutOfRange {
        /// Records in the batch.
        len: usize,
    },
    /// `poison` with `on_error = "pause"`.
    Poison,
    /// Every retry failed and `on_error = "pause"`.
    RetriesExhausted {
        /// The route's retries.
        retries: u32,
    },
}

impl std::fmt::Display for PauseCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PauseCause::Fatal | PauseCause::Poison => Ok(()),
            PauseCause::PoisonOutOfRange { len } => {
                write!(f, ", but the batch has only {len} records")
            }
            PauseCause::RetriesExhausted { retries } => write!(f, " (after {retries} retries)"),
        }
    }
}

/// The decision for a batch with these record `offsets` that failed with
/// `failure`, and the attempts that follow it.
///
/// A single record is dead-lettered only after the route's retries failed
/// for it alone (or when the handler named it): a transient failure while
/// the window is being halved never sets a good record aside.
pub fn decide(
    failure: Failure,
    offsets: &[u64],
    attempts: Attempts,
    policy: &ErrorPolicy,
) -> (Decision, Attempts) {
    let len = offsets.len();
    let pause = |cause| (Decision::Pause(cause), attempts);
    match failure {
        Failure::Fatal => return pause(PauseCause::Fatal),
        Failure::Poison(index) if index >= len => {
            return pause(PauseCause::PoisonOutOfRange { len });
        }
        Failure::Poison(_) if policy.on_error == OnError::Pause => {
            return pause(PauseCause::Poison);
        }
        // Handle the records before it on their own; the poison record
        // then heads a batch and is named again.
        Failure::Poison(index) if index > 0 => {
            let isolating = Isolation {
                window: index as u32,
                end: offsets[index] + 1,
            };
            return (retry_now(), isolate(isolating));
        }
        Failure::Poison(_) => return dead_letter(attempts),
        Failure::Other => {}
    }
    if let Some(isolation) = attempts.isolating
        && len > 1
    {
        // Already isolating: halve at once rather than retry again.
        let isolating = Isolation {
            window: halve(len),
            end: isolation.end,
        };
        return (retry_now(), isolate(isolating));
    }
    let failed = attempts.failed + 1;
    if failed <= policy.retries {
        let next = Attempts { failed, ..attempts };
        return (
            Decision::Retry {
                delay: backoff(failed, policy),
            },
            next,
        );
    }
    match policy.on_error {
        OnError::Pause => (
            Decision::Pause(PauseCause::RetriesExhausted {
                retries: policy.retries,
            }),
            Attempts {
                failed: 0,
                ..attempts
            },
        ),
        OnError::DeadLetter if len == 1 => dead_letter(attempts),
        OnError::DeadLetter => {
            let isolating = Isolation {
                window: halve(len),
                end: offsets.last().map_or(0, |o| o + 1),
            };
            (retry_now(), isolate(isolating))
        }
    }
}

/// The wait before try number `attempt` + 1 (from 1): the route's base
/// delay, doubled per attempt, capped.
pub fn backoff(attempt: u32, policy: &ErrorPolicy) -> Duration {
    Duration::from_millis(
        policy
            .backoff_base_ms
            .saturating_mul(1 << attempt.saturating_sub(1).min(20))
            .min(policy.backoff_max_ms),
    )
}

/// The attempts after the partition committed up to `next_offset`.
pub fn committed(attempts: Attempts, next_offset: u64) -> Attempts {
    Attempts {
        failed: 0,
        isolating: attempts.isolating.filter(|i| next_offset < i.end),
    }
}

/// What a failed `on-timers` call leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerDecision {
    /// Call again with the due timers after `delay`.
    Retry {
        /// How long to wait first.
        delay: Duration,
    },
    /// Dead-letter the timer at this index of the list and remove it; the
    /// rest fire in the next call.
    DeadLetter(usize),
    /// Stop the partition until it is resumed or gets a new version.
    Pause(PauseCause),
}

/// The decision for an `on-timers` call with `count` timers that failed
/// with `failure` after `failed` earlier failures of the same list, and the
/// failures counted after it. Timers are not isolated by halving: `poison`
/// names one, and once the retries are spent the earliest is set aside, so
/// a timer a handler cannot fire never blocks the others (or the records).
pub fn decide_timers(
    failure: Failure,
    count: usize,
    failed: u32,
    policy: &ErrorPolicy,
) -> (TimerDecision, u32) {
    match failure {
        Failure::Fatal => (TimerDecision::Pause(PauseCause::Fatal), failed),
        Failure::Poison(index) if index >= count => (
            TimerDecision::Pause(PauseCause::PoisonOutOfRange { len: count }),
            failed,
        ),
        Failure::Poison(_) if policy.on_error == OnError::Pause => {
            (TimerDecision::Pause(PauseCause::Poison), failed)
        }
        Failure::Poison(index) => (TimerDecision::DeadLetter(index), 0),
        Failure::Other if failed < policy.retries => (
            TimerDecision::Retry {
                delay: backoff(failed + 1, policy),
            },
            failed + 1,
        ),
        Failure::Other if policy.on_error == OnError::Pause => (
            TimerDecision::Pause(PauseCause::RetriesExhausted {
                retries: policy.retries,
            }),
            failed,
        ),
        Failure::Other => (TimerDecision::DeadLetter(0), 0),
    }
}

fn retry_now() -> Decision {
    Decision::Retry {
        delay: Duration::ZERO,
    }
}

/// A new window starts its own count of retries (used once it is down to
/// one record).
fn isolate(isolating: Isolation) -> Attempts {
    Attempts {
        failed: 0,
        isolating: Some(isolating),
    }
}

/// Isolation goes on after a dead letter until the partition is past the
/// batch that failed first (`committed`).
fn dead_letter(attempts: Attempts) -> (Decision, Attempts) {
    let next = Attempts {
        failed: 0,
        isolating: attempts.isolating,
    };
    (Decision::DeadLetter, next)
}

fn halve(len: usize) -> u32 {
    (len as u32 / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on_error: OnError, retries: u32) -> ErrorPolicy {
        ErrorPolicy {
            on_error,
            retries,
            backoff_base_ms: 100,
            backoff_max_ms: 250,
            ..ErrorPolicy::default()
        }
    }

    const BATCH: [u64; 4] = [10, 11, 13, 14];

    fn ms(n: u64) -> Decision {
        Decision::Retry {
            delay: Duration::from_millis(n),
        }
    }

    fn isolating(window: u32, end: u64) -> Option<Isolation> {
        Some(Isolation { window, end })
    }

    /// failure, batch offsets, attempts before -> decision, attempts after
    type Row<'a> = (Failure, &'a [u64], Attempts, OnError, Decision, Attempts);

    #[test]
    fn every_path_of_the_policy() {
        use Failure::*;
        use OnError::{DeadLetter as Dlq, Pause};
        let none = Attempts::default();
        let failed = |n| Attempts {
            failed: n,
            isolating: None,
        };
        let iso = |n, window, end| Attempts {
            failed: n,
            isolating: isolating(window, end),
        };
        let pause = |cause| Decision::Pause(cause);
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            // fatal pauses at once, whatever the policy
            (Fatal, &BATCH, none, Dlq, pause(PauseCause::Fatal), none),
            // poison: out of range pauses; with on_error = pause, pauses
            (Poison(4), &BATCH, none, Dlq, pause(PauseCause::PoisonOutOfRange { len: 4 }), none),
            (Poison(2), &BATCH, none, Pause, pause(PauseCause::Poison), none),
            // poison at 0 is dead-lettered; later, the records before it go first
            (Poison(0), &BATCH, failed(2), Dlq, Decision::DeadLetter, none),
            (Poison(2), &BATCH, failed(1), Dlq, ms(0), iso(0, 2, 14)),
            // retries with doubling backoff, capped
            (Other, &BATCH, none, Dlq, ms(100), failed(1)),
            (Other, &BATCH, failed(1), Dlq, ms(200), failed(2)),
            (Other, &BATCH, failed(2), Dlq, ms(250), failed(3)),
            // retries spent: pause, or isolate by halving
            (Other, &BATCH, failed(3), Pause, pause(PauseCause::RetriesExhausted { retries: 3 }), failed(0)),
            (Other, &BATCH, failed(3), Dlq, ms(0), iso(0, 2, 15)),
            // isolating: halve at once
            (Other, &BATCH[..2], iso(0, 2, 15), Dlq, ms(0), iso(0, 1, 15)),
            // one record left: retried like a batch before it is dead-lettered
            (Other, &BATCH[..1], iso(0, 1, 15), Dlq, ms(100), iso(1, 1, 15)),
            (Other, &BATCH[..1], iso(3, 1, 15), Dlq, Decision::DeadLetter, iso(0, 1, 15)),
            // a one-record batch outside isolation: the same
            (Other, &BATCH[..1], failed(3), Dlq, Decision::DeadLetter, none),
        ];
        for (i, (failure, offsets, attempts, on_error, want, want_attempts)) in
            table.into_iter().enumerate()
        {
            let got = decide(failure, offsets, attempts, &policy(on_error, 3));
            assert_eq!(
                got,
                (want, want_attempts),
                "row {i}: {failure:?} {attempts:?}"
            );
        }
        // No retries at all: straight to isolating.
        assert_eq!(
            decide(Other, &BATCH, none, &policy(Dlq, 0)),
            (ms(0), iso(0, 2, 15))
        );
    }

    #[test]
    fn a_transient_failure_while_halving_never_dead_letters_a_good_record() {
        // The bad record is at offset 13; offset 10 fails once, transiently,
        // when the window reaches it alone.
        let policy = policy(OnError::DeadLetter, 2);
        let mut attempts = Attempts::default();
        let mut transient_left = 1;
        let mut dead = Vec::new();
        let mut next = 0;
        let mut steps = 0;
        while next < BATCH.len() {
            steps += 1;
            assert!(steps < 100, "no progress");
            let window = attempts
                .isolating
                .map_or(BATCH.len(), |i| i.window as usize);
            let batch = &BATCH[next..(next + window).min(BATCH.len())];
            let bad = batch.contains(&13);
            let transient = batch == [10] && transient_left > 0;
            if !bad && !transient {
                next += batch.len();
                attempts = committed(attempts, batch[batch.len() - 1] + 1);
                continue;
            }
            transient_left -= transient as i32;
            match decide(Failure::Other, batch, attempts, &policy) {
                (Decision::DeadLetter, a) => {
                    dead.push(batch[0]);
                    next += 1;
                    attempts = committed(a, batch[0] + 1);
                }
                (Decision::Retry { .. }, a) => attempts = a,
                (Decision::Pause(c), _) => panic!("paused: {c:?}"),
            }
        }
        assert_eq!(dead, [13]);
        assert_eq!(attempts, Attempts::default());
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let p = policy(OnError::DeadLetter, 3);
        let delays: Vec<u64> = (1..=5).map(|a| backoff(a, &p).as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 250, 250, 250]);
        assert_eq!(backoff(0, &p).as_millis(), 100);
        assert_eq!(backoff(u32::MAX, &p).as_millis(), 250, "no overflow");
    }

    #[test]
    fn committing_past_the_failed_batch_ends_isolation() {
        let a = Attempts {
            failed: 2,
            isolating: isolating(1, 15),
        };
        assert_eq!(committed(a, 14).isolating, isolating(1, 15));
        assert_eq!(committed(a, 14).failed, 0);
        assert_eq!(committed(a, 15), Attempts::default());
    }

    #[test]
    fn failed_timers_retry_then_set_the_earliest_aside() {
        let policy = ErrorPolicy {
            retries: 2,
            ..ErrorPolicy::default()
        };
        let (d, f) = decide_timers(Failure::Other, 3, 0, &policy);
        assert!(matches!(d, TimerDecision::Retry { .. }) && f == 1);
        let (d, f) = decide_timers(Failure::Other, 3, 1, &policy);
        assert!(matches!(d, TimerDecision::Retry { .. }) && f == 2);
        assert_eq!(
            decide_timers(Failure::Other, 3, 2, &policy),
            (TimerDecision::DeadLetter(0), 0)
        );
        assert_eq!(
            decide_timers(Failure::Poison(2), 3, 1, &policy),
            (TimerDecision::DeadLetter(2), 0)
        );
        assert_eq!(
            decide_timers(Failure::Poison(3), 3, 0, &policy).0,
            TimerDecision::Pause(PauseCause::PoisonOutOfRange { len: 3 })
        );
        assert_eq!(
            decide_timers(Failure::Fatal, 3, 0, &policy).0,
            TimerDecision::Pause(PauseCause::Fatal)
        );
        let pause = ErrorPolicy {
            retries: 0,
            on_error: OnError::Pause,
            ..ErrorPolicy::default()
        };
        assert_eq!(
            decide_timers(Failure::Other, 3, 0, &pause).0,
            TimerDecision::Pause(PauseCause::RetriesExhausted { retries: 0 })
        );
        assert_eq!(
            decide_timers(Failure::Poison(0), 3, 0, &pause).0,
            TimerDecision::Pause(PauseCause::Poison)
        );
    }
}

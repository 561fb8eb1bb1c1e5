//! Properties over random sequences of calls and clock advances. Each checks the limiter
//! against a bound or a model stated in tokens and seconds, not in the bucket's units.

use super::*;
use crate::{Limits, ManualClock};
use proptest::collection::vec;
use proptest::prelude::*;
use veil_domain::{ChannelName, KeyId};

const MINUTE_NS: u128 = 60_000_000_000;

fn setup() -> (ManualClock, InMemoryLimiter) {
    let clock = ManualClock::new();
    (clock.clone(), InMemoryLimiter::with_clock(clock))
}

#[derive(Debug, Clone)]
enum RpmOp {
    Advance(u64),
    Admit,
    /// On refusal, waits exactly `retry_after` (checking that a nanosecond less is too
    /// early) and admits.
    AdmitAfterWaiting,
}

fn rpm_op() -> impl Strategy<Value = RpmOp> {
    prop_oneof![
        4 => Just(RpmOp::Admit),
        2 => Just(RpmOp::AdmitAfterWaiting),
        2 => (0u64..=30_000_000_000).prop_map(RpmOp::Advance),
        1 => (0u64..=1_000_000).prop_map(RpmOp::Advance),
    ]
}

#[derive(Debug, Clone)]
enum LeaseOp {
    Acquire,
    Release(usize),
}

fn lease_op() -> impl Strategy<Value = LeaseOp> {
    prop_oneof![Just(LeaseOp::Acquire), any::<usize>().prop_map(LeaseOp::Release)]
}

#[derive(Debug, Clone)]
enum TokenOp {
    Admit(u64),
    Reconcile(usize, u64),
    Drop(usize),
    AdvanceSecs(u64),
}

fn token_op(tpm: u64) -> impl Strategy<Value = TokenOp> {
    prop_oneof![
        3 => (0..=2 * tpm).prop_map(TokenOp::Admit),
        2 => (any::<usize>(), 0..=3 * tpm).prop_map(|(i, actual)| TokenOp::Reconcile(i, actual)),
        1 => any::<usize>().prop_map(TokenOp::Drop),
        2 => (0u64..=70).prop_map(TokenOp::AdvanceSecs),
    ]
}

fn ceil_ns(numerator: i128, denominator: i128) -> Duration {
    let ns = (numerator + denominator - 1) / denominator;
    Duration::from_nanos(u64::try_from(ns).unwrap())
}

proptest! {
    /// GCRA with a burst of one minute: over the span between any two admitted calls,
    /// `n` calls satisfy `(n − rpm) · 60 s ≤ span · rpm`. So any sliding 60 s window holds at
    /// most `2·rpm − 1` calls, and `retry_after` is exact to the nanosecond.
    #[test]
    fn rpm_admissions_conform_to_gcra(rpm in 1u32..=20, ops in vec(rpm_op(), 1..150)) {
        let (clock, limiter) = setup();
        let limits = Limits { rpm: Some(rpm), ..Limits::default() };
        let demands = vec![Demand::new(Scope::Key(KeyId::generate()), limits)];
        let mut admitted: Vec<u128> = Vec::new();
        for op in ops {
            match op {
                RpmOp::Advance(ns) => clock.advance(Duration::from_nanos(ns)),
                RpmOp::Admit => {
                    if limiter.admit_now(&demands, 0).is_ok() {
                        admitted.push(clock.elapsed().as_nanos());
                    }
                }
                RpmOp::AdmitAfterWaiting => match limiter.admit_now(&demands, 0) {
                    Ok(_) => admitted.push(clock.elapsed().as_nanos()),
                    Err(refusal) => {
                        prop_assert_eq!(refusal.resource, Resource::Requests);
                        prop_assert!(!refusal.never_fits);
                        prop_assert!(refusal.retry_after > Duration::ZERO);
                        prop_assert_eq!(refusal.headers.remaining_requests, Some(0));
                        clock.advance(refusal.retry_after - Duration::from_nanos(1));
                        prop_assert!(limiter.admit_now(&demands, 0).is_err());
                        clock.advance(Duration::from_nanos(1));
                        prop_assert!(limiter.admit_now(&demands, 0).is_ok());
                        admitted.push(clock.elapsed().as_nanos());
                    }
                },
            }
        }
        let rpm = u128::from(rpm);
        for (i, first) in admitted.iter().enumerate() {
            for (n, last) in admitted[i..].iter().enumerate().map(|(k, t)| (k as u128 + 1, t)) {
                prop_assert!(
                    n.saturating_sub(rpm) * MINUTE_NS <= (last - first) * rpm,
                    "{n} calls within {} ns at rpm {rpm}", last - first
                );
            }
            let in_window = u128::try_from(admitted[i..].iter().take_while(|t| **t < first + MINUTE_NS).count()).unwrap();
            prop_assert!(in_window < 2 * rpm, "{in_window} calls in one minute at rpm {rpm}");
        }
    }

    /// Leases held never exceed either scope's maximum, and a call refused by one scope
    /// takes no lease from the other (a leak would show as a refusal the model does not
    /// expect).
    #[test]
    fn concurrency_never_exceeds_the_maximum(
        key_max in 1u32..=5,
        channel_max in 1u32..=5,
        ops in vec(lease_op(), 1..100),
    ) {
        let (_clock, limiter) = setup();
        let demands = vec![
            Demand::new(Scope::Key(KeyId::generate()), Limits { max_concurrent: Some(key_max), ..Limits::default() }),
            Demand::new(
                Scope::Channel(ChannelName::parse("upstream").unwrap()),
                Limits { max_concurrent: Some(channel_max), ..Limits::default() },
            ),
        ];
        let max = key_max.min(channel_max) as usize;
        let mut held = Vec::new();
        for op in ops {
            match op {
                LeaseOp::Acquire => match limiter.admit_now(&demands, 0) {
                    Ok(admission) => {
                        prop_assert!(held.len() < max);
                        held.push(admission);
                    }
                    Err(refusal) => {
                        prop_assert_eq!(held.len(), max);
                        prop_assert_eq!(refusal.resource, Resource::Concurrency);
                    }
                },
                LeaseOp::Release(i) => {
                    if !held.is_empty() {
                        drop(held.swap_remove(i % held.len()));
                    }
                }
            }
        }
        drop(held);
        limiter.prune();
        prop_assert!(limiter.is_empty());
    }

    /// The tokens bucket equals `min(capacity, capacity − net usage + refill)` at every step,
    /// where net usage is the actual count for reconciled calls and the estimate for the
    /// rest, and refill is `tpm` per minute; admission, `retry_after` and headers follow.
    #[test]
    fn reconcile_keeps_the_bucket_at_capacity_minus_net_usage(
        (per_second, ops) in (1u64..=20).prop_flat_map(|k| (Just(k), vec(token_op(60 * k), 1..100))),
    ) {
        let tpm = 60 * per_second;
        let (clock, limiter) = setup();
        let limits = Limits { tpm: Some(u32::try_from(tpm).unwrap()), ..Limits::default() };
        let demands = vec![Demand::new(Scope::Key(KeyId::generate()), limits)];
        let capacity = i128::from(tpm);
        let mut level = capacity;
        let mut held: Vec<(Admission, u64, bool)> = Vec::new();
        for op in ops {
            match op {
                TokenOp::Admit(estimate) => {
                    let want = i128::from(estimate);
                    match limiter.admit_now(&demands, estimate) {
                        Ok(admission) => {
                            prop_assert!(want <= level, "admitted {want} with {level} left");
                            level -= want;
                            let headers = admission.headers();
                            prop_assert_eq!(headers.remaining_tokens, Some(u32::try_from(level).unwrap()));
                            prop_assert_eq!(
                                headers.reset_tokens,
                                Some(ceil_ns((capacity - level) * MINUTE_NS as i128, capacity))
                            );
                            held.push((admission, estimate, false));
                        }
                        Err(refusal) => {
                            prop_assert_eq!(refusal.resource, Resource::Tokens);
                            prop_assert_eq!(refusal.headers.remaining_tokens, Some(u32::try_from(level.max(0)).unwrap()));
                            if want > capacity {
                                prop_assert!(refusal.never_fits);
                                prop_assert_eq!(refusal.retry_after, Duration::from_secs(60));
                            } else {
                                prop_assert!(want > level, "refused {want} with {level} left");
                                prop_assert!(!refusal.never_fits);
                                prop_assert_eq!(refusal.retry_after, ceil_ns((want - level) * MINUTE_NS as i128, capacity));
                            }
                        }
                    }
                }
                TokenOp::Reconcile(i, actual) => {
                    if !held.is_empty() {
                        let len = held.len();
                        let (admission, estimate, reconciled) = &mut held[i % len];
                        admission.reconcile(actual);
                        if !*reconciled {
                            *reconciled = true;
                            level = capacity.min(level + i128::from(*estimate) - i128::from(actual));
                        }
                    }
                }
                TokenOp::Drop(i) => {
                    if !held.is_empty() {
                        let len = held.len();
                        drop(held.swap_remove(i % len));
                    }
                }
                TokenOp::AdvanceSecs(secs) => {
                    clock.advance(Duration::from_secs(secs));
                    level = capacity.min(level + i128::from(secs * per_second));
                }
            }
        }
    }
}

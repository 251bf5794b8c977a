//! `--redis-lease`: tokens of the shared rates leased to this instance, so that a busy key
//! costs a round trip to Redis per lease rather than per check.
//!
//! When a key is checked and the instance holds no lease for it, the GCRA script in Redis
//! (shared.rs) is asked for up to K tokens at once. It grants g = min(K, max(1, ⌊a/4⌋))
//! when a ≥ 1 tokens are available (none otherwise), consuming all g in Redis in the same
//! atomic step. The check spends one; the instance spends the other g − 1 on the next checks
//! of that key without asking Redis, until they are used up or the lease is
//! `--redis-lease` old, when the unspent ones are dropped (never given back: they stay
//! consumed in Redis, which only ever errs towards refusing).
//!
//! K adapts to the key's demand: 1 for a key first seen; doubled (up to
//! `--redis-lease-tokens`) when a lease was used up before it expired; halved when one
//! expired with tokens left; set to g when Redis granted fewer than asked (the key is near
//! its limit: a quarter of what is left is the most one instance takes); and back to 1 when
//! Redis refused. A key whose burst is below 8 is never granted more than one token at a
//! time, so small rates are counted exactly as without leases.
//!
//! What this costs in exactness, with L the lease's duration, I the rate's interval and
//! g_i the lease each instance holds (docs/rates.md has the reasoning):
//!
//! - a refusal may come while other instances hold unspent tokens: at most Σ(g_i − 1);
//! - a token is spent at most L after Redis counted it, so a window of length T may see
//!   up to min(⌈L/I⌉, Σ(g_i − 1)) more than the rate's B + ⌊T/I⌋; over the whole life of a
//!   key, never more than the rate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most keys with a lease at once; past this, the expired ones are forgotten, and if
/// none has expired, a new key is checked without a lease (one token per round trip).
const MAX_KEYS: usize = 16_384;

/// The leases an instance holds; one per process, shared by the connections.
#[derive(Debug)]
pub struct Leases {
    duration: Duration,
    max_tokens: u32,
    held: Mutex<HashMap<String, Lease>>,
}

#[derive(Clone, Copy, Debug)]
struct Lease {
    /// Tokens still to spend.
    left: u32,
    /// When the unspent ones are dropped.
    expires: Instant,
    /// How many tokens the next request asks for (K).
    want: u32,
}

impl Leases {
    /// Leases of at most `max_tokens` tokens, each for `duration`. A zero duration or at
    /// most one token disables leasing: every check asks Redis for exactly one token.
    pub fn new(duration: Duration, max_tokens: u32) -> Leases {
        Leases {
            duration,
            max_tokens: max_tokens.max(1),
            held: Mutex::default(),
        }
    }

    fn enabled(&self) -> bool {
        !self.duration.is_zero() && self.max_tokens > 1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// At `now`, spends a token of `key`'s lease when one is held (`None`: allowed without
    /// asking Redis); else how many tokens to ask Redis for.
    pub fn spend(&self, key: &str, now: Instant) -> Option<u32> {
        if !self.enabled() {
            return Some(1);
        }
        let mut held = self.lock();
        let Some(lease) = held.get_mut(key) else {
            return Some(1);
        };
        if lease.left > 0 && now < lease.expires {
            lease.left -= 1;
            return None;
        }
        if lease.left > 0 {
            // Expired with tokens left: the demand is below the lease.
            lease.want = (lease.want / 2).max(1);
            lease.left = 0;
        } else if now < lease.expires {
            // Used up within its time: the demand is above it. Once per lease.
            lease.want = lease.want.saturating_mul(2).min(self.max_tokens);
            lease.expires = now;
        }
        Some(lease.want)
    }

    /// Redis granted `granted` tokens of `key` at `now`, asked for `wanted`: the check
    /// that asked spends one, the lease holds the rest.
    pub fn granted(&self, key: &str, wanted: u32, granted: u64, now: Instant) {
        if !self.enabled() {
            return;
        }
        let granted = u32::try_from(granted)
            .unwrap_or(u32::MAX)
            .min(self.max_tokens);
        let mut held = self.lock();
        if !held.contains_key(key) && held.len() >= MAX_KEYS {
            held.retain(|_, lease| now < lease.expires);
            if held.len() >= MAX_KEYS {
                return;
            }
        }
        let lease = held.entry(key.to_owned()).or_insert(Lease {
            left: 0,
            expires: now,
            want: 1,
        });
        if granted == 0 {
            lease.want = 1;
            return;
        }
        if granted < wanted {
            // Near the limit: ask for no more than Redis could give.
            lease.want = granted;
        }
        if lease.left > 0 && now < lease.expires {
            // Another check of this key was granted tokens meanwhile: they expire together,
            // at the earlier time.
            lease.left = lease.left.saturating_add(granted - 1);
        } else {
            lease.left = granted - 1;
            lease.expires = now + self.duration;
        }
    }

    /// Keys with a lease or a demand remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The GCRA script of shared.rs, in Rust, on microseconds: grants up to `want` tokens
    /// at `now`, moving the key's theoretical arrival time `tat`.
    pub fn grant(tat: &mut u64, now: u64, interval: u64, burst: u64, want: u64) -> u64 {
        let start = (*tat).max(now);
        let available = (now + interval * burst).saturating_sub(start) / interval;
        if available < 1 {
            return 0;
        }
        let granted = if want > 1 {
            want.min((available / 4).max(1))
        } else {
            1
        };
        *tat = start + granted * interval;
        granted
    }

    /// One key's checks from several instances, each with its own leases, against one
    /// simulated Redis; `steps` are (instance, microseconds since the previous check).
    /// Returns the instants of the checks that passed.
    fn simulate(
        instances: usize,
        lease: Duration,
        max_tokens: u32,
        (interval, burst): (u64, u64),
        steps: &[(usize, u64)],
    ) -> Vec<u64> {
        let leases: Vec<Leases> = (0..instances)
            .map(|_| Leases::new(lease, max_tokens))
            .collect();
        let start = Instant::now();
        let (mut tat, mut now, mut passed) = (0u64, 0u64, Vec::new());
        for &(who, gap) in steps {
            now += gap;
            let at = start + Duration::from_micros(now);
            let leases = &leases[who % instances];
            let ok = match leases.spend("k", at) {
                None => true,
                Some(want) => {
                    let granted = grant(&mut tat, now, interval, burst, u64::from(want));
                    leases.granted("k", want, granted, at);
                    granted > 0
                }
            };
            if ok {
                passed.push(now);
            }
        }
        passed
    }

    /// The most checks that passed within any window of length `span` plus `slack`.
    fn worst_window(passed: &[u64], interval: u64, burst: u64, slack: u64) -> Option<String> {
        for (i, &from) in passed.iter().enumerate() {
            for (j, &to) in passed.iter().enumerate().skip(i) {
                let count = (j - i + 1) as u64;
                let allowed = burst + (to - from + slack) / interval;
                if count > allowed {
                    return Some(format!("{count} in [{from}, {to}], allowed {allowed}"));
                }
            }
        }
        None
    }

    /// Microseconds between checks: mostly bursts, now and then a pause longer than a
    /// lease, so that held tokens outlive their lease while the others drain the bucket.
    fn gaps() -> impl Strategy<Value = u64> {
        prop_oneof![4 => 0u64..300, 1 => 0u64..60_000]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Leased or not, the instances together never pass more than the GCRA allows over
        /// any window, give or take the tokens spent up to a lease's duration after Redis
        /// counted them: at most min(⌈L/I⌉, Σ(g − 1)) in one window.
        #[test]
        fn several_instances_never_pass_more_than_the_rate_allows(
            instances in 1usize..5,
            interval in 1u64..5_000,
            burst in 1u64..200,
            lease_us in 0u64..20_000,
            max_tokens in 1u32..65,
            steps in prop::collection::vec((0usize..5, gaps()), 1..300),
        ) {
            let lease = Duration::from_micros(lease_us);
            let passed = simulate(instances, lease, max_tokens, (interval, burst), &steps);
            // Within the whole run, exactly the rate: every token spent was counted first.
            let whole = burst + passed.last().copied().unwrap_or(0) / interval;
            prop_assert!(passed.len() as u64 <= whole);
            // Any window: a lease's duration of slack.
            prop_assert_eq!(worst_window(&passed, interval, burst, lease_us), None);
            // Any window: the tokens the other instances may hold.
            let held = instances as u64 * u64::from(max_tokens - 1);
            prop_assert_eq!(worst_window(&passed, interval, burst + held, 0), None);
        }

        /// Without leases, or with bursts below 8, every check is exactly the GCRA's.
        #[test]
        fn without_leases_or_with_small_bursts_the_checks_are_exact(
            instances in 1usize..5,
            interval in 1u64..5_000,
            small_burst in 1u64..8,
            burst in 1u64..200,
            steps in prop::collection::vec((0usize..5, gaps()), 1..300),
        ) {
            let exact = |burst| {
                let mut tat = 0;
                let mut now = 0;
                let mut passed = Vec::new();
                for &(_, gap) in &steps {
                    now += gap;
                    if grant(&mut tat, now, interval, burst, 1) == 1 {
                        passed.push(now);
                    }
                }
                passed
            };
            let second = Duration::from_secs(1);
            let small = simulate(instances, second, 64, (interval, small_burst), &steps);
            prop_assert_eq!(small, exact(small_burst));
            let off = simulate(instances, Duration::ZERO, 64, (interval, burst), &steps);
            prop_assert_eq!(off, exact(burst));
        }
    }

    #[test]
    fn a_lease_grows_while_used_up_and_shrinks_when_it_expires_unspent() {
        let leases = Leases::new(Duration::from_secs(1), 64);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(leases.spend("k", t0), Some(1));
        leases.granted("k", 1, 1, t0);
        assert_eq!(
            leases.spend("k", ms(10)),
            Some(2),
            "used up within its time"
        );
        leases.granted("k", 2, 2, ms(10));
        assert_eq!(leases.spend("k", ms(20)), None, "spent here");
        assert_eq!(leases.spend("k", ms(30)), Some(4));
        leases.granted("k", 4, 3, ms(30));
        // Redis gave three of four: near the limit, ask for three at most.
        assert_eq!(leases.spend("k", ms(40)), None);
        assert_eq!(leases.spend("k", ms(50)), None);
        assert_eq!(leases.spend("k", ms(60)), Some(6));
        leases.granted("k", 6, 6, ms(60));
        assert_eq!(leases.spend("k", ms(70)), None);
        // Four left when it expires: halved.
        assert_eq!(leases.spend("k", ms(1_061)), Some(3));
        leases.granted("k", 3, 0, ms(1_061));
        assert_eq!(
            leases.spend("k", ms(1_062)),
            Some(1),
            "refused: back to one"
        );
    }

    #[test]
    fn zero_duration_or_one_token_asks_every_time_and_keeps_nothing() {
        for leases in [
            Leases::new(Duration::ZERO, 64),
            Leases::new(Duration::from_secs(1), 1),
        ] {
            let now = Instant::now();
            for _ in 0..3 {
                assert_eq!(leases.spend("k", now), Some(1));
                leases.granted("k", 1, 1, now);
            }
            assert_eq!(leases.len(), 0);
        }
    }

    #[test]
    fn the_keys_held_are_bounded() {
        let leases = Leases::new(Duration::from_secs(1), 64);
        let now = Instant::now();
        for n in 0..MAX_KEYS + 10 {
            leases.granted(&format!("k{n}"), 1, 1, now);
        }
        assert_eq!(leases.len(), MAX_KEYS);
        // Once they have expired, new keys take their place.
        let later = now + Duration::from_secs(2);
        leases.granted("new", 1, 1, later);
        assert_eq!(leases.len(), 1);
    }
}

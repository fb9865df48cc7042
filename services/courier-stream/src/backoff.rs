//! The one backoff of the platform's stream clients: exponential, capped,
//! with full jitter where many clients retry at once.

use std::time::Duration;

use rand::Rng as _;

/// Exponential backoff between attempts of a call: the ceiling of attempt
/// `n` (1-based) is `base * 2^(n-1)`, capped at `max` (and at least 1 ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first attempt's ceiling.
    pub base: Duration,
    /// The largest ceiling.
    pub max: Duration,
}

impl Backoff {
    /// The un-jittered ceiling of attempt `n` (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max)
            .max(Duration::from_millis(1))
    }

    /// Full-jitter delay of attempt `n` (1-based): uniform in
    /// 1 ms ..= [`Backoff::ceiling`], so clients that failed together do not
    /// retry together.
    pub fn delay(&self, attempt: u32) -> Duration {
        let millis = u64::try_from(self.ceiling(attempt).as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Duration::from_millis(rand::rng().random_range(1..=millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_from_the_base_up_to_the_cap() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
        };
        let ceilings: Vec<u128> = (1..=9).map(|n| backoff.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(5));
        for attempt in 1..12 {
            let d = backoff.delay(attempt);
            assert!(d >= Duration::from_millis(1) && d <= backoff.ceiling(attempt));
        }
    }
}

//! The time budget of an invocation and the backoff between attempts.

use std::time::Duration;

use tokio::time::Instant;

/// When the invocation must have stopped working, less a safety margin.
///
/// Uses tokio's clock, so tests can run it on paused time.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    stop_at: Instant,
    /// The Lambda deadline itself, as epoch milliseconds (for idempotency locks).
    lambda_deadline_ms: u64,
}

impl Deadline {
    /// A deadline `remaining` from now, keeping `margin` in reserve for answering the ESM.
    pub fn after(remaining: Duration, margin: Duration) -> Self {
        Self {
            stop_at: Instant::now() + remaining.saturating_sub(margin),
            lambda_deadline_ms: now_ms().saturating_add(remaining.as_millis() as u64),
        }
    }

    /// From the Lambda context's deadline (epoch milliseconds). A value before 2001-09-09 (1e12 ms)
    /// cannot be one: local emulators send the timeout itself (`cargo lambda watch` 1.9 sends
    /// 600000 on every invocation), so it is read as milliseconds from now.
    pub fn from_epoch_ms(deadline_ms: u64, margin: Duration) -> Self {
        let deadline_ms = if deadline_ms < 1_000_000_000_000 {
            now_ms().saturating_add(deadline_ms)
        } else {
            deadline_ms
        };
        let remaining = Duration::from_millis(deadline_ms.saturating_sub(now_ms()));
        let mut deadline = Self::after(remaining, margin);
        deadline.lambda_deadline_ms = deadline_ms;
        deadline
    }

    /// Time left before the stop point.
    pub fn remaining(&self) -> Duration {
        self.stop_at.saturating_duration_since(Instant::now())
    }

    /// True when no more work may start.
    pub fn expired(&self) -> bool {
        self.remaining().is_zero()
    }

    /// The Lambda deadline as epoch milliseconds: an in-progress lock expires then.
    pub fn lambda_deadline_ms(&self) -> u64 {
        self.lambda_deadline_ms
    }
}

/// The time budget ran out while waiting for `what`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the invocation's time budget ran out while waiting for {what}")]
pub struct OutOfTime {
    /// What was being waited for.
    pub what: &'static str,
}

impl Deadline {
    /// Runs `work` until it ends or the deadline comes, whichever is first. A wait cut short drops
    /// `work`: callers make sure that whatever it may still have done is found or repeated safely
    /// (claims expire at the Lambda deadline; publishes carry message ids that a resume looks for).
    pub async fn bound<T>(
        &self,
        what: &'static str,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, OutOfTime> {
        // At the fixed stop point: no clock is read unless `work` has to wait.
        tokio::time::timeout_at(self.stop_at, work)
            .await
            .map_err(|_| OutOfTime { what })
    }
}

/// Epoch milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Exponential backoff with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay's ceiling.
    pub base: Duration,
    /// No delay is longer than this.
    pub max: Duration,
    /// Attempts of one record in one invocation, the first included.
    pub max_attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
            max_attempts: 8,
        }
    }
}

impl Backoff {
    /// The delay after attempt number `attempt` (1-based): uniform in `[0, min(max, base * 2^(attempt-1))]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(
                1u32.checked_shl(attempt.saturating_sub(1))
                    .unwrap_or(u32::MAX),
            )
            .min(self.max);
        let millis = ceiling.as_millis() as u64;
        Duration::from_millis(fastrand::u64(0..=millis))
    }

    /// Sleeps before the next attempt when the attempt budget and the deadline allow it: false means
    /// give up now. It never sleeps past the deadline.
    pub async fn wait(&self, attempt: u32, deadline: &Deadline) -> bool {
        if attempt >= self.max_attempts {
            return false;
        }
        let delay = self.delay(attempt);
        if delay >= deadline.remaining() {
            return false;
        }
        tokio::time::sleep(delay).await;
        !deadline.expired()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_deadline_that_is_not_an_epoch_time_counts_from_now() {
        let before = now_ms();
        let emulated = Deadline::from_epoch_ms(600_000, Duration::from_millis(100));
        assert!(emulated.lambda_deadline_ms() >= before + 600_000);
        assert!(emulated.remaining() > Duration::from_secs(590));
        let real = Deadline::from_epoch_ms(before + 5_000, Duration::ZERO);
        assert_eq!(real.lambda_deadline_ms(), before + 5_000);
        assert!(real.remaining() <= Duration::from_secs(5));
    }

    #[test]
    fn delays_grow_and_stay_capped() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            max_attempts: 50,
        };
        for attempt in 1..40 {
            let ceiling = (100u64 << (attempt - 1).min(20)).min(1000);
            assert!(b.delay(attempt) <= Duration::from_millis(ceiling));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn never_sleeps_past_the_deadline() {
        let b = Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(10),
            max_attempts: 5,
        };
        let deadline = Deadline::after(Duration::from_millis(50), Duration::ZERO);
        // A delay of up to 10 s cannot fit in 50 ms unless jitter draws below it: either way no overrun.
        let before = Instant::now();
        let _ = b.wait(1, &deadline).await;
        assert!(Instant::now() - before <= Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn stops_after_the_attempt_budget() {
        let b = Backoff {
            max_attempts: 2,
            ..Backoff::default()
        };
        let deadline = Deadline::after(Duration::from_secs(60), Duration::ZERO);
        assert!(!b.wait(2, &deadline).await);
    }

    #[tokio::test(start_paused = true)]
    async fn the_margin_is_kept_in_reserve() {
        let deadline = Deadline::after(Duration::from_secs(10), Duration::from_secs(3));
        assert!(deadline.remaining() <= Duration::from_secs(7));
        tokio::time::advance(Duration::from_secs(7)).await;
        assert!(deadline.expired());
    }
}

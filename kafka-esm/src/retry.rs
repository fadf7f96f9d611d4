//! The time budget of an invocation ([`Deadline`]), the backoff between attempts ([`Backoff`]),
//! and the one loop that retries work until it is done or the time is up ([`Backoff::retry`]).

use std::task::Poll;
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
        // Work that is ready at once (an in-memory store, a handler that only computes) needs no
        // timer: it is polled once on its own first. What has to wait is polled again under the
        // timer, at the fixed stop point (no clock is read here).
        let mut work = std::pin::pin!(work);
        if let Poll::Ready(output) =
            std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await
        {
            return Ok(output);
        }
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

    /// Runs `attempt` until it is done, fails for good, or the attempts or the time run out:
    /// the one retry-until-deadline loop. `attempt` gets the attempt's number (1 for the first)
    /// and its future says what the attempt came to ([`Tried`]). After a [`Tried::Transient`]
    /// failure the next attempt starts once [`Self::wait`] has slept, or the retry ends with that
    /// failure when `wait` says to give up (the budget of [`Self::max_attempts`] is used, or the
    /// next delay would not fit before the deadline). Nothing is boxed; for state that changes
    /// from one attempt to the next, see [`Self::retry_with`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use kafka_esm::retry::{Backoff, Deadline, Tried};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let deadline = Deadline::after(Duration::from_secs(5), Duration::ZERO);
    /// let backoff = Backoff {
    ///     base: Duration::from_millis(1),
    ///     max: Duration::from_millis(1),
    ///     max_attempts: 3,
    /// };
    /// let answer: Result<u32, String> = backoff
    ///     .retry(&deadline, |attempt| async move {
    ///         match attempt {
    ///             1 | 2 => Tried::Transient(format!("busy on attempt {attempt}")),
    ///             _ => Tried::Done(attempt),
    ///         }
    ///     })
    ///     .await;
    /// assert_eq!(answer, Ok(3));
    /// # }
    /// ```
    pub async fn retry<T, E, Attempt>(
        &self,
        deadline: &Deadline,
        mut attempt: impl FnMut(u32) -> Attempt,
    ) -> Result<T, E>
    where
        Attempt: Future<Output = Tried<T, E>>,
    {
        self.retry_with(deadline, (), |(), number| {
            let attempt = attempt(number);
            async move { ((), attempt.await) }
        })
        .await
    }

    /// As [`Self::retry`], with `state` that one attempt hands to the next: each attempt takes it
    /// and gives it back with what it came to (an attempt's future cannot borrow from the closure
    /// that made it: for a generic handler the compiler could then not prove it `Send`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use kafka_esm::retry::{Backoff, Deadline, Tried};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let deadline = Deadline::after(Duration::from_secs(5), Duration::ZERO);
    /// let backoff = Backoff::default();
    /// // A message too large is cut and sent again at once (the attempt does not count).
    /// let sent: Result<usize, String> = backoff
    ///     .retry_with(&deadline, vec![0u8; 1000], |mut message, _| async move {
    ///         if message.len() > 300 {
    ///             message.truncate(message.len() / 2);
    ///             (message, Tried::Again)
    ///         } else {
    ///             let size = message.len();
    ///             (message, Tried::Done(size))
    ///         }
    ///     })
    ///     .await;
    /// assert_eq!(sent, Ok(250));
    /// # }
    /// ```
    pub async fn retry_with<S, T, E, Attempt>(
        &self,
        deadline: &Deadline,
        mut state: S,
        mut attempt: impl FnMut(S, u32) -> Attempt,
    ) -> Result<T, E>
    where
        Attempt: Future<Output = (S, Tried<T, E>)>,
    {
        let mut number = 0;
        loop {
            number += 1;
            let tried;
            (state, tried) = attempt(state, number).await;
            match tried {
                Tried::Done(done) => return Ok(done),
                Tried::Failed(error) => return Err(error),
                Tried::Transient(error) => {
                    if !self.wait(number, deadline).await {
                        return Err(error);
                    }
                }
                Tried::Again => number -= 1,
            }
        }
    }
}

/// What one attempt of work retried with [`Backoff::retry`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tried<T, E> {
    /// Done: the retry ends with `Ok`.
    Done(T),
    /// Failed in a way that trying again cannot mend (or out of time): the retry ends with this
    /// `Err` at once.
    Failed(E),
    /// Failed in a way that may pass: try again after the backoff, or end with this `Err` when the
    /// attempts or the time are used up.
    Transient(E),
    /// Try again at once, without waiting: this attempt does not count (it changed what the next
    /// one sends, so that it can succeed).
    Again,
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

    #[tokio::test(start_paused = true)]
    async fn retry_counts_attempts_and_gives_up_with_the_last_failure() {
        let b = Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(10),
            max_attempts: 4,
        };
        let deadline = Deadline::after(Duration::from_secs(60), Duration::ZERO);
        let outcome: Result<(), u32> = b
            .retry_with(&deadline, (), |(), attempt| async move {
                ((), Tried::Transient(attempt))
            })
            .await;
        assert_eq!(outcome, Err(4), "the last failure");
        let mut seen = Vec::new();
        let _: Result<(), u32> = b
            .retry(&deadline, |attempt| {
                seen.push(attempt);
                async move { Tried::Transient(attempt) }
            })
            .await;
        assert_eq!(seen, [1, 2, 3, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_at_once_when_done_or_failed_for_good() {
        let b = Backoff::default();
        let deadline = Deadline::after(Duration::from_secs(60), Duration::ZERO);
        let before = Instant::now();
        let done: Result<u32, ()> = b.retry(&deadline, |n| async move { Tried::Done(n) }).await;
        assert_eq!(done, Ok(1));
        let mut calls = 0;
        let failed: Result<(), &str> = b
            .retry(&deadline, |_| {
                calls += 1;
                async { Tried::Failed("permanent") }
            })
            .await;
        assert_eq!((failed, calls), (Err("permanent"), 1));
        assert_eq!(
            Instant::now(),
            before,
            "no wait without a transient failure"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn again_is_at_once_and_does_not_count() {
        let b = Backoff {
            max_attempts: 2,
            ..Backoff::default()
        };
        let deadline = Deadline::after(Duration::from_secs(60), Duration::ZERO);
        let mut seen = Vec::new();
        let result: Result<(), ()> = b
            .retry(&deadline, |attempt| {
                seen.push(attempt);
                let again = seen.len() < 4;
                async move {
                    if again {
                        Tried::Again
                    } else {
                        Tried::Transient(())
                    }
                }
            })
            .await;
        assert_eq!(result, Err(()));
        assert_eq!(seen, [1, 1, 1, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_never_waits_past_the_deadline() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(1),
            max_attempts: 1_000,
        };
        let deadline = Deadline::after(Duration::from_secs(3), Duration::ZERO);
        let before = Instant::now();
        let mut attempts = 0;
        let result: Result<(), &str> = b
            .retry(&deadline, |_| {
                attempts += 1;
                async { Tried::Transient("down") }
            })
            .await;
        assert_eq!(result, Err("down"));
        assert!(Instant::now() - before <= Duration::from_secs(3));
        assert!(attempts >= 3, "two delays of at most 1 s fit in 3 s");
    }

    /// The state an attempt hands on is what the next one gets, through `Again` and `Transient`.
    #[tokio::test(start_paused = true)]
    async fn state_goes_from_one_attempt_to_the_next() {
        let b = Backoff::default();
        let deadline = Deadline::after(Duration::from_secs(60), Duration::ZERO);
        let result: Result<Vec<u32>, ()> = b
            .retry_with(&deadline, Vec::new(), |mut log, attempt| async move {
                log.push(attempt);
                let tried = match log.len() {
                    1 => Tried::Again,
                    2 => Tried::Transient(()),
                    _ => Tried::Done(log.clone()),
                };
                (log, tried)
            })
            .await;
        assert_eq!(result, Ok(vec![1, 1, 2]));
    }
}

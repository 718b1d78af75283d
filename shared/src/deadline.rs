//! The Lambda deadline, and polling bounded by it.

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// When the invocation must have returned, minus a reserve for writing the audit record and
/// the report after the last poll.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    at: Instant,
    wall: DateTime<Utc>,
}

/// Time kept back from the Lambda deadline for the audit write and the response: the closing
/// writes get 2 s before the entry stops an unfinished invocation (`STOP_BEFORE_LAMBDA_DEADLINE`).
pub const RESERVE: Duration = Duration::from_secs(3);

/// Time a wait leaves for the writes that follow it (a raise record, the audit record, the
/// event's report, the lease's release), each a DynamoDB write the SDK may retry.
pub const WRITE_RESERVE: Duration = Duration::from_secs(3);

impl Deadline {
    /// `budget` from now, less the reserve.
    pub fn after(budget: Duration) -> Self {
        let usable = budget.saturating_sub(RESERVE);
        Self {
            at: Instant::now() + usable,
            wall: Utc::now() + chrono::Duration::from_std(usable).unwrap_or_default(),
        }
    }

    /// `wait` from now, with nothing kept back: for a wait inside an invocation's deadline.
    pub fn within(wait: Duration) -> Self {
        Self {
            at: Instant::now() + wait,
            wall: Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
        }
    }

    /// This deadline brought forward by `by`.
    pub fn less(&self, by: Duration) -> Self {
        Self {
            at: self
                .at
                .checked_sub(by)
                .unwrap_or(self.at.min(Instant::now())),
            wall: self.wall - chrono::Duration::from_std(by).unwrap_or_default(),
        }
    }

    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    pub fn passed(&self) -> bool {
        self.remaining().is_zero()
    }

    /// The deadline on the wall clock, for leases and claims stored in the audit table.
    pub fn wall(&self) -> DateTime<Utc> {
        self.wall
    }
}

/// Polls `probe` every `interval` until it returns `Some`, or the deadline passes (`None`).
pub async fn poll_until<T, F, Fut>(
    deadline: Deadline,
    interval: Duration,
    mut probe: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    loop {
        if let Some(done) = probe().await {
            return Some(done);
        }
        let remaining = deadline.remaining();
        if remaining.is_zero() {
            return None;
        }
        tokio::time::sleep(interval.min(remaining)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn polling_stops_at_the_deadline() {
        let deadline = Deadline::after(RESERVE + Duration::from_millis(300));
        let started = Instant::now();
        let result: Option<()> =
            poll_until(deadline, Duration::from_millis(50), || async { None }).await;
        assert!(result.is_none());
        assert!(started.elapsed() < Duration::from_millis(1000));
        let mut calls = 0;
        let found = poll_until(
            Deadline::after(Duration::from_secs(10)),
            Duration::from_millis(1),
            || {
                calls += 1;
                let value = (calls == 3).then_some(calls);
                async move { value }
            },
        )
        .await;
        assert_eq!(found, Some(3));
    }
}

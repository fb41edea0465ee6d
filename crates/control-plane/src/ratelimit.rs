//! Token-bucket rate limiting, global and per function.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Refills `rate` tokens per second up to `burst`; one invocation takes one token.
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// `burst` defaults to one second's worth of tokens (at least 1).
    pub fn new(rate_per_second: f64) -> Self {
        let burst = rate_per_second.max(1.0);
        Self {
            rate: rate_per_second,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes a token, or says how long until one is available.
    pub fn try_take(&self) -> Result<(), Duration> {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap();
        let elapsed = now.saturating_duration_since(st.1).as_secs_f64();
        st.0 = (st.0 + elapsed * self.rate).min(self.burst);
        st.1 = now;
        if st.0 >= 1.0 {
            st.0 -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - st.0) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn refills_over_time() {
        let b = TokenBucket::new(2.0);
        assert!(b.try_take().is_ok());
        assert!(b.try_take().is_ok());
        let wait = b.try_take().unwrap_err();
        assert!(
            wait <= Duration::from_millis(500) && wait > Duration::ZERO,
            "{wait:?}"
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(b.try_take().is_ok());
        assert!(b.try_take().is_err());
    }
}

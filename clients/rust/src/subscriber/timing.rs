//! When the subscriber acts on its own: the reconnect backoff window and the in-band token
//! refresh delay. Pure functions, kept out of the connection loop so the arithmetic reads
//! (and is tested) on its own.

use std::time::Duration;

use super::close::RATE_LIMITED;

/// Reconnect backoff: exponential windows with full jitter (the delay is uniform in
/// `[0, window)`), reset after a connection that stayed up [`Backoff::healthy_after`].
///
/// ```
/// use std::time::Duration;
/// use sealcast_client::subscriber::Backoff;
/// let b = Backoff::default();
/// assert_eq!(b.window(3, 1006), Duration::from_secs(4));
/// assert_eq!(b.window(0, 4029), Duration::from_secs(5)); // rate limited: at least 5 s
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First window (default 500 ms).
    pub base: Duration,
    /// Largest window (default 30 s).
    pub max: Duration,
    /// Smallest window after a 4029 close (default 5 s).
    pub rate_limited_min: Duration,
    /// A connection up this long resets the backoff (default 5 s).
    pub healthy_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
            rate_limited_min: Duration::from_secs(5),
            healthy_after: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The window before reconnect attempt `attempt` (0-based) after close `code`.
    pub fn window(&self, attempt: u32, code: u16) -> Duration {
        let w = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt.min(30)))
            .min(self.max);
        if code == RATE_LIMITED {
            w.max(self.rate_limited_min)
        } else {
            w
        }
    }
}

/// A uniform draw in `[0, window)`.
pub(crate) fn jitter(window: Duration) -> Duration {
    window.mul_f64(rand::random::<f64>())
}

/// The delay until the in-band refresh: `ratio` of the token's remaining lifetime (at least
/// 250 ms), or `None` when it has already expired. `expires_at` is the relay's `expires_at`
/// (unix seconds), `now_ms` the local clock (unix ms), `lifetime` the token's own
/// `exp - iat`: a wrong local clock never makes the wait longer than that.
pub(crate) fn refresh_delay(
    expires_at: i64,
    lifetime: Option<i64>,
    ratio: f64,
    now_ms: i64,
) -> Option<Duration> {
    let mut remaining = expires_at.saturating_mul(1000).saturating_sub(now_ms);
    if let Some(l) = lifetime {
        let l = l.saturating_mul(1000);
        if remaining <= 0 || remaining > l {
            remaining = l;
        }
    }
    if remaining <= 0 {
        return None;
    }
    let ms = ((remaining as f64) * ratio).max(250.0);
    Some(Duration::from_millis(ms as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_double_to_the_cap_and_4029_waits_longer() {
        let b = Backoff::default();
        assert_eq!(b.window(0, 1006), Duration::from_millis(500));
        assert_eq!(b.window(2, 1006), Duration::from_secs(2));
        assert_eq!(b.window(20, 1006), Duration::from_secs(30));
        assert_eq!(b.window(u32::MAX, 1011), Duration::from_secs(30));
        assert_eq!(b.window(0, 4029), Duration::from_secs(5));
        for _ in 0..100 {
            assert!(jitter(Duration::from_millis(10)) < Duration::from_millis(10));
        }
    }

    #[test]
    fn refresh_at_a_ratio_of_what_remains_bounded_by_the_lifetime() {
        let now = 1_700_000_000_000;
        // 100 s left, 80%: 80 s.
        assert_eq!(
            refresh_delay(1_700_000_100, Some(3600), 0.8, now),
            Some(Duration::from_secs(80))
        );
        // A local clock far behind would wait a day: the token's own hour bounds it.
        assert_eq!(
            refresh_delay(1_700_086_400, Some(3600), 0.5, now),
            Some(Duration::from_secs(1800))
        );
        // A clock ahead (already "expired") also falls back to the lifetime.
        assert_eq!(
            refresh_delay(1_699_999_000, Some(10), 0.5, now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(refresh_delay(1_699_999_000, None, 0.8, now), None);
        assert_eq!(
            refresh_delay(1_700_000_000, Some(1), 0.01, now),
            Some(Duration::from_millis(250))
        );
    }
}

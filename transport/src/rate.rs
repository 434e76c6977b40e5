//! Token buckets keyed by source address: how often a process may ask for something.
//!
//! ```text
//! allow(now, address) ─► its bucket refilled at `per_second` up to `burst`
//!   ─► a token left: taken, true │ none: false (the caller refuses and counts)
//! ```
//!
//! At most [`MAX_ADDRESSES`] buckets are kept. When that many are held, buckets that have
//! refilled completely (idle addresses) are forgotten first; if none has, a new address is
//! refused until one does, so a flood from many addresses costs bounded memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

/// Buckets kept at most.
pub const MAX_ADDRESSES: usize = 4096;

/// Requests per second per source address, with a burst allowance.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: HashMap<SocketAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `per_second` requests per second from each address, and up to `burst` at once
    /// (at least 1 each).
    pub fn new(per_second: u32, burst: u32) -> Self {
        RateLimiter {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// True if `address` may make one more request at `now` (and takes the token).
    pub fn allow(&mut self, now: Instant, address: SocketAddr) -> bool {
        if !self.buckets.contains_key(&address) && self.buckets.len() >= MAX_ADDRESSES {
            self.forget_idle(now);
            if self.buckets.len() >= MAX_ADDRESSES {
                return false;
            }
        }
        let (per_second, burst) = (self.per_second, self.burst);
        let bucket = self.buckets.entry(address).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn forget_idle(&mut self, now: Instant) {
        let (per_second, burst) = (self.per_second, self.burst);
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens + elapsed * per_second < burst
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn address(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_burst_then_the_rate_per_address() {
        let mut limiter = RateLimiter::new(10, 20);
        let start = Instant::now();
        let allowed = (0..100)
            .filter(|_| limiter.allow(start, address(1)))
            .count();
        assert_eq!(allowed, 20, "the burst");
        assert!(
            limiter.allow(start, address(2)),
            "another address has its own bucket"
        );
        // One second later: ten more.
        let later = start + Duration::from_secs(1);
        let allowed = (0..100)
            .filter(|_| limiter.allow(later, address(1)))
            .count();
        assert_eq!(allowed, 10, "the rate");
    }

    #[test]
    fn many_addresses_cost_bounded_memory() {
        let mut limiter = RateLimiter::new(1, 1);
        let start = Instant::now();
        let ports = u16::try_from(MAX_ADDRESSES).expect("fits") + 10;
        let allowed = (1..=ports)
            .filter(|&p| limiter.allow(start, address(p)))
            .count();
        assert_eq!(
            allowed, MAX_ADDRESSES,
            "new addresses wait while every bucket is busy"
        );
        assert_eq!(limiter.buckets.len(), MAX_ADDRESSES);
        // Once they have refilled, idle buckets make room.
        let later = start + Duration::from_secs(2);
        assert!(limiter.allow(later, address(ports + 1)));
        assert!(limiter.buckets.len() <= MAX_ADDRESSES);
    }
}

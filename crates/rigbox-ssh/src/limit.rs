//! Failed authentications per source address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most `max` refused keys per source address in a `window`; beyond, every authentication
/// from that address is refused until the window ends.
#[derive(Debug, Clone, Copy)]
pub struct FailureLimit {
    pub max: u32,
    pub window: Duration,
}

impl Default for FailureLimit {
    fn default() -> Self {
        Self {
            max: 30,
            window: Duration::from_secs(60),
        }
    }
}

/// Sizes beyond which expired entries are swept.
const SWEEP_AT: usize = 4096;

pub(crate) struct Limiter {
    limit: FailureLimit,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Limiter {
    pub(crate) fn new(limit: FailureLimit) -> Self {
        Self {
            limit,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` used up its failures.
    pub(crate) fn blocked(&self, ip: IpAddr) -> bool {
        self.with(|seen| {
            seen.get(&ip).is_some_and(|(start, n)| {
                start.elapsed() < self.limit.window && *n >= self.limit.max
            })
        })
    }

    /// Counts a failure; true when this one used up the allowance.
    pub(crate) fn fail(&self, ip: IpAddr) -> bool {
        self.with(|seen| {
            if seen.len() >= SWEEP_AT {
                seen.retain(|_, (start, _)| start.elapsed() < self.limit.window);
            }
            let e = seen.entry(ip).or_insert((Instant::now(), 0));
            if e.0.elapsed() >= self.limit.window {
                *e = (Instant::now(), 0);
            }
            e.1 = e.1.saturating_add(1);
            e.1 == self.limit.max
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<IpAddr, (Instant, u32)>) -> T) -> T {
        let mut g = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_after_its_failures_and_freed_after_the_window() {
        let l = Limiter::new(FailureLimit {
            max: 3,
            window: Duration::from_millis(200),
        });
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert!(!l.fail(a));
        assert!(!l.fail(a));
        assert!(!l.blocked(a));
        assert!(l.fail(a), "the third failure uses up the allowance");
        assert!(l.blocked(a));
        assert!(!l.blocked(b), "other addresses are unaffected");
        std::thread::sleep(Duration::from_millis(250));
        assert!(!l.blocked(a));
        assert!(!l.fail(a), "a new window starts from zero");
    }
}

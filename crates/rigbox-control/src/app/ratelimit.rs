//! Token-bucket rate limits per (user or client IP, endpoint class), and the login lockout.

use crate::config::RateLimits;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Endpoint classes of limits-and-accounts.md §6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Auth,
    Workspaces,
    Apps,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Auth => "auth",
            Class::Workspaces => "workspaces",
            Class::Apps => "apps",
        }
    }

    /// The class of an `/api/v1` path (without the prefix).
    pub fn of_path(path: &str) -> Class {
        if path.starts_with("/workspaces")
            || path.starts_with("/snapshots")
            || path.starts_with("/quick-deploy")
        {
            Class::Workspaces
        } else if path.starts_with("/apps") {
            Class::Apps
        } else {
            Class::Auth
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Per-key token buckets.
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    buckets: Mutex<HashMap<(String, Class), Bucket>>,
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Requests per minute of `class`.
    pub fn limit(&self, class: Class) -> u32 {
        match class {
            Class::Auth => self.limits.auth,
            Class::Workspaces => self.limits.workspaces,
            Class::Apps => self.limits.apps,
        }
    }

    /// Takes one token; `Err(seconds)` until the next token when the bucket is empty.
    pub fn take(&self, key: &str, class: Class) -> Result<(), u64> {
        let limit = f64::from(self.limit(class).max(1));
        let rate = limit / 60.0;
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = map.entry((key.to_owned(), class)).or_insert(Bucket {
            tokens: limit,
            last: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(limit);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - b.tokens) / rate).ceil() as u64;
            Err(wait.max(1))
        }
    }

    /// Forgets buckets that have been idle long enough to be full again.
    pub fn prune(&self) {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, b| b.last.elapsed() < Duration::from_secs(120));
    }
}

/// Failed logins per email in a sliding window.
#[derive(Debug)]
pub struct LoginLockout {
    max: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginLockout {
    pub fn new(limits: RateLimits) -> Self {
        Self {
            max: limits.login_failures as usize,
            window: Duration::from_secs(limits.login_lockout_secs),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds)` while the email is locked out.
    pub fn check(&self, email: &str) -> Result<(), u64> {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let Some(q) = map.get_mut(email) else {
            return Ok(());
        };
        while q.front().is_some_and(|t| t.elapsed() >= self.window) {
            q.pop_front();
        }
        if q.len() >= self.max {
            let oldest = q
                .front()
                .map(|t| self.window.saturating_sub(t.elapsed()))
                .unwrap_or_default();
            return Err(oldest.as_secs().max(1));
        }
        Ok(())
    }

    pub fn record_failure(&self, email: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(email.to_owned())
            .or_default()
            .push_back(Instant::now());
    }

    pub fn clear(&self, email: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(email);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_empties_and_reports_wait() {
        let rl = RateLimiter::new(RateLimits {
            auth: 3,
            ..RateLimits::default()
        });
        for _ in 0..3 {
            assert!(rl.take("u", Class::Auth).is_ok());
        }
        let wait = rl.take("u", Class::Auth).expect_err("bucket is empty");
        assert!((1..=20).contains(&wait), "wait {wait}");
        assert!(rl.take("other", Class::Auth).is_ok());
        assert!(rl.take("u", Class::Workspaces).is_ok());
    }

    #[test]
    fn classes() {
        assert_eq!(Class::of_path("/workspaces/ws-1/start"), Class::Workspaces);
        assert_eq!(Class::of_path("/apps"), Class::Apps);
        assert_eq!(Class::of_path("/auth/login"), Class::Auth);
        assert_eq!(Class::of_path("/users/me/limits"), Class::Auth);
    }
}

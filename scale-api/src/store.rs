//! Redis behind a circuit breaker.
//!
//! The connection manager reconnects by itself (at once when Redis closes the connection: RESP3),
//! and a command refused a connection is tried once more; the breaker keeps a dead Redis from costing every
//! request a timeout: after `threshold` consecutive failures it opens and Redis-backed routes answer
//! 503 at once; after `cooldown` one probe request is let through (half-open), and its success closes
//! the breaker again. No restart is needed when Redis comes back.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

#[derive(Debug)]
pub enum StoreError {
    /// The breaker is open: Redis is considered down for now.
    Open,
    Redis(redis::RedisError),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Open => write!(f, "redis unavailable (circuit open)"),
            StoreError::Redis(e) => write!(f, "redis error: {e}"),
        }
    }
}

pub struct Breaker {
    failures: AtomicU32,
    /// Milliseconds since `epoch` until which the breaker stays open (0: closed).
    open_until_ms: AtomicU64,
    epoch: Instant,
    threshold: u32,
    cooldown: Duration,
}

/// 0 closed, 1 open, 2 half-open (as exported in metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker { failures: AtomicU32::new(0), open_until_ms: AtomicU64::new(0), epoch: Instant::now(), threshold, cooldown }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn state(&self) -> BreakerState {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            BreakerState::Closed
        } else if self.now_ms() < until {
            BreakerState::Open
        } else {
            BreakerState::HalfOpen
        }
    }

    /// May a request go to Redis now? In half-open, one caller wins the probe.
    fn allow(&self) -> bool {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        if now < until {
            return false;
        }
        // Half-open: push the window forward so only this caller probes.
        self.open_until_ms
            .compare_exchange(until, now + self.cooldown.as_millis() as u64, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn success(&self) {
        self.failures.store(0, Ordering::Release);
        self.open_until_ms.store(0, Ordering::Release);
    }

    fn failure(&self) {
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= self.threshold {
            let until = (self.now_ms() + self.cooldown.as_millis() as u64).max(1);
            self.open_until_ms.store(until, Ordering::Release);
        }
    }
}

pub struct Store {
    conn: ConnectionManager,
    pub breaker: Arc<Breaker>,
    pub errors: AtomicU64,
}

impl Store {
    pub fn new(url: &str, password: Option<&str>, timeout: Duration, threshold: u32, cooldown: Duration) -> redis::RedisResult<Self> {
        let conn = connect(url, password, timeout)?;
        Ok(Store { conn, breaker: Arc::new(Breaker::new(threshold, cooldown)), errors: AtomicU64::new(0) })
    }

    /// Run one command through the breaker; returns the result and how long Redis took.
    pub async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<(T, Duration), StoreError> {
        if !self.breaker.allow() {
            return Err(StoreError::Open);
        }
        let start = Instant::now();
        let mut conn = self.conn.clone();
        let mut result = cmd.query_async::<T>(&mut conn).await;
        if result.as_ref().is_err_and(redis::RedisError::is_connection_refusal) {
            // There was no connection to send it on: the manager's reconnection ran while Redis was
            // restarting. The command never left, so one more try (on a new attempt) cannot run it twice.
            result = cmd.query_async::<T>(&mut conn).await;
        }
        match result {
            Ok(v) => {
                self.breaker.success();
                Ok((v, start.elapsed()))
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.breaker.failure();
                Err(StoreError::Redis(e))
            }
        }
    }
}

/// A connection to Redis that reconnects by itself, each command given `timeout` (its answer
/// included: a blocking read needs more than its block time).
pub fn connect(url: &str, password: Option<&str>, timeout: Duration) -> redis::RedisResult<ConnectionManager> {
    use redis::IntoConnectionInfo;
    let mut info = url.into_connection_info()?;
    // RESP3: the server's side of the connection is watched, so when Redis restarts the manager
    // reconnects at once instead of the next request finding a dead connection.
    let mut settings = info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3);
    if let Some(pw) = password {
        // The password comes from REDIS_PASSWORD (a 0600 secrets file), never from the URL or a log.
        settings = settings.set_password(pw);
    }
    info = info.set_redis_settings(settings);
    let client = redis::Client::open(info)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_threshold_and_half_opens_after_cooldown() {
        let b = Breaker::new(3, Duration::from_millis(50));
        for _ in 0..2 {
            b.failure();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.allow(), "one probe goes through");
        assert!(!b.allow(), "only one");
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow());
    }
}

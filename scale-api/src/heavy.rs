//! A bounded pool of OS threads for CPU-heavy work, off the async runtime (worker threads, as Node's worker_threads).
//!
//! The queue has a fixed capacity: when it is full, `hash_for` fails at once and the caller answers
//! 503 with Retry-After, so load beyond capacity never grows an unbounded backlog. The pool keeps
//! its busy and queued counts directly in the metrics' gauges.

use std::sync::{mpsc, Arc, Mutex};

use prometheus_client::metrics::gauge::Gauge;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

pub struct HeavyPool {
    sender: mpsc::SyncSender<Job>,
    busy: Gauge,
    queued: Gauge,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl HeavyPool {
    /// `busy` and `queued` are the gauges the pool keeps current (threads working, jobs waiting).
    pub fn new(threads: usize, queue: usize, busy: Gauge, queued: Gauge) -> Self {
        let (sender, receiver) = mpsc::sync_channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..threads.max(1) {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("heavy-{i}"))
                .spawn(move || loop {
                    let job = match receiver.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })
                .expect("spawning a heavy-pool thread");
        }
        HeavyPool { sender, busy, queued }
    }

    /// Hash for about `ms` milliseconds on a pool thread; `Err(Full)` when the queue is full.
    pub async fn hash_for(&self, ms: u64) -> Result<HashResult, Full> {
        let (tx, rx) = oneshot::channel();
        let (busy, queued) = (self.busy.clone(), self.queued.clone());
        queued.inc();
        let job: Job = Box::new(move || {
            queued.dec();
            busy.inc();
            let r = hash_work(ms);
            busy.dec();
            let _ = tx.send(r);
        });
        if self.sender.try_send(job).is_err() {
            self.queued.dec();
            return Err(Full);
        }
        rx.await.map_err(|_| Full)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct HashResult {
    pub rounds: u64,
    pub digest: String,
    pub ms: u64,
}

/// Real CPU work: chained SHA-256 rounds until `ms` milliseconds have passed.
pub fn hash_work(ms: u64) -> HashResult {
    let start = std::time::Instant::now();
    let budget = std::time::Duration::from_millis(ms);
    let mut digest = Sha256::digest(b"scale-api");
    let mut rounds = 0u64;
    while start.elapsed() < budget {
        for _ in 0..1000 {
            digest = Sha256::digest(digest);
        }
        rounds += 1000;
    }
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    HashResult { rounds, digest: hex, ms: start.elapsed().as_millis() as u64 }
}

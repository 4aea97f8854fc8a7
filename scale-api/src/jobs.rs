//! Jobs on a Redis stream: `POST /jobs` queues one and answers 202 with its id, `GET /jobs/{id}`
//! tells its state and result, and `scale-api worker` takes them in a consumer group.
//!
//! A job is an entry of the stream `QUEUE` (default `jobs`) holding its id, and a hash
//! `QUEUE:job:ID` holding its state, attempts, payload, result and error. Every half of `claim_idle`
//! (and whenever nothing new came) a worker takes over, with XAUTOCLAIM, an entry another consumer
//! held longer than `claim_idle` without a word (a worker that died or hung mid-job, or an attempt
//! that failed and waits its retry); otherwise it reads a new one with XREADGROUP. While it works
//! on a job it claims the entry again every half of `claim_idle`, so a slow job is not taken from
//! a live worker. A job ends in one Lua script: its
//! result or failure stored, the entry acknowledged and deleted (the stream's length is then what
//! waits plus what is in hand), all or nothing. A job a hung worker still held when another took it
//! completes once: whichever ends second finds it completed and only acknowledges. A job that
//! failed `max_attempts` times goes to the dead letters, the stream `QUEUE:dead` (trimmed to about
//! 10,000), with its error. An ended job's record expires (completed after an hour, failed after a
//! day): Redis that holds a queue evicts nothing, so nothing may grow without end. A worker that
//! finds the group gone (Redis restarted without persistence) makes it again.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use serde::{Deserialize, Serialize};

/// The consumer group every worker of a queue joins.
pub const GROUP: &str = "workers";

/// What a client asks of a job: a sum over `rows` rows, waiting `ms` as a slow dependency would;
/// `fail` makes every attempt fail (to see retries and the dead letters).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    #[serde(default = "default_rows")]
    pub rows: u64,
    #[serde(default)]
    pub ms: u64,
    #[serde(default)]
    pub fail: bool,
}

fn default_rows() -> u64 {
    1000
}

impl JobRequest {
    pub fn check(&self) -> Result<(), String> {
        if self.rows > 10_000_000 {
            return Err("rows must be at most 10000000".into());
        }
        if self.ms > 60_000 {
            return Err("ms must be at most 60000".into());
        }
        Ok(())
    }
}

/// The keys of one queue.
#[derive(Debug, Clone)]
pub struct Keys {
    pub stream: String,
}

impl Keys {
    pub fn new(queue: &str) -> Keys {
        Keys { stream: queue.to_string() }
    }
    pub fn job(&self, id: &str) -> String {
        format!("{}:job:{id}", self.stream)
    }
    pub fn seq(&self) -> String {
        format!("{}:seq", self.stream)
    }
    pub fn dead(&self) -> String {
        format!("{}:dead", self.stream)
    }
    /// How many jobs completed (once each): what a test counts against what it posted.
    pub fn completed(&self) -> String {
        format!("{}:completed", self.stream)
    }
}

/// A queue name as the topology's `app.workers.queue.name` allows it.
pub fn queue_name(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.len() <= 100 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
        Ok(s.to_string())
    } else {
        Err(format!("`{s}` is not a queue name: 1 to 100 letters, digits and -_.:"))
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The job's hash and its entry, together: the entry carries the job's id.
const ENQUEUE: &str = r"
redis.call('HSET', KEYS[1], 'state', 'waiting', 'attempts', 0, 'payload', ARGV[2], 'created_ms', ARGV[3])
return redis.call('XADD', KEYS[2], '*', 'id', ARGV[1])
";

/// The command that stores job `id` and queues it (after `INCR` of [`Keys::seq`] gave the id).
pub fn enqueue_cmd(keys: &Keys, id: u64, job: &JobRequest) -> redis::Cmd {
    let payload = serde_json::to_string(job).unwrap_or_default();
    let mut c = redis::cmd("EVAL");
    c.arg(ENQUEUE).arg(2).arg(keys.job(&id.to_string())).arg(&keys.stream).arg(id).arg(payload).arg(now_ms());
    c
}

/// An attempt begins: counted, and the job marked active with its worker unless it ended
/// already. Its attempts, state before, and payload.
const START: &str = r"
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'completed' and state ~= 'failed' then
  redis.call('HSET', KEYS[1], 'state', 'active', 'worker', ARGV[1])
end
return {attempts, state, redis.call('HGET', KEYS[1], 'payload')}
";

/// How long a job's record stays once it ended: a client has this long to read its result.
pub const COMPLETED_KEPT_S: u64 = 3600;
pub const FAILED_KEPT_S: u64 = 86_400;
/// Dead letters kept (about: the stream is trimmed as it grows).
pub const DEAD_LETTERS_KEPT: u64 = 10_000;

/// An attempt failed, the job to be retried: said so, unless it ended meanwhile.
const RETRY: &str = r"
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'completed' or state == 'failed' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'waiting', 'error', ARGV[1])
return 1
";

/// The job in hand kept this worker's (its idle time reset), only while it is: once another
/// worker took it over, this one does not take it back.
const KEEP: &str = r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if p[1] and p[1][2] == ARGV[3] then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
  return 1
end
return 0
";

/// A job done: its result stored once, its entry acknowledged and deleted. 1 if this call
/// completed it, 0 if it was already completed (a worker that hung while another took it).
const COMPLETE: &str = r"
if redis.call('HGET', KEYS[1], 'state') ~= 'completed' then
  redis.call('HSET', KEYS[1], 'state', 'completed', 'result', ARGV[3], 'worker', ARGV[4], 'finished_ms', ARGV[5])
  redis.call('HDEL', KEYS[1], 'error')
  redis.call('EXPIRE', KEYS[1], ARGV[8])
  redis.call('INCR', KEYS[3])
  redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[2], ARGV[2])
  return 1
end
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
return 0
";

/// A job given up: failed for good, a dead letter written, its entry acknowledged and deleted
/// (unless it completed meanwhile).
const GIVE_UP: &str = r"
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'completed' and state ~= 'failed' then
  redis.call('HSET', KEYS[1], 'state', 'failed', 'error', ARGV[3], 'worker', ARGV[4], 'finished_ms', ARGV[5])
  redis.call('EXPIRE', KEYS[1], ARGV[8])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[9], '*', 'id', ARGV[6], 'error', ARGV[3], 'attempts', ARGV[7])
end
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
return 1
";

/// The work itself: a sum over the rows, and a wait as a slow dependency would take.
pub async fn run_job(job: &JobRequest) -> Result<serde_json::Value, String> {
    if job.ms > 0 {
        tokio::time::sleep(Duration::from_millis(job.ms)).await;
    }
    if job.fail {
        return Err("this job always fails (fail: true)".into());
    }
    let sum = (0..job.rows).fold(0u64, |acc, i| acc.wrapping_add(i.wrapping_mul(i) % 1_000_003));
    Ok(serde_json::json!({ "rows": job.rows, "sum": sum }))
}

/// What `scale-api worker` is told.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The consumer's name in the group: the worker's INSTANCE.
    pub name: String,
    pub queue: String,
    pub claim_idle: Duration,
    pub max_attempts: u32,
    /// How long one XREADGROUP waits for a new entry.
    pub block: Duration,
}

/// Consume the queue until `stop` resolves: the job in hand is finished first.
pub async fn work(mut conn: ConnectionManager, c: WorkerConfig, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let keys = Keys::new(&c.queue);
    tokio::pin!(stop);
    // Redis may be starting beside the worker (a compose `up`, a host's boot): a refused
    // connection, or Redis still loading its data, is asked again for up to 10 s before the worker
    // gives up (and its supervisor starts it again). Anything else (a wrong password, a missing
    // permission) ends it at once, so that a deploy sees it exit rather than a worker that waits.
    let start = std::time::Instant::now();
    loop {
        match join_group(&mut conn, &keys).await {
            Ok(()) => break,
            Err(e) if (e.is_connection_refusal() || e.code() == Some("LOADING")) && start.elapsed() < Duration::from_secs(10) => {
                tracing::warn!(error = %e, "cannot create the consumer group yet; trying again in 500 ms");
                tokio::select! {
                    _ = &mut stop => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
            Err(e) => return Err(e).context("cannot create the consumer group"),
        }
    }
    tracing::info!(queue = %c.queue, consumer = %c.name, "worker ready");
    let mut claim = Claim::default();
    loop {
        // Waiting for work can stop; working cannot (the job in hand is finished). An XREADGROUP
        // cut short may leave an entry delivered to this consumer unseen: it stays pending, and
        // a worker takes it over after `claim_idle`.
        let next = tokio::select! {
            _ = &mut stop => break,
            next = next_entries(&mut conn, &keys, &c, &mut claim) => next,
        };
        match next {
            Ok(entries) => {
                for e in entries {
                    if let Err(err) = process(&mut conn, &keys, &c, &e).await {
                        tracing::warn!(entry = %e.id, error = %format!("{err:#}"), "job not recorded: it stays pending and is taken again");
                    }
                }
            }
            Err(e) if e.code() == Some("NOGROUP") => {
                // Redis lost the group (restarted without persistence): made again, from the start.
                tracing::warn!("the consumer group is gone: made again");
                if let Err(e) = join_group(&mut conn, &keys).await {
                    tracing::warn!(error = %e, "cannot create the consumer group");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the queue; trying again in 1 s");
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    tracing::info!(consumer = %c.name, "worker stopped");
    Ok(())
}

/// The group every worker joins; it reads the stream from its start, so jobs queued before any
/// worker started are taken. Made if missing (with the stream).
async fn join_group(conn: &mut ConnectionManager, keys: &Keys) -> redis::RedisResult<()> {
    let made: redis::RedisResult<()> = redis::cmd("XGROUP").arg("CREATE").arg(&keys.stream).arg(GROUP).arg("0").arg("MKSTREAM").query_async(conn).await;
    match made {
        Err(e) if e.code() != Some("BUSYGROUP") => Err(e),
        _ => Ok(()),
    }
}

/// Where the search for entries held too long stands: XAUTOCLAIM's cursor through the pending
/// entries, and when a whole pass last found nothing.
#[derive(Default)]
struct Claim {
    cursor: Option<String>,
    idle_since: Option<Instant>,
}

/// What another consumer held too long, looked for every half of `claim_idle` (and whenever the
/// stream had nothing new), a pass through all pending entries at a time; else what is new.
async fn next_entries(conn: &mut ConnectionManager, keys: &Keys, c: &WorkerConfig, claim: &mut Claim) -> redis::RedisResult<Vec<StreamId>> {
    if claim.cursor.is_some() || claim.idle_since.is_none_or(|at| at.elapsed() >= c.claim_idle / 2) {
        let claimed: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&keys.stream)
            .arg(GROUP)
            .arg(&c.name)
            .arg(c.claim_idle.as_millis() as u64)
            .arg(claim.cursor.as_deref().unwrap_or("0-0"))
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await?;
        // A pass ends when the cursor comes back to the start.
        claim.cursor = Some(claimed.next_stream_id).filter(|n| n != "0-0");
        if claim.cursor.is_none() {
            claim.idle_since = Some(Instant::now());
        }
        if !claimed.claimed.is_empty() {
            return Ok(claimed.claimed);
        }
        if claim.cursor.is_some() {
            // Scanned part of the pending entries (live workers' jobs): go on at the next turn.
            return Ok(Vec::new());
        }
    }
    let read: Option<StreamReadReply> = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg(&c.name)
        .arg("COUNT")
        .arg(1)
        .arg("BLOCK")
        .arg(c.block.as_millis() as u64)
        .arg("STREAMS")
        .arg(&keys.stream)
        .arg(">")
        .query_async(conn)
        .await?;
    let new: Vec<StreamId> = read.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect()).unwrap_or_default();
    if new.is_empty() {
        claim.idle_since = None;
    }
    Ok(new)
}

/// One attempt at one entry's job, kept claimed while it runs.
async fn process(conn: &mut ConnectionManager, keys: &Keys, c: &WorkerConfig, e: &StreamId) -> anyhow::Result<()> {
    let Some(id) = e.get::<String>("id") else {
        // Not a job of ours: out of the way (a dead letter says what it was), never taken again.
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XADD").arg(keys.dead()).arg("MAXLEN").arg("~").arg(DEAD_LETTERS_KEPT).arg("*").arg("entry").arg(&e.id).arg("error").arg("an entry without a job id").ignore()
            .cmd("XACK").arg(&keys.stream).arg(GROUP).arg(&e.id).ignore()
            .cmd("XDEL").arg(&keys.stream).arg(&e.id).ignore();
        let _: () = pipe.query_async(conn).await?;
        tracing::warn!(entry = %e.id, "an entry without a job id: put in the dead letters");
        return Ok(());
    };
    let hash = keys.job(&id);
    let (attempts, state, payload): (u32, Option<String>, Option<String>) =
        redis::cmd("EVAL").arg(START).arg(1).arg(&hash).arg(&c.name).query_async(conn).await?;
    let finish = |script: &str, outcome: &str| {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(3).arg(&hash).arg(&keys.stream);
        cmd.arg(if script == COMPLETE { keys.completed() } else { keys.dead() });
        cmd.arg(GROUP).arg(&e.id).arg(outcome).arg(&c.name).arg(now_ms()).arg(&id).arg(attempts);
        cmd.arg(if script == COMPLETE { COMPLETED_KEPT_S } else { FAILED_KEPT_S }).arg(DEAD_LETTERS_KEPT);
        cmd
    };
    if matches!(state.as_deref(), Some("completed" | "failed")) {
        // Ended by a worker that held it before: acknowledged and deleted only.
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("XACK").arg(&keys.stream).arg(GROUP).arg(&e.id).ignore().cmd("XDEL").arg(&keys.stream).arg(&e.id).ignore();
        let _: () = pipe.query_async(conn).await?;
        return Ok(());
    }
    let job: Result<JobRequest, String> = payload.ok_or_else(|| "the job's record is gone".to_string()).and_then(|p| serde_json::from_str(&p).map_err(|e| format!("a payload that is not a job: {e}")));
    tracing::info!(job = %id, attempt = attempts, "job started");
    let outcome = match job {
        Ok(job) => {
            // Claimed again every half of claim_idle while it runs: the job stays this worker's.
            let mut keep = conn.clone();
            let run = run_job(&job);
            tokio::pin!(run);
            let period = c.claim_idle / 2;
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                tokio::select! {
                    r = &mut run => break r,
                    _ = tick.tick() => {
                        let kept: redis::RedisResult<i64> = redis::cmd("EVAL").arg(KEEP).arg(1).arg(&keys.stream).arg(GROUP).arg(&e.id).arg(&c.name).query_async(&mut keep).await;
                        if let Err(err) = kept {
                            tracing::warn!(job = %id, error = %err, "cannot keep the job claimed");
                        }
                    }
                }
            }
        }
        Err(e) => Err(e),
    };
    match outcome {
        Ok(result) => {
            let done: i64 = finish(COMPLETE, &result.to_string()).query_async(conn).await?;
            tracing::info!(job = %id, attempt = attempts, first = done == 1, "job completed");
        }
        Err(error) if attempts >= c.max_attempts => {
            let _: i64 = finish(GIVE_UP, &error).query_async(conn).await?;
            tracing::warn!(job = %id, attempts, error, "job failed for good: in the dead letters");
        }
        Err(error) => {
            // Left pending: taken again (by any worker) once idle for claim_idle. Unless another
            // worker ended it meanwhile (this one hung while it took the job over).
            let _: i64 = redis::cmd("EVAL").arg(RETRY).arg(1).arg(&hash).arg(&error).query_async(conn).await?;
            tracing::warn!(job = %id, attempt = attempts, error, "job failed; it is retried");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_names_are_bounded() {
        assert!(JobRequest { rows: 10_000_001, ms: 0, fail: false }.check().is_err());
        assert!(JobRequest { rows: 1, ms: 60_001, fail: false }.check().is_err());
        assert!(JobRequest { rows: 1, ms: 10, fail: true }.check().is_ok());
        assert!(queue_name("jobs:email.v2").is_ok() && queue_name("a b").is_err() && queue_name("").is_err());
        let k = Keys::new("jobs");
        assert_eq!((k.job("7"), k.seq(), k.dead(), k.completed()), ("jobs:job:7".into(), "jobs:seq".into(), "jobs:dead".into(), "jobs:completed".into()));
    }

    #[tokio::test]
    async fn a_job_sums_its_rows_or_fails_as_asked() {
        assert_eq!(run_job(&JobRequest { rows: 4, ms: 0, fail: false }).await.unwrap()["sum"], 14);
        assert!(run_job(&JobRequest { rows: 4, ms: 1, fail: true }).await.is_err());
    }
}

//! The decision tree over a Snapshot: is it up, is it slow, and then which resource explains
//! it (CPU, the event loop, memory, Redis, file descriptors, connections, errors, uneven load), each
//! ending in a change stated as a topology edit where one applies.
//!
//! Pure: a Snapshot (and the previous diagnosis, for hysteresis) in, a Diagnosis out. Series are
//! judged by their median, so one spike does not decide; a finding that was active stays active
//! until its value falls 10% below its threshold, so `--watch` does not flap.

use serde::{Deserialize, Serialize};

use super::snapshot::{InstanceSample, Snapshot};

pub const DIAGNOSIS_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub metric: String,
    pub subject: String,
    pub value: f64,
    pub threshold: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable: scripts match on it.
    pub id: String,
    pub severity: Severity,
    /// A host, an instance, `redis`, or `fleet`.
    pub subject: String,
    pub summary: String,
    pub evidence: Vec<Evidence>,
    /// The questions asked on the way here, with their answers.
    pub path: Vec<String>,
    pub recommendation: String,
    /// The change as a topology edit, where one applies.
    pub topology_edit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub question: String,
    pub answer: String,
    /// The answer led into this branch (a finding may follow).
    pub taken: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub format_version: u32,
    pub topology: String,
    pub taken_at: String,
    pub healthy: bool,
    pub findings: Vec<Finding>,
    pub trace: Vec<Step>,
}

/// Every check doctor runs, for `doctor --list`: (id, severity, what it means, what to change).
pub const CHECKS: &[(&str, &str, &str, &str)] = &[
    ("healthy", "info", "nothing below fired", "nothing to change"),
    ("instance-down", "critical", "an instance does not answer its metrics scrape", "look at its journal; systemd restarts it"),
    ("crash-loop", "critical", "an instance restarted repeatedly within the window", "read its last log lines; roll back the release if it is new"),
    ("redis-down", "critical", "Redis does not answer: sessions, counters and cache fail", "start Redis; check its host and maxmemory"),
    ("cpu-saturated-scale-up", "warning", "an app host's cores are busy beyond the scale-out threshold while it runs fewer instances than cores", "use every core: app.instances: max (PM2's -i max)"),
    ("cpu-saturated-scale-out", "critical", "every core of every app host is busy beyond the scale-out threshold", "add an app host behind the load balancer (horizontal scaling)"),
    ("event-loop-blocked", "warning", "ready work waits to run: CPU-heavy work is blocking the event loop (Node) or runtime (scale-api), and every request on that instance waits", "move CPU-heavy work off the loop (worker threads in Node, the worker pool and app.heavy_pool in scale-api), or run more instances"),
    ("memory-pressure", "warning", "a host's available memory is below the threshold", "a bigger server, fewer instances per host, or cache in Redis"),
    ("memory-leak-suspected", "warning", "an instance's resident memory rose steadily over the window", "find the leak; meanwhile app.limits.memory_max bounds it and systemd restarts"),
    ("redis-slow", "warning", "Redis operations are slow as seen by scale-api", "check Redis CPU and latency; keep values small; a replica for reads"),
    ("redis-memory", "warning", "Redis memory is near maxmemory", "raise redis.maxmemory or pick an eviction policy that fits"),
    ("upstream-errors", "critical", "the share of 5xx responses is above the limit", "read the failing instances' logs; roll back a bad release"),
    ("high-latency", "warning", "latency is above the SLO with no resource saturated", "look downstream: the database (indexes, replicas), network (keep-alive, compression, CDN)"),
    ("fd-exhaustion", "critical", "an instance uses most of its open-files limit", "raise app.limits.nofile"),
    ("load-imbalance", "warning", "instances of equal weight get very unequal traffic", "load_balancer.strategy: least_conn; check weights"),
    ("connections-saturated", "warning", "requests pile up in flight on an instance", "add instances or hosts; check keep-alive and timeouts"),
    ("workers-down", "critical", "workers of the queue are not running: its jobs wait", "read the workers' journal (scalectl logs); systemd restarts a worker that fails"),
    ("workers-stuck", "critical", "jobs wait on the queue and none ended in the window while workers run", "read the workers' journal: stuck on a lock or a dependency, or consuming another queue (app.workers.queue)"),
    ("queue-backlog-add-workers", "warning", "the queue's backlog grows while its workers take jobs: they cannot keep up", "add workers: app.workers.instances, or another host with the worker role"),
    ("jobs-failing", "warning", "a share of the queue's jobs above the error threshold fails for good, past its retries", "read the failed jobs (BullMQ's failed set, or the stream's dead letters) and the workers' journal"),
    ("database-connections", "warning", "a database member's connections are near max_connections: the next ones are refused", "fewer connections: a smaller database.pool or fewer instances, or a connection pooler (PgBouncer) in front of PostgreSQL"),
    ("database-pool-waiting", "warning", "requests wait for a pooled database connection", "raise database.pool if max_connections leaves room (validate checks it), else make the statements faster (see the statement findings)"),
    ("replica-lag", "warning", "a replica is further behind the primary than database.replica_max_lag: HAProxy stops sending it reads, and reads it answered were stale", "look at the replica's disk, CPU and network; a replica that cannot keep up with the writes needs a bigger host"),
    ("database-slow-statement", "warning", "one statement takes most of the database's time and is slow on each call", "add an index for the columns it filters or joins on (EXPLAIN it to see the sequential scan): a replica or a cache spreads a slow statement, it does not make it fast"),
    ("database-cache-reads", "warning", "one fast read (under a tenth of the slow-statement mean), repeated, takes most of a busy primary's time", "can it be cached? cache-aside in Redis with a TTL, as scale-api's GET /users/{id} does, or the load balancer's cache for its GET path"),
    ("database-add-replica", "warning", "the primary's host is busy beyond the scale-out threshold and no replica is idle", "add a read replica: a host with the database role (apply makes it a streaming replica), and send reads to DB_READER_URL; past replicas, sharding (scalectl does not shard)"),
    ("database-reads-on-primary", "warning", "the primary's host is busy beyond the scale-out threshold while a replica idles", "read through DB_READER_URL (HAProxy's reader port spreads reads over the replicas); keep DB_WRITER_URL for writes and reads that must see them"),
    ("disk-filling", "warning", "the disk that holds /var/log (the log collector's files on the monitor host) is nearly full", "see who logs the most (du -sh /var/log/scalectl/*: each file keeps at most 100 MiB and 4 compressed generations); then a bigger disk, or a monitor host whose disk Redis does not share"),
];

/// The shortest window over which memory growth is judged a leak.
const LEAK_WINDOW_S: u64 = 120;

fn median(xs: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

struct Walk<'a> {
    previous: Option<&'a Diagnosis>,
    findings: Vec<Finding>,
    trace: Vec<Step>,
}

impl Walk<'_> {
    fn ask(&mut self, question: impl Into<String>, answer: impl Into<String>, taken: bool) -> String {
        let (q, a) = (question.into(), answer.into());
        let line = format!("{q} {a}");
        self.trace.push(Step { question: q, answer: a, taken });
        line
    }

    /// Above the threshold; 10% lower once the same finding was active (hysteresis).
    fn over(&self, id: &str, subject: &str, value: f64, threshold: f64) -> bool {
        let was = self.previous.is_some_and(|d| d.findings.iter().any(|f| f.id == id && f.subject == subject));
        value > if was { threshold * 0.9 } else { threshold }
    }

    fn under(&self, id: &str, subject: &str, value: f64, threshold: f64) -> bool {
        let was = self.previous.is_some_and(|d| d.findings.iter().any(|f| f.id == id && f.subject == subject));
        value < if was { threshold * 1.1 } else { threshold }
    }

    #[allow(clippy::too_many_arguments)]
    fn find(&mut self, id: &str, severity: Severity, subject: &str, summary: String, evidence: Vec<Evidence>, path: Vec<String>, edit: Option<String>) {
        // Every id a finding carries is listed (`doctor --list`, its recommendation): the unit tests,
        // which reach every branch, fail on one that is not.
        let check = CHECKS.iter().find(|c| c.0 == id);
        debug_assert!(check.is_some(), "finding id `{id}` is not in CHECKS");
        let recommendation = check.map(|c| c.3).unwrap_or("").to_string();
        self.findings.push(Finding { id: id.into(), severity, subject: subject.into(), summary, evidence, path, recommendation, topology_edit: edit });
    }
}

fn ev(metric: &str, subject: &str, value: f64, threshold: f64) -> Vec<Evidence> {
    vec![Evidence { metric: metric.into(), subject: subject.into(), value, threshold }]
}

pub fn diagnose(s: &Snapshot, previous: Option<&Diagnosis>) -> Diagnosis {
    let mut w = Walk { previous, findings: Vec::new(), trace: Vec::new() };
    // 1. Is everything up?
    everything_up(&mut w, s);
    // 2. Is it slow (or failing)?
    let slow = slow_or_failing(&mut w, s);
    // 3. Which resource explains it? (Also asked when not slow: add a server above 70% CPU, before users notice.)
    let explained_before = w.findings.len();
    cpu(&mut w, s, &slow.step);
    let up: Vec<&InstanceSample> = s.instances.iter().filter(|i| i.up).collect();
    for i in &up {
        instance_resources(&mut w, s, i, &slow.step);
    }
    host_memory(&mut w, s, &slow.step);
    host_disk(&mut w, s);
    redis(&mut w, s, &slow.step);
    balance(&mut w, s, &up, slow.total_rps);
    database(&mut w, s, &slow.step);
    let before_queue = w.findings.len();
    queue(&mut w, s);
    let queue_findings = w.findings.len() - before_queue;
    // Slow, and nothing above explains it: the bottleneck is outside the fleet's resources.
    let th = &s.thresholds;
    let explained = w.findings[explained_before..w.findings.len() - queue_findings].iter().any(|f| f.id != "load-imbalance" && f.id != "memory-leak-suspected" && f.id != "disk-filling");
    if slow.slow && !explained {
        let p = w.ask("a saturated resource explains the latency?", "no: CPU, event loop, memory, Redis, files and connections are fine", true);
        let (p99, inst) = slow.worst_p99.as_ref().map(|(p, i)| (*p, i.as_str())).unwrap_or((0.0, ""));
        w.find("high-latency", Severity::Warning, "fleet", format!("p99 {p99:.0} ms on {inst} with no resource saturated"), ev("p99_ms", inst, p99, th.latency_p99_ms), vec![slow.step.clone(), p], None);
    }

    let healthy = w.findings.is_empty();
    if healthy {
        w.ask("anything to change?", "no: every check passed", false);
    }
    w.findings.sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| a.id.cmp(&b.id)).then_with(|| a.subject.cmp(&b.subject)));
    Diagnosis {
        format_version: DIAGNOSIS_FORMAT_VERSION,
        topology: s.topology.clone(),
        taken_at: s.taken_at.clone(),
        healthy,
        findings: w.findings,
        trace: w.trace,
    }
}

/// Instances down or restarting in a loop; Redis down.
fn everything_up(w: &mut Walk<'_>, s: &Snapshot) {
    let th = &s.thresholds;
    for i in &s.instances {
        let crash = i.restarts >= th.crash_restarts;
        if crash {
            let p = w.ask(format!("{} restarting?", i.instance), format!("yes, {} times in {} s", i.restarts, s.window_s), true);
            w.find("crash-loop", Severity::Critical, &i.instance, format!("{} restarted {} times in {} s", i.instance, i.restarts, s.window_s),
                ev("restarts", &i.instance, i.restarts as f64, th.crash_restarts as f64), vec![p], None);
        } else if !i.up {
            let p = w.ask(format!("{} up?", i.instance), "no: its scrape fails", true);
            w.find("instance-down", Severity::Critical, &i.instance, format!("{} is down", i.instance), ev("up", &i.instance, 0.0, 1.0), vec![p], None);
        }
    }
    let down = w.findings.len();
    w.ask("every instance up?", if down == 0 { "yes".to_string() } else { format!("no: {down} down or restarting") }, down > 0);
    if let Some(r) = &s.redis {
        let p = w.ask("Redis up?", if r.up { "yes" } else { "no" }, !r.up);
        if !r.up {
            w.find("redis-down", Severity::Critical, "redis", "Redis is down".into(), ev("redis_up", "redis", 0.0, 1.0), vec![p], None);
        }
    }

}

/// The answer to "is the app slow?", which the resource findings cite.
struct Slow {
    slow: bool,
    step: String,
    worst_p99: Option<(f64, String)>,
    total_rps: f64,
}

/// p99 against the SLO, and the fleet's 5xx share.
fn slow_or_failing(w: &mut Walk<'_>, s: &Snapshot) -> Slow {
    let th = &s.thresholds;
    let up: Vec<&InstanceSample> = s.instances.iter().filter(|i| i.up).collect();
    let worst_p99 = up.iter().filter_map(|i| i.p99_ms.map(|p| (p, i.instance.as_str()))).max_by(|a, b| a.0.total_cmp(&b.0));
    let total_rps: f64 = up.iter().map(|i| i.requests_per_s).sum();
    let fleet_errors = if total_rps > 0.0 { up.iter().map(|i| i.error_rate_percent * i.requests_per_s).sum::<f64>() / total_rps } else { 0.0 };
    let slow = worst_p99.is_some_and(|(p, _)| w.over("high-latency", "fleet", p, th.latency_p99_ms));
    let slow_answer = match worst_p99 {
        Some((p, inst)) => format!("{} (worst p99 {p:.0} ms on {inst}, SLO {} ms)", if slow { "yes" } else { "no" }, th.latency_p99_ms),
        None => "no traffic to judge".into(),
    };
    let slow_step = w.ask("is the app slow?", slow_answer, slow);
    let failing = w.over("upstream-errors", "fleet", fleet_errors, th.error_rate_percent) && total_rps > 0.0;
    let err_step = w.ask("is it failing requests?", format!("{} ({fleet_errors:.2}% 5xx, limit {}%)", if failing { "yes" } else { "no" }, th.error_rate_percent), failing);
    if failing {
        w.find("upstream-errors", Severity::Critical, "fleet", format!("{fleet_errors:.2}% of responses are 5xx"), ev("error_rate_percent", "fleet", fleet_errors, th.error_rate_percent), vec![err_step.clone()], None);
    }

    Slow { slow, step: slow_step, worst_p99: worst_p99.map(|(p, i)| (p, i.to_string())), total_rps }
}

/// App hosts' CPU: scale up (instances on every core) or out (another host).
fn cpu(w: &mut Walk<'_>, s: &Snapshot, slow_step: &str) {
    let th = &s.thresholds;
    let app_hosts: Vec<_> = s.hosts.iter().filter(|h| h.app).collect();
    let mut at_capacity = 0;
    let mut busy_hosts = 0;
    for h in &app_hosts {
        let Some(cpu) = median(&h.cpu_busy_percent) else { continue };
        let busy = w.over("cpu-saturated-scale-up", &h.host, cpu, th.cpu_scale_out_percent) || w.over("cpu-saturated-scale-out", "fleet", cpu, th.cpu_scale_out_percent);
        // CPU the app's instances do not use (an install, a neighbour, a backup) is no reason to
        // scale the app: busy counts only when the instances account for at least a third of it
        // (hosts that share a machine, as the lab's do, each see the machine's CPU).
        if busy {
            match median(&h.app_cpu_percent) {
                Some(app) if app < cpu / 3.0 => {
                    w.ask(format!("{} CPU busy with the app?", h.host), format!("no: {cpu:.0}% of {} cores busy, the app's instances use {app:.0}%: something else on {} is busy (not a reason to scale the app)", h.cores, h.host), false);
                    continue;
                }
                None => {
                    w.ask(format!("{} CPU busy with the app?", h.host), format!("unknown: {cpu:.0}% of {} cores busy, but its instances report no process CPU time (yet): not judged", h.cores), false);
                    continue;
                }
                Some(_) => {}
            }
        }
        let p = w.ask(format!("{} CPU busy?", h.host), format!("{} ({cpu:.0}% of {} cores, threshold {}%)", if busy { "yes" } else { "no" }, h.cores, th.cpu_scale_out_percent), busy);
        if !busy {
            continue;
        }
        busy_hosts += 1;
        if h.instances < h.cores {
            let q = w.ask(format!("{} uses every core?", h.host), format!("no: {} instances on {} cores", h.instances, h.cores), true);
            w.find("cpu-saturated-scale-up", Severity::Warning, &h.host,
                format!("{} is {cpu:.0}% busy with {} instances on {} cores", h.host, h.instances, h.cores),
                ev("cpu_busy_percent", &h.host, cpu, th.cpu_scale_out_percent), vec![slow_step.to_string(), p, q],
                Some(format!("app.instances: max   (or hosts.{}.instances: {})", h.host, h.cores)));
        } else {
            at_capacity += 1;
        }
    }
    if !app_hosts.is_empty() && at_capacity == app_hosts.len() {
        let p = w.ask("every core of every app host busy?", format!("yes: {at_capacity} of {} hosts", app_hosts.len()), true);
        let cpus: Vec<f64> = app_hosts.iter().filter_map(|h| median(&h.cpu_busy_percent)).collect();
        let avg = cpus.iter().sum::<f64>() / cpus.len().max(1) as f64;
        w.find("cpu-saturated-scale-out", Severity::Critical, "fleet",
            format!("all {} app hosts are {avg:.0}% busy with an instance on every core", app_hosts.len()),
            ev("cpu_busy_percent", "fleet", avg, th.cpu_scale_out_percent), vec![slow_step.to_string(), p],
            Some("hosts: add an app host (roles: [app]); the load balancer picks it up on apply".into()));
    } else if busy_hosts > 0 && at_capacity > 0 {
        w.ask("every core of every app host busy?", format!("no: {at_capacity} of {} hosts at capacity", app_hosts.len()), false);
    }

}

/// One instance's runtime, open files, requests in flight and memory growth.
fn instance_resources(w: &mut Walk<'_>, s: &Snapshot, i: &InstanceSample, slow_step: &str) {
    let th = &s.thresholds;
        if let Some(d) = median(&i.scheduling_delay_ms)
            && w.over("event-loop-blocked", &i.instance, d, th.scheduling_delay_ms)
        {
            let p = w.ask(format!("{} event loop blocked?", i.instance), format!("yes: ready work waits {d:.0} ms to run (threshold {} ms)", th.scheduling_delay_ms), true);
            let edit = (!s.program).then(|| "app.heavy_pool: <cores>   (and keep CPU-heavy handlers on the pool)".to_string());
            w.find("event-loop-blocked", Severity::Warning, &i.instance, format!("the event loop of {} is blocked: ready work waits {d:.0} ms to run", i.instance),
                ev("scheduling_delay_ms", &i.instance, d, th.scheduling_delay_ms), vec![slow_step.to_string(), p], edit);
        }
        if let (Some(open), Some(max)) = (i.open_fds, i.max_fds)
            && max > 0.0
        {
            let pct = 100.0 * open / max;
            if w.over("fd-exhaustion", &i.instance, pct, th.fds_percent) {
                let p = w.ask(format!("{} open files near the limit?", i.instance), format!("yes: {open:.0} of {max:.0} at the peak of the window"), true);
                w.find("fd-exhaustion", Severity::Critical, &i.instance, format!("{} uses {pct:.0}% of its open-files limit", i.instance),
                    ev("open_fds_percent", &i.instance, pct, th.fds_percent), vec![p], Some(format!("app.limits.nofile: {}", (max as u64).saturating_mul(4).max(65536))));
            }
        }
        if w.over("connections-saturated", &i.instance, i.in_flight, th.in_flight_per_instance) {
            let p = w.ask(format!("{} requests piling up?", i.instance), format!("yes: {:.0} in flight", i.in_flight), true);
            w.find("connections-saturated", Severity::Warning, &i.instance, format!("{:.0} requests in flight on {}", i.in_flight, i.instance),
                ev("in_flight", &i.instance, i.in_flight, th.in_flight_per_instance), vec![slow_step.to_string(), p], None);
        }
        // A leak shows over minutes: over a shorter window a process that just started (a
        // deploy, a reload) warms up (heap, JIT) and its memory rises as steadily as a leak's.
        if let (Some(first), Some(last)) = (i.resident_bytes.first(), i.resident_bytes.last())
            && i.resident_bytes.len() >= 5
            && s.window_s >= LEAK_WINDOW_S
            && *first > 0.0
        {
            let growth = 100.0 * (last - first) / first;
            let rising = i.resident_bytes.windows(2).filter(|p| p[1] >= p[0]).count() as f64 / (i.resident_bytes.len() - 1) as f64;
            if rising >= 0.8 && w.over("memory-leak-suspected", &i.instance, growth, th.leak_growth_percent) {
                let p = w.ask(format!("{} memory rising steadily?", i.instance), format!("yes: +{growth:.0}% over {} s, rising in {:.0}% of steps", s.window_s, rising * 100.0), true);
                w.find("memory-leak-suspected", Severity::Warning, &i.instance, format!("resident memory of {} grew {growth:.0}% in {} s", i.instance, s.window_s),
                    ev("resident_growth_percent", &i.instance, growth, th.leak_growth_percent), vec![p], None);
            }
        }
}

fn host_memory(w: &mut Walk<'_>, s: &Snapshot, slow_step: &str) {
    let th = &s.thresholds;
    for h in &s.hosts {
        if let Some(m) = h.memory_available_percent
            && w.under("memory-pressure", &h.host, m, th.memory_available_percent)
        {
            let p = w.ask(format!("{} memory short?", h.host), format!("yes: {m:.1}% available"), true);
            w.find("memory-pressure", Severity::Warning, &h.host, format!("{} has {m:.1}% of its memory available", h.host),
                ev("memory_available_percent", &h.host, m, th.memory_available_percent), vec![slow_step.to_string(), p], None);
        }
    }
}

/// A disk that fills stops the log collector (and Redis, where it shares it) whatever the latency:
/// asked of every host, slow or not.
fn host_disk(w: &mut Walk<'_>, s: &Snapshot) {
    let th = &s.thresholds;
    for h in &s.hosts {
        if let Some(d) = h.disk_available_percent
            && w.under("disk-filling", &h.host, d, th.disk_available_percent)
        {
            let p = w.ask(format!("{} disk of /var/log filling?", h.host), format!("yes: {d:.1}% free"), true);
            let severity = if d < th.disk_available_percent / 2.0 { Severity::Critical } else { Severity::Warning };
            w.find("disk-filling", severity, &h.host, format!("the disk of /var/log on {} has {d:.1}% free", h.host),
                ev("disk_available_percent", &h.host, d, th.disk_available_percent), vec![p], None);
        }
    }
}

fn redis(w: &mut Walk<'_>, s: &Snapshot, slow_step: &str) {
    let th = &s.thresholds;
    if let Some(r) = s.redis.as_ref().filter(|r| r.up) {
        if let Some(p99) = r.p99_ms
            && w.over("redis-slow", "redis", p99, th.redis_p99_ms)
        {
            let p = w.ask("Redis slow?", format!("yes: p99 {p99:.1} ms"), true);
            w.find("redis-slow", Severity::Warning, "redis", format!("Redis operations take {p99:.1} ms at p99"), ev("redis_p99_ms", "redis", p99, th.redis_p99_ms), vec![slow_step.to_string(), p], None);
        }
        if r.memory_max_bytes > 0.0 {
            let pct = 100.0 * r.memory_used_bytes / r.memory_max_bytes;
            if w.over("redis-memory", "redis", pct, th.redis_memory_percent) {
                let p = w.ask("Redis memory near maxmemory?", format!("yes: {pct:.0}%"), true);
                w.find("redis-memory", Severity::Warning, "redis", format!("Redis uses {pct:.0}% of maxmemory"), ev("redis_memory_percent", "redis", pct, th.redis_memory_percent), vec![p],
                    Some(format!("redis.maxmemory: {}", bytes(r.memory_max_bytes * 2.0))));
            }
        }
    }

}

/// Is it the database? Connections near max_connections, callers waiting for a pooled connection,
/// a replica past its lag limit; then what takes the database's time: one slow statement (an
/// index), or, on a primary whose host is busy beyond the scale-out threshold, one fast read
/// repeated (a cache), or reads in general (a replica, or reads sent to the replicas there are).
fn database(w: &mut Walk<'_>, s: &Snapshot, slow_step: &str) {
    let Some(d) = &s.database else { return };
    let th = &s.thresholds;
    if d.max_connections > 0.0 {
        for m in &d.members {
            let pct = 100.0 * m.connections / d.max_connections;
            if w.over("database-connections", &m.host, pct, th.database_connections_percent) {
                let p = w.ask(format!("{} near max_connections?", m.host), format!("yes: {:.0} of {:.0} ({pct:.0}%)", m.connections, d.max_connections), true);
                w.find("database-connections", Severity::Warning, &m.host, format!("{} holds {:.0} of its {:.0} connections", m.host, m.connections, d.max_connections),
                    ev("connections_percent", &m.host, pct, th.database_connections_percent), vec![p], None);
            }
        }
    }
    if let Some(waiting) = median(&d.pool_waiting)
        && w.over("database-pool-waiting", "database", waiting, POOL_WAITING)
    {
        let p = w.ask("requests wait for a database connection?", format!("yes: {waiting:.0} waiting (median over the window)"), true);
        w.find("database-pool-waiting", Severity::Warning, "database", format!("{waiting:.0} requests wait for a pooled database connection (median)"), ev("pool_waiting", "database", waiting, POOL_WAITING), vec![slow_step.to_string(), p], None);
    }
    for m in d.members.iter().filter(|m| m.replica) {
        if let Some(lag) = m.lag_bytes
            && w.over("replica-lag", &m.host, lag, d.replica_max_lag_bytes)
        {
            let p = w.ask(format!("{} behind the primary?", m.host), format!("yes: {} of WAL to replay", bytes(lag)), true);
            w.find("replica-lag", Severity::Warning, &m.host, format!("{} has {} of WAL still to replay (limit {})", m.host, bytes(lag), bytes(d.replica_max_lag_bytes)),
                ev("lag_bytes", &m.host, lag, d.replica_max_lag_bytes), vec![p], None);
        }
    }
    let primary = d.members.iter().find(|m| !m.replica);
    let cpu_of = |host: &str| s.hosts.iter().find(|h| h.host == host).and_then(|h| median(&h.cpu_busy_percent));
    let primary_cpu = primary.and_then(|m| cpu_of(&m.host));
    let primary_busy = primary.zip(primary_cpu).is_some_and(|(m, cpu)| w.over("database-add-replica", &m.host, cpu, th.cpu_scale_out_percent) || w.over("database-reads-on-primary", &m.host, cpu, th.cpu_scale_out_percent));
    // One statement takes most of the time (ten calls at least: not one administrator's query).
    let top = d.statements.first().filter(|top| d.statement_seconds > 0.0 && top.calls >= 10.0 && top.seconds / d.statement_seconds >= 0.5);
    let answer = match top {
        Some(top) => format!("yes: {}% of {:.1} s", (100.0 * top.seconds / d.statement_seconds).round(), d.statement_seconds),
        None => format!("no ({:.1} s of statements in the window)", d.statement_seconds),
    };
    let p = w.ask("one statement takes most of the database's time?", answer, top.is_some());
    let mut explained = false;
    if let Some(top) = top {
        let share = 100.0 * top.seconds / d.statement_seconds;
        let mean_ms = 1000.0 * top.seconds / top.calls;
        let per_s = top.calls / s.window_s.max(1) as f64;
        if w.over("database-slow-statement", "database", mean_ms, th.statement_mean_ms) {
            // The table sequential scans read the most of, when each read many rows.
            let scanned = d.tables.iter().find(|t| t.seq_scans > 0.0 && t.seq_rows_read / t.seq_scans >= SCAN_ROWS);
            let mut evidence = ev("statement_mean_ms", &top.statement, mean_ms, th.statement_mean_ms);
            let mut summary = format!("`{}` takes {share:.0}% of the database's time: {mean_ms:.0} ms a call, {:.0} calls in {} s", top.statement, top.calls, s.window_s);
            if let Some(t) = scanned {
                let rows = t.seq_rows_read / t.seq_scans;
                summary.push_str(&format!("; sequential scans of {} read {rows:.0} rows each (index scans: {:.0}): an index there", t.table, t.index_scans));
                evidence.push(Evidence { metric: "rows_per_sequential_scan".into(), subject: t.table.clone(), value: rows, threshold: SCAN_ROWS });
            }
            let q = w.ask("is it slow on each call?", format!("yes: {mean_ms:.0} ms"), true);
            w.find("database-slow-statement", Severity::Warning, "database", summary, evidence, vec![p.clone(), q], None);
            explained = true;
        } else if primary_busy && is_read(&top.statement) && mean_ms < th.statement_mean_ms / 10.0 {
            let q = w.ask("is it a fast read, repeated on a busy primary?", format!("yes: {mean_ms:.1} ms a call, {per_s:.0} calls a second, primary's host {:.0}% busy", primary_cpu.unwrap_or(0.0)), true);
            w.find("database-cache-reads", Severity::Warning, "database", format!("`{}` takes {share:.0}% of the database's time: {per_s:.0} calls a second at {mean_ms:.1} ms; can it be cached?", top.statement),
                ev("calls_per_s", &top.statement, per_s, 0.0), vec![p.clone(), q], None);
            explained = true;
        }
    }
    // Reads take most of the statements' time: what a replica takes off the primary.
    let read_seconds: f64 = d.statements.iter().filter(|x| is_read(&x.statement)).map(|x| x.seconds).sum();
    let reads = d.statement_seconds > 0.0 && read_seconds / d.statement_seconds >= 0.5;
    if !explained
        && primary_busy
        && let (Some(m), Some(cpu)) = (primary, primary_cpu)
    {
        let share = if d.statement_seconds > 0.0 { 100.0 * read_seconds / d.statement_seconds } else { 0.0 };
        let q = w.ask(format!("{}, the primary, busy with reads?", m.host), format!("{}: {cpu:.0}% of its cores, reads {share:.0}% of the statements' time", if reads { "yes" } else { "no" }), reads);
        if !reads {
            return;
        }
        let idle = d.members.iter().filter(|r| r.replica).find(|r| cpu_of(&r.host).is_some_and(|c| c < th.cpu_scale_out_percent / 2.0));
        match idle {
            Some(r) => w.find("database-reads-on-primary", Severity::Warning, &m.host, format!("the primary's host is {cpu:.0}% busy while the replica {} idles: reads go to the primary", r.host),
                ev("cpu_busy_percent", &m.host, cpu, th.cpu_scale_out_percent), vec![q], None),
            None => w.find("database-add-replica", Severity::Warning, &m.host, format!("the primary's host is {cpu:.0}% busy and no replica is idle"),
                ev("cpu_busy_percent", &m.host, cpu, th.cpu_scale_out_percent), vec![q], Some("hosts: a new host with roles: [database] (apply makes it a streaming replica)".into())),
        }
    }
}

/// Callers waiting for a pooled connection, as a median over the window, above which the pool is short.
const POOL_WAITING: f64 = 0.5;
/// Rows each sequential scan of a table reads, above which an index is worth it.
const SCAN_ROWS: f64 = 1000.0;

/// A statement that reads only (what a cache or a replica could answer).
fn is_read(statement: &str) -> bool {
    let s = statement.trim_start().to_ascii_lowercase();
    (s.starts_with("select") || s.starts_with("with")) && !s.contains(" for update") && !s.contains(" for share")
}

/// Bytes as people read them (`16 MiB`).
fn bytes(b: f64) -> String {
    bytesize::ByteSize::b(b.max(0.0) as u64).display().iec_short().to_string()
}

/// Uneven load among instances that serve (at least a few requests a second, so scrapes alone
/// do not count). Weights are named in the evidence: unequal weights are a common cause. An
/// instance whose process started within the rates' window is left out: right after a roll its
/// rate covers a part of the window, and the others' the traffic it did not take while drained.
fn balance(w: &mut Walk<'_>, s: &Snapshot, up: &[&InstanceSample], total_rps: f64) {
    let th = &s.thresholds;
    let weighted: Vec<&InstanceSample> = up.iter().copied().filter(|i| i.weight > 0).collect();
    let serving: Vec<&InstanceSample> = weighted.iter().copied().filter(|i| !i.started_recently).collect();
    let fresh = weighted.len() - serving.len();
    if serving.len() < 2 && fresh > 0 && total_rps >= 5.0 {
        w.ask("load even across instances?", format!("not judged: {fresh} of {} instances started within the last minute (a deploy or a restart); ask again in a minute", weighted.len()), false);
    }
    if serving.len() >= 2 && total_rps >= 5.0 {
        let max = serving.iter().copied().max_by(|a, b| a.requests_per_s.total_cmp(&b.requests_per_s)).unwrap_or(serving[0]);
        let min = serving.iter().copied().min_by(|a, b| a.requests_per_s.total_cmp(&b.requests_per_s)).unwrap_or(serving[0]);
        let ratio = if min.requests_per_s > 0.0 { max.requests_per_s / min.requests_per_s } else { f64::INFINITY };
        let uneven = w.over("load-imbalance", "fleet", ratio, th.imbalance_ratio);
        let p = w.ask(
            "load even across instances?",
            format!(
                "{} ({} {:.1} req/s at weight {}, {} {:.1} req/s at weight {})",
                if uneven { "no" } else { "yes" },
                max.instance, max.requests_per_s, max.weight, min.instance, min.requests_per_s, min.weight
            ),
            uneven,
        );
        if uneven {
            let shown = if ratio.is_finite() { format!("{ratio:.1}x") } else { "all".into() };
            let weights = if max.weight != min.weight { format!(" (weights {} and {})", max.weight, min.weight) } else { String::new() };
            w.find("load-imbalance", Severity::Warning, "fleet", format!("{} gets {shown} the traffic of {}{weights}", max.instance, min.instance),
                ev("rps_ratio", "fleet", if ratio.is_finite() { ratio } else { 1e9 }, th.imbalance_ratio), vec![p],
                Some("load_balancer.strategy: least_conn, and equal hosts.*.weight unless the hosts differ in size".into()));
        }
    }

}

/// The workers' queue, asked whatever the requests' latency (its jobs left the request): are its
/// workers running; does its backlog grow, and if so, do the workers take jobs (then they cannot
/// keep up: more workers) or not (stuck); do its jobs fail for good beyond the error threshold.
fn queue(w: &mut Walk<'_>, s: &Snapshot) {
    let Some(q) = &s.queue else { return };
    let th = &s.thresholds;
    let subject = format!("queue {}", q.queue);
    // Down is what the hosts measured stopped; a worker not measured yet (just started) is neither.
    let unmeasured = q.workers.saturating_sub(q.workers_up + q.workers_down);
    let answer = match (q.workers_down, unmeasured) {
        (0, 0) => format!("yes: {} of {}", q.workers_up, q.workers),
        (0, n) => format!("yes: {} of {} ({n} not measured yet)", q.workers_up, q.workers),
        (d, _) => format!("no: {d} of {} stopped, {} running", q.workers, q.workers_up),
    };
    let p_up = w.ask(format!("{subject}: every worker running?"), answer, q.workers_down > 0);
    if q.workers_down > 0 {
        let severity = if q.workers_up == 0 { Severity::Critical } else { Severity::Warning };
        w.find("workers-down", severity, &subject, format!("{} of the {} workers of {subject} are not running", q.workers_down, q.workers),
            ev("workers_up", &subject, q.workers_up as f64, q.workers as f64), vec![p_up.clone()], None);
    }
    // A backlog: jobs waiting now above the floor, and more than at the start of the window, rising
    // in most steps (a burst being worked off falls instead).
    let now = q.waiting.last().copied().filter(|v| v.is_finite()).unwrap_or(0.0);
    let first = q.waiting.first().copied().filter(|v| v.is_finite()).unwrap_or(0.0);
    let steps = q.waiting.len().saturating_sub(1);
    let rising = if steps == 0 { 0.0 } else { q.waiting.windows(2).filter(|p| p[1] >= p[0]).count() as f64 / steps as f64 };
    let growing = steps >= 2 && now > first && rising >= 0.6;
    let backlog = growing && w.over("queue-backlog-add-workers", &subject, now, th.queue_backlog_jobs);
    let p_backlog = w.ask(
        format!("{subject}: backlog growing?"),
        format!("{} ({now:.0} waiting, {first:.0} {} s ago; rising in {:.0}% of steps)", if backlog { "yes" } else { "no" }, s.window_s, rising * 100.0),
        backlog,
    );
    if backlog && q.workers_up > 0 {
        // Jobs ending is what says the workers work: a hung worker still holds its job.
        let active = median(&q.active).unwrap_or(0.0);
        let taking = q.ended > 0.0;
        let p_taking = w.ask(
            format!("{subject}: workers taking jobs?"),
            if taking { format!("yes: {:.0} ended in {} s, {active:.0} in hand", q.ended, s.window_s) } else { format!("no: none ended in {} s ({active:.0} held)", s.window_s) },
            true,
        );
        let evidence = ev("queue_waiting", &subject, now, th.queue_backlog_jobs);
        // How long the oldest has waited, where the queue tells.
        let waited = q.oldest_waiting_s.filter(|s| *s > 0.0).map(|s| format!(" (the oldest has waited {s:.0} s)")).unwrap_or_default();
        if taking {
            let edit = match (q.instances_per_host, q.on_hosts) {
                (Some(n), true) => format!("app.workers.instances: {}   (or add a host with roles: [worker])", n * 2),
                (None, true) => "hosts: add a host with roles: [worker]   (app.workers.instances is max: one per core)".to_string(),
                // One engine: more worker containers.
                (_, false) => format!("app.workers.instances: {}", (q.workers * 2).max(2)),
            };
            w.find("queue-backlog-add-workers", Severity::Warning, &subject,
                format!("{now:.0} jobs wait on {subject}{waited}, {:.0} more than {} s ago, while its {} workers take jobs: they cannot keep up", now - first, s.window_s, q.workers_up),
                evidence, vec![p_up.clone(), p_backlog.clone(), p_taking], Some(edit));
        } else {
            w.find("workers-stuck", Severity::Critical, &subject, format!("{now:.0} jobs wait on {subject}{waited} but none ended in {} s with {} workers running", s.window_s, q.workers_up),
                evidence, vec![p_up.clone(), p_backlog.clone(), p_taking], None);
        }
    }
    // Failures for good (past the retries), as a share of the jobs that ended in the window.
    if q.failed > 0.0 {
        let ended = q.ended.max(q.failed);
        let share = 100.0 * q.failed / ended;
        let of = format!("of {ended:.0} jobs that ended");
        let failing = w.over("jobs-failing", &subject, share, th.error_rate_percent);
        let p = w.ask(format!("{subject}: jobs failing for good?"), format!("{} ({:.0} failed {of} in {} s: {share:.1}%, limit {}%)", if failing { "yes" } else { "no" }, q.failed, s.window_s, th.error_rate_percent), failing);
        if failing {
            w.find("jobs-failing", Severity::Warning, &subject, format!("{:.0} jobs of {subject} failed for good in {} s ({share:.1}%)", q.failed, s.window_s),
                ev("jobs_failed_percent", &subject, share, th.error_rate_percent), vec![p], None);
        }
    }
}

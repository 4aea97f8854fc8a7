//! What doctor knows about a fleet at one moment: plain numbers, per host, instance, Redis and
//! Nginx, plus the thresholds they are judged by. `collect` fills it from the live fleet; `--save`
//! writes it and `--snapshot` replays it, so every diagnosis can be reproduced and tested.
//! Series are samples over the window, oldest first (one per scrape step).

use serde::{Deserialize, Serialize};

pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub format_version: u32,
    pub topology: String,
    /// RFC 3339, when it was taken (passed in by collect; the tree reads no clock).
    pub taken_at: String,
    /// Seconds of history the series cover.
    pub window_s: u64,
    pub thresholds: Thresholds,
    pub hosts: Vec<HostSample>,
    pub instances: Vec<InstanceSample>,
    pub redis: Option<RedisSample>,
    pub nginx: Option<NginxSample>,
    /// The app is the user's program (app.program), not scale-api: scale-api's own settings are
    /// no remedy then.
    #[serde(default)]
    pub program: bool,
    /// The queue the app's workers consume (app.workers.queue), when there is one.
    #[serde(default)]
    pub queue: Option<QueueSample>,
    /// The database tier, when the topology has one.
    #[serde(default)]
    pub database: Option<DatabaseSample>,
}

/// Thresholds from the topology (observability.alerts), defaults from common practice (scale out above 70% CPU).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Thresholds {
    /// Latency SLO: p99 above this is "slow" (users notice beyond 1-2 s).
    pub latency_p99_ms: f64,
    pub error_rate_percent: f64,
    /// Add capacity above this average CPU (the usual autoscaling threshold: 70%).
    pub cpu_scale_out_percent: f64,
    pub memory_available_percent: f64,
    pub fds_percent: f64,
    /// Runtime scheduling delay above this: the event loop is blocked.
    pub scheduling_delay_ms: f64,
    /// Redis operation p99 above this: Redis is the slow part.
    pub redis_p99_ms: f64,
    pub redis_memory_percent: f64,
    /// Busiest instance's request rate over the quietest's (at equal weights).
    pub imbalance_ratio: f64,
    /// Requests in flight per instance above this: connections pile up.
    pub in_flight_per_instance: f64,
    /// Restarts within the window that make a crash loop.
    pub crash_restarts: u32,
    /// Resident memory growth over the window (percent) that, with a steady rise, suggests a leak.
    pub leak_growth_percent: f64,
    /// Free space of the disk that holds /var/log (the log collector's files) below this: it fills.
    #[serde(default = "default_disk_available_percent")]
    pub disk_available_percent: f64,
    /// Jobs waiting on the workers' queue below this are no backlog, growing or not.
    #[serde(default = "default_queue_backlog_jobs")]
    pub queue_backlog_jobs: f64,
    /// A statement's mean execution time above this is slow (a lookup by an indexed key takes
    /// well under a millisecond; a scan of a large table takes hundreds).
    #[serde(default = "default_statement_mean_ms")]
    pub statement_mean_ms: f64,
    /// A member's connections above this share of max_connections: new ones will be refused
    /// (the alert rule ConnectionsNearMax fires at the same share).
    #[serde(default = "default_connections_percent")]
    pub database_connections_percent: f64,
}

fn default_statement_mean_ms() -> f64 {
    100.0
}

fn default_connections_percent() -> f64 {
    80.0
}

fn default_queue_backlog_jobs() -> f64 {
    10.0
}

fn default_disk_available_percent() -> f64 {
    10.0
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            latency_p99_ms: 1000.0,
            error_rate_percent: 1.0,
            cpu_scale_out_percent: 70.0,
            memory_available_percent: 10.0,
            fds_percent: 90.0,
            scheduling_delay_ms: 100.0,
            redis_p99_ms: 50.0,
            redis_memory_percent: 90.0,
            imbalance_ratio: 2.0,
            in_flight_per_instance: 256.0,
            crash_restarts: 3,
            leak_growth_percent: 25.0,
            disk_available_percent: default_disk_available_percent(),
            queue_backlog_jobs: default_queue_backlog_jobs(),
            statement_mean_ms: default_statement_mean_ms(),
            database_connections_percent: default_connections_percent(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HostSample {
    pub host: String,
    pub app: bool,
    pub cores: u32,
    /// scale-api instances this host runs.
    pub instances: u32,
    /// Percent of all cores busy, over the window.
    pub cpu_busy_percent: Vec<f64>,
    /// Percent of all cores the app's instances use, over the window (their process CPU time);
    /// empty when they do not report it.
    #[serde(default)]
    pub app_cpu_percent: Vec<f64>,
    pub memory_available_percent: Option<f64>,
    /// Free space (percent) of the disk that holds /var/log: on the monitor host, where the log
    /// collector writes every host's lines.
    #[serde(default)]
    pub disk_available_percent: Option<f64>,
}

/// What the target itself knows of an instance that Prometheus may not: where the load balancer
/// logs it, and the restarts the target made after it failed (never a planned restart).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetInstance {
    pub upstream: String,
    pub crash_restarts: u32,
}

/// The app's workers as the target counts them where nothing measures them for Prometheus (docker's
/// worker containers; hosts report theirs through scalectl-instances).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TargetWorkers {
    /// As many as the topology asks for.
    pub wanted: u32,
    pub running: u32,
    pub stopped: u32,
}

/// What doctor reads from the target itself, beside Prometheus.
#[derive(Debug, Clone, Default)]
pub struct FromTarget {
    /// By instance name.
    pub instances: std::collections::BTreeMap<String, TargetInstance>,
    pub workers: Option<TargetWorkers>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct InstanceSample {
    /// `host-port`
    pub instance: String,
    pub host: String,
    pub up: bool,
    /// Load balancer weight.
    pub weight: u32,
    /// Times the process started within the window.
    pub restarts: u32,
    /// Its process started within the last minute that the rates cover (a deploy or a restart
    /// just now): its rates cover part of that minute, and the drain before, so they are not
    /// compared with the others'.
    #[serde(default)]
    pub started_recently: bool,
    pub requests_per_s: f64,
    pub p99_ms: Option<f64>,
    pub error_rate_percent: f64,
    pub scheduling_delay_ms: Vec<f64>,
    pub resident_bytes: Vec<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
    pub in_flight: f64,
    pub heavy_rejected_per_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RedisSample {
    pub up: bool,
    pub p99_ms: Option<f64>,
    pub memory_used_bytes: f64,
    pub memory_max_bytes: f64,
    /// scale-api's failed Redis operations per second, all instances.
    pub errors_per_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NginxSample {
    pub up: bool,
    pub active_connections: f64,
}

/// The workers' queue over the window, as the Redis exporter measured it (scalectl_queue_*), and
/// the workers that consume it, as their hosts' systemd sees them (scalectl_worker_up).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct QueueSample {
    pub queue: String,
    /// Jobs waiting for a worker, oldest first.
    pub waiting: Vec<f64>,
    /// Jobs in the workers' hands.
    pub active: Vec<f64>,
    /// Jobs that failed for good within the window (past their retries: BullMQ's failed set, or
    /// the stream's dead letters).
    pub failed: f64,
    /// Jobs that ended within the window, completed or failed for good.
    pub ended: f64,
    /// Workers the topology runs, those whose unit is active, and those measured not running (a
    /// worker just started, not measured yet, is neither).
    pub workers: u32,
    pub workers_up: u32,
    #[serde(default)]
    pub workers_down: u32,
    /// Workers per worker host as the topology says; None for `max` (one per core).
    pub instances_per_host: Option<u32>,
    /// How long the oldest waiting job has waited, in seconds, where measured.
    #[serde(default)]
    pub oldest_waiting_s: Option<f64>,
    /// The workers run on hosts with the worker role (else as containers of one engine).
    #[serde(default = "on_hosts")]
    pub on_hosts: bool,
}

/// The database tier over the window: each member as its postgres exporter measured it, the
/// app's pools as scale-api measured them, and the statements and tables of the app's database
/// (pg_stat_statements and pg_stat_user_tables, summed over the members).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DatabaseSample {
    /// PostgreSQL's max_connections (every member has the same: Patroni sets it).
    pub max_connections: f64,
    /// Bytes of WAL a replica may have still to replay before it stops taking reads
    /// (database.replica_max_lag).
    pub replica_max_lag_bytes: f64,
    pub members: Vec<DatabaseMember>,
    /// Callers waiting for a pooled connection, all of the app's instances together, over the
    /// window (scale-api's pools; empty for an app that does not report them).
    pub pool_waiting: Vec<f64>,
    /// Execution time of every statement within the window, in seconds.
    pub statement_seconds: f64,
    /// The statements that took the most time within the window, most first.
    pub statements: Vec<StatementSample>,
    /// The app's tables, by rows read in sequential scans within the window, most first.
    pub tables: Vec<TableSample>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DatabaseMember {
    pub host: String,
    /// In recovery (a replica); false for the primary.
    pub replica: bool,
    /// Its connections now, all states.
    pub connections: f64,
    /// For a replica, the bytes of WAL it has still to replay, as the primary sees it.
    pub lag_bytes: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StatementSample {
    /// As pg_stat_statements normalizes it: constants are `$1`, `$2`, never values.
    pub statement: String,
    pub calls: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TableSample {
    pub table: String,
    pub seq_scans: f64,
    pub seq_rows_read: f64,
    pub index_scans: f64,
}

fn on_hosts() -> bool {
    true
}

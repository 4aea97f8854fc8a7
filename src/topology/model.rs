//! The validated topology: every default applied, every value checked, nothing left to interpret.
//!
//! Code after `validate` (render, plan, exec, doctor) reads only these types, so it never sees a
//! value that failed a check. Durations are milliseconds and sizes bytes, so templates format them
//! for their target syntax without parsing.

use indexmap::IndexMap;
use serde::Serialize;

pub use super::raw::{
    Eviction, Instances, LogDestination, NextUpstreamOn, Persistence, Provider, QueueKind, Role, ScalingPolicy, SecretRef, Service,
    Shipper, Strategy, Target,
};

#[derive(Debug, Clone, Serialize)]
pub struct Topology {
    pub name: String,
    pub target: Target,
    pub app: App,
    /// In file order.
    pub hosts: Vec<Host>,
    pub load_balancer: LoadBalancer,
    /// None: the fleet runs no Redis (hosts: no host has the `redis` role; docker: a program's
    /// topology without a `redis` section). scale-api always has one.
    pub redis: Option<Redis>,
    /// None: the fleet has no database host.
    pub database: Option<Database>,
    pub observability: Observability,
    pub autoscaling: Option<Autoscaling>,
    pub docker: Docker,
    pub lab: Lab,
}

#[derive(Debug, Clone, Serialize)]
pub struct App {
    pub port: u16,
    pub instances: Instances,
    pub env: IndexMap<String, String>,
    /// Secret name -> where it comes from (never its value).
    pub secrets: IndexMap<String, SecretRef>,
    pub liveness: String,
    pub readiness: String,
    /// None: one thread per core.
    pub heavy_pool: Option<u32>,
    pub memory_max: u64,
    /// Percent of one core; None: unlimited.
    pub cpu_quota: Option<u32>,
    pub nofile: u64,
    pub drain_timeout_ms: u64,
    pub slow_request_ms: u64,
    /// The user's program; None: scale-api.
    pub program: Option<Program>,
    /// The app's worker kind, on the hosts with the `worker` role.
    pub workers: Option<Workers>,
    /// Run once per release before any instance switches to it (app.release_command).
    pub release_command: Option<Vec<String>>,
}

/// Processes of the app's release that take jobs from a queue: no port, no load balancer.
#[derive(Debug, Clone, Serialize)]
pub struct Workers {
    /// The argv, as app.program.command (`$(INSTANCE)` only).
    pub command: Vec<String>,
    pub instances: Instances,
    pub env: IndexMap<String, String>,
    pub queue: Option<Queue>,
    /// SIGTERM lets a worker finish the job in hand for this long.
    pub drain_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Queue {
    pub kind: QueueKind,
    pub name: String,
}

/// How Redis holds a queue, as the Redis exporter measures it and the rules read it: BullMQ's
/// keys under its default prefix (`bull:NAME:wait`, a list; `active`, a list; `failed`, `delayed`
/// and `prioritized`, sorted sets; `id`, the count of jobs ever added), or scale-api's stream read
/// by the group `workers` (entries deleted once acknowledged, so that its length is what waits plus
/// what is in hand; `NAME:completed` counts the completed jobs, `NAME:dead` holds the dead letters).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QueueMeasures {
    pub name: String,
    pub kind: QueueKind,
    /// Where the exporter's Lua script for the oldest waiting job's age is (templates/exporters/
    /// queue-oldest.lua.j2), on the Redis host or in the exporter's container.
    pub exporter_script: &'static str,
    /// Keys the exporter measures by size or value (`-check-single-keys`).
    pub keys: Vec<String>,
    /// Streams the exporter reads with XINFO (`-check-single-streams`).
    pub streams: Vec<String>,
    /// What the exporter's Redis user may do with them: those keys read-only, and the commands
    /// that measure them.
    pub exporter_acl: String,
    /// PromQL over the exporter's series: jobs waiting for a worker, in a worker's hands, failed
    /// for good (as kept: BullMQ's failed set, the dead letters), and ended (completed or failed
    /// for good) since the queue began, a counter whatever the queue trims.
    pub waiting: String,
    pub active: String,
    /// Jobs held back until a later time (BullMQ's delayed set: a delay asked for, or a retry's
    /// backoff); a stream holds none (scale-api retries at once).
    pub delayed: String,
    pub failed: String,
    pub ended: String,
    /// Seconds the oldest waiting job has waited (the exporter's script).
    pub oldest_waiting: String,
}

/// The Redis exporter's script that measures the queue's oldest waiting job.
pub const QUEUE_EXPORTER_SCRIPT: &str = "/etc/scalectl/redis-exporter-queue.lua";

/// The script's answer, as the exporter gives it.
const OLDEST_WAITING: &str = "max(redis_script_values{key=\"oldest_waiting_seconds\"})";

impl Queue {
    pub fn measures(&self) -> QueueMeasures {
        let n = &self.name;
        // A queue name may hold `.`: literal in the PromQL regex.
        let re = n.replace('.', "\\\\.");
        // Redis deletes an emptied list or set, and a stream or counter exists only once written
        // to: a key the exporter does not find counts 0 (else a queue with no dead letter yet
        // would have no failed or ended jobs at all).
        let sum = |series: String| format!("(sum({series}) or vector(0))");
        match self.kind {
            QueueKind::Bullmq => {
                let key = |k: &str| format!("bull:{n}:{k}");
                let size = |k: &str| sum(format!("redis_key_size{{key=\"{}\"}}", key(k)));
                QueueMeasures {
                    name: n.clone(),
                    kind: self.kind,
                    exporter_script: QUEUE_EXPORTER_SCRIPT,
                    oldest_waiting: OLDEST_WAITING.into(),
                    keys: ["wait", "paused", "prioritized", "active", "delayed", "failed", "id"].iter().map(|k| key(k)).collect(),
                    streams: Vec::new(),
                    // EVAL runs the script, whose commands are checked against these rules too.
                    exporter_acl: format!("%R~bull:{n}:* +type +llen +zcard +strlen +get +eval +time +lindex +zrange +hmget"),
                    waiting: sum(format!("redis_key_size{{key=~\"bull:{re}:(wait|paused|prioritized)\"}}")),
                    active: size("active"),
                    delayed: size("delayed"),
                    failed: size("failed"),
                    // Every job added and no longer waiting, delayed or in hand has ended.
                    ended: format!(
                        "{} - {}",
                        sum(format!("redis_key_value{{key=\"{}\"}}", key("id"))),
                        sum(format!("redis_key_size{{key=~\"bull:{re}:(wait|paused|prioritized|active|delayed)\"}}"))
                    ),
                }
            }
            QueueKind::Stream => {
                let (dead, completed) = (format!("{n}:dead"), format!("{n}:completed"));
                QueueMeasures {
                    name: n.clone(),
                    kind: self.kind,
                    exporter_script: QUEUE_EXPORTER_SCRIPT,
                    oldest_waiting: OLDEST_WAITING.into(),
                    keys: vec![completed.clone()],
                    streams: vec![n.clone(), dead.clone()],
                    exporter_acl: format!("%R~{n} %R~{dead} %R~{completed} +type +strlen +get +xinfo|stream +xinfo|groups +xinfo|consumers +eval +time +xrange"),
                    waiting: format!(
                        "{} - {}",
                        sum(format!("redis_stream_length{{stream=\"{n}\"}}")),
                        sum(format!("redis_stream_group_messages_pending{{stream=\"{n}\"}}"))
                    ),
                    active: sum(format!("redis_stream_group_messages_pending{{stream=\"{n}\"}}")),
                    delayed: "vector(0)".into(),
                    failed: sum(format!("redis_stream_length{{stream=\"{dead}\"}}")),
                    ended: format!("{} + {}", sum(format!("redis_key_value{{key=\"{completed}\"}}")), sum(format!("redis_stream_length{{stream=\"{dead}\"}}"))),
                }
            }
        }
    }
}

impl Workers {
    /// Workers on each host with the worker role, as a number; None for `max` (one per core).
    pub fn per_host(&self) -> Option<u32> {
        match self.instances {
            Instances::Count(n) => Some(n.clamp(1, 256) as u32),
            Instances::Max => None,
        }
    }

    /// The argv one worker runs: `$(INSTANCE)` replaced by its name (`HOST-worker-N`).
    pub fn argv(&self, instance: &str) -> Vec<String> {
        expand(&self.command, 0, instance)
    }
}

/// Scale out above this share of CPU unless `autoscaling.cpu.scale_out` says otherwise.
pub const DEFAULT_CPU_SCALE_OUT: f64 = 70.0;
/// Wait this long after scaling in before scaling in again unless `autoscaling.cooldown.scale_in`
/// says otherwise.
pub const DEFAULT_COOLDOWN_SCALE_IN_MS: u64 = 120_000;

/// A worker's drain timeout unless `app.workers.drain_timeout` says otherwise.
pub const DEFAULT_WORKER_DRAIN_MS: u64 = 30_000;

/// The app that runs when the topology names no program of its own.
pub const SCALE_API: &str = "scale-api";

impl App {
    /// What names the app's units and directories: the program's name, or `scale-api`.
    pub fn name(&self) -> &str {
        self.program.as_ref().map(|p| p.name.as_str()).unwrap_or(SCALE_API)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Program {
    pub name: String,
    /// As written, relative to the topology file's directory; None when `image` names what runs.
    pub release: Option<String>,
    /// `target: docker`: the image reference to run (resolved to its ID when planning).
    pub image: Option<String>,
    pub command: Vec<String>,
    pub packages: Vec<String>,
    pub user: Option<String>,
    /// Where its instances serve Prometheus metrics; None: not scraped.
    pub metrics: Option<String>,
}

impl Program {
    /// The argv one instance runs: `$(PORT)` and `$(INSTANCE)` replaced by its port and name,
    /// `$$(` by `$(` (the docker target's replicas; hosts let systemd expand them per unit).
    pub fn argv(&self, port: u16, instance: &str) -> Vec<String> {
        expand(&self.command, port, instance)
    }
}

/// `command` with `$(PORT)` and `$(INSTANCE)` replaced, `$$(` written `$(`.
fn expand(command: &[String], port: u16, instance: &str) -> Vec<String> {
    use super::syntax::{ArgumentPart, InstanceValue, argument_parts};
    command
        .iter()
        .map(|arg| match argument_parts(arg) {
            Ok(parts) => parts
                .into_iter()
                .map(|p| match p {
                    ArgumentPart::Text(t) => t,
                    ArgumentPart::Value(InstanceValue::Port) => port.to_string(),
                    ArgumentPart::Value(InstanceValue::Instance) => instance.to_string(),
                })
                .collect(),
            // Validation refused it; passed on as written rather than guessed at.
            Err(_) => arg.clone(),
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub name: String,
    pub address: String,
    pub ssh: Ssh,
    pub roles: Vec<Role>,
    pub weight: u32,
    pub cores: Option<u32>,
    /// Overrides app.instances on this host.
    pub instances: Option<Instances>,
}

impl Host {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

impl Topology {
    /// Whether Redis is reached from other machines (an app host without the redis role, or the
    /// autoscaling group's instances): then it listens on its host's address and needs a password.
    pub fn redis_reached_remotely(&self) -> bool {
        self.redis.is_some() && self.target == Target::Hosts && (self.autoscaling.is_some() || self.hosts.iter().any(|h| (h.has(Role::App) || h.has(Role::Worker)) && !h.has(Role::Redis)))
    }

    /// Redis' password reference, when the fleet runs a Redis that has one.
    pub fn redis_password(&self) -> Option<&SecretRef> {
        self.redis.as_ref().and_then(|r| r.password.as_ref())
    }

    /// The queue the app's workers consume, if they name one.
    pub fn queue(&self) -> Option<&Queue> {
        self.app.workers.as_ref().and_then(|w| w.queue.as_ref())
    }

    /// Redis' port, when the fleet runs Redis.
    pub fn redis_port(&self) -> Option<u16> {
        self.redis.as_ref().map(|r| r.port)
    }

    /// Instances a host runs given its core count (`max` = one per core).
    pub fn instances_on(&self, h: &Host, cores: u32) -> u32 {
        match h.instances.unwrap_or(self.app.instances) {
            Instances::Count(n) => n.clamp(1, 256) as u32,
            Instances::Max => cores.max(1),
        }
    }

    /// The indexes (from 1) of the workers host `h` runs given its core count: app.workers'
    /// instances (`max` = one per core) on a host with the worker role, else none.
    pub fn workers_on(&self, h: &Host, cores: u32) -> Vec<u32> {
        let n = match (&self.app.workers, h.has(Role::Worker)) {
            (Some(w), true) => w.per_host().unwrap_or(cores.max(1)),
            _ => 0,
        };
        (1..=n).collect()
    }

    /// Every port host `h` listens on with `instances` app instances: (port, what, the role that
    /// brings it), the app's first, then each tier's ([`Topology::tiers_on`]). Instances past port
    /// 65535 are left out (see [`Topology::port_conflict`]).
    pub fn port_claims(&self, h: &Host, instances: u32) -> Vec<(u16, String, Role)> {
        let mut c = Vec::new();
        if h.has(Role::App) {
            for p in self.instance_ports(instances) {
                c.push((p, format!("{} instance {p}", self.app.name()), Role::App));
            }
        }
        let first = h.roles.first().copied().unwrap_or(Role::App);
        for tier in self.tiers_on(h) {
            for l in tier.listens {
                c.push((l.port, l.what, tier.role.unwrap_or(first)));
            }
        }
        c
    }

    /// The host that keeps the fleet lock: the lowest address (then name), a rule that does not
    /// depend on the order the file lists its hosts, so two topologies of the same machines that
    /// list them differently lock the same one.
    pub fn lock_host(&self) -> Option<&Host> {
        self.hosts.iter().min_by(|a, b| (&a.address, &a.name).cmp(&(&b.address, &b.name)))
    }

    /// The collector's RELP port for the lines of host `name`: one port per host (the base port plus
    /// the host's place in the file), each taking only that host's certificate, so the collector
    /// files a line under the host that authenticated, whatever the line says its hostname is.
    pub fn relp_port_of(&self, name: &str) -> u16 {
        let i = self.hosts.iter().position(|h| h.name == name).unwrap_or(0);
        self.observability.logs.relp_port.saturating_add(u16::try_from(i).unwrap_or(u16::MAX))
    }

    /// The app's pools against the primary's `max_connections`, given each host's cores (which
    /// `instances: max` and `workers: max` follow): every instance and worker holds up to
    /// `database.pool` connections to the writer and as many to the reader, and with no replica in
    /// good standing the reader is the primary too. The problem and the change that fixes it, when
    /// they do not fit.
    pub fn pool_overflow(&self, cores_of: impl Fn(&Host) -> u32) -> Option<(String, String)> {
        let db = self.database.as_ref()?;
        let clients: u64 = self
            .hosts
            .iter()
            .map(|h| (if h.has(Role::App) { u64::from(self.instances_on(h, cores_of(h))) } else { 0 }) + self.workers_on(h, cores_of(h)).len() as u64)
            .sum();
        let wanted = clients * u64::from(db.pool) * 2;
        let room = u64::from(db.max_connections).saturating_sub(DB_RESERVED_CONNECTIONS);
        (wanted > room).then(|| {
            (
                format!(
                    "{clients} app instances and workers with a pool of {} each, to the writer and to the reader, may open {wanted} connections to the primary, more than the {room} its max_connections of {} leaves them ({DB_RESERVED_CONNECTIONS} are kept for Patroni and an administrator)",
                    db.pool, db.max_connections
                ),
                format!("lower database.pool to {} or less, or raise database.max_connections to {} or more", room / (clients * 2).max(1), wanted + DB_RESERVED_CONNECTIONS),
            )
        })
    }

    /// What is wrong with host `h` running `instances` app instances: ports past 65535, or a port
    /// two things would listen on. Validate asks with the cores the topology declares; apply asks
    /// again with the cores it observed (`instances: max`).
    pub fn port_conflict(&self, h: &Host, instances: u32) -> Option<String> {
        if h.has(Role::App) && u32::from(self.app.port) + instances - 1 > 65535 {
            return Some(format!("app.port {} plus {instances} instances runs past port 65535", self.app.port));
        }
        let claims = self.port_claims(h, instances);
        claims.iter().enumerate().find_map(|(i, (port, what, _))| {
            claims[..i].iter().find(|(p, _, _)| p == port).map(|(_, other, _)| format!("port {port} on host `{}` is used by both {other} and {what}", h.name))
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Ssh {
    pub user: String,
    pub port: u16,
    pub key: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadBalancer {
    pub strategy: Strategy,
    pub listen: u16,
    pub server_names: Vec<String>,
    pub tls: Option<Tls>,
    pub gzip: bool,
    pub rate_limit: Option<RateLimit>,
    pub statics: Vec<Static>,
    pub max_fails: u32,
    pub fail_timeout_ms: u64,
    pub next_upstream: Vec<NextUpstreamOn>,
    pub next_upstream_tries: u32,
    pub websocket: bool,
    pub keepalive: u32,
    pub request_buffering: bool,
    pub forwarded_headers: bool,
    pub request_id: bool,
    pub client_max_body_size: u64,
    pub connect_timeout_ms: u64,
    pub read_timeout_ms: u64,
    /// Local-only port of the stub_status endpoint read by the Nginx exporter.
    pub status_port: u16,
    pub cache: Option<Cache>,
}

/// Nginx's reverse-proxy cache for some paths' GET and HEAD answers.
#[derive(Debug, Clone, Serialize)]
pub struct Cache {
    /// Largest size on disk, in bytes.
    pub size: u64,
    /// The keys' shared memory, in MiB: nginx keeps about 8,000 keys in 1 MiB, and the cache holds
    /// `size` / 4 KiB answers at most.
    pub keys_mib: u64,
    /// An entry nobody asked for this long is removed: the longest TTL, 10 minutes at least.
    pub inactive_ms: u64,
    pub paths: Vec<CachePath>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CachePath {
    pub path: String,
    pub ttl_ms: u64,
}

impl Cache {
    pub fn new(size: u64, paths: Vec<CachePath>) -> Cache {
        let inactive_ms = paths.iter().map(|p| p.ttl_ms).max().unwrap_or(0).max(600_000);
        Cache { size, keys_mib: (size / 4096).div_ceil(8000).max(1), inactive_ms, paths }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Tls {
    pub certificate: String,
    pub key: String,
    pub listen: u16,
}

#[derive(Debug, Clone, Serialize)]
pub struct RateLimit {
    pub rps: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Static {
    pub path: String,
    pub root: String,
    pub expires_ms: u64,
    pub immutable: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Redis {
    pub port: u16,
    pub maxmemory: u64,
    pub eviction: Eviction,
    pub persistence: Persistence,
    pub password: Option<SecretRef>,
}

/// PostgreSQL run by Patroni on the `database` hosts, its leader lock in etcd on the `etcd` hosts.
#[derive(Debug, Clone, Serialize)]
pub struct Database {
    /// The app's database (a PostgreSQL identifier: lower-case letters, digits, `_`).
    pub name: String,
    /// The role the app logs in as; it owns the database.
    pub user: String,
    pub password: SecretRef,
    pub replication_password: SecretRef,
    pub rest_password: SecretRef,
    pub max_connections: u32,
    /// Connections per app instance and worker, to each of the writer and the reader.
    pub pool: u32,
    /// Bytes of WAL a replica may be behind and still take reads.
    pub replica_max_lag: u64,
    /// The members on `target: docker` (containers `db-1..N`); on hosts, the database hosts are.
    pub docker_members: u32,
}

/// The roles Patroni and replication log in as (besides the app's own).
pub const DB_REPLICATION_USER: &str = "replicator";
pub const DB_REST_USER: &str = "patroni";
/// PostgreSQL's superuser: Patroni reaches it over the local socket only (peer authentication),
/// so it has no password.
pub const DB_SUPERUSER: &str = "postgres";
/// The exporter's role: pg_monitor's rights, over the local socket only (peer, as the OS user
/// `prometheus` its unit runs as), no password.
pub const DB_MONITOR_USER: &str = "prometheus";
/// Connections of max_connections the app's pools may not take: PostgreSQL's
/// superuser_reserved_connections (3) and Patroni's own (2).
pub const DB_RESERVED_CONNECTIONS: u64 = 5;

#[derive(Debug, Clone, Serialize)]
pub struct Observability {
    pub scrape_interval_ms: u64,
    pub retention_ms: u64,
    pub prometheus_port: u16,
    /// Prometheus asks for it (basic auth, user `scalectl`) when set.
    pub prometheus_password: Option<SecretRef>,
    pub alerts: Alerts,
    pub grafana: bool,
    pub grafana_port: u16,
    pub logs: Logs,
    pub alertmanager: Option<Alertmanager>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Alertmanager {
    /// Listens on 127.0.0.1 of the monitor host: Prometheus is its only client.
    pub port: u16,
    pub webhook: Option<SecretRef>,
    pub group_wait_ms: u64,
    pub repeat_interval_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Alerts {
    pub latency_p99_ms: u64,
    pub error_rate_percent: f64,
    pub cpu_percent: f64,
    pub memory_available_percent: f64,
    pub fds_percent: f64,
    pub scheduling_delay_ms: u64,
    /// InstanceDown, RedisDown, NginxDown fire after this long down.
    pub down_for_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Logs {
    pub shipper: Shipper,
    pub destination: LogDestination,
    pub loki_url: Option<String>,
    /// RELP port of the collector on the monitor host.
    pub relp_port: u16,
}

#[derive(Debug, Clone, Serialize)]
pub struct Autoscaling {
    pub provider: Provider,
    pub region: String,
    pub instance_type: String,
    pub ami: String,
    pub vpc_id: String,
    pub subnets: Vec<String>,
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    pub cpu_scale_out: f64,
    pub cpu_scale_in: f64,
    pub policy: ScalingPolicy,
    pub cooldown_scale_out_ms: u64,
    pub cooldown_scale_in_ms: u64,
    pub health_check_grace_ms: u64,
    pub min_healthy_percentage: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Docker {
    pub endpoint: String,
    pub network: String,
    pub images: Images,
}

#[derive(Debug, Clone, Serialize)]
pub struct Images {
    pub scale_api: String,
    pub base: String,
    pub nginx: String,
    pub redis: String,
    pub prometheus: String,
    pub grafana: String,
    pub node_exporter: String,
    pub redis_exporter: String,
    pub nginx_exporter: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Lab {
    pub publish: Published,
}

/// Ports on 127.0.0.1 where services are published (None: not published).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Published {
    pub load_balancer: Option<u16>,
    pub prometheus: Option<u16>,
    pub grafana: Option<u16>,
    pub redis: Option<u16>,
}

impl Published {
    pub fn get(&self, s: Service) -> Option<u16> {
        match s {
            Service::LoadBalancer => self.load_balancer,
            Service::Prometheus => self.prometheus,
            Service::Grafana => self.grafana,
            Service::Redis => self.redis,
        }
    }

    fn slot(&mut self, s: Service) -> &mut Option<u16> {
        match s {
            Service::LoadBalancer => &mut self.load_balancer,
            Service::Prometheus => &mut self.prometheus,
            Service::Grafana => &mut self.grafana,
            Service::Redis => &mut self.redis,
        }
    }

    pub fn set(&mut self, s: Service, port: u16) {
        *self.slot(s) = Some(port);
    }

    pub fn iter(&self) -> impl Iterator<Item = (Service, u16)> + '_ {
        [Service::LoadBalancer, Service::Prometheus, Service::Grafana, Service::Redis]
            .into_iter()
            .filter_map(|s| self.get(s).map(|p| (s, p)))
    }
}

/// Well-known ports of the components scalectl installs beside the app.
pub mod ports {
    pub const NODE_EXPORTER: u16 = 9100;
    pub const REDIS_EXPORTER: u16 = 9121;
    pub const NGINX_EXPORTER: u16 = 9113;
    pub const NGINX_STATUS: u16 = 8089;
    pub const GRAFANA: u16 = 3000;
    pub const RELP: u16 = 2514;
    pub const ALERTMANAGER: u16 = 9093;
    /// mtail on the load balancer (its access log as metrics).
    pub const MTAIL: u16 = 3903;
    /// The balancer (HAProxy) behind nginx on the load balancer: loopback on a host.
    pub const BALANCER: u16 = 8404;
    /// Its Prometheus exporter.
    pub const BALANCER_EXPORTER: u16 = 8405;
    /// PostgreSQL on a database host's address.
    pub const POSTGRES: u16 = 5432;
    /// Its exporter (Debian's prometheus-postgres-exporter), for the monitor host.
    pub const POSTGRES_EXPORTER: u16 = 9187;
    /// Patroni's REST API on a database host (its health endpoints for HAProxy's checks).
    pub const PATRONI: u16 = 8008;
    /// etcd's client and peer ports on an etcd host.
    pub const ETCD_CLIENT: u16 = 2379;
    pub const ETCD_PEER: u16 = 2380;
    /// HAProxy on each app and worker host, on loopback: the primary (the writer), and the
    /// replicas in good standing, else the primary (the reader).
    pub const DB_WRITER: u16 = 5433;
    pub const DB_READER: u16 = 5434;
}

//! The topology file exactly as written: serde structs with source locations.
//!
//! Why a raw layer: serde-saphyr rejects unknown and duplicate keys and type errors while parsing, with
//! their location; every value that a later semantic check may reject is kept as [`Sp`] (value + where
//! it was written), so `validate` can point at the offending character. Nothing here has defaults or
//! meaning yet: `validate` turns this into the typed [`crate::topology::Topology`]. The same structs
//! generate the JSON Schema (`scalectl schema`), so the schema cannot drift from the parser.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};

use indexmap::IndexMap;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};

/// A value with the place it was written. Compares and hashes by value only.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Sp<T>(pub serde_saphyr::Spanned<T>);

impl<T> Sp<T> {
    pub fn value(&self) -> &T {
        &self.0.value
    }
    pub fn loc(&self) -> Loc {
        Loc::from(&self.0.referenced)
    }
}

impl<T: PartialEq> PartialEq for Sp<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0.value == other.0.value
    }
}
impl<T: Eq> Eq for Sp<T> {}
impl<T: Hash> Hash for Sp<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.value.hash(state)
    }
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
    fn inline_schema() -> bool {
        T::inline_schema()
    }
}

/// A place in the topology file: 1-based line and column, and the byte range for snippets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Loc {
    pub line: u64,
    pub column: u64,
    pub offset: usize,
    pub len: usize,
}

impl From<&serde_saphyr::Location> for Loc {
    fn from(l: &serde_saphyr::Location) -> Self {
        let span = l.span();
        Loc {
            line: l.line(),
            column: l.column(),
            offset: span.byte_offset().unwrap_or(0) as usize,
            len: span.byte_len().unwrap_or(0) as usize,
        }
    }
}

/// Map with keys in file order; keys keep their location.
pub type Map<V> = IndexMap<Sp<String>, V>;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
/// One topology: the whole description of a horizontally scaled scale-api service.
pub struct RawTopology {
    /// Name of the deployment: a DNS label (lower-case letters, digits, '-'), used in unit, container
    /// and config file names.
    pub name: Sp<String>,
    /// Where the fleet runs: `hosts` (over SSH) or `docker` (through the Docker Engine API). Default hosts.
    pub target: Option<Sp<Target>>,
    /// The bundled API (scale-api) and how many instances of it each app host runs.
    pub app: RawApp,
    /// SSH defaults for every host (each host's `ssh` overrides them field by field).
    pub ssh: Option<RawSsh>,
    /// Hosts by name (a DNS label). Required for target `hosts`; not used with target `docker`.
    #[serde(default)]
    pub hosts: Option<Map<RawHost>>,
    /// The Nginx load balancer in front of every app instance.
    pub load_balancer: Option<RawLoadBalancer>,
    /// Redis: the shared state (sessions, counters, cache) that makes the app stateless.
    pub redis: Option<RawRedis>,
    /// PostgreSQL, replicated and failed over by Patroni, on the hosts with the `database` role.
    pub database: Option<RawDatabase>,
    /// Prometheus, alert thresholds, Grafana and log shipping.
    pub observability: Option<RawObservability>,
    /// An AWS autoscaling group (rendered as Terraform).
    pub autoscaling: Option<RawAutoscaling>,
    /// Docker engine settings for target `docker` (and the rendered compose file).
    pub docker: Option<RawDocker>,
    /// The local lab: which services are published on 127.0.0.1.
    pub lab: Option<RawLab>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Hosts,
    Docker,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    /// Base port: instance i of a host listens on port + i. Default 3000.
    pub port: Option<Sp<u16>>,
    /// Instances per host: a number, or `max` for one per core (PM2's `-i max`). Default max.
    pub instances: Option<Sp<Instances>>,
    /// Plain environment variables (never secrets: see `secrets`).
    #[serde(default)]
    pub env: Map<Sp<String>>,
    /// Secret environment variables, by reference only: `{env: NAME}` or `{file: /abs/path}`.
    #[serde(default)]
    pub secrets: Map<Sp<SecretRef>>,
    /// Liveness and readiness paths.
    pub health: Option<RawHealth>,
    /// Threads in the pool that runs CPU-heavy work off the async runtime. Default: cores.
    pub heavy_pool: Option<Sp<i64>>,
    /// Resource limits per instance.
    pub limits: Option<RawLimits>,
    /// How long an instance may finish in-flight requests after SIGTERM, e.g. `10s`. Default 10s.
    pub drain_timeout: Option<Sp<String>>,
    /// Requests slower than this are logged at warn, e.g. `2s`. Default 2s.
    pub slow_request: Option<Sp<String>>,
    /// Your own program (a Node.js service, or any program that listens on `PORT`), run instead
    /// of the bundled scale-api. On `target: docker` its release directory is the build context
    /// (with its Dockerfile) of the image apply builds.
    pub program: Option<RawProgram>,
    /// The app's worker kind: processes of the same release that take jobs from a queue rather
    /// than requests (no port, no load balancer), on the hosts with the `worker` role.
    pub workers: Option<RawWorkers>,
    /// A command of the release run once per release, before any instance switches to it (a
    /// database migration): one list item per argument, run like app.program.command (for
    /// scale-api: `[scale-api, migrate]`), with the app's environment and secrets, on one app host
    /// under the fleet lock. It fails: apply stops there, and nothing switches.
    pub release_command: Option<Sp<Vec<Sp<String>>>>,
}

/// Workers: the release's second process kind, run beside or apart from the web instances.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWorkers {
    /// The command, run in the release directory like app.program.command, one list item per
    /// argument (no shell), e.g. `[node, worker.js]`. `$(INSTANCE)` is each worker's name; a
    /// worker has no port.
    pub command: Sp<Vec<Sp<String>>>,
    /// Workers per host with the `worker` role: a number, or `max` for one per core. Default 1.
    pub instances: Option<Sp<Instances>>,
    /// Plain environment variables for the workers, besides app.env (which they get too).
    #[serde(default)]
    pub env: Map<Sp<String>>,
    /// The queue they consume, so that alerts and doctor can watch it.
    pub queue: Option<RawQueue>,
    /// How long a worker may finish the job in hand after SIGTERM before it is killed, e.g.
    /// `30s`. Default 30s.
    pub drain_timeout: Option<Sp<String>>,
}

/// A queue on the topology's Redis.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    /// `bullmq` (BullMQ's keys, `bull:NAME:*`) or `stream` (a Redis stream read by a consumer group).
    pub kind: Sp<QueueKind>,
    /// The queue's name (BullMQ's queue name, or the stream's key).
    pub name: Sp<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueKind {
    Bullmq,
    Stream,
}

/// The user's program: what is shipped and how it runs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawProgram {
    /// Names its units and directories: `NAME@PORT.service`, /opt/NAME/releases, /etc/NAME. Default: the topology's name.
    pub name: Option<Sp<String>>,
    /// What a release is: a directory (with its node_modules) or a .tar archive, relative to this
    /// file, packed and uploaded as one content-addressed release (on docker: built with the
    /// Dockerfile it holds). `--release` overrides it. Required on `target: hosts`; on
    /// `target: docker`, this or `image`.
    pub release: Option<Sp<String>>,
    /// `target: docker` only: an image the engine has or can pull (`registry.example.com/app:1.4`),
    /// run instead of one built from a release directory. The image behind the name is the
    /// release: when the name points at another image, apply rolls to it.
    pub image: Option<Sp<String>>,
    /// The command run in the release directory, one list item per argument (no shell), e.g.
    /// `[node, server.js]`. A bare first word is looked up in /usr/bin and friends.
    pub command: Sp<Vec<Sp<String>>>,
    /// Debian packages it needs on the app hosts, e.g. `[nodejs]`.
    #[serde(default)]
    pub packages: Vec<Sp<String>>,
    /// An existing user to run it as. Default: a user systemd makes for the instance (DynamicUser).
    pub user: Option<Sp<String>>,
    /// The path where each instance serves Prometheus metrics (prom-client's `/metrics`). Default:
    /// none, and the instances are not scraped.
    pub metrics: Option<Sp<String>>,
}

/// `N` instances, or `max` (one per core of the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instances {
    Count(i64),
    Max,
}

impl serde::Serialize for Instances {
    /// As written in the topology: a number or `"max"`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Instances::Count(n) => s.serialize_i64(*n),
            Instances::Max => s.serialize_str("max"),
        }
    }
}

impl<'de> Deserialize<'de> for Instances {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Instances;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of instances or `max`")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Instances, E> {
                Ok(Instances::Count(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Instances, E> {
                Ok(Instances::Count(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Instances, E> {
                if v == "max" {
                    Ok(Instances::Max)
                } else {
                    Err(E::custom(format!(
                        "expected a number of instances or `max`, found `{}`",
                        v.escape_debug()
                    )))
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Instances {
    fn schema_name() -> Cow<'static, str> {
        "Instances".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "description": "A number of instances (>= 1), or `max` for one per core",
            "oneOf": [ {"type": "integer", "minimum": 1}, {"const": "max"} ]
        })
    }
}

/// The problem of a secret written inline, where a reference belongs.
pub const INLINE_SECRET: &str = "secrets are referenced, never written inline: use `{env: VAR_NAME}` or `{file: /absolute/path}`";

/// Where a secret comes from. The value itself never appears in the topology, a plan or a log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretRef {
    /// Read from this environment variable of the machine running scalectl.
    Env(String),
    /// Read from this file on the machine running scalectl.
    File(String),
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const HOW: &str = INLINE_SECRET;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SecretRef;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`{env: VAR_NAME}` or `{file: /absolute/path}`")
            }
            // The inline value is never echoed back: it may be a real secret.
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<SecretRef, E> {
                Err(E::custom(HOW))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<SecretRef, E> {
                Err(E::custom(HOW))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<SecretRef, E> {
                Err(E::custom(HOW))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<SecretRef, E> {
                Err(E::custom(HOW))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<SecretRef, E> {
                Err(E::custom(HOW))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<SecretRef, A::Error> {
                use serde::de::Error;
                let Some(kind) = m.next_key::<String>()? else {
                    return Err(A::Error::custom(HOW));
                };
                let value: String = m.next_value()?;
                let r = match kind.as_str() {
                    "env" => SecretRef::Env(value),
                    "file" => SecretRef::File(value),
                    other => {
                        return Err(A::Error::custom(format!(
                            "unknown secret source `{}`: {HOW}",
                            other.escape_debug()
                        )));
                    }
                };
                if m.next_key::<String>()?.is_some() {
                    return Err(A::Error::custom(format!("a secret has exactly one source: {HOW}")));
                }
                Ok(r)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for SecretRef {
    fn schema_name() -> Cow<'static, str> {
        "SecretRef".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "description": "A secret by reference: an environment variable or a file on the machine running scalectl",
            "oneOf": [
                {"type": "object", "properties": {"env": {"type": "string"}}, "required": ["env"], "additionalProperties": false},
                {"type": "object", "properties": {"file": {"type": "string"}}, "required": ["file"], "additionalProperties": false}
            ]
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// Liveness path (is the process alive). Default /healthz.
    pub liveness: Option<Sp<String>>,
    /// Readiness path (may it receive traffic). Default /readyz.
    pub readiness: Option<Sp<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Memory limit per instance (systemd MemoryMax, docker memory), e.g. `512MiB`. Default 512MiB.
    pub memory_max: Option<Sp<String>>,
    /// CPU quota per instance in percent of one core (systemd CPUQuota). Default: none.
    pub cpu_quota: Option<Sp<i64>>,
    /// Open files limit per instance (LimitNOFILE). Default 65536.
    pub nofile: Option<Sp<i64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    App,
    Lb,
    Redis,
    Monitor,
    Worker,
    /// A PostgreSQL member (Patroni): the first bootstrapped is the primary, the others stream.
    Database,
    /// A member of etcd, where Patroni keeps its leader lock (an odd number of them).
    Etcd,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    /// IP address or DNS name that scalectl and the other hosts reach this host at.
    pub address: Sp<String>,
    /// How scalectl logs in.
    pub ssh: Option<RawSsh>,
    /// What the host runs: any of app, lb, redis, monitor, worker (the app's workers), database
    /// (a PostgreSQL member) and etcd (Patroni's leader lock).
    pub roles: Sp<Vec<Sp<Role>>>,
    /// Load balancer weight of each of this host's instances. Default 1.
    pub weight: Option<Sp<i64>>,
    /// CPU cores, when known; resolves `instances: max` for render (apply reads the real count).
    pub cores: Option<Sp<i64>>,
    /// Instances on this host, overriding app.instances.
    pub instances: Option<Sp<Instances>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSsh {
    /// Login user (needs passwordless sudo). Default root.
    pub user: Option<Sp<String>>,
    /// SSH port. Default 22.
    pub port: Option<Sp<u16>>,
    /// Private key file; the SSH agent is used when absent.
    pub key: Option<Sp<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    RoundRobin,
    LeastConn,
    IpHash,
    Random,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLoadBalancer {
    /// How the balancer behind nginx (HAProxy) picks an instance. Default least_conn.
    pub strategy: Option<Sp<Strategy>>,
    /// HTTP listen port. Default 80.
    pub listen: Option<Sp<u16>>,
    /// Server names, separated by spaces (`_` for any). Default `_`.
    pub server_name: Option<Sp<String>>,
    /// TLS termination; plain HTTP then redirects to HTTPS.
    pub tls: Option<RawTls>,
    /// gzip responses at the proxy. Default true.
    pub gzip: Option<Sp<bool>>,
    /// Requests per second per client address, with a burst.
    pub rate_limit: Option<RawRateLimit>,
    /// Static files served by Nginx itself, with cache headers.
    #[serde(default, rename = "static")]
    pub statics: Vec<RawStatic>,
    /// Connection failures before the balancer takes an instance out (0: never). Default 3.
    pub max_fails: Option<Sp<i64>>,
    /// How often the balancer checks an instance it took out, e.g. `30s` (at most every 2 s): it
    /// returns once its liveness path answers 200. Default 30s.
    pub fail_timeout: Option<Sp<String>>,
    /// Send a request on to another instance on these failures (a POST, LOCK or PATCH only when
    /// none of it was sent).
    pub next_upstream: Option<RawNextUpstream>,
    /// Pass WebSocket upgrades through. Default true.
    pub websocket: Option<Sp<bool>>,
    /// Idle keep-alive connections from each nginx worker to the balancer. Default 32 (0 turns it off).
    pub keepalive: Option<Sp<i64>>,
    /// Buffer request bodies before passing them on (protects instances from slow clients). Default true.
    pub request_buffering: Option<Sp<bool>>,
    /// Set X-Forwarded-For/-Proto/-Host and X-Real-IP. Default true.
    pub forwarded_headers: Option<Sp<bool>>,
    /// Pass X-Request-Id (kept from the client or generated) and log it. Default true.
    pub request_id: Option<Sp<bool>>,
    /// Largest accepted request body, e.g. `1MiB`. Default 1MiB.
    pub client_max_body_size: Option<Sp<String>>,
    /// Upstream connect timeout, e.g. `5s`. Default 5s.
    pub connect_timeout: Option<Sp<String>>,
    /// Upstream read timeout, e.g. `60s`. Default 60s.
    pub read_timeout: Option<Sp<String>>,
    /// Nginx's reverse-proxy cache for the GET and HEAD answers of some paths: a repeated read
    /// answered by the load balancer, never reaching the app or its database.
    pub cache: Option<RawCache>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// The cache's largest size on the load balancer's disk, e.g. `256MiB` (at most 64GiB); its
    /// keys' memory is sized from it. Default 256MiB.
    pub size: Option<Sp<String>>,
    /// The paths whose answers are cached (prefixes, such as `/users/`), each with its lifetime.
    pub paths: Sp<Vec<RawCachePath>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCachePath {
    /// URL prefix, e.g. `/users/` (`/users` would match `/users-admin` too).
    pub path: Sp<String>,
    /// How long an answer (200 or 301) is served from the cache, in whole seconds, e.g. `30s`.
    pub ttl: Sp<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// Certificate chain file on the lb host.
    pub certificate: Sp<String>,
    /// Private key file on the lb host.
    pub key: Sp<String>,
    /// HTTPS listen port. Default 443.
    pub listen: Option<Sp<u16>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Sustained requests per second per client address.
    pub rps: Sp<i64>,
    /// Requests allowed above the rate before 429. Default 20.
    pub burst: Option<Sp<i64>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStatic {
    /// URL prefix, e.g. `/static/`.
    pub path: Sp<String>,
    /// Directory on the lb host that the prefix maps into (Nginx `root`).
    pub root: Sp<String>,
    /// Cache lifetime, e.g. `365d`. Default 7d.
    pub expires: Option<Sp<String>>,
    /// Mark responses immutable (fingerprinted assets). Default false.
    pub immutable: Option<Sp<bool>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NextUpstreamOn {
    Error,
    Timeout,
    InvalidHeader,
    #[serde(rename = "http_500")]
    Http500,
    #[serde(rename = "http_502")]
    Http502,
    #[serde(rename = "http_503")]
    Http503,
    #[serde(rename = "http_504")]
    Http504,
    #[serde(rename = "http_429")]
    Http429,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNextUpstream {
    /// Failures that send the request to the next instance. Default [error, timeout, http_502,
    /// http_503]. http_429 is refused: HAProxy 2.6 cannot retry on it.
    pub on: Option<Vec<Sp<NextUpstreamOn>>>,
    /// At most this many instances tried per request. Default 2.
    pub tries: Option<Sp<i64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Eviction {
    Noeviction,
    AllkeysLru,
    AllkeysLfu,
    AllkeysRandom,
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    VolatileTtl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Persistence {
    None,
    Rdb,
    Aof,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// Port. Default 6379.
    pub port: Option<Sp<u16>>,
    /// Memory limit, e.g. `256MiB`. Default 256MiB.
    pub maxmemory: Option<Sp<String>>,
    /// What Redis evicts at maxmemory. Default allkeys-lru; noeviction when app.workers names a
    /// queue (an evicted job is a lost job).
    pub eviction: Option<Sp<Eviction>>,
    /// none, rdb (snapshots) or aof (append-only file). Default rdb.
    pub persistence: Option<Sp<Persistence>>,
    /// Password, by reference only.
    pub password: Option<Sp<SecretRef>>,
}

/// The database tier: PostgreSQL 15 on every host with the `database` role, run by Patroni (one
/// primary, the others streaming replicas, a replica promoted when the primary fails), its leader
/// lock in etcd on the hosts with the `etcd` role. The app and workers reach it through HAProxy on
/// their own host: `DB_WRITER_URL` (and `DATABASE_URL`) the primary, `DB_READER_URL` the replicas.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    /// The app's database. Default: the topology's name with `-` as `_`.
    pub name: Option<Sp<String>>,
    /// The role the app logs in as, owner of the database. Default `app`.
    pub user: Option<Sp<String>>,
    /// The app user's password, by reference only.
    pub password: Sp<SecretRef>,
    /// The password replicas stream with (user `replicator`), by reference only.
    pub replication_password: Sp<SecretRef>,
    /// The password of Patroni's REST API (user `patroni`), which changes the cluster (switchover,
    /// restart); its health endpoints answer without it. By reference only.
    pub rest_password: Sp<SecretRef>,
    /// PostgreSQL's max_connections on every member. Default 100.
    pub max_connections: Option<Sp<i64>>,
    /// Connections each app instance (and worker) may open to each of the writer and the reader.
    /// Default 5.
    pub pool: Option<Sp<i64>>,
    /// A replica further behind the primary than this stops taking reads, e.g. `1MiB`. Default 1MiB.
    pub replica_max_lag: Option<Sp<String>>,
    /// On `target: docker`: how many PostgreSQL containers run (`db-1`, `db-2`, ...; whichever takes
    /// the leader lock first is the primary, the others stream from it). Default 2. On hosts, the
    /// hosts with the database role are the members.
    pub members: Option<Sp<i64>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawObservability {
    pub prometheus: Option<RawPrometheus>,
    /// Alert thresholds (defaults: common practice).
    pub alerts: Option<RawAlerts>,
    /// Provision Grafana on the monitor host. Default true.
    pub grafana: Option<Sp<bool>>,
    /// Ship every instance's JSON logs off the host.
    pub logs: Option<RawLogs>,
    /// Alertmanager on the monitor host (hosts target), rendered when set: Prometheus sends it
    /// every firing alert, and it notifies the webhook if one is given.
    pub alertmanager: Option<RawAlertmanager>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAlertmanager {
    /// Where notifications go (Alertmanager's webhook_config; Slack and most chat tools take one),
    /// by reference: such URLs carry tokens. Without it, alerts are kept in Alertmanager only.
    pub webhook: Option<Sp<SecretRef>>,
    /// Wait before the first notification of a new group, e.g. `30s`. Default 30s.
    pub group_wait: Option<Sp<String>>,
    /// Notify again about an alert still firing after, e.g. `4h`. Default 4h.
    pub repeat_interval: Option<Sp<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPrometheus {
    /// Default 15s.
    pub scrape_interval: Option<Sp<String>>,
    /// How long samples are kept. Default 15d.
    pub retention: Option<Sp<String>>,
    /// Default 9090.
    pub port: Option<Sp<u16>>,
    /// Ask for this password (HTTP basic auth, user `scalectl`) of everyone who reaches Prometheus'
    /// port, by reference (`{env: VAR}` or `{file: /path}`): doctor sends it, Grafana's data source
    /// and Prometheus' own scrape read it from a file on the monitor host. Hosts target only.
    pub password: Option<Sp<SecretRef>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// p99 latency SLO, e.g. `1s` (beyond 1-2 s users leave). Default 1s.
    pub latency_p99: Option<Sp<String>>,
    /// Share of 5xx responses, and of the workers' jobs that fail for good, in percent. Default 1.
    pub error_rate: Option<Sp<f64>>,
    /// CPU busy percent, sustained 10 minutes (autoscaling groups usually scale out at 70). Default 80.
    pub cpu: Option<Sp<f64>>,
    /// Alert when available memory falls below this percent. Default 10.
    pub memory_available: Option<Sp<f64>>,
    /// Alert when open fds exceed this percent of the limit. Default 90.
    pub fds: Option<Sp<f64>>,
    /// Runtime task scheduling delay (the event loop blocked), e.g. `100ms`. Default 100ms.
    pub scheduling_delay: Option<Sp<String>>,
    /// How long an instance, Redis or nginx must stay down before its alert fires, e.g. `30s`.
    /// Default 1m (a restart is not an outage).
    pub down_for: Option<Sp<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shipper {
    Rsyslog,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLogs {
    /// The shipper on every host: rsyslog (Debian's package, RELP with a disk-assisted queue). Default rsyslog.
    pub shipper: Option<Sp<Shipper>>,
    /// `collector` (the monitor host's, over RELP; on `target: docker` a collector container) or `loki` (`target: hosts` only). Default collector.
    pub destination: Option<Sp<LogDestination>>,
    /// Loki push URL when destination is loki.
    pub loki_url: Option<Sp<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogDestination {
    Collector,
    Loki,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAutoscaling {
    /// Only aws for now.
    pub provider: Sp<Provider>,
    pub region: Sp<String>,
    pub instance_type: Sp<String>,
    pub ami: Sp<String>,
    /// VPC of the subnets (for the load balancer's security group and target group).
    pub vpc_id: Sp<String>,
    /// At least two subnets in different availability zones.
    pub subnets: Sp<Vec<Sp<String>>>,
    pub min: Sp<i64>,
    pub max: Sp<i64>,
    /// Default: min.
    pub desired: Option<Sp<i64>>,
    /// Target-tracking CPU: scale out above, in below (usual: 70 / 30).
    pub cpu: Option<RawCpuTargets>,
    pub cooldown: Option<RawCooldown>,
    /// Seconds a new instance has before health checks count, e.g. `120s`. Default 120s.
    pub health_check_grace: Option<Sp<String>>,
    pub instance_refresh: Option<RawInstanceRefresh>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Aws,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCpuTargets {
    /// Default 70.
    pub scale_out: Option<Sp<f64>>,
    /// Default 30 (used by the `step` policy; target tracking decides scale-in itself).
    pub scale_in: Option<Sp<f64>>,
    /// `target_tracking` (default): AWS keeps average CPU near scale_out. `step`: one instance out
    /// above scale_out, one in below scale_in, exactly the two thresholds (out above 70%, in below 30% by default).
    pub policy: Option<Sp<ScalingPolicy>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScalingPolicy {
    TargetTracking,
    Step,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCooldown {
    /// Default 60s.
    pub scale_out: Option<Sp<String>>,
    /// Default 120s.
    pub scale_in: Option<Sp<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawInstanceRefresh {
    /// Percent of the group kept in service during a rolling refresh. Default 90.
    pub min_healthy_percentage: Option<Sp<i64>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDocker {
    /// Engine endpoint: `unix:///path`, or `tcp://127.0.0.1:port` (this machine only: a remote engine is reached through a socket SSH forwards). Default unix:///var/run/docker.sock.
    pub endpoint: Option<Sp<String>>,
    /// Network of the deployment. Default: the topology name.
    pub network: Option<Sp<String>>,
    /// Image overrides.
    pub images: Option<RawImages>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawImages {
    /// The scale-api image: scalectl builds `<repository>:<release digest>` from the release binary.
    pub scale_api: Option<Sp<String>>,
    /// The base of the scale-api image (a glibc Debian, as the release is built on one).
    pub base: Option<Sp<String>>,
    pub nginx: Option<Sp<String>>,
    pub redis: Option<Sp<String>>,
    pub prometheus: Option<Sp<String>>,
    pub grafana: Option<Sp<String>>,
    /// Prometheus' node exporter for the engine's machine (run with the host's pid namespace and / read-only).
    pub node_exporter: Option<Sp<String>>,
    /// Prometheus' Redis exporter.
    pub redis_exporter: Option<Sp<String>>,
    /// The Nginx exporter (reads the load balancer's stub_status over the topology's network).
    pub nginx_exporter: Option<Sp<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    LoadBalancer,
    Prometheus,
    Grafana,
    Redis,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLab {
    /// Services published on 127.0.0.1: service -> local port.
    #[serde(default)]
    pub publish: IndexMap<Sp<Service>, Sp<u16>>,
}

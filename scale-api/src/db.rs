//! The database behind `/users/{id}`: PostgreSQL through two pools (deadpool-postgres over
//! tokio-postgres), the writer (`DB_WRITER_URL`, else `DATABASE_URL`: the primary) and the reader
//! (`DB_READER_URL`: the replicas; the writer when unset). On a fleet they are HAProxy's ports on
//! the app's own host, which follow Patroni's primary through a failover.
//!
//! A read that a stopping server failed (its connection closed under it, a new connection
//! refused or told the server is shutting down, while HAProxy has yet to mark the server down) is
//! tried again on a fresh connection for up to [`READ_RETRY_BUDGET`]: a
//! read is idempotent, and HAProxy sends the next connection elsewhere once it has seen the
//! failure. A write is not resent: it fails at once, and the caller answers 503.

use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio_postgres::NoTls;

/// The schema scale-api's routes use: what `scale-api migrate` makes (idempotent).
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS users (
    id integer PRIMARY KEY,
    name text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
)";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnLabels {
    pub pool: &'static str,
    pub state: &'static str,
}

/// The pools' measures: connections by state, callers waiting for one, query latency and errors.
pub struct DbMetrics {
    pub connections: Family<ConnLabels, Gauge>,
    pub waiting: Family<PoolLabels, Gauge>,
    pub queries: Family<PoolLabels, Histogram>,
    pub errors: Family<PoolLabels, Counter>,
}

/// Query latency buckets in seconds.
const QUERY_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

impl Default for DbMetrics {
    fn default() -> Self {
        DbMetrics::new()
    }
}

impl DbMetrics {
    pub fn new() -> DbMetrics {
        DbMetrics {
            connections: Family::default(),
            waiting: Family::default(),
            queries: Family::new_with_constructor(|| Histogram::new(QUERY_BUCKETS)),
            errors: Family::default(),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register("scale_api_db_pool_connections", "Database connections by pool (writer, reader) and state (in_use, idle)", self.connections.clone());
        registry.register("scale_api_db_pool_waiting", "Requests waiting for a database connection, by pool", self.waiting.clone());
        registry.register("scale_api_db_query_duration_seconds", "Database query latency by pool, the wait for a connection included", self.queries.clone());
        registry.register("scale_api_db_errors", "Database queries that failed, by pool", self.errors.clone());
    }
}

/// Why a query did not answer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("no database is configured: DB_WRITER_URL (or DATABASE_URL) is not set")]
    NotConfigured,
    #[error("the database's {pool} is unavailable: {message}")]
    Unavailable { pool: &'static str, message: String },
}

impl DbError {
    /// What a client may be told: which pool, not the driver's words.
    pub fn public(&self) -> String {
        match self {
            DbError::NotConfigured => self.to_string(),
            DbError::Unavailable { pool, .. } => format!("the database's {pool} is unavailable"),
        }
    }
}

pub struct Database {
    writer: Pool,
    reader: Pool,
}

/// The pool's connection settings: the URL's, with timeouts a request can afford.
fn pool(url: &str, size: usize, what: &str) -> anyhow::Result<Pool> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| anyhow::anyhow!("{what} is not a PostgreSQL URL: {e}"))?;
    config.connect_timeout(Duration::from_secs(3));
    config.application_name("scale-api");
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(2)))
        .create_timeout(Some(Duration::from_secs(3)))
        .recycle_timeout(Some(Duration::from_secs(1)))
        .build()
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))
}

impl Database {
    /// Pools of `size` connections each, opened lazily (a database down at start costs nothing
    /// until a request needs it).
    pub fn new(writer_url: &str, reader_url: Option<&str>, size: usize) -> anyhow::Result<Database> {
        Ok(Database { writer: pool(writer_url, size, "DB_WRITER_URL")?, reader: pool(reader_url.unwrap_or(writer_url), size, "DB_READER_URL")? })
    }

    /// A user's name, from the reader; None when there is no such user.
    pub async fn user(&self, metrics: &DbMetrics, id: i32) -> Result<Option<String>, DbError> {
        let started = Instant::now();
        let mut pause = Duration::ZERO;
        loop {
            match self.query_opt(metrics, "reader", &self.reader, "SELECT name FROM users WHERE id = $1", id).await {
                Ok(row) => return Ok(row),
                Err((e, retry)) => {
                    if !retry || started.elapsed() + pause > READ_RETRY_BUDGET {
                        return Err(e);
                    }
                }
            }
            // The first retry at once (a connection the stop closed); then pauses that double,
            // while HAProxy still sends new connections to a server that refuses them (a member
            // shutting down answers its TCP connection, and its health check, until it is down).
            tokio::time::sleep(pause).await;
            pause = (pause * 2).clamp(RETRY_PAUSE, RETRY_PAUSE * 4);
        }
    }

    /// Creates or renames a user, on the writer.
    pub async fn put_user(&self, metrics: &DbMetrics, id: i32, name: &str) -> Result<(), DbError> {
        let started = Instant::now();
        let labels = PoolLabels { pool: "writer" };
        let result = async {
            let c = self.writer.get().await.map_err(|e| e.to_string())?;
            c.execute("INSERT INTO users (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, updated_at = now()", &[&id, &name])
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        metrics.queries.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        match result {
            Ok(_) => Ok(()),
            Err(message) => {
                metrics.errors.get_or_create(&labels).inc();
                Err(DbError::Unavailable { pool: "writer", message })
            }
        }
    }

    /// One row's first column, or None; the error says whether a retry may help (the server
    /// went away or is going, rather than the query refused or the pool exhausted).
    async fn query_opt(&self, metrics: &DbMetrics, name: &'static str, pool: &Pool, sql: &str, id: i32) -> Result<Option<String>, (DbError, bool)> {
        let started = Instant::now();
        let labels = PoolLabels { pool: name };
        let result = async {
            let c = pool.get().await.map_err(|e| {
                // A new connection that failed (refused, closed, or told the server is shutting
                // down) may succeed on the next server; a wait for a free one that timed out would not.
                let retry = matches!(&e, deadpool_postgres::PoolError::Backend(_));
                (e.to_string(), retry)
            })?;
            let stmt = c.prepare_cached(sql).await.map_err(|e| (e.to_string(), server_gone(&e)))?;
            c.query_opt(&stmt, &[&id]).await.map_err(|e| (e.to_string(), server_gone(&e)))
        }
        .await;
        metrics.queries.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        match result {
            Ok(row) => Ok(row.map(|r| r.get::<_, String>(0))),
            Err((message, closed)) => {
                metrics.errors.get_or_create(&labels).inc();
                Err((DbError::Unavailable { pool: name, message }, closed))
            }
        }
    }

    /// The pools' gauges, as of now.
    pub fn refresh(&self, metrics: &DbMetrics) {
        for (name, pool) in [("writer", &self.writer), ("reader", &self.reader)] {
            let s = pool.status();
            let idle = s.available as i64;
            metrics.connections.get_or_create(&ConnLabels { pool: name, state: "idle" }).set(idle);
            metrics.connections.get_or_create(&ConnLabels { pool: name, state: "in_use" }).set(s.size as i64 - idle);
            metrics.waiting.get_or_create(&PoolLabels { pool: name }).set(s.waiting as i64);
        }
    }
}

/// How long a read is tried again when the server went away under it: a replica's stop (its
/// PostgreSQL refusing new connections while it shuts down, until HAProxy sees it gone) took
/// 0.4 to 1.0 s on the lab.
pub const READ_RETRY_BUDGET: Duration = Duration::from_secs(2);
/// The first pause between attempts (after an immediate retry), doubling to 4 times it.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The connection closed, or the server said it is shutting down or not taking connections yet
/// (a member stopping, crashing or starting): another server, or the same one later, may answer.
fn server_gone(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.is_closed() || e.code().is_some_and(|c| [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW].contains(c))
}

/// `scale-api migrate`: the schema on the writer, once per release (apply runs it as the release
/// command, before any instance switches to the release).
pub async fn migrate(writer_url: &str) -> anyhow::Result<()> {
    let pool = pool(writer_url, 1, "DB_WRITER_URL")?;
    let c = pool.get().await.map_err(|e| anyhow::anyhow!("cannot reach the database's writer: {e}"))?;
    c.batch_execute(SCHEMA).await.map_err(|e| anyhow::anyhow!("the schema was refused: {e}"))?;
    Ok(())
}

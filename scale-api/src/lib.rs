//! scale-api: the bundled service the fleet runs, independent of the CLI code.
//!
//! Routes: `/` (light), `/heavy` (CPU work on a bounded pool), `/count` (Redis INCR), sessions
//! (`/login`, `/profile`, `/logout`), `/users/{id}` (cache-aside in Redis over PostgreSQL: reads on
//! the reader pool, writes on the writer: db.rs),
//! `/jobs` and `/jobs/{id}` (slow work queued on a Redis stream for `scale-api worker`: jobs.rs),
//! `/healthz`, `/readyz` and `/metrics`. Shared state lives in Redis so any instance serves any
//! request; a circuit breaker keeps a dead Redis from costing every request a timeout.

pub mod db;
pub mod heavy;
pub mod jobs;
pub mod metrics;
pub mod store;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use heavy::HeavyPool;
use metrics::{Metrics, OpLabels, RouteLabels};
use store::{Store, StoreError};

/// Everything scale-api is told at start (flags and environment; see main.rs).
/// A secret string whose Debug form hides it.
#[derive(Clone)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub instance: String,
    pub redis_url: String,
    /// From REDIS_PASSWORD; never logged (its Debug prints `***`).
    pub redis_password: Option<Redacted>,
    pub heavy_pool: usize,
    pub heavy_queue: usize,
    pub drain_timeout: Duration,
    pub slow_request: Duration,
    pub session_ttl: Duration,
    pub cache_ttl: Duration,
    /// The database's writer (DB_WRITER_URL, else DATABASE_URL) and reader (DB_READER_URL, else
    /// the writer); never logged. None: `/users/{id}` answers 503.
    pub db_writer_url: Option<Redacted>,
    pub db_reader_url: Option<Redacted>,
    /// Connections in each of the two pools.
    pub db_pool: usize,
    pub redis_timeout: Duration,
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
    pub liveness_path: String,
    pub readiness_path: String,
    /// A connection whose request headers are not complete this long after it opened or went
    /// idle is closed (slowloris, idle keep-alive).
    pub header_timeout: Duration,
    /// A request still running after this long is answered 503.
    pub request_timeout: Duration,
    /// Connections served at once; more are closed as they arrive.
    pub max_connections: usize,
    /// The Redis stream `POST /jobs` queues on (the workers' queue).
    pub jobs_queue: String,
}

pub struct AppState {
    pub config: Config,
    /// The health paths as `&'static str` route labels (set once per process).
    health_labels: [&'static str; 2],
    /// The `x-instance` header value, built once.
    instance_header: HeaderValue,
    pub store: Store,
    /// None: no database is configured.
    pub db: Option<db::Database>,
    pub pool: HeavyPool,
    pub metrics: Metrics,
    pub draining: AtomicBool,
}

pub type Shared = Arc<AppState>;

impl AppState {
    pub fn new(config: Config) -> anyhow::Result<Shared> {
        let store = Store::new(&config.redis_url, config.redis_password.as_ref().map(|p| p.0.as_str()), config.redis_timeout, config.breaker_threshold, config.breaker_cooldown)
            .map_err(|e| anyhow::anyhow!("bad REDIS_URL {}: {e}", config.redis_url))?;
        let instance_header = HeaderValue::from_str(&config.instance).map_err(|_| anyhow::anyhow!("instance name {:?} is not a valid header value", config.instance))?;
        let metrics = Metrics::new(&config.instance);
        let db = match &config.db_writer_url {
            Some(w) => Some(db::Database::new(&w.0, config.db_reader_url.as_ref().map(|r| r.0.as_str()), config.db_pool.max(1))?),
            None => None,
        };
        // Leaked once per process: they live as long as it does, and label every health check.
        let health_labels = [&*config.liveness_path.clone().leak(), &*config.readiness_path.clone().leak()];
        Ok(Arc::new(AppState {
            health_labels,
            instance_header,
            pool: HeavyPool::new(config.heavy_pool, config.heavy_queue, metrics.heavy_busy.clone(), metrics.heavy_queued.clone()),
            metrics,
            store,
            db,
            draining: AtomicBool::new(false),
            config,
        }))
    }

    /// The route label of a matched path: one of [`ROUTES`] or a health path, so that no request
    /// can add a series.
    fn route_label(&self, matched: &str) -> &'static str {
        ROUTES.iter().chain(&self.health_labels).find(|r| **r == matched).copied().unwrap_or("unmatched")
    }

    /// One Redis command, timed per operation and counted when it fails.
    async fn redis<T: redis::FromRedisValue>(&self, op: &'static str, cmd: &redis::Cmd) -> Result<T, ApiError> {
        match self.store.run::<T>(cmd).await {
            Ok((v, took)) => {
                self.metrics.redis_ops.get_or_create(&OpLabels { op }).observe(took.as_secs_f64());
                Ok(v)
            }
            Err(e) => {
                if matches!(e, StoreError::Redis(_)) {
                    self.metrics.redis_errors.inc();
                }
                Err(ApiError::Unavailable(e.to_string()))
            }
        }
    }
}

/// scale-api's own routes, as matched (and as the `route` label reads them); the health paths are
/// configurable and may not be one of them.
pub const ROUTES: [&str; 10] = ["/", "/heavy", "/count", "/login", "/profile", "/logout", "/users/{id}", "/jobs", "/jobs/{id}", "/metrics"];

pub fn router(state: Shared) -> Router {
    let (live, ready) = (state.config.liveness_path.clone(), state.config.readiness_path.clone());
    Router::new()
        .route("/", get(hello))
        .route("/heavy", get(heavy))
        .route("/count", get(count))
        .route("/login", post(login))
        .route("/profile", get(profile))
        .route("/logout", post(logout))
        .route("/users/{id}", get(get_user).put(put_user))
        .route("/jobs", post(post_job))
        .route("/jobs/{id}", get(get_job))
        .route(&live, get(healthz))
        .route(&ready, get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(|| async { ApiError::NotFound })
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(state)
}

/// The method as a metrics label: the standard ones by name, anything a client makes up as
/// `other`, so that no request can add a series.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Header names as constants: a `&str` name is parsed again on every use.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_INSTANCE: HeaderName = HeaderName::from_static("x-instance");

/// Request id, in-flight gauge, duration histogram and one JSON log line per request.
///
/// This runs for every request, so it allocates as little as it can: the route and method labels
/// are `&'static str`, a request id that came in is passed on as the same header value, and the
/// path is read for the log line only when the line is written (a profile of `/` under load had
/// this middleware's allocations among the largest costs in user space).
async fn observe(State(s): State<Shared>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let request_id = match req.headers().get(X_REQUEST_ID).filter(|v| !v.is_empty() && v.len() <= 128 && v.to_str().is_ok()) {
        Some(v) => v.clone(),
        None => {
            let mut buf = uuid::Uuid::encode_buffer();
            let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
            let v = HeaderValue::from_str(id).expect("a UUID is a valid header value");
            req.headers_mut().insert(X_REQUEST_ID, v.clone());
            v
        }
    };
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| s.route_label(p.as_str()));
    let method = method_label(req.method());
    let uri = req.uri().clone();
    s.metrics.in_flight.inc();
    let mut res = match tokio::time::timeout(s.config.request_timeout, next.run(req)).await {
        Ok(res) => res,
        Err(_) => ApiError::Unavailable(format!("the request took longer than {:?}", s.config.request_timeout)).into_response(),
    };
    s.metrics.in_flight.dec();
    let took = start.elapsed();
    let status = res.status().as_u16();
    s.metrics.requests.get_or_create(&RouteLabels { method, route, status }).observe(took.as_secs_f64());
    let ms = took.as_secs_f64() * 1000.0;
    let id = request_id.to_str().unwrap_or_default();
    if took >= s.config.slow_request {
        tracing::warn!(request_id = id, method, path = uri.path(), status, duration_ms = ms, instance = %s.config.instance, "slow request");
    } else {
        tracing::info!(request_id = id, method, path = uri.path(), status, duration_ms = ms, instance = %s.config.instance, "request");
    }
    res.headers_mut().insert(X_REQUEST_ID, request_id);
    res.headers_mut().insert(X_INSTANCE, s.instance_header.clone());
    res
}

#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    Unauthorized,
    NotFound,
    NoSuchJob,
    NoSuchUser,
    Busy,
    Unavailable(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, msg) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "missing or unknown bearer token".into()),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "no such route".into()),
            ApiError::NoSuchJob => (StatusCode::NOT_FOUND, "no such job".into()),
            ApiError::NoSuchUser => (StatusCode::NOT_FOUND, "no such user".into()),
            ApiError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "heavy-work queue is full".into()),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
        };
        let mut res = (status, Json(json!({ "error": msg }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
        }
        res
    }
}

async fn hello() -> &'static str {
    "Hello World\n"
}

#[derive(Deserialize)]
struct HeavyQuery {
    ms: Option<u64>,
}

async fn heavy(State(s): State<Shared>, q: Result<Query<HeavyQuery>, axum::extract::rejection::QueryRejection>) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(format!("bad query: {}", e.body_text())))?;
    let ms = q.ms.unwrap_or(200).min(5_000);
    match s.pool.hash_for(ms).await {
        Ok(r) => Ok(Json(json!({ "rounds": r.rounds, "digest": r.digest, "ms": r.ms, "instance": s.config.instance })).into_response()),
        Err(_) => {
            s.metrics.heavy_rejected.inc();
            Err(ApiError::Busy)
        }
    }
}

async fn count(State(s): State<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    let n: i64 = s.redis("incr", redis::cmd("INCR").arg("scale:count")).await?;
    Ok(Json(json!({ "count": n, "instance": s.config.instance })))
}

#[derive(Deserialize)]
struct LoginBody {
    username: String,
}

async fn login(State(s): State<Shared>, body: Result<Json<LoginBody>, JsonRejection>) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let name = body.username.trim();
    if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
        return Err(ApiError::BadRequest("username must be 1 to 64 printable characters".into()));
    }
    let token = uuid::Uuid::new_v4().simple().to_string();
    let _: () = s
        .redis("set", redis::cmd("SET").arg(format!("session:{token}")).arg(name).arg("EX").arg(s.config.session_ttl.as_secs().max(1)))
        .await?;
    Ok(Json(json!({ "token": token, "instance": s.config.instance })))
}

fn bearer(headers: &HeaderMap) -> Result<String, ApiError> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 64 && t.chars().all(|c| c.is_ascii_alphanumeric()))
        .ok_or(ApiError::Unauthorized)?;
    Ok(token.to_string())
}

async fn profile(State(s): State<Shared>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    let token = bearer(&headers)?;
    let name: Option<String> = s.redis("get", redis::cmd("GET").arg(format!("session:{token}"))).await?;
    let name = name.ok_or(ApiError::Unauthorized)?;
    Ok(Json(json!({ "username": name, "instance": s.config.instance })))
}

async fn logout(State(s): State<Shared>, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    let token = bearer(&headers)?;
    let _: i64 = s.redis("del", redis::cmd("DEL").arg(format!("session:{token}"))).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Queue a job for the workers: 202 with its id at once.
async fn post_job(State(s): State<Shared>, body: Result<Json<jobs::JobRequest>, JsonRejection>) -> Result<Response, ApiError> {
    let Json(job) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    job.check().map_err(ApiError::BadRequest)?;
    let keys = jobs::Keys::new(&s.config.jobs_queue);
    let id: u64 = s.redis("incr", redis::cmd("INCR").arg(keys.seq())).await?;
    let _: String = s.redis("eval", &jobs::enqueue_cmd(&keys, id, &job)).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id.to_string(), "state": "waiting", "instance": s.config.instance }))).into_response())
}

/// A job's state (waiting, active, completed, failed), attempts, and its result or error.
async fn get_job(State(s): State<Shared>, Path(raw): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let id: u64 = raw.parse().map_err(|_| ApiError::BadRequest("a job id is a number".into()))?;
    let keys = jobs::Keys::new(&s.config.jobs_queue);
    let h: std::collections::HashMap<String, String> = s.redis("hgetall", redis::cmd("HGETALL").arg(keys.job(&id.to_string()))).await?;
    if h.is_empty() {
        return Err(ApiError::NoSuchJob);
    }
    let number = |k: &str| h.get(k).and_then(|v| v.parse::<u64>().ok());
    Ok(Json(json!({
        "id": id.to_string(),
        "state": h.get("state"),
        "attempts": number("attempts"),
        "result": h.get("result").and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok()),
        "error": h.get("error"),
        "worker": h.get("worker"),
    })))
}

fn user_id(raw: &str) -> Result<u32, ApiError> {
    raw.parse::<u32>().ok().filter(|id| (1..=1_000_000).contains(id)).ok_or_else(|| ApiError::BadRequest("user id must be a number from 1 to 1000000".into()))
}

/// A database error: its detail logged (the driver's words may name a role or a host), the client
/// told which pool was unavailable.
fn db_unavailable(e: db::DbError) -> ApiError {
    tracing::warn!(error = %e, "database");
    ApiError::Unavailable(e.public().to_string())
}

/// The database, or 503 saying none is configured.
fn database(s: &AppState) -> Result<&db::Database, ApiError> {
    s.db.as_ref().ok_or_else(|| ApiError::Unavailable(db::DbError::NotConfigured.to_string()))
}

/// Cache-aside: Redis first; on a miss, the database's reader, then fill the cache. With a cache
/// lifetime of zero, the database's reader only.
async fn get_user(State(s): State<Shared>, Path(raw): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let id = user_id(&raw)?;
    let cache = !s.config.cache_ttl.is_zero();
    if cache {
        let cached: Option<String> = s.redis("get", redis::cmd("GET").arg(format!("cache:user:{id}"))).await?;
        if let Some(name) = cached {
            return Ok(Json(json!({ "id": id, "name": name, "source": "cache", "instance": s.config.instance })));
        }
    }
    let stored = database(&s)?.user(&s.metrics.db, id as i32).await.map_err(db_unavailable)?;
    let Some(name) = stored else { return Err(ApiError::NoSuchUser) };
    if !cache {
        return Ok(Json(json!({ "id": id, "name": name, "source": "db", "instance": s.config.instance })));
    }
    let _: () = s
        .redis("set", redis::cmd("SET").arg(format!("cache:user:{id}")).arg(&name).arg("EX").arg(s.config.cache_ttl.as_secs().max(1)))
        .await?;
    Ok(Json(json!({ "id": id, "name": name, "source": "db", "instance": s.config.instance })))
}

#[derive(Deserialize)]
struct UserBody {
    name: String,
}

/// Write-through the writer, then the cached copy dropped: the next read fills it from the database.
async fn put_user(State(s): State<Shared>, Path(raw): Path<String>, body: Result<Json<UserBody>, JsonRejection>) -> Result<Json<serde_json::Value>, ApiError> {
    let id = user_id(&raw)?;
    let Json(body) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if body.name.is_empty() || body.name.len() > 128 {
        return Err(ApiError::BadRequest("name must be 1 to 128 characters".into()));
    }
    database(&s)?.put_user(&s.metrics.db, id as i32, &body.name).await.map_err(db_unavailable)?;
    let _: i64 = s.redis("del", redis::cmd("DEL").arg(format!("cache:user:{id}"))).await?;
    Ok(Json(json!({ "id": id, "name": body.name, "instance": s.config.instance })))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(s): State<Shared>) -> Response {
    if s.draining.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "ready": false, "reason": "draining" }))).into_response();
    }
    match s.redis::<String>("ping", &redis::cmd("PING")).await {
        Ok(_) => Json(json!({ "ready": true, "instance": s.config.instance })).into_response(),
        Err(ApiError::Unavailable(m)) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "ready": false, "reason": m }))).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn metrics_text(State(s): State<Shared>) -> Response {
    s.metrics.refresh_process();
    s.metrics.breaker_state.set(s.store.breaker.state() as i64);
    if let Some(db) = &s.db {
        db.refresh(&s.metrics.db);
    }
    ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.encode()).into_response()
}

/// Measure how long freshly woken tasks wait to run (tokio-metrics' first-poll delay of probe
/// tasks spawned every 50 ms), reported per second as the event-loop-delay signal.
pub fn spawn_scheduling_probe(s: Shared) {
    tokio::spawn(async move {
        let monitor = tokio_metrics::TaskMonitor::new();
        let mut intervals = monitor.intervals();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut n = 0u32;
        loop {
            tick.tick().await;
            tokio::spawn(monitor.instrument(async {}));
            n += 1;
            if n.is_multiple_of(20)
                && let Some(m) = intervals.next()
            {
                s.metrics.scheduling_delay.set(m.mean_first_poll_delay().as_secs_f64());
            }
        }
    });
}

/// Accept connections until `stop` fires, each served by hyper with a header-read timeout (which
/// also closes idle keep-alive connections, and bounds the wait for a new connection's first byte)
/// and at most `max_connections` at once; then stop
/// accepting and let the connections finish their requests (the caller bounds how long).
async fn accept(listener: tokio::net::TcpListener, state: Shared, mut stop: tokio::sync::oneshot::Receiver<()>) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let app = router(state.clone());
    // HTTP/1.1 only: the load balancer (or a health check) is the client.
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(state.config.header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(state.config.max_connections));
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, most often: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            state.metrics.connections_refused.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let http = http.clone();
        let watcher = graceful.watcher();
        let first_byte = state.config.header_timeout;
        tokio::spawn(async move {
            // hyper's header timer starts with the first byte of a request: a client that connects
            // and sends nothing would hold its descriptor for ever. The first byte (or the close)
            // must arrive within the header timeout too.
            let mut byte = [0u8; 1];
            if matches!(tokio::time::timeout(first_byte, stream.peek(&mut byte)).await, Ok(Ok(n)) if n > 0) {
                let _ = watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await;
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Serve until `shutdown` resolves; then readiness goes false, the listener stops accepting, and
/// in-flight requests get `drain_timeout` to finish.
pub async fn serve(listener: tokio::net::TcpListener, state: Shared, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    spawn_scheduling_probe(state.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let draining = Arc::new(tokio::sync::Notify::new());
    let (flag, notify) = (state.clone(), draining.clone());
    tokio::spawn(async move {
        shutdown.await;
        flag.draining.store(true, Ordering::Release);
        tracing::info!(instance = %flag.config.instance, "draining: readiness false, no new connections");
        let _ = stop_tx.send(());
        notify.notify_one();
    });
    let drain = state.config.drain_timeout;
    let mut server = tokio::spawn(accept(listener, state, stop_rx));
    tokio::select! {
        r = &mut server => r??,
        _ = draining.notified() => match tokio::time::timeout(drain, &mut server).await {
            Ok(r) => r??,
            Err(_) => tracing::warn!("drain timeout of {drain:?} passed with requests in flight; exiting"),
        },
    }
    Ok(())
}

//! scale-api: the bundled API the fleet runs.
//!
//! One process per port is the mode systemd instances use (`scale-api@PORT.service`). With
//! `--workers N|max` a parent runs N worker processes that share one port through SO_REUSEPORT and
//! replaces any that dies: the Node cluster module / `pm2 -i max`, without a custom balancer.
//! `scale-api probe /readyz` is the container health check.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use scale_api::{self as api, AppState, Config};

/// mimalloc instead of glibc's malloc: a profile of `/` under load spent about a fifth of
/// scale-api's user-space time in malloc and free.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "scale-api", version, about = "The API that scalectl deploys: light, heavy, Redis-backed routes and metrics")]
struct Args {
    /// Listen port
    #[arg(long, env = "PORT", default_value_t = 3000)]
    port: u16,
    /// Listen address
    #[arg(long, env = "BIND", default_value = "0.0.0.0")]
    bind: std::net::IpAddr,
    /// Instance name (x-instance header, logs, metrics)
    #[arg(long, env = "INSTANCE")]
    instance: Option<String>,
    /// Redis URL
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/")]
    redis_url: String,
    /// Redis password (apply writes it to a 0600 secrets file the unit reads)
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    redis_password: Option<String>,
    /// Threads for CPU-heavy work [default: cores]
    #[arg(long, env = "HEAVY_POOL")]
    heavy_pool: Option<usize>,
    /// Heavy jobs that may wait for a thread before /heavy answers 503
    #[arg(long, env = "HEAVY_QUEUE", default_value_t = 64)]
    heavy_queue: usize,
    /// Time in-flight requests get after SIGTERM, e.g. 10s
    #[arg(long, env = "DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Requests slower than this are logged at warn
    #[arg(long, env = "SLOW_REQUEST", default_value = "2s", value_parser = humantime::parse_duration)]
    slow_request: Duration,
    /// The database's writer, a PostgreSQL URL (falls back to DATABASE_URL); /users/{id} answers
    /// 503 without one
    #[arg(long, env = "DB_WRITER_URL", hide_env_values = true)]
    db_writer_url: Option<String>,
    /// The database's reader, a PostgreSQL URL [default: the writer]
    #[arg(long, env = "DB_READER_URL", hide_env_values = true)]
    db_reader_url: Option<String>,
    /// Connections in each of the writer's and the reader's pools
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    db_pool_size: u32,
    /// Session lifetime
    #[arg(long, env = "SESSION_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    session_ttl: Duration,
    /// Cache lifetime of /users/{id} in Redis; 0s: no cache, every read asks the database
    #[arg(long, env = "CACHE_TTL", default_value = "60s", value_parser = humantime::parse_duration)]
    cache_ttl: Duration,
    /// Consecutive Redis failures that open the circuit breaker
    #[arg(long, env = "BREAKER_THRESHOLD", default_value_t = 5)]
    breaker_threshold: u32,
    /// How long the breaker stays open before a probe
    #[arg(long, env = "BREAKER_COOLDOWN", default_value = "2s", value_parser = humantime::parse_duration)]
    breaker_cooldown: Duration,
    /// Liveness path
    #[arg(long, env = "LIVENESS_PATH", default_value = "/healthz", value_parser = health_path)]
    liveness_path: String,
    /// Readiness path (false while draining or while Redis is unreachable)
    #[arg(long, env = "READINESS_PATH", default_value = "/readyz", value_parser = health_path)]
    readiness_path: String,
    /// Close a connection whose request headers have not all arrived this long after it opened
    /// or went idle (slow clients, idle keep-alive)
    #[arg(long, env = "HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    header_timeout: Duration,
    /// Answer 503 to a request still running after this long
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// Connections served at once; more are closed as they arrive
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// Run N worker processes sharing the port (a number or `max` for one per core)
    #[arg(long, env = "WORKERS")]
    workers: Option<String>,
    /// The Redis stream POST /jobs queues on, and `scale-api worker` consumes
    #[arg(long, env = "JOBS_QUEUE", default_value = "jobs", value_parser = api::jobs::queue_name)]
    jobs_queue: String,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Take jobs from the queue (a Redis stream, in the consumer group `workers`) until SIGTERM,
    /// which lets the job in hand finish: what scalectl runs as the app's workers
    Worker {
        /// Take over a job another worker held this long without a word (it died or hung), and
        /// retry a failed attempt after it
        #[arg(long, env = "JOBS_CLAIM_IDLE", default_value = "30s", value_parser = humantime::parse_duration)]
        claim_idle: Duration,
        /// Attempts before a job goes to the dead letters (QUEUE:dead)
        #[arg(long, env = "JOBS_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
        max_attempts: u32,
    },
    /// Make the database's schema on the writer (idempotent): the release command apply runs once
    /// per release, before any instance switches to it
    Migrate,
    /// Exit 0 when GET http://127.0.0.1:PORT/PATH answers 2xx (container health checks)
    Probe {
        #[arg(default_value = "/readyz")]
        path: String,
    },
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .json()
        .with_current_span(false)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    // A worker of `--workers N` is one event loop, as a Node cluster worker or PM2's `-i max`: the
    // processes are the parallelism, and a runtime of one thread per core in each of them made
    // their threads wake one another across cores for nothing (CPU time per request of `/` went
    // from about 11 to 18-22 µs with two threads in a process, measured with perf on 2 cores).
    // Heavy work has its own threads either way (heavy.rs). The supervisor only waits.
    let mut builder = if std::env::var_os("SCALE_API_WORKER").is_some() || args.workers.is_some() { tokio::runtime::Builder::new_current_thread() } else { tokio::runtime::Builder::new_multi_thread() };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("scale-api: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match (&args.command, &args.workers) {
            (Some(Cmd::Probe { path }), _) => probe(args.port, path).await,
            (Some(Cmd::Migrate), _) => migrate(&args).await,
            (Some(Cmd::Worker { claim_idle, max_attempts }), _) => worker(&args, *claim_idle, *max_attempts).await,
            (None, Some(w)) if std::env::var_os("SCALE_API_WORKER").is_none() => supervise(w).await,
            (None, _) => run(&args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "scale-api stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(a: &Args) -> anyhow::Result<()> {
    if std::env::var_os("SCALE_API_WORKER").is_some() {
        // A worker never outlives its supervisor, even one killed with SIGKILL.
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM).context("cannot set the parent-death signal")?;
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let instance = a.instance.clone().unwrap_or_else(|| format!("{}-{}", hostname(), a.port));
    let config = Config {
        instance: instance.clone(),
        redis_url: a.redis_url.clone(),
        redis_password: a.redis_password.clone().filter(|p| !p.is_empty()).map(api::Redacted),
        heavy_pool: a.heavy_pool.unwrap_or(cores),
        heavy_queue: a.heavy_queue,
        drain_timeout: a.drain_timeout,
        slow_request: a.slow_request,
        session_ttl: a.session_ttl,
        cache_ttl: a.cache_ttl,
        db_writer_url: writer_url(a).map(api::Redacted),
        db_reader_url: a.db_reader_url.clone().filter(|u| !u.is_empty()).map(api::Redacted),
        db_pool: a.db_pool_size as usize,
        redis_timeout: Duration::from_millis(500),
        breaker_threshold: a.breaker_threshold,
        breaker_cooldown: a.breaker_cooldown,
        liveness_path: a.liveness_path.clone(),
        readiness_path: a.readiness_path.clone(),
        header_timeout: a.header_timeout,
        request_timeout: a.request_timeout,
        max_connections: a.max_connections.max(1),
        jobs_queue: a.jobs_queue.clone(),
    };
    anyhow::ensure!(config.liveness_path != config.readiness_path, "liveness and readiness paths must differ");
    let state = AppState::new(config)?;
    let addr = SocketAddr::new(a.bind, a.port);
    // A socket passed by systemd (scale-api@.socket) outlives restarts: connections that arrive
    // while the instance restarts wait in its backlog instead of being refused.
    let listener = match listenfd::ListenFd::from_env().take_tcp_listener(0).context("LISTEN_FDS is set but fd 3 is not a TCP listener")? {
        Some(l) => {
            l.set_nonblocking(true)?;
            tracing::info!(instance, addr = %l.local_addr()?, pid = std::process::id(), "listening on the socket systemd passed");
            tokio::net::TcpListener::from_std(l)?
        }
        None => {
            let l = bind(addr, std::env::var_os("SCALE_API_WORKER").is_some()).with_context(|| format!("cannot listen on {addr}"))?;
            tracing::info!(instance, %addr, pid = std::process::id(), "listening");
            l
        }
    };
    api::serve(listener, state, shutdown_signal()).await?;
    tracing::info!(instance, "stopped");
    Ok(())
}

/// The writer's URL: DB_WRITER_URL, else DATABASE_URL (the name most libraries read).
fn writer_url(a: &Args) -> Option<String> {
    a.db_writer_url.clone().or_else(|| std::env::var("DATABASE_URL").ok()).filter(|u| !u.is_empty())
}

/// `scale-api migrate`.
async fn migrate(a: &Args) -> anyhow::Result<()> {
    let url = writer_url(a).context("no database to migrate: DB_WRITER_URL (or DATABASE_URL) is not set")?;
    api::db::migrate(&url).await?;
    tracing::info!("the database's schema is in place");
    Ok(())
}

/// `scale-api worker`: one consumer of the jobs queue, named by INSTANCE.
async fn worker(a: &Args, claim_idle: Duration, max_attempts: u32) -> anyhow::Result<()> {
    anyhow::ensure!(claim_idle >= Duration::from_millis(200), "--claim-idle must be at least 200ms");
    let block = Duration::from_secs(1);
    let password = a.redis_password.as_deref().filter(|p| !p.is_empty());
    // A blocking read waits `block`: its answer gets that and more.
    let conn = api::store::connect(&a.redis_url, password, block + Duration::from_secs(2)).map_err(|e| anyhow::anyhow!("bad REDIS_URL {}: {e}", a.redis_url))?;
    let name = a.instance.clone().unwrap_or_else(|| format!("{}-worker-{}", hostname(), std::process::id()));
    let config = api::jobs::WorkerConfig { name, queue: a.jobs_queue.clone(), claim_idle, max_attempts, block };
    api::jobs::work(conn, config, shutdown_signal()).await
}

/// A listener; workers of one cluster share the port through SO_REUSEPORT.
fn bind(addr: SocketAddr, reuse_port: bool) -> anyhow::Result<tokio::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(tokio::net::TcpListener::from_std(socket.into())?)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

/// Cluster mode: keep N workers running, replace any that exits, forward SIGTERM/SIGINT to all.
async fn supervise(workers: &str) -> anyhow::Result<()> {
    let n = match workers {
        "max" => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        s => s.parse::<usize>().ok().filter(|n| (1..=256).contains(n)).with_context(|| format!("--workers must be a number from 1 to 256 or `max`, not `{s}`"))?,
    };
    let exe = std::env::current_exe()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let spawn = |i: usize| -> anyhow::Result<tokio::process::Child> {
        let child = tokio::process::Command::new(&exe).args(&args).env("SCALE_API_WORKER", i.to_string()).kill_on_drop(true).spawn()?;
        tracing::info!(worker = i, pid = child.id(), "worker started");
        Ok(child)
    };
    let mut children: Vec<tokio::process::Child> = (0..n).map(spawn).collect::<anyhow::Result<_>>()?;
    let mut stop = Box::pin(shutdown_signal());
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                for (i, child) in children.iter_mut().enumerate() {
                    if let Ok(Some(status)) = child.try_wait() {
                        tracing::warn!(worker = i, %status, "worker died, restarting");
                        *child = spawn(i)?;
                    }
                }
            }
        }
    }
    for child in &children {
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
        }
    }
    for child in &mut children {
        let _ = child.wait().await;
    }
    Ok(())
}

async fn probe(port: u16, path: &str) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let res = client.get(&url).send().await.with_context(|| format!("GET {url}"))?;
    anyhow::ensure!(res.status().is_success(), "GET {url}: {}", res.status());
    Ok(())
}

/// A health path: `/` followed by URL-safe characters, and not one of the API's own routes.
fn health_path(s: &str) -> Result<String, String> {
    let ok = s.starts_with('/') && s.len() > 1 && s[1..].chars().all(|c| c.is_ascii_alphanumeric() || "/._-~".contains(c));
    let taken = api::ROUTES.contains(&s) || s.starts_with("/users/") || s.starts_with("/jobs/");
    if !ok {
        Err(format!("`{s}` is not a path such as /healthz"))
    } else if taken {
        Err(format!("`{s}` is one of scale-api's own routes"))
    } else {
        Ok(s.to_string())
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "scale-api".into())
}

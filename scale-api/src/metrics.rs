//! Prometheus metrics of one scale-api process, in the text format on /metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: &'static str,
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub instance: String,
}

/// Buckets in seconds, from a fast `/` (sub-millisecond) to a 2-second "too slow".
const LATENCY_BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0];

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RouteLabels, Histogram>,
    pub in_flight: Gauge,
    pub scheduling_delay: Gauge<f64, AtomicU64>,
    pub heavy_busy: Gauge,
    pub heavy_queued: Gauge,
    pub heavy_rejected: Counter,
    /// Connections closed on arrival because `max_connections` were open.
    pub connections_refused: Counter,
    pub redis_ops: Family<OpLabels, Histogram>,
    pub redis_errors: Counter,
    pub breaker_state: Gauge,
    pub resident_memory: Gauge,
    pub cpu_seconds: Counter<f64, AtomicU64>,
    pub open_fds: Gauge,
    pub max_fds: Gauge,
    /// When this process started (Unix seconds): a restart changes it, which is how doctor counts restarts.
    pub start_time: Gauge<f64, AtomicU64>,
    /// The database's pools (registered whether or not one is configured: zero without).
    pub db: crate::db::DbMetrics,
}

impl Metrics {
    pub fn new(instance: &str) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RouteLabels, Histogram>::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        let redis_ops = Family::<OpLabels, Histogram>::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        let m = Metrics {
            requests: requests.clone(),
            in_flight: Gauge::default(),
            scheduling_delay: Gauge::default(),
            heavy_busy: Gauge::default(),
            heavy_queued: Gauge::default(),
            heavy_rejected: Counter::default(),
            connections_refused: Counter::default(),
            redis_ops: redis_ops.clone(),
            redis_errors: Counter::default(),
            breaker_state: Gauge::default(),
            resident_memory: Gauge::default(),
            cpu_seconds: Counter::default(),
            open_fds: Gauge::default(),
            max_fds: Gauge::default(),
            start_time: Gauge::default(),
            db: crate::db::DbMetrics::new(),
            registry: Registry::default(),
        };
        m.db.register(&mut registry);
        registry.register("scale_api_http_request_duration_seconds", "HTTP request duration by method, route and status", requests);
        registry.register("scale_api_http_requests_in_flight", "Requests being served", m.in_flight.clone());
        registry.register(
            "scale_api_runtime_scheduling_delay_seconds",
            "Worst delay, over the last second, between a task being woken and it running (the event-loop delay signal)",
            m.scheduling_delay.clone(),
        );
        registry.register("scale_api_heavy_pool_busy", "Heavy-pool threads working", m.heavy_busy.clone());
        registry.register("scale_api_heavy_pool_queued", "Heavy jobs waiting for a thread", m.heavy_queued.clone());
        registry.register("scale_api_heavy_pool_rejected", "Heavy jobs refused because the queue was full", m.heavy_rejected.clone());
        registry.register("scale_api_connections_refused", "Connections closed on arrival because the connection limit was reached", m.connections_refused.clone());
        registry.register("scale_api_redis_operation_duration_seconds", "Redis operation latency", redis_ops);
        registry.register("scale_api_redis_errors", "Redis operations that failed", m.redis_errors.clone());
        registry.register("scale_api_redis_circuit_state", "Redis circuit breaker: 0 closed, 1 open, 2 half-open", m.breaker_state.clone());
        registry.register("process_resident_memory_bytes", "Resident memory", m.resident_memory.clone());
        registry.register("process_cpu_seconds", "User and system CPU time", m.cpu_seconds.clone());
        registry.register("process_open_fds", "Open file descriptors", m.open_fds.clone());
        registry.register("process_max_fds", "Open file descriptor limit", m.max_fds.clone());
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        m.start_time.set(started);
        registry.register("process_start_time_seconds", "Start time of the process since the Unix epoch", m.start_time.clone());
        let build = Family::<BuildLabels, Gauge>::default();
        build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION").into(), instance: instance.into() }).set(1);
        registry.register("scale_api_build_info", "Build information", build);
        Metrics { registry, ..m }
    }

    /// Read the process figures from /proc just before a scrape.
    pub fn refresh_process(&self) {
        let Ok(me) = procfs::process::Process::myself() else { return };
        if let Ok(stat) = me.stat() {
            let page = procfs::page_size();
            self.resident_memory.set((stat.rss * page) as i64);
            let ticks = procfs::ticks_per_second() as f64;
            // A counter: advance it to the kernel's figure.
            let total = (stat.utime + stat.stime) as f64 / ticks;
            let delta = total - self.cpu_seconds.get();
            if delta > 0.0 {
                self.cpu_seconds.inc_by(delta);
            }
        }
        if let Ok(n) = me.fd_count() {
            self.open_fds.set(n as i64);
        }
        if let Ok(limits) = me.limits()
            && let procfs::process::LimitValue::Value(v) = limits.max_open_files.soft_limit
        {
            self.max_fds.set(v as i64);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

//! The only I/O of doctor: a Snapshot of the live fleet from its Prometheus (HTTP API), instant
//! queries for current values and range queries for the series the tree judges by their median.
//! Without a monitor host there is no Prometheus to ask; scraping instances directly is not built yet.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;

use super::snapshot::*;
use crate::topology::Topology;

pub struct Prometheus {
    base: String,
    client: reqwest::Client,
    /// Prometheus' password (basic auth, user `scalectl`), when it asks for one.
    password: Option<String>,
}

/// One series of an instant query: its labels and value.
pub type Samples = Vec<(BTreeMap<String, String>, f64)>;
/// The most doctor reads of one answer (Prometheus' or an instance's /metrics): an endpoint that
/// answers without end fills this machine's memory no further.
pub(super) const MAX_BODY: usize = 64 << 20;

/// A response's body as text, read chunk by chunk up to `cap` bytes; more is an error.
pub(super) async fn body(mut response: reqwest::Response, cap: usize) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        anyhow::ensure!(bytes.len() + chunk.len() <= cap, "the answer is larger than {} MiB: not read", cap >> 20);
        bytes.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The file systems that may hold /var/log (memory file systems left out).
const LOG_DISKS: &str = r#"{mountpoint=~"/|/var|/var/log",fstype!~"tmpfs|ramfs"}"#;

/// One series of a range query: its labels and values, oldest first.
type Series = Vec<(BTreeMap<String, String>, Vec<f64>)>;

impl Prometheus {
    pub fn new(base: &str, password: Option<String>) -> anyhow::Result<Prometheus> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        Ok(Prometheus { base: base.trim_end_matches('/').to_string(), client, password })
    }

    async fn get(&self, path: &str, params: &[(&str, String)]) -> anyhow::Result<serde_json::Value> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), params)?;
        let mut request = self.client.get(url.clone());
        if let Some(pw) = &self.password {
            request = request.basic_auth(crate::render::PROMETHEUS_USER, Some(pw));
        }
        let response = request.send().await.with_context(|| format!("cannot reach Prometheus at {}", self.base))?;
        anyhow::ensure!(
            response.status() != reqwest::StatusCode::UNAUTHORIZED,
            "Prometheus at {} asks for a password{}",
            self.base,
            if self.password.is_some() { ", and refused observability.prometheus.password" } else { ": set observability.prometheus.password (a reference) in the topology" }
        );
        let text = body(response, MAX_BODY).await.with_context(|| format!("Prometheus at {}", self.base))?;
        let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("Prometheus answered {path} with something else than JSON"))?;
        anyhow::ensure!(v["status"] == "success", "Prometheus refused a query: {}", v["error"]);
        Ok(v["data"]["result"].clone())
    }

    pub async fn instant(&self, q: &str) -> anyhow::Result<Samples> {
        let r = self.get("/api/v1/query", &[("query", q.to_string())]).await?;
        Ok(r.as_array()
            .into_iter()
            .flatten()
            .map(|s| (labels(&s["metric"]), s["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)))
            .collect())
    }

    pub async fn range(&self, q: &str, window: Duration, step: Duration, end_unix: f64) -> anyhow::Result<Series> {
        let start = end_unix - window.as_secs_f64();
        let r = self
            .get("/api/v1/query_range", &[("query", q.to_string()), ("start", format!("{start:.3}")), ("end", format!("{end_unix:.3}")), ("step", format!("{}s", step.as_secs().max(1)))])
            .await?;
        Ok(r.as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let values = s["values"].as_array().into_iter().flatten().filter_map(|p| p[1].as_str().and_then(|v| v.parse().ok())).collect();
                (labels(&s["metric"]), values)
            })
            .collect())
    }
}

fn labels(m: &serde_json::Value) -> BTreeMap<String, String> {
    m.as_object().into_iter().flatten().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect()
}

fn by(samples: &Samples, key: &str, value: &str) -> Option<f64> {
    samples.iter().find(|(l, _)| l.get(key).map(String::as_str) == Some(value)).map(|(_, v)| *v).filter(|v| v.is_finite())
}

/// The first sample's value, when it is a number.
fn first(samples: &Samples) -> Option<f64> {
    samples.first().map(|(_, v)| *v).filter(|v| v.is_finite())
}

fn series_by(series: &Series, key: &str, value: &str) -> Vec<f64> {
    series.iter().find(|(l, _)| l.get(key).map(String::as_str) == Some(value)).map(|(_, v)| v.clone()).unwrap_or_default()
}

/// Read the fleet's state over the last `window`. `from_target` gives, by instance name, what only
/// the target knows (docker's running replicas: the engine assigns their addresses and counts
/// their restarts after a failure; hosts report both through Prometheus, so theirs is empty), and
/// docker's count of the workers, which nothing reports to Prometheus there.
pub async fn collect(t: &Topology, prometheus: &Prometheus, window: Duration, thresholds: Thresholds, from_target: &FromTarget) -> anyhow::Result<Snapshot> {
    let upstreams: BTreeMap<&String, &String> = from_target.instances.iter().map(|(name, i)| (name, &i.upstream)).collect();
    let now = std::time::SystemTime::now();
    let end = now.duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
    let step = Duration::from_millis(t.observability.scrape_interval_ms.max(1000));
    let w = format!("{}s", window.as_secs());
    // Rates of requests, latencies and errors are the window's own, a minute at most (a longer
    // window is judged by the series above) and four scrapes at least (a rate needs two samples).
    let four_scrapes = 4 * step.as_secs();
    let recent_s = window.as_secs().clamp(four_scrapes, four_scrapes.max(60));
    let recent = format!("{recent_s}s");
    // Each point of a CPU series is a rate over four scrapes, and the series starts four scrapes
    // into the window: no point reaches back before the window and judges it by what ran before
    // it (a minute of load before a quiet window made it look busy).
    let point = format!("{four_scrapes}s");
    let cpu_window = window.saturating_sub(Duration::from_secs(four_scrapes)).max(step);
    let p = prometheus;

    let mut waited = false;
    let up = confirmed(p, r#"up{job="app"}"#, step, &mut waited).await?;
    let up = newest_per_instance(up, &p.instant(r#"timestamp(up{job="app"})"#).await?);
    // Each instance as systemd and the kernel see it (the node exporter's textfile, any app): the
    // instances of a program that serves no metrics, and what the app's own series do not say.
    let unit_up = newest_per_instance(p.instant("scalectl_instance_up").await?, &p.instant("timestamp(scalectl_instance_up)").await?);
    // Restarts after a failure only, for every app alike: systemd's NRestarts (scalectl-instances),
    // or on docker the engine's restart count. A process' start time moves on every planned
    // restart too (a deploy, a reload), which is not a crash.
    let unit_restarts = p.instant(&format!("increase(scalectl_instance_restarts_total[{w}])")).await?;
    // The app's own requests are its users': not the health probes a deploy polls an instance
    // with while it restarts (many a second, on one instance), nor Prometheus' scrapes.
    let served = format!(r#"route!="{}",route!="{}",route!="/metrics""#, t.app.liveness, t.app.readiness);
    let rps = p.instant(&format!("sum by (instance_name) (rate(scale_api_http_request_duration_seconds_count{{{served}}}[{recent}]))")).await?;
    // Processes that started within the rates' window (the app's own start time: scale-api and
    // prom-client both export it).
    let recent_start = p.instant(&format!(r#"max by (instance_name) (process_start_time_seconds{{job="app"}}) > time() - {recent_s}"#)).await?;
    let p99 = p.instant(&format!("histogram_quantile(0.99, sum by (le, instance_name) (rate(scale_api_http_request_duration_seconds_bucket[{recent}])))")).await?;
    let errors = p
        .instant(&format!(
            r#"100 * sum by (instance_name) (rate(scale_api_http_request_duration_seconds_count{{status=~"5..",{served}}}[{recent}])) / sum by (instance_name) (rate(scale_api_http_request_duration_seconds_count{{{served}}}[{recent}]))"#
        ))
        .await?;
    // The same three per instance as the load balancer saw them (mtail over nginx's access log,
    // by upstream address): any app has these, whether or not it measures its own requests.
    let lb_rps = p.instant(&format!("sum by (upstream) (rate(scalectl_nginx_upstream_responses_total[{recent}]))")).await?;
    let lb_p99 = p.instant(&format!("histogram_quantile(0.99, sum by (le, upstream) (rate(scalectl_nginx_upstream_response_seconds_bucket[{recent}])))")).await?;
    let lb_errors = p
        .instant(&format!(r#"100 * sum by (upstream) (rate(scalectl_nginx_upstream_responses_total{{code=~"5.."}}[{recent}])) / sum by (upstream) (rate(scalectl_nginx_upstream_responses_total[{recent}]))"#))
        .await?;
    // How long ready work waits to run: scale-api's runtime, or Node's event loop (prom-client).
    let delay = p.range("max by (instance_name) (scale_api_runtime_scheduling_delay_seconds or nodejs_eventloop_lag_p99_seconds) * 1000", window, step, end).await?;
    let resident = p.range(r#"process_resident_memory_bytes{job="app"} or on (instance_name) scalectl_instance_memory_bytes"#, window, step, end).await?;
    // Open files at their peak in the window: a burst that came near the limit (and was closed, by
    // the clients or by a header timeout, before now) already had new connections refused.
    let open_fds = p
        .instant(&format!(r#"max_over_time(process_open_fds{{job="app"}}[{w}]) or on (instance_name) max_over_time(scalectl_instance_open_fds[{w}])"#))
        .await?;
    let max_fds = p.instant(r#"process_max_fds{job="app"} or on (instance_name) scalectl_instance_max_fds"#).await?;
    let in_flight = p.instant("sum by (instance_name) (scale_api_http_requests_in_flight)").await?;
    let rejected = p.instant(&format!("sum by (instance_name) (rate(scale_api_heavy_pool_rejected_total[{recent}]))")).await?;
    let cpu = p.range(&format!(r#"100 * (1 - avg by (host) (rate(node_cpu_seconds_total{{mode="idle"}}[{point}])))"#), cpu_window, step, end).await?;
    let cores = p.instant(r#"count by (host) (node_cpu_seconds_total{mode="idle"})"#).await?;
    // Hosts that report the same boot time share a kernel (containers on one machine, as the
    // lab's are): they see the same CPU, so the app's share there is all their instances'.
    let boot = p.instant("max by (host) (node_boot_time_seconds)").await?;
    // The app's own share of each host: its instances' CPU time against the host's cores.
    let app_cpu = p
        .range(
            &format!(r#"100 * (sum by (host) (rate(process_cpu_seconds_total{{job="app"}}[{point}])) or sum by (host) (rate(scalectl_instance_cpu_seconds_total[{point}]))) / on (host) count by (host) (node_cpu_seconds_total{{mode="idle"}})"#),
            cpu_window,
            step,
            end,
        )
        .await?;
    let mem = p.instant("100 * node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes").await?;
    // Per host, the free share of the disk that holds /var/log (the alert rule DiskFilling asks the same).
    let disk = p.instant(&format!("100 * min by (host) (node_filesystem_avail_bytes{LOG_DISKS} / node_filesystem_size_bytes{LOG_DISKS})")).await?;

    let mut s = Snapshot {
        format_version: SNAPSHOT_FORMAT_VERSION,
        topology: t.name.clone(),
        taken_at: humantime::format_rfc3339_seconds(now).to_string(),
        window_s: window.as_secs(),
        thresholds,
        program: t.app.program.is_some(),
        ..Default::default()
    };
    let mut per_host: BTreeMap<String, u32> = BTreeMap::new();
    // Scraped instances first; then those only their host reports (a program without metrics).
    let mut up = up;
    for (l, v) in &unit_up {
        let name = l.get("instance_name");
        if name.is_some() && !up.iter().any(|(u, _)| u.get("instance_name") == name) {
            up.push((l.clone(), *v));
        }
    }
    // And on docker the replicas the engine runs that nothing scrapes (a program without metrics):
    // running, and judged from the load balancer's answers.
    for (&name, &addr) in &upstreams {
        if !up.iter().any(|(u, _)| u.get("instance_name") == Some(name)) {
            let slot = name.rsplit_once('-').map_or(name.as_str(), |(slot, _)| slot);
            let labels = BTreeMap::from([("instance_name".to_string(), name.clone()), ("host".to_string(), slot.to_string()), ("upstream".to_string(), addr.clone())]);
            up.push((labels, 1.0));
        }
    }
    for (l, v) in &up {
        let name = l.get("instance_name").cloned().unwrap_or_default();
        let host = l.get("host").cloned().unwrap_or_default();
        *per_host.entry(host.clone()).or_default() += 1;
        let weight = t.hosts.iter().find(|h| h.name == host).map_or(1, |h| h.weight);
        // The address the load balancer logs for this instance (targets.json's `upstream`).
        let addr = upstreams.get(&name).copied().or(l.get("upstream")).or(l.get("instance")).cloned().unwrap_or_default();
        let own_or_lb = |own: &Samples, lb: &Samples| by(own, "instance_name", &name).or_else(|| by(lb, "upstream", &addr));
        s.instances.push(InstanceSample {
            up: *v == 1.0,
            weight,
            restarts: from_target.instances.get(&name).map(|i| i.crash_restarts).unwrap_or_else(|| by(&unit_restarts, "instance_name", &name).unwrap_or(0.0).round() as u32),
            requests_per_s: own_or_lb(&rps, &lb_rps).unwrap_or(0.0),
            started_recently: by(&recent_start, "instance_name", &name).is_some(),
            p99_ms: own_or_lb(&p99, &lb_p99).map(|x| x * 1000.0),
            error_rate_percent: own_or_lb(&errors, &lb_errors).unwrap_or(0.0),
            scheduling_delay_ms: series_by(&delay, "instance_name", &name),
            resident_bytes: series_by(&resident, "instance_name", &name),
            open_fds: by(&open_fds, "instance_name", &name),
            max_fds: by(&max_fds, "instance_name", &name),
            in_flight: by(&in_flight, "instance_name", &name).unwrap_or(0.0),
            heavy_rejected_per_s: by(&rejected, "instance_name", &name).unwrap_or(0.0),
            instance: name,
            host,
        });
    }
    for h in &t.hosts {
        s.hosts.push(HostSample {
            host: h.name.clone(),
            app: h.has(crate::topology::Role::App),
            cores: by(&cores, "host", &h.name).map_or(h.cores.unwrap_or(1), |c| c as u32),
            instances: per_host.get(&h.name).copied().unwrap_or(0),
            cpu_busy_percent: series_by(&cpu, "host", &h.name),
            app_cpu_percent: series_by(&app_cpu, "host", &h.name),
            memory_available_percent: by(&mem, "host", &h.name),
            disk_available_percent: by(&disk, "host", &h.name),
        });
    }
    share_kernels(&mut s.hosts, &boot);
    // Wherever the fleet runs Redis, with its exporter (a host's role, or docker's container).
    if t.redis.is_some() {
        let redis_up = confirmed(p, r#"max(redis_up) or max(up{job="redis"}) * 0"#, step, &mut waited).await?;
        let r_p99 = p.instant(&format!("histogram_quantile(0.99, sum by (le) (rate(scale_api_redis_operation_duration_seconds_bucket[{recent}])))")).await?;
        let used = p.instant("max(redis_memory_used_bytes)").await?;
        let max = p.instant("max(redis_memory_max_bytes)").await?;
        let errs = p.instant(&format!("sum(rate(scale_api_redis_errors_total[{recent}]))")).await?;
        // Never scraped yet (Prometheus just started): not judged, rather than "down".
        s.redis = (!redis_up.is_empty()).then(|| RedisSample {
            up: first(&redis_up) == Some(1.0),
            p99_ms: first(&r_p99).map(|x| x * 1000.0),
            memory_used_bytes: first(&used).unwrap_or(0.0),
            memory_max_bytes: first(&max).unwrap_or(0.0),
            errors_per_s: first(&errs).unwrap_or(0.0),
        });
    }
    if let Some((workers, queue)) = t.app.workers.as_ref().and_then(|w| w.queue.as_ref().map(|q| (w, q))) {
        // The recorded series of the queue (the rules' scalectl_queue_*), and the workers' units.
        let sel = format!("{{queue=\"{}\"}}", queue.name);
        let waiting = p.range(&format!("scalectl_queue_waiting{sel}"), window, step, end).await?;
        let active = p.range(&format!("scalectl_queue_active{sel}"), window, step, end).await?;
        let failed = p.instant(&format!("delta(scalectl_queue_failed{sel}[{w}])")).await?;
        let ended = p.instant(&format!("delta(scalectl_queue_ended{sel}[{w}])")).await?;
        let oldest = p.instant(&format!("max(scalectl_queue_oldest_waiting_seconds{sel})")).await?;
        // A worker measured stopped is asked again once the next scrape is due: right after a
        // deploy the last measure may be from before it started.
        let mut waited_workers = false;
        let units = confirmed(p, "max by (worker) (scalectl_worker_up)", step, &mut waited_workers).await?;
        let measured = |up: f64| units.iter().filter(|(_, v)| *v == up).count() as u32;
        let cores_of = |h: &crate::topology::Host| s.hosts.iter().find(|x| x.host == h.name).map_or(1, |x| x.cores);
        // Counted by the target where nothing reports the workers to Prometheus (docker).
        let (wanted, up, down) = match from_target.workers {
            Some(w) => (w.wanted, w.running, w.stopped),
            None => (t.hosts.iter().map(|h| t.workers_on(h, cores_of(h)).len() as u32).sum(), measured(1.0), measured(0.0)),
        };
        s.queue = Some(QueueSample {
            queue: queue.name.clone(),
            waiting: waiting.first().map(|(_, v)| v.clone()).unwrap_or_default(),
            active: active.first().map(|(_, v)| v.clone()).unwrap_or_default(),
            failed: first(&failed).unwrap_or(0.0).max(0.0),
            ended: first(&ended).unwrap_or(0.0).max(0.0),
            workers: wanted,
            workers_up: up,
            workers_down: down,
            instances_per_host: workers.per_host(),
            oldest_waiting_s: first(&oldest),
            on_hosts: from_target.workers.is_none(),
        });
    }
    if let Some(db) = &t.database {
        s.database = Some(database(p, db, window, step, end).await?);
    }
    let nginx = p.instant("max(nginx_up)").await?;
    if let Some((_, v)) = nginx.first() {
        let active = p.instant("sum(nginx_connections_active)").await?;
        s.nginx = Some(NginxSample { up: *v == 1.0, active_connections: active.first().map_or(0.0, |x| x.1) });
    }
    Ok(s)
}

/// The database tier from its members' postgres exporters (scalectl's queries beside the
/// exporter's own) and scale-api's pools. The statements and tables are summed over the members:
/// reads served by replicas count as the database's time too.
async fn database(p: &Prometheus, db: &crate::topology::Database, window: Duration, step: Duration, end: f64) -> anyhow::Result<DatabaseSample> {
    let w = format!("{}s", window.as_secs());
    let sel = r#"job="postgres""#;
    let max = p.instant(&format!("max(pg_settings_max_connections{{{sel}}})")).await?;
    let connections = p.instant(&format!("sum by (host) (pg_stat_activity_count{{{sel}}})")).await?;
    let replica = p.instant(&format!("max by (host) (scalectl_database_is_replica{{{sel}}})")).await?;
    let lag = p.instant(&format!("max by (member) (scalectl_database_replica_lag_bytes{{{sel}}})")).await?;
    let waiting = p.range("sum(scale_api_db_pool_waiting)", window, step, end).await?;
    let total = p.instant(&format!("sum(increase(scalectl_database_statements_seconds{{{sel}}}[{w}]))")).await?;
    let seconds = p.instant(&format!("topk(10, sum by (statement) (increase(scalectl_database_statement_seconds{{{sel}}}[{w}])))")).await?;
    let calls = p.instant(&format!("sum by (statement) (increase(scalectl_database_statement_calls{{{sel}}}[{w}]))")).await?;
    let rows = p.instant(&format!("topk(10, sum by (table) (increase(scalectl_database_table_seq_rows_read{{{sel}}}[{w}])))")).await?;
    let seq = p.instant(&format!("sum by (table) (increase(scalectl_database_table_seq_scans{{{sel}}}[{w}]))")).await?;
    let idx = p.instant(&format!("sum by (table) (increase(scalectl_database_table_index_scans{{{sel}}}[{w}]))")).await?;
    let finite = |v: f64| v.is_finite().then_some(v);
    let label = |l: &BTreeMap<String, String>, k: &str| l.get(k).cloned().unwrap_or_default();
    let mut members: Vec<DatabaseMember> = replica
        .iter()
        .map(|(l, v)| {
            let host = label(l, "host");
            DatabaseMember {
                replica: *v == 1.0,
                connections: by(&connections, "host", &host).unwrap_or(0.0),
                lag_bytes: by(&lag, "member", &host),
                host,
            }
        })
        .collect();
    members.sort_by(|a, b| a.host.cmp(&b.host));
    let mut statements: Vec<StatementSample> = seconds
        .iter()
        .filter_map(|(l, v)| {
            let statement = label(l, "statement");
            Some(StatementSample { calls: by(&calls, "statement", &statement).unwrap_or(0.0), seconds: finite(*v)?, statement })
        })
        .collect();
    statements.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    let mut tables: Vec<TableSample> = rows
        .iter()
        .filter_map(|(l, v)| {
            let table = label(l, "table");
            Some(TableSample { seq_scans: by(&seq, "table", &table).unwrap_or(0.0), index_scans: by(&idx, "table", &table).unwrap_or(0.0), seq_rows_read: finite(*v)?, table })
        })
        .collect();
    tables.sort_by(|a, b| b.seq_rows_read.total_cmp(&a.seq_rows_read));
    Ok(DatabaseSample {
        max_connections: first(&max).unwrap_or(0.0),
        replica_max_lag_bytes: db.replica_max_lag as f64,
        members,
        pool_waiting: waiting.first().map(|(_, v)| v.clone()).unwrap_or_default(),
        statement_seconds: first(&total).unwrap_or(0.0),
        statements,
        tables,
    })
}

/// Hosts with the same boot time (to the second) run on one kernel and report the same CPU: each
/// gets, as the app's CPU, the sum of the app's CPU on all of them.
fn share_kernels(hosts: &mut [HostSample], boot: &Samples) {
    let mut groups: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, h) in hosts.iter().enumerate() {
        if let Some(b) = by(boot, "host", &h.host) {
            groups.entry(b.round() as i64).or_default().push(i);
        }
    }
    for members in groups.values().filter(|m| m.len() > 1) {
        let len = members.iter().map(|&i| hosts[i].app_cpu_percent.len()).filter(|&l| l > 0).min().unwrap_or(0);
        if len == 0 {
            continue;
        }
        let total: Vec<f64> = (0..len).map(|k| members.iter().filter_map(|&i| hosts[i].app_cpu_percent.get(k)).sum()).collect();
        for &i in members {
            hosts[i].app_cpu_percent = total.clone();
        }
    }
}

/// One series per instance name, the one scraped last. An instance whose labels changed (its
/// `upstream` once the load balancer's address for it is known, a release that moved it) has both
/// series in Prometheus for a while: the old one until its target is dropped, or for five minutes
/// when Prometheus restarted meanwhile (it then writes no staleness marker). `stamps` holds each
/// series' last scrape time (`timestamp(...)` of the same query, which drops the metric name).
fn newest_per_instance(samples: Samples, stamps: &Samples) -> Samples {
    let stamp = |l: &BTreeMap<String, String>| {
        stamps.iter().find(|(s, _)| s.iter().all(|(k, v)| l.get(k) == Some(v)) && l.keys().filter(|k| *k != "__name__").count() == s.len()).map_or(f64::NEG_INFINITY, |(_, t)| *t)
    };
    let mut newest: Vec<(BTreeMap<String, String>, f64, f64)> = Vec::new();
    for (l, v) in samples {
        let t = stamp(&l);
        match newest.iter_mut().find(|(n, _, _)| l.contains_key("instance_name") && n.get("instance_name") == l.get("instance_name")) {
            Some(kept) if kept.2 >= t => {}
            Some(kept) => *kept = (l, v, t),
            None => newest.push((l, v, t)),
        }
    }
    newest.into_iter().map(|(l, v, _)| (l, v)).collect()
}

/// An up-or-down query whose "down" is asked again once the next scrape is due (at most one wait
/// per collect): one failed scrape is not yet an outage, and right after a deploy the last scrape
/// may be from before the service started.
async fn confirmed(p: &Prometheus, q: &str, step: Duration, waited: &mut bool) -> anyhow::Result<Samples> {
    let first = p.instant(q).await?;
    if !first.is_empty() && first.iter().all(|(_, v)| *v == 1.0) {
        return Ok(first);
    }
    if !*waited {
        *waited = true;
        tokio::time::sleep(step + Duration::from_secs(1)).await;
    }
    p.instant(q).await
}

/// Thresholds from the topology's alerts, 70% CPU for scaling out.
pub fn thresholds(t: &Topology) -> Thresholds {
    let a = &t.observability.alerts;
    Thresholds {
        latency_p99_ms: a.latency_p99_ms as f64,
        error_rate_percent: a.error_rate_percent,
        cpu_scale_out_percent: t.autoscaling.as_ref().map_or(70.0, |x| x.cpu_scale_out),
        memory_available_percent: a.memory_available_percent,
        fds_percent: a.fds_percent,
        scheduling_delay_ms: a.scheduling_delay_ms as f64,
        ..Thresholds::default()
    }
}

/// Where the fleet's Prometheus answers: the lab's published port when this topology's lab is up,
/// else the monitor host's address; for the docker target, its published port. (On docker there
/// are no node or Redis exporters yet: doctor judges the replicas only.)
/// None: no monitor host, so every instance and exporter is scraped directly (hosts only: a docker
/// engine's containers are reached through its Prometheus).
pub fn prometheus_url(t: &Topology) -> anyhow::Result<Option<String>> {
    // On a Docker engine, Prometheus is a container: reachable where the topology publishes it.
    if t.target == crate::topology::Target::Docker {
        return match t.lab.publish.prometheus {
            Some(port) => Ok(Some(format!("http://127.0.0.1:{port}"))),
            None => anyhow::bail!("the topology does not publish its Prometheus container (lab.publish.prometheus): publish it, or pass --prometheus URL"),
        };
    }
    if matches!(crate::exec::lab::LabDir::of(t), Ok(Some(_)))
        && let Some(port) = t.lab.publish.prometheus
    {
        return Ok(Some(format!("http://127.0.0.1:{port}")));
    }
    Ok(t.hosts.iter().find(|h| h.has(crate::topology::Role::Monitor)).map(|h| {
        let addr = if h.address.contains(':') { format!("[{}]", h.address) } else { h.address.clone() };
        format!("http://{addr}:{}", t.observability.prometheus_port)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An endpoint that answers without end (a hostile /metrics, a proxy gone wrong) is read up to
    /// the cap and refused, over a real socket.
    #[test]
    fn an_endless_answer_is_refused_at_the_cap() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut c, _)) = listener.accept() {
                let mut buf = [0u8; 2048];
                let _ = c.read(&mut buf);
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "m".repeat(64 * 1024));
                // At most 64 MiB, stopped as soon as the reader hangs up.
                for _ in 0..1024 {
                    if c.write_all(chunk.as_bytes()).is_err() {
                        return;
                    }
                }
            }
        });
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let e = rt.block_on(async {
            let response = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap();
            body(response, 1 << 20).await.unwrap_err()
        });
        assert!(e.to_string().contains("larger than 1 MiB"), "{e}");
    }

    /// Two series for one instance (its `upstream` label changed, Prometheus restarted before it
    /// could mark the old one stale): doctor keeps the one scraped last, one instance stays one.
    #[test]
    fn an_instance_whose_labels_changed_is_counted_once_by_its_newest_series() {
        let l = |name: &str, upstream: &str, metric: bool| {
            let mut m = BTreeMap::from([("job".to_string(), "app".to_string()), ("instance_name".to_string(), name.to_string()), ("upstream".to_string(), upstream.to_string())]);
            if metric {
                m.insert("__name__".into(), "up".into());
            }
            m
        };
        let up = vec![(l("app-1-4000", "10.0.0.2:4000", true), 1.0), (l("app-1-4000", "app-1:4000", true), 0.0), (l("app-1-4001", "app-1:4001", true), 1.0), (l("app-1-4001", "10.0.0.2:4001", true), 1.0)];
        let stamps = vec![(l("app-1-4000", "10.0.0.2:4000", false), 1000.0), (l("app-1-4000", "app-1:4000", false), 990.0), (l("app-1-4001", "app-1:4001", false), 985.0), (l("app-1-4001", "10.0.0.2:4001", false), 999.0)];
        let kept = newest_per_instance(up, &stamps);
        let seen: Vec<(&str, &str, f64)> = kept.iter().map(|(l, v)| (l["instance_name"].as_str(), l["upstream"].as_str(), *v)).collect();
        assert_eq!(seen, [("app-1-4000", "10.0.0.2:4000", 1.0), ("app-1-4001", "10.0.0.2:4001", 1.0)]);
    }

    #[test]
    fn hosts_on_one_kernel_share_the_apps_cpu() {
        let host = |name: &str, app: Vec<f64>| HostSample { host: name.into(), app: true, cores: 2, app_cpu_percent: app, ..Default::default() };
        let mut hosts = vec![host("app-1", vec![30.0, 32.0]), host("app-2", vec![31.0, 29.0, 40.0]), host("lb-1", vec![]), host("far", vec![5.0])];
        let boot = |h: &str, t: f64| (BTreeMap::from([("host".to_string(), h.to_string())]), t);
        let samples = vec![boot("app-1", 1000.2), boot("app-2", 999.9), boot("lb-1", 1000.0), boot("far", 5000.0)];
        share_kernels(&mut hosts, &samples);
        assert_eq!(hosts[0].app_cpu_percent, vec![61.0, 61.0]);
        assert_eq!(hosts[1].app_cpu_percent, vec![61.0, 61.0]);
        assert_eq!(hosts[3].app_cpu_percent, vec![5.0], "a host of its own keeps its own");
    }
}

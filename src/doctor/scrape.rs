//! collect's other half, for a fleet without a Prometheus to ask: every scale-api instance's
//! /metrics, and each host's exporters where they answer, scraped twice an interval apart, with
//! rates derived from the differences. A host at a loopback address is this machine: its CPU and
//! memory come from sysinfo. Like collect.rs, this does I/O and nothing else: the numbers go into
//! a Snapshot that the tree judges.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use prometheus_parse::{Scrape, Value};

use super::snapshot::*;
use crate::topology::{Role, Topology};

/// One scrape of one endpoint, and when it finished.
struct Reading {
    at: Instant,
    scrape: Scrape,
}

impl Reading {
    /// The sum of a metric's samples whose labels match every (name, predicate).
    fn sum(&self, metric: &str, matches: impl Fn(&prometheus_parse::Sample) -> bool) -> Option<f64> {
        let mut found = None;
        for s in self.scrape.samples.iter().filter(|s| s.metric == metric && matches(s)) {
            if let Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) = s.value {
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }

    fn value(&self, metric: &str) -> Option<f64> {
        self.sum(metric, |_| true)
    }

    fn max(&self, metric: &str) -> Option<f64> {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == metric)
            .filter_map(|s| if let Value::Gauge(v) | Value::Untyped(v) = s.value { Some(v) } else { None })
            .reduce(f64::max)
    }

    /// Cumulative counts per upper bound of a histogram, summed over its label sets.
    fn buckets(&self, metric: &str) -> BTreeMap<u64, (f64, f64)> {
        let mut out: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for s in self.scrape.samples.iter().filter(|s| s.metric == metric) {
            if let Value::Histogram(hs) = &s.value {
                for h in hs {
                    // Keyed by the bound's bits: bounds are exact copies of the exposition's numbers.
                    out.entry(h.less_than.to_bits()).or_insert((h.less_than, 0.0)).1 += h.count;
                }
            }
        }
        out
    }
}

async fn read(client: &reqwest::Client, url: &str) -> Option<Reading> {
    let response = client.get(url).send().await.ok()?.error_for_status().ok()?;
    let text = super::collect::body(response, super::collect::MAX_BODY).await.ok()?;
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).ok()?;
    Some(Reading { at: Instant::now(), scrape })
}

fn rate(a: Option<f64>, b: Option<f64>, dt: f64) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if dt > 0.0 => Some(((b - a) / dt).max(0.0)),
        _ => None,
    }
}

/// The q-quantile of the observations between two readings of a histogram, interpolated within a
/// bucket the way Prometheus' histogram_quantile does. None without observations.
pub fn quantile(q: f64, before: &BTreeMap<u64, (f64, f64)>, after: &BTreeMap<u64, (f64, f64)>) -> Option<f64> {
    let mut bounds: Vec<(f64, f64)> =
        after.iter().map(|(k, (le, n))| (*le, n - before.get(k).map_or(0.0, |b| b.1))).collect();
    bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = bounds.last().map(|b| b.1)?;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for (le, n) in bounds {
        if n >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let within = if n > prev.1 { (rank - prev.1) / (n - prev.1) } else { 1.0 };
            return Some(prev.0 + (le - prev.0) * within);
        }
        prev = (le, n);
    }
    Some(prev.0)
}

fn host_url(address: &str, port: u16) -> String {
    if address.contains(':') { format!("http://[{address}]:{port}/metrics") } else { format!("http://{address}:{port}/metrics") }
}

fn is_loopback(address: &str) -> bool {
    address == "localhost" || address.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Snapshot the fleet by scraping it directly over `interval`.
pub async fn collect(t: &Topology, interval: Duration, thresholds: Thresholds) -> anyhow::Result<Snapshot> {
    use crate::topology::ports;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let now = std::time::SystemTime::now();
    let mut local = sysinfo::System::new().map_err(|e| anyhow::anyhow!("cannot read this machine's CPU and memory: {e}"))?;
    local.refresh_cpu_all();
    local.refresh_memory();
    let local_cores = local.cpus().len().max(1) as u32;

    // What to scrape: each instance, and the exporters of each host.
    let cores_of = |h: &crate::topology::Host| h.cores.unwrap_or(if is_loopback(&h.address) { local_cores } else { 1 });
    let mut instances: Vec<(String, String, u16, u32)> = Vec::new(); // host, address, port, weight
    for h in t.hosts.iter().filter(|h| h.has(Role::App)) {
        for i in 0..t.instances_on(h, cores_of(h)) {
            if let Ok(port) = u16::try_from(u32::from(t.app.port) + i) {
                instances.push((h.name.clone(), h.address.clone(), port, h.weight));
            }
        }
    }
    let mut urls: Vec<String> = instances.iter().map(|(_, a, p, _)| host_url(a, *p)).collect();
    urls.extend(t.hosts.iter().map(|h| host_url(&h.address, ports::NODE_EXPORTER)));
    let redis_host = t.hosts.iter().find(|h| h.has(Role::Redis));
    let lb_host = t.hosts.iter().find(|h| h.has(Role::Lb));
    urls.extend(redis_host.map(|h| host_url(&h.address, ports::REDIS_EXPORTER)));
    urls.extend(lb_host.map(|h| host_url(&h.address, ports::NGINX_EXPORTER)));

    let scrape_all = |urls: &[String]| {
        let client = client.clone();
        let urls = urls.to_vec();
        async move { futures_util::future::join_all(urls.iter().map(|u| read(&client, u))).await }
    };
    let first = scrape_all(&urls).await;
    tokio::time::sleep(interval).await;
    local.refresh_cpu_usage();
    local.refresh_memory();
    let second = scrape_all(&urls).await;
    let pair = |i: usize| (first[i].as_ref(), second[i].as_ref());

    let mut s = Snapshot {
        format_version: SNAPSHOT_FORMAT_VERSION,
        topology: t.name.clone(),
        taken_at: humantime::format_rfc3339_seconds(now).to_string(),
        window_s: interval.as_secs().max(1),
        thresholds,
        ..Default::default()
    };
    let mut per_host: BTreeMap<String, u32> = BTreeMap::new();
    // Cores the app's instances used between the two readings, per host.
    let mut app_cores: BTreeMap<String, f64> = BTreeMap::new();
    let mut redis = RedisReadings::default();
    for (i, (host, _, port, weight)) in instances.iter().enumerate() {
        *per_host.entry(host.clone()).or_default() += 1;
        let (a, b) = pair(i);
        if let (Some(a), Some(b)) = (a, b)
            && let Some(used) = rate(a.value("process_cpu_seconds_total"), b.value("process_cpu_seconds_total"), b.at.duration_since(a.at).as_secs_f64())
        {
            *app_cores.entry(host.clone()).or_default() += used;
        }
        s.instances.push(instance_sample(format!("{host}-{port}"), host, *weight, a, b, &mut redis));
    }
    let node_base = instances.len();
    for (j, h) in t.hosts.iter().enumerate() {
        let (a, b) = pair(node_base + j);
        // Restarts after a failure, as systemd counts them (NRestarts, through scalectl-instances
        // and the node exporter) for every app alike: a planned restart is not one.
        if let (Some(a), Some(b)) = (a, b) {
            for sample in s.instances.iter_mut().filter(|i| i.host == h.name) {
                let of = |r: &Reading| r.sum("scalectl_instance_restarts_total", |x| x.labels.get("instance_name") == Some(sample.instance.as_str()));
                sample.restarts = (of(b).unwrap_or(0.0) - of(a).unwrap_or(0.0)).max(0.0).round() as u32;
            }
        }
        let local = is_loopback(&h.address).then_some((&local, local_cores));
        let mut sample = host_sample(h, a, b, local, per_host.get(&h.name).copied().unwrap_or(0));
        if let Some(used) = app_cores.get(&h.name) {
            sample.app_cpu_percent = vec![100.0 * used / f64::from(sample.cores.max(1))];
        }
        s.hosts.push(sample);
    }
    let mut next = node_base + t.hosts.len();
    if redis_host.is_some() {
        // Judged only where its exporter answers: without it, "down" and "unreachable" look alike.
        if let (_, Some(b)) = pair(next) {
            s.redis = Some(RedisSample {
                up: b.value("redis_up") == Some(1.0),
                p99_ms: quantile(0.99, &redis.before, &redis.after).map(|x| x * 1000.0),
                memory_used_bytes: b.value("redis_memory_used_bytes").unwrap_or(0.0),
                memory_max_bytes: b.value("redis_memory_max_bytes").unwrap_or(0.0),
                errors_per_s: redis.errors_per_s,
            });
        }
        next += 1;
    }
    if lb_host.is_some()
        && let (_, Some(b)) = pair(next)
    {
        s.nginx = Some(NginxSample { up: b.value("nginx_up") == Some(1.0), active_connections: b.value("nginx_connections_active").unwrap_or(0.0) });
    }
    Ok(s)
}

/// Redis latency and errors as the instances see them, summed over every instance.
#[derive(Default)]
struct RedisReadings {
    before: BTreeMap<u64, (f64, f64)>,
    after: BTreeMap<u64, (f64, f64)>,
    errors_per_s: f64,
}

/// One instance from its two readings: rates, p99 and restarts from the differences.
fn instance_sample(instance: String, host: &str, weight: u32, a: Option<&Reading>, b: Option<&Reading>, redis: &mut RedisReadings) -> InstanceSample {
    const REQUESTS: &str = "scale_api_http_request_duration_seconds";
    let mut sample = InstanceSample { instance, host: host.to_string(), up: b.is_some(), weight, ..Default::default() };
    if let (Some(a), Some(b)) = (a, b) {
        let dt = b.at.duration_since(a.at).as_secs_f64();
        let count = |r: &Reading| r.value(&format!("{REQUESTS}_count"));
        let errors = |r: &Reading| r.sum(&format!("{REQUESTS}_count"), |s| s.labels.get("status").is_some_and(|st| st.starts_with('5')));
        sample.requests_per_s = rate(count(a), count(b), dt).unwrap_or(0.0);
        let served = count(b).unwrap_or(0.0) - count(a).unwrap_or(0.0);
        if served > 0.0 {
            sample.error_rate_percent = 100.0 * (errors(b).unwrap_or(0.0) - errors(a).unwrap_or(0.0)) / served;
        }
        sample.p99_ms = quantile(0.99, &a.buckets(REQUESTS), &b.buckets(REQUESTS)).map(|x| x * 1000.0);
        sample.scheduling_delay_ms = [a, b].iter().filter_map(|r| r.max("scale_api_runtime_scheduling_delay_seconds")).map(|x| x * 1000.0).collect();
        sample.resident_bytes = [a, b].iter().filter_map(|r| r.value("process_resident_memory_bytes")).collect();
        sample.heavy_rejected_per_s = rate(a.value("scale_api_heavy_pool_rejected_total"), b.value("scale_api_heavy_pool_rejected_total"), dt).unwrap_or(0.0);
        for (k, v) in a.buckets("scale_api_redis_operation_duration_seconds") {
            redis.before.entry(k).or_insert((v.0, 0.0)).1 += v.1;
        }
        for (k, v) in b.buckets("scale_api_redis_operation_duration_seconds") {
            redis.after.entry(k).or_insert((v.0, 0.0)).1 += v.1;
        }
        redis.errors_per_s += rate(a.value("scale_api_redis_errors_total"), b.value("scale_api_redis_errors_total"), dt).unwrap_or(0.0);
    }
    if let Some(b) = b {
        sample.open_fds = b.value("process_open_fds");
        sample.max_fds = b.value("process_max_fds");
        sample.in_flight = b.value("scale_api_http_requests_in_flight").unwrap_or(0.0);
    }
    sample
}

/// One host: CPU and memory from its node exporter's two readings, or from sysinfo when it is
/// this machine (`local`, with its core count).
fn host_sample(h: &crate::topology::Host, a: Option<&Reading>, b: Option<&Reading>, local: Option<(&sysinfo::System, u32)>, instances: u32) -> HostSample {
    let mut cores = h.cores;
    let (cpu, mem) = if let Some((local, local_cores)) = local {
        cores = cores.or(Some(local_cores));
        let mem = 100.0 * local.available_memory() as f64 / local.total_memory().max(1) as f64;
        (Some(f64::from(local.global_cpu_usage())), Some(mem))
    } else if let (Some(a), Some(b)) = (a, b) {
        let idle = |r: &Reading| r.sum("node_cpu_seconds_total", |s| s.labels.get("mode") == Some("idle"));
        let all = |r: &Reading| r.value("node_cpu_seconds_total");
        let busy = match (idle(a), idle(b), all(a), all(b)) {
            (Some(i0), Some(i1), Some(t0), Some(t1)) if t1 > t0 => Some(100.0 * (1.0 - (i1 - i0) / (t1 - t0))),
            _ => None,
        };
        let cpus = b.scrape.samples.iter().filter(|s| s.metric == "node_cpu_seconds_total" && s.labels.get("mode") == Some("idle")).count();
        cores = cores.or((cpus > 0).then_some(cpus as u32));
        let mem = match (b.value("node_memory_MemAvailable_bytes"), b.value("node_memory_MemTotal_bytes")) {
            (Some(av), Some(total)) if total > 0.0 => Some(100.0 * av / total),
            _ => None,
        };
        (busy, mem)
    } else {
        (None, None)
    };
    // The disk that holds /var/log, as the node exporter reports it (the least free of /, /var and
    // /var/log, leaving out memory file systems).
    let disk = b.and_then(|b| {
        let disks = |metric: &str| -> BTreeMap<String, f64> {
            b.scrape
                .samples
                .iter()
                .filter(|s| s.metric == metric && matches!(s.labels.get("mountpoint"), Some("/" | "/var" | "/var/log")) && !matches!(s.labels.get("fstype"), Some("tmpfs" | "ramfs")))
                .filter_map(|s| match s.value {
                    Value::Gauge(v) | Value::Untyped(v) => Some((s.labels.get("mountpoint").unwrap_or("").to_string(), v)),
                    _ => None,
                })
                .collect()
        };
        let (avail, size) = (disks("node_filesystem_avail_bytes"), disks("node_filesystem_size_bytes"));
        avail.iter().filter_map(|(m, a)| size.get(m).filter(|s| **s > 0.0).map(|s| 100.0 * a / s)).reduce(f64::min)
    });
    HostSample {
        host: h.name.clone(),
        app: h.has(Role::App),
        cores: cores.unwrap_or(1),
        instances,
        cpu_busy_percent: cpu.into_iter().collect(),
        // Filled from the instances' own readings (see `collect`).
        app_cpu_percent: Vec::new(),
        memory_available_percent: mem,
        disk_available_percent: disk,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(pairs: &[(f64, f64)]) -> BTreeMap<u64, (f64, f64)> {
        pairs.iter().map(|(le, n)| (le.to_bits(), (*le, *n))).collect()
    }

    #[test]
    fn the_quantile_is_interpolated_within_its_bucket_from_the_difference_of_two_readings() {
        let before = hist(&[(0.1, 10.0), (1.0, 10.0), (f64::INFINITY, 10.0)]);
        // 100 new observations: 50 under 0.1 s, 50 between 0.1 and 1 s.
        let after = hist(&[(0.1, 60.0), (1.0, 110.0), (f64::INFINITY, 110.0)]);
        let p50 = quantile(0.5, &before, &after).unwrap();
        assert!((p50 - 0.1).abs() < 1e-9, "{p50}");
        let p99 = quantile(0.99, &before, &after).unwrap();
        assert!((p99 - (0.1 + 0.9 * 49.0 / 50.0)).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(0.99, &after, &after), None, "no observations in between");
    }

    #[test]
    fn observations_above_the_last_bound_report_that_bound() {
        let after = hist(&[(0.5, 0.0), (f64::INFINITY, 5.0)]);
        assert_eq!(quantile(0.99, &BTreeMap::new(), &after), Some(0.5));
    }

    #[test]
    fn scale_api_metrics_parse_into_what_the_tree_needs() {
        let text = "# TYPE scale_api_http_request_duration_seconds histogram\n\
scale_api_http_request_duration_seconds_bucket{method=\"GET\",route=\"/\",status=\"200\",le=\"0.005\"} 3\n\
scale_api_http_request_duration_seconds_bucket{method=\"GET\",route=\"/\",status=\"200\",le=\"+Inf\"} 4\n\
scale_api_http_request_duration_seconds_count{method=\"GET\",route=\"/\",status=\"200\"} 4\n\
scale_api_http_request_duration_seconds_count{method=\"GET\",route=\"/\",status=\"503\"} 1\n\
# TYPE process_open_fds gauge\nprocess_open_fds 13\n# EOF\n";
        let r = Reading { at: Instant::now(), scrape: Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap() };
        assert_eq!(r.value("scale_api_http_request_duration_seconds_count"), Some(5.0));
        assert_eq!(r.sum("scale_api_http_request_duration_seconds_count", |s| s.labels.get("status") == Some("503")), Some(1.0));
        assert_eq!(r.value("process_open_fds"), Some(13.0));
        let b = r.buckets("scale_api_http_request_duration_seconds");
        assert_eq!(b.values().map(|v| v.1).collect::<Vec<_>>(), [3.0, 4.0]);
    }
}

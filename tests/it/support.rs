//! What the end-to-end tests of both targets share: one test at a time, the load client, release
//! copies, and the behaviours checked on the lab and on docker alike (log shipping, dashboards).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The optimized scale-api that the README's test command builds.
pub(crate) fn release() -> PathBuf {
    let p = root().join("target/release/scale-api");
    assert!(p.is_file(), "{} is missing: run `cargo build --release -p scale-api` (scripts/test.sh does)", p.display());
    p
}

/// The debug scale-api: a binary of the workspace's other package, so cargo gives its path only
/// to that package's tests; the README's test command builds it first.
pub(crate) fn scale_api() -> PathBuf {
    let p = root().join("target/debug/scale-api");
    assert!(p.is_file(), "{} is missing: run `cargo build --workspace --bins` (scripts/test.sh does)", p.display());
    p
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One end-to-end test at a time in this process, lab and docker alike (see [`turn`]).
static TURN: Mutex<()> = Mutex::new(());

/// How a test shares the machine with the other test process scripts/test.sh runs beside this one.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Machine {
    /// Its deployment is its own, and what it checks holds however busy the machine is: a
    /// zero-failure test fails on a refused or failed request, not on a slow one.
    Shared,
    /// It judges CPU, latency or the event loop (doctor), which another deployment's load would
    /// change: no test of the other process runs meanwhile.
    Alone,
}

/// A test's turn: [`TURN`] in this process, and the machine as `Machine` says across processes
/// (a lock file, shared or exclusive; a turnstile lets an exclusive taker in before new sharers).
pub(crate) struct Turn {
    _machine: std::fs::File,
    _turn: std::sync::MutexGuard<'static, ()>,
    asked: Instant,
    got: Instant,
    machine: Machine,
}

/// Each end-to-end test's wait for its turn and its time with it, one line per test appended to
/// target/e2e-turns.log (scripts/test.sh prints the longest): what a run's time is spent on.
impl Drop for Turn {
    fn drop(&mut self) {
        use std::io::Write;
        let name = std::thread::current().name().unwrap_or("?").to_string();
        let machine = if self.machine == Machine::Alone { "alone" } else { "shared" };
        let line = format!("{:8.1} s held {:7.1} s waited {machine:6} {name}\n", self.got.elapsed().as_secs_f64(), (self.got - self.asked).as_secs_f64());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(root().join("target").join("e2e-turns.log"));
        if let Ok(mut log) = log {
            let _ = log.write_all(line.as_bytes());
        }
    }
}

pub(crate) fn turn(machine: Machine) -> Turn {
    let asked = Instant::now();
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let open = |name: &str| std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(root().join("target").join(name)).unwrap();
    let turnstile = open("e2e-turnstile.lock");
    turnstile.lock().unwrap();
    let file = open("e2e-machine.lock");
    match machine {
        Machine::Shared => file.lock_shared().unwrap(),
        Machine::Alone => file.lock().unwrap(),
    }
    drop(turnstile);
    Turn { _machine: file, _turn: turn, asked, got: Instant::now(), machine }
}

pub(crate) fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).pool_max_idle_per_host(0).build().unwrap()
}

/// The x-instance answers of n requests through a load balancer. Every request must be answered
/// with success by an instance (nginx's own error page names none): a failed one fails the test,
/// so "the old release serves everywhere" cannot pass with requests failing.
pub(crate) fn instances_seen_at(lb: &str, n: usize) -> BTreeSet<String> {
    let c = client();
    (0..n)
        .map(|i| {
            let r = c.get(format!("{lb}/")).send().unwrap_or_else(|e| panic!("GET {lb}/ (request {} of {n}) failed: {e:?}", i + 1));
            let status = r.status();
            let instance = r.headers().get("x-instance").and_then(|v| v.to_str().ok()).map(String::from);
            let body = r.text().unwrap_or_else(|e| panic!("GET {lb}/ (request {} of {n}): {status}, body cut: {e}", i + 1));
            assert!(status.is_success(), "GET {lb}/ (request {} of {n}) answered {status}: {body}", i + 1);
            instance.unwrap_or_else(|| panic!("GET {lb}/ (request {} of {n}) answered {status} without x-instance: {body}", i + 1))
        })
        .collect()
}

/// The instances answering at `lb`, asked until `want` of them have answered or `most` requests
/// were sent: under a balancer that picks the least busy instance, as least_conn does under
/// load, a fixed handful of requests can miss one that serves; a few hundred cannot.
pub(crate) fn instances_reached_at(lb: &str, want: usize, most: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..most.div_ceil(10) {
        seen.extend(instances_seen_at(lb, 10));
        if seen.len() >= want {
            break;
        }
    }
    seen
}

pub(crate) fn count_at(lb: &str) -> u64 {
    let r = client().get(format!("{lb}/count")).send().unwrap();
    let status = r.status();
    let body = r.text().unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("/count answered {status} with no JSON ({e}):\n{body}"));
    v["count"].as_u64().unwrap_or_else(|| panic!("/count answered {status}: {v}"))
}

/// When an operation under test ran: load must cover it (see [`Report::assert_covers`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    pub(crate) start: Instant,
    pub(crate) end: Instant,
}

/// Runs `f` and says when it ran.
pub(crate) fn timed<T>(f: impl FnOnce() -> T) -> (T, Span) {
    let start = Instant::now();
    let out = f();
    (out, Span { start, end: Instant::now() })
}

/// The longest stretch of an operation in which the load got no answer, above which the load did
/// not cover it: a deploy, a reload or a rotation that takes the service away for longer than this
/// is an outage, whatever the failure count says.
pub(crate) const MAX_SILENCE: Duration = Duration::from_secs(2);

/// How long a load runs at most when nobody stops it (a test that panics mid-operation). Longer
/// than any operation a load covers, on a machine the other test process keeps busy: the node
/// app's release and three reloads take 155 s alone and took over 300 s in CI beside the lab's
/// stream. An operation that outlasts it fails `assert_covers` as not covered, rather than as a
/// silence.
pub(crate) const LOAD_BOUND: Duration = Duration::from_secs(600);

/// Bounded load through the load balancer (loopback only) until stopped or [`LOAD_BOUND`].
///
/// A request counts as answered when its status is a success and its whole body arrived (an
/// answer cut after its headers is a failure). The clients keep connections alive, as real ones
/// do, and never send a request again: a request whose kept-alive connection was closed under it
/// failed, as it does for any client that does not resend (wrk, Python's `requests`), whatever
/// RFC 9112 would let a client retry. A roll closes no connection of nginx's: instances leave and
/// rejoin the balancer behind it through its runtime API, and neither reloads.
pub(crate) struct Load {
    what: String,
    stop: Arc<AtomicBool>,
    started: Instant,
    threads: Vec<std::thread::JoinHandle<Tally>>,
}

/// One client's record: when each answer arrived, what failed.
#[derive(Default)]
struct Tally {
    answered_at: Vec<Instant>,
    failed: Vec<String>,
    /// When this client stopped: asked to, or at its own time bound.
    stopped: Option<Instant>,
}

/// What a load saw, in full: [`Load::finish`] prints it, and the test judges it.
pub(crate) struct Report {
    what: String,
    pub(crate) failed: Vec<String>,
    started: Instant,
    ended: Instant,
    answered_at: Vec<Instant>,
}

/// Whether a sent request was answered: a success status and its whole body; else what went wrong.
pub(crate) fn answered(sent: reqwest::Result<reqwest::blocking::Response>) -> Result<(), String> {
    match sent.map(|r| (r.status(), r.bytes())) {
        Ok((status, Ok(_))) if status.is_success() => Ok(()),
        Ok((status, Ok(body))) => Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)]).trim())),
        Ok((status, Err(e))) => Err(format!("HTTP {status}, body cut: {e} ({:?})", std::error::Error::source(&e))),
        Err(e) => Err(format!("{e} ({:?})", std::error::Error::source(&e))),
    }
}

impl Load {
    pub(crate) fn start_at(lb: &'static str, threads: usize) -> Load {
        Load::start_url(format!("{lb}/"), threads)
    }

    /// Bounded load on one URL (loopback only) until stopped or [`LOAD_BOUND`].
    pub(crate) fn start_url(url: String, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let what = url.clone();
        let threads = (0..threads)
            .map(|_| {
                let (stop, url) = (stop.clone(), url.clone());
                std::thread::spawn(move || {
                    // reqwest sends nothing again by itself.
                    let c = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
                    let mut t = Tally::default();
                    let end = Instant::now() + LOAD_BOUND;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                        match answered(c.get(&url).send()) {
                            Ok(()) => t.answered_at.push(Instant::now()),
                            Err(e) => t.failed.push(e),
                        }
                    }
                    t.stopped = Some(Instant::now());
                    t
                })
            })
            .collect();
        Load { what, stop, started: Instant::now(), threads }
    }

    /// Stops the clients; prints and returns what they saw.
    pub(crate) fn finish(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut r = Report { what: self.what, failed: Vec::new(), started: self.started, ended: Instant::now(), answered_at: Vec::new() };
        for t in self.threads {
            let t = t.join().unwrap();
            r.failed.extend(t.failed);
            r.answered_at.extend(t.answered_at);
            // The load ended when its first client stopped: one that reached its time bound
            // before the operation ended did not cover it.
            r.ended = r.ended.min(t.stopped.unwrap_or(r.started));
        }
        r.answered_at.sort();
        eprintln!("{r}");
        r
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "load on {} for {:.1} s: {} answered, {} failed (none sent again)",
            self.what,
            (self.ended - self.started).as_secs_f64(),
            self.ok(),
            self.failed.len()
        )?;
        if let Some(first) = self.failed.first() {
            write!(f, " (first: {first})")?;
        }
        Ok(())
    }
}

impl Report {
    /// Requests answered.
    pub(crate) fn ok(&self) -> u64 {
        self.answered_at.len() as u64
    }

    /// The longest stretch of `span` in which no request was answered.
    pub(crate) fn longest_silence(&self, span: Span) -> Duration {
        let mut last = span.start;
        let mut longest = Duration::ZERO;
        for &at in self.answered_at.iter().filter(|&&at| at > span.start && at < span.end) {
            longest = longest.max(at - last);
            last = at;
        }
        longest.max(span.end.saturating_duration_since(last))
    }

    /// No request failed. `context` (nginx's error log, the command's output) is shown if one did.
    pub(crate) fn assert_no_failure(&self, context: &str) {
        assert!(self.failed.is_empty(), "{self}\nfailures: {:#?}\n{context}", &self.failed[..self.failed.len().min(10)]);
    }

    /// The load covered the operation that ran during `span`: it began before it and ran until
    /// after it, no request failed, and answers kept coming all through it (never more than
    /// [`MAX_SILENCE`] without one), so that what was served is in proportion to its time.
    pub(crate) fn assert_covers(&self, span: Span, context: &str) {
        self.assert_covers_within(span, MAX_SILENCE, context);
    }

    /// [`Report::assert_covers`] with another bound on the longest silence, for an operation with
    /// a known, filed stall (the caller says which): it still fails on an outage past `bound`.
    pub(crate) fn assert_covers_within(&self, span: Span, bound: Duration, context: &str) {
        assert!(self.started <= span.start && self.ended >= span.end, "the load ({self}) did not run for the whole operation");
        self.assert_no_failure(context);
        let silence = self.longest_silence(span);
        eprintln!("longest stretch without an answer during the {:.1} s operation: {} ms", (span.end - span.start).as_secs_f64(), silence.as_millis());
        assert!(silence <= bound, "no answer for {} ms during the operation ({self})\n{context}", silence.as_millis());
    }
}

/// A copy of the release with different bytes (so a different release id) that runs the same.
pub(crate) fn new_release(tag: &str) -> tempfile::TempPath {
    let mut bytes = std::fs::read(release()).unwrap();
    bytes.extend_from_slice(format!("\nscalectl-test-release-{tag}-{}\n", std::process::id()).as_bytes());
    let f = tempfile::Builder::new().prefix("scale-api-").tempfile().unwrap();
    std::fs::write(f.path(), bytes).unwrap();
    f.into_temp_path()
}

pub(crate) fn collected_in(collector: &str, needle: &str) -> Vec<(String, String)> {
    let out = Command::new("docker").args(["exec", collector, "grep", "-rF", needle, "/var/log/scalectl/"]).output().unwrap();
    text(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(':').map(|(f, rest)| (f.to_string(), rest.to_string())))
        .collect()
}

/// A unique id for requests of one test run.
pub(crate) fn run_id(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{what}-{}-{nanos}", std::process::id())
}

/// The request ids (X-Request-Id) of the collected JSON lines, in the order found.
pub(crate) fn request_ids(lines: &[(String, String)]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|(_, l)| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["fields"]["request_id"].as_str().map(String::from))
        .collect()
}

/// One request with a unique X-Request-Id through the load balancer at `lb`: its log line must be
/// on the collector (`collected` greps it) within 5 s, once, in `/var/log/scalectl/<host>/scale-api-<port>.log`
/// for the instance that answered (`<host>-<port>`), with the request id and the instance.
pub(crate) fn request_id_reaches_the_collector(lb: &str, collected: &dyn Fn(&str) -> Vec<(String, String)>) {
    let id = run_id("trace");
    let r = client().get(format!("{lb}/")).header("X-Request-Id", &id).send().unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let instance = r.headers()["x-instance"].to_str().unwrap().to_string();
    let (host, port) = instance.rsplit_once('-').unwrap();
    let sent = Instant::now();
    let lines = loop {
        let lines = collected(&id);
        if !lines.is_empty() {
            break lines;
        }
        assert!(sent.elapsed() < Duration::from_secs(5), "request {id} did not reach the collector within 5 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("request id on the collector after {} ms", sent.elapsed().as_millis());
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0].0, format!("/var/log/scalectl/{host}/scale-api-{port}.log"));
    let entry: serde_json::Value = serde_json::from_str(&lines[0].1).unwrap_or_else(|e| panic!("not an instance's JSON line ({e}): {}", lines[0].1));
    assert_eq!(entry["fields"]["request_id"], id.as_str());
    assert_eq!(entry["fields"]["instance"], instance.as_str());
}

/// Requests through `lb` for 10 s with the collector stopped (`stop`), none of whose lines may
/// arrive meanwhile; then `start` it: every line must arrive within 60 s.
pub(crate) fn collector_outage_loses_no_line(lb: &str, collected: &dyn Fn(&str) -> Vec<(String, String)>, stop: &dyn Fn(), start: &dyn Fn()) {
    let run_id = run_id("outage");
    stop();
    let c = client();
    let stopped = Instant::now();
    let mut sent = 0;
    while stopped.elapsed() < Duration::from_secs(10) {
        let r = c.get(format!("{lb}/")).header("X-Request-Id", format!("{run_id}-{sent}")).send().unwrap();
        assert!(r.status().is_success());
        sent += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(collected(&run_id).is_empty(), "lines arrived while the collector was stopped");
    start();
    let back = Instant::now();
    let deadline = back + Duration::from_secs(60);
    loop {
        let ids: BTreeSet<String> = request_ids(&collected(&run_id)).into_iter().collect();
        if ids.len() == sent {
            eprintln!("{sent} lines logged during a 10 s collector outage, all delivered {} ms after it came back", back.elapsed().as_millis());
            break;
        }
        assert!(Instant::now() < deadline, "{} of {sent} lines arrived after the collector came back", ids.len());
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The dashboards' series of the database tier (the postgres exporter's, scalectl's queries',
/// scale-api's pools) and of the load balancer's cache: left out where neither runs.
pub(crate) const DATABASE_AND_CACHE_SERIES: &[&str] = &["{job=\"postgres\"}", "scalectl_database_", "scale_api_db_", "scalectl_nginx_cache_"];

pub(crate) fn every_dashboard_query_returns_data(lb: &'static str, prometheus: &str, settle: Duration, absent: &[&str]) {
    let load = Load::start_at(lb, 2);
    let stop = Arc::new(AtomicBool::new(false));
    // Every route the dashboards chart; a failure among them is as much a failure as the load's.
    // Jobs too where the queue's panels are to show data (scale-api's POST /jobs).
    let jobs = !absent.contains(&"scalectl_queue_");
    let mixed = {
        let stop = stop.clone();
        let lb = lb.to_string();
        std::thread::spawn(move || {
            let c = client();
            let end = Instant::now() + Duration::from_secs(150);
            let mut failed = Vec::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                // (Not /users/{id}: it needs a database, which these fleets have not.)
                for path in ["/count", "/heavy?ms=5"] {
                    if let Err(e) = answered(c.get(format!("{lb}{path}")).send()) {
                        failed.push(format!("{path}: {e}"));
                    }
                }
                if jobs && i % 10 == 0 {
                    if let Err(e) = answered(c.post(format!("{lb}/jobs")).json(&serde_json::json!({"ms": 1})).send()) {
                        failed.push(format!("POST /jobs: {e}"));
                    }
                }
                i += 1;
            }
            failed
        })
    };
    std::thread::sleep(settle);
    let dir = root().join("grafana/dashboards");
    // Every panel's query, as (where, expr).
    let mut asked: Vec<(String, String)> = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                if !absent.iter().any(|m| expr.contains(m)) {
                    asked.push((format!("{} / {}", path.file_name().unwrap().to_string_lossy(), p["title"]), expr.to_string()));
                }
            }
        }
    }
    let queries = asked.len();
    // Asked again, while the load runs, until each has data or 45 s more have passed: a series
    // that only begins with the traffic (a queue's stream made by the first job) needs a few
    // scrapes and rule evaluations before a rate or deriv over it has two samples.
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut empty = asked;
    loop {
        empty.retain(|(_, expr)| {
            let v: serde_json::Value = client().get(reqwest::Url::parse_with_params(&format!("{prometheus}/api/v1/query"), &[("query", expr)]).unwrap()).send().unwrap().json().unwrap();
            assert_eq!(v["status"], "success", "{expr}: {v}");
            v["data"]["result"].as_array().is_none_or(|r| r.is_empty())
        });
        if empty.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    let empty: Vec<String> = empty.into_iter().map(|(at, expr)| format!("{at}: {expr}")).collect();
    stop.store(true, Ordering::Relaxed);
    let mixed_failed = mixed.join().unwrap();
    let report = load.finish();
    eprintln!("{queries} dashboard queries, {} without data", empty.len());
    assert!(queries >= 30, "only {queries} queries");
    assert!(empty.is_empty(), "queries without data:\n{}", empty.join("\n"));
    report.assert_no_failure("");
    assert!(mixed_failed.is_empty(), "{} requests of the mixed traffic failed: {:#?}", mixed_failed.len(), &mixed_failed[..mixed_failed.len().min(10)]);
}

/// examples/node-app, whose dependencies scripts/setup.sh installs with `npm ci`.
pub(crate) fn node_app_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/node-app");
    assert!(dir.join("node_modules/express").is_dir(), "examples/node-app has no node_modules: scripts/setup.sh runs npm ci there");
    dir
}

/// A copy of examples/node-app (node_modules included) to edit into a release of its own.
pub(crate) fn node_app_copy(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let out = Command::new("cp").arg("-a").arg(format!("{}/.", node_app_dir().display())).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    dir
}

/// A line of HAProxy's `show servers state` for a server its checks took down: operational
/// state 0 (stopped) while no maintenance (a drain's, the engine's DNS') explains it. Its fields:
/// `be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ...`; an admin state's
/// maintenance bits are 0x23 (forced, inherited, resolution).
pub(crate) fn down_not_drained(line: &str) -> bool {
    let w: Vec<&str> = line.split_whitespace().collect();
    w.len() > 6 && !line.starts_with('#') && w[5] == "0" && w[6].parse::<u32>().is_ok_and(|admin| admin & 0x23 == 0)
}

/// Watches a balancer every 200 ms while an operation runs: `show` returns its runtime API's
/// `show servers state` (empty for a moment without an answer, as during its reload, which is not
/// a server down); [`BalancerWatch::finish`] gives every line of a server its checks took down.
pub(crate) struct BalancerWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl BalancerWatch {
    pub(crate) fn start(show: impl Fn() -> String + Send + 'static) -> BalancerWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut down = Vec::new();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                down.extend(show().lines().filter(|l| down_not_drained(l)).map(String::from));
                std::thread::sleep(Duration::from_millis(200));
            }
            down
        });
        BalancerWatch { stop, thread }
    }

    pub(crate) fn finish(self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// A line of `show servers state` for a server whose health check is paused (`disable health`):
/// its check state (`srv_check_state`, the 14th field) has no `enabled` bit (0x2).
pub(crate) fn check_paused(line: &str) -> bool {
    let w: Vec<&str> = line.split_whitespace().collect();
    w.len() > 13 && !line.starts_with('#') && w[13].parse::<u32>().is_ok_and(|state| state & 0x2 == 0)
}

/// Brings a deployment back to its topology when the test that changed it ends, passed or failed,
/// so that the next test's fixture finds it converged (the fixtures check that, and repair
/// nothing: what a test leaves behind fails the next one).
pub(crate) struct Restore(Option<Box<dyn FnOnce() -> std::process::Output>>);

impl Restore {
    /// `restore` runs the command that restores (an apply); it must succeed.
    pub(crate) fn new(restore: impl FnOnce() -> std::process::Output + 'static) -> Restore {
        Restore(Some(Box::new(restore)))
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        let Some(restore) = self.0.take() else { return };
        let t = Instant::now();
        let out = restore();
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        match out.status.success() {
            true => eprintln!("restored the deployment in {:.1} s", t.elapsed().as_secs_f64()),
            false if std::thread::panicking() => eprintln!("could not restore the deployment after the failure: {said}"),
            false => panic!("could not restore the deployment: {said}"),
        }
    }
}

/// A counter after a load of increments: none of the `expected` may be missing. More than
/// expected can happen where an instance stops after it counted and before it answered (a crash,
/// not a drain, which waits for its requests in flight): the balancer sends the GET on
/// (`next_upstream`), so `/count` counts twice. Printed, so it stays in sight.
pub(crate) fn check_counter(counted: u64, expected: u64) {
    assert!(counted >= expected, "the counter lost {} increments ({counted} counted, {expected} expected)", expected - counted);
    if counted > expected {
        eprintln!("the counter counted {} increments twice ({counted} counted, {expected} answered)", counted - expected);
    }
}

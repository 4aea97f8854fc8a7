//! scale-api against a real redis-server and a real PostgreSQL started by the test (no mock).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::require;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Redis {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let child = Redis::spawn(port, &dir);
        Redis { port, child, dir }
    }

    fn spawn(port: u16, dir: &tempfile::TempDir) -> Child {
        let child = Command::new(require("redis-server"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_until(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(), "redis-server to listen");
        child
    }

    fn stop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }

    fn restart(&mut self) {
        self.child = Redis::spawn(self.port, &self.dir);
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Api {
    port: u16,
    child: Child,
}

impl Api {
    fn start(redis: &Redis, name: &str, extra: &[&str]) -> Api {
        Api::start_env(redis, name, extra, &[])
    }

    /// With environment of its own (the database's URLs).
    fn start_with(redis: &Redis, name: &str, env: &[(&str, String)]) -> Api {
        Api::start_env(redis, name, &[], env)
    }

    fn start_env(redis: &Redis, name: &str, extra: &[&str], env: &[(&str, String)]) -> Api {
        let port = free_port();
        let child = Command::new(crate::support::scale_api())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env_remove("DATABASE_URL")
            .env("PORT", port.to_string())
            .env("BIND", "127.0.0.1")
            .env("INSTANCE", name)
            .env("REDIS_URL", redis.url())
            .env("BREAKER_COOLDOWN", "500ms")
            .env("BREAKER_THRESHOLD", "3")
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let api = Api { port, child };
        wait_until(|| get(api.port, "/healthz").is_ok_and(|(s, _)| s == 200), "scale-api to answer");
        api
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        // SIGTERM first so a supervisor stops its workers; SIGKILL if it lingers.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn wait_until(mut ok: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out waiting for {what}");
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

fn get(port: u16, path: &str) -> reqwest::Result<(u16, String)> {
    let r = client().get(format!("http://127.0.0.1:{port}{path}")).send()?;
    Ok((r.status().as_u16(), r.text()?))
}

fn json(port: u16, path: &str) -> serde_json::Value {
    let (status, body) = get(port, path).unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn the_counter_advances_by_exactly_n_across_two_instances() {
    let redis = Redis::start();
    let (a, b) = (Api::start(&redis, "a", &[]), Api::start(&redis, "b", &[]));
    let before = json(a.port, "/count")["count"].as_i64().unwrap();
    let n = 400;
    let ports = [a.port, b.port];
    let handles: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let c = client();
                // Answers counted, not asserted one by one: every request must have been a 200.
                (0..n / 8).filter(|i| c.get(format!("http://127.0.0.1:{}/count", ports[(t + i) % 2])).send().is_ok_and(|r| r.status() == 200)).count()
            })
        })
        .collect();
    let ok: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let after = json(b.port, "/count")["count"].as_i64().unwrap();
    assert_eq!(ok, n, "{} of {n} requests did not answer 200", n - ok);
    assert_eq!(after - before - 1, n as i64, "counter moved by {} for {n} requests", after - before - 1);
}

#[test]
fn a_session_made_on_one_instance_is_read_on_the_other() {
    let redis = Redis::start();
    let (a, b) = (Api::start(&redis, "a", &[]), Api::start(&redis, "b", &[]));
    let c = client();
    let login: serde_json::Value = c.post(a.url("/login")).json(&serde_json::json!({"username": "ann"})).send().unwrap().json().unwrap();
    let token = login["token"].as_str().unwrap();
    let profile = c.get(b.url("/profile")).bearer_auth(token).send().unwrap();
    assert_eq!(profile.headers()["x-instance"], "b");
    let profile: serde_json::Value = profile.json().unwrap();
    assert_eq!(profile["username"], "ann");
    assert_eq!(c.post(b.url("/logout")).bearer_auth(token).send().unwrap().status(), 204);
    assert_eq!(c.get(a.url("/profile")).bearer_auth(token).send().unwrap().status(), 401);
    assert_eq!(c.get(a.url("/profile")).send().unwrap().status(), 401);
}

/// A PostgreSQL server of the test's own (Debian's postgresql-15, which the README's test command
/// installs): initdb into a temporary directory, run as the `postgres` user (PostgreSQL refuses
/// root), on 127.0.0.1 and a free port, scram-sha-256 for everyone.
pub(crate) struct Postgres {
    pub(crate) port: u16,
    child: Child,
    pub(crate) dir: tempfile::TempDir,
}

pub(crate) const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const PG_PASSWORD: &str = "test-only-pg-password";

impl Postgres {
    pub(crate) fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PG_PASSWORD).unwrap();
        let own = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap();
        assert!(own.success(), "chown to postgres (Debian's postgresql-15 makes the user)");
        let as_postgres = |program: &str| {
            let mut c = Command::new(require("setpriv"));
            c.args(["--reuid=postgres", "--regid=postgres", "--clear-groups", "--"]).arg(format!("{PG_BIN}/{program}"));
            c
        };
        let init = as_postgres("initdb")
            // Over the network a password; on the socket the OS user's own role (peer), as on a
            // database host for the exporter's role.
            .args(["-U", "postgres", "--auth-host=scram-sha-256", "--auth-local=peer", "-E", "UTF8", "--locale=C.UTF-8"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .arg("-D")
            .arg(&data)
            .output()
            .unwrap();
        assert!(init.status.success(), "initdb: {}", String::from_utf8_lossy(&init.stderr));
        let port = free_port();
        let child = as_postgres("postgres")
            .arg("-D")
            .arg(&data)
            // pg_stat_statements loaded, as Patroni loads it on the database hosts.
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "shared_preload_libraries=pg_stat_statements", "-k"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The socket's directory, for the exporter's user (the data directory inside stays postgres').
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let pg = Postgres { port, child, dir };
        wait_until(|| pg.psql("select 1").is_ok(), "PostgreSQL to accept connections");
        pg
    }

    pub(crate) fn url(&self) -> String {
        format!("postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{}/postgres", self.port)
    }

    pub(crate) fn psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(format!("{PG_BIN}/psql")).arg(self.url()).args(["-XAtqc", sql]).output().unwrap();
        if out.status.success() { Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
    }

    fn stop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `scale-api migrate` against the database at `url`.
fn migrate(url: &str) -> std::process::Output {
    Command::new(crate::support::scale_api()).arg("migrate").env("DB_WRITER_URL", url).env_remove("DATABASE_URL").output().unwrap()
}

#[test]
fn users_are_read_through_the_cache_from_the_database_and_written_through_the_writer() {
    let redis = Redis::start();
    let pg = Postgres::start();
    let out = migrate(&pg.url());
    assert!(out.status.success(), "scale-api migrate: {}", String::from_utf8_lossy(&out.stderr));
    // Once more changes nothing (a release command runs once per release, but may run again).
    assert!(migrate(&pg.url()).status.success());
    assert_eq!(pg.psql("select count(*) from users").unwrap(), "0");
    let db = [("DB_WRITER_URL", pg.url()), ("DB_READER_URL", pg.url()), ("DB_POOL_SIZE", "3".to_string())];
    let (a, b) = (Api::start_with(&redis, "a", &db), Api::start_with(&redis, "b", &db));
    let c = client();
    assert_eq!(c.get(a.url("/users/42")).send().unwrap().status(), 404, "no such user yet");
    let put = c.put(a.url("/users/42")).json(&serde_json::json!({"name": "Ada"})).send().unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(pg.psql("select name from users where id = 42").unwrap(), "Ada", "the write reached the database");
    let first = json(b.port, "/users/42");
    assert_eq!((first["source"].as_str(), first["name"].as_str()), (Some("db"), Some("Ada")));
    assert_eq!(json(a.port, "/users/42")["source"], "cache", "the read filled the shared cache");
    // A write drops the cached copy: the next read is the database's.
    c.put(b.url("/users/42")).json(&serde_json::json!({"name": "Grace"})).send().unwrap();
    let after = json(a.port, "/users/42");
    assert_eq!((after["source"].as_str(), after["name"].as_str()), (Some("db"), Some("Grace")));
    // With no cache lifetime, every read is the database's.
    let uncached = Api::start_with(&redis, "c", &[db[0].clone(), db[1].clone(), ("CACHE_TTL", "0s".to_string())]);
    for _ in 0..2 {
        assert_eq!(json(uncached.port, "/users/42")["source"], "db");
    }
    // The pools measure themselves.
    let metrics = get(a.port, "/metrics").unwrap().1;
    for needle in ["scale_api_db_pool_connections{pool=\"writer\",state=\"idle\"}", "scale_api_db_pool_waiting{pool=\"reader\"}", "scale_api_db_query_duration_seconds_count{pool=\"reader\"}"] {
        assert!(metrics.contains(needle), "{needle} missing from /metrics");
    }
    // No password in what the process shows the world.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", a.child.id())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(PG_PASSWORD));
}

#[test]
fn users_without_a_database_or_with_it_down_answer_503_saying_why() {
    let redis = Redis::start();
    let none = Api::start(&redis, "none", &[]);
    let r = client().get(none.url("/users/7")).send().unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().unwrap();
    assert!(body["error"].as_str().unwrap().contains("no database is configured"), "{body}");

    let mut pg = Postgres::start();
    assert!(migrate(&pg.url()).status.success());
    let db = [("DB_WRITER_URL", pg.url())];
    let a = Api::start_with(&redis, "a", &db);
    assert_eq!(client().put(a.url("/users/7")).json(&serde_json::json!({"name": "Ann"})).send().unwrap().status(), 200);
    assert_eq!(json(a.port, "/users/7")["source"], "db", "the read that fills the cache");
    pg.stop();
    // A user the cache does not hold: the reader is asked, fails fast, and the answer says so.
    let t = Instant::now();
    let r = client().get(a.url("/users/8")).send().unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().unwrap();
    assert!(body["error"].as_str().unwrap().contains("the database's reader is unavailable"), "{body}");
    eprintln!("a read with the database down answered 503 in {:.3} s", t.elapsed().as_secs_f64());
    let w = client().put(a.url("/users/7")).json(&serde_json::json!({"name": "Bo"})).send().unwrap();
    assert_eq!(w.status(), 503, "a write with the database down");
    // What the cache holds is still served.
    assert_eq!(json(a.port, "/users/7")["source"], "cache");
    assert!(!String::from_utf8_lossy(&w.bytes().unwrap()).contains(PG_PASSWORD), "the error shows the password");
}

#[test]
fn bad_input_gets_a_json_4xx() {
    let redis = Redis::start();
    let a = Api::start(&redis, "a", &[]);
    let c = client();
    let cases = [
        c.get(a.url("/users/abc")).send().unwrap(),
        c.get(a.url("/users/0")).send().unwrap(),
        c.post(a.url("/login")).header("content-type", "application/json").body("{bad").send().unwrap(),
        c.post(a.url("/login")).json(&serde_json::json!({"username": ""})).send().unwrap(),
        c.post(a.url("/login")).header("content-type", "application/json").body(format!("{{\"username\":\"{}\"}}", "x".repeat(40_000))).send().unwrap(),
        c.get(a.url("/profile")).header("authorization", "Bearer ../../etc").send().unwrap(),
        c.get(a.url("/nope")).send().unwrap(),
        c.get(a.url("/heavy?ms=lots")).send().unwrap(),
    ];
    for r in cases {
        let status = r.status().as_u16();
        assert!((400..500).contains(&status), "{status}");
        if status != 413 {
            let body: serde_json::Value = r.json().unwrap_or_else(|e| panic!("{status} not JSON: {e}"));
            assert!(body["error"].is_string());
        }
    }
    assert_eq!(get(a.port, "/healthz").unwrap().0, 200, "still serving after bad input");
}

/// Redis restarted (a config change applied, a package upgrade): the instances' connections to
/// it are dead, and the first request on each must not be the one that finds out.
#[test]
fn a_redis_restart_fails_no_request_and_counts_nothing_twice() {
    let mut redis = Redis::start();
    let a = Api::start(&redis, "a", &[]);
    // Back at once, and back after a second down (the reconnection tried at once then failed).
    for (round, down) in [0, 0, 1000, 1000].into_iter().enumerate() {
        assert_eq!(json(a.port, "/count")["count"], 1, "round {round}: a fresh Redis (no persistence) counts from 1");
        redis.stop();
        std::thread::sleep(Duration::from_millis(down));
        // The next round's first request goes as soon as Redis listens: it is the one that finds
        // the dead connection, and it must not fail.
        redis.restart();
    }
    assert_eq!(json(a.port, "/count")["count"], 1, "after the last restart too");
    assert!(get(a.port, "/metrics").unwrap().1.contains("scale_api_redis_circuit_state 0"), "the breaker stays closed");
}

#[test]
fn the_breaker_opens_when_redis_stops_and_closes_when_it_returns() {
    let mut redis = Redis::start();
    let a = Api::start(&redis, "a", &[]);
    assert_eq!(get(a.port, "/count").unwrap().0, 200);
    redis.stop();
    for _ in 0..5 {
        assert_eq!(get(a.port, "/count").unwrap().0, 503);
    }
    let metrics = get(a.port, "/metrics").unwrap().1;
    assert!(metrics.contains("scale_api_redis_circuit_state 1"), "{metrics}");
    // Open: answered at once, without waiting on Redis.
    let start = Instant::now();
    let (status, _) = get(a.port, "/count").unwrap();
    assert_eq!(status, 503);
    assert!(start.elapsed() < Duration::from_millis(100), "open breaker took {:?}", start.elapsed());
    assert_eq!(get(a.port, "/readyz").unwrap().0, 503);
    redis.restart();
    wait_until(|| get(a.port, "/count").is_ok_and(|(s, _)| s == 200), "/count to recover after redis returns");
    assert_eq!(get(a.port, "/readyz").unwrap().0, 200);
    assert!(get(a.port, "/metrics").unwrap().1.contains("scale_api_redis_circuit_state 0"));
}

#[test]
fn sigterm_drains_in_flight_work_refuses_new_connections_and_exits_0() {
    let redis = Redis::start();
    let mut a = Api::start(&redis, "a", &[]);
    let port = a.port;
    let inflight = std::thread::spawn(move || get(port, "/heavy?ms=1500"));
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(a.child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "new connections still accepted while draining");
    let (status, body) = inflight.join().unwrap().unwrap();
    assert_eq!(status, 200, "{body}");
    let exit = a.child.wait().unwrap();
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn the_heavy_queue_is_bounded() {
    let redis = Redis::start();
    let a = Api::start(&redis, "a", &["--heavy-pool", "1", "--heavy-queue", "1"]);
    let port = a.port;
    let handles: Vec<_> = (0..6).map(|_| std::thread::spawn(move || get(port, "/heavy?ms=400").unwrap().0)).collect();
    std::thread::sleep(Duration::from_millis(100));
    // Light requests stay fast while the pool is saturated.
    let start = Instant::now();
    assert_eq!(get(port, "/").unwrap().0, 200);
    let light = start.elapsed();
    let metrics = get(port, "/metrics").unwrap().1;
    assert!(metrics.contains("scale_api_heavy_pool_busy 1\n"), "the one pool thread is not reported busy:\n{metrics}");
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(light < Duration::from_millis(200), "/ took {light:?} while /heavy ran");
}

#[test]
fn metrics_parse_as_prometheus_text_with_every_series() {
    let redis = Redis::start();
    let a = Api::start(&redis, "a", &[]);
    get(a.port, "/count").unwrap();
    get(a.port, "/heavy?ms=10").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let text = get(a.port, "/metrics").unwrap().1;
    let mut promtool = Command::new(require("promtool")).args(["check", "metrics"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(promtool.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    // promtool parses the text with Prometheus' own parser: any parse error fails. Its linter also
    // flags OpenMetrics counters (HELP on `x`, samples on `x_total`), which Prometheus scrapes fine;
    // those are the only complaints allowed.
    let complaints = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!complaints.contains("parsing error") && !complaints.contains("error while"), "promtool check metrics: {complaints}\n{text}");
    for line in complaints.lines().filter(|l| !l.trim().is_empty()) {
        assert!(line.contains("_total no help text"), "promtool: {line}\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "not a complete OpenMetrics exposition");
    for series in [
        "scale_api_http_request_duration_seconds_bucket{le=\"0.005\",method=\"GET\",route=\"/count\",status=\"200\"}",
        "scale_api_http_requests_in_flight",
        "scale_api_runtime_scheduling_delay_seconds",
        "scale_api_heavy_pool_busy",
        "scale_api_heavy_pool_queued",
        "scale_api_redis_operation_duration_seconds_bucket{le=\"0.0005\",op=\"incr\"}",
        "scale_api_redis_errors_total",
        "scale_api_redis_circuit_state",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "scale_api_build_info{",
    ] {
        assert!(text.contains(series), "missing {series}\n{text}");
    }
    // doctor counts restarts by this value changing: it must be the start time, not zero.
    let started: f64 = text.lines().find_map(|l| l.strip_prefix("process_start_time_seconds ")).unwrap().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(started > now - 600.0 && started <= now, "process_start_time_seconds {started}, now {now}");
}

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default().split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

#[test]
fn a_killed_worker_is_replaced_and_the_port_keeps_serving() {
    let redis = Redis::start();
    let a = Api::start(&redis, "a", &["--workers", "2"]);
    wait_until(|| children_of(a.child.id()).len() == 2, "two workers");
    let before = children_of(a.child.id());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(before[0] as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_until(
        || {
            let now = children_of(a.child.id());
            now.len() == 2 && !now.contains(&before[0])
        },
        "the killed worker to be replaced",
    );
    for _ in 0..20 {
        assert_eq!(get(a.port, "/").unwrap().0, 200);
    }
}

#[test]
fn health_paths_follow_the_topology() {
    let redis = Redis::start();
    let port = free_port();
    let mut child = Command::new(crate::support::scale_api())
        .env("PORT", port.to_string())
        .env("BIND", "127.0.0.1")
        .env("REDIS_URL", redis.url())
        .env("LIVENESS_PATH", "/live")
        .env("READINESS_PATH", "/ready")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(|| get(port, "/live").is_ok_and(|(s, _)| s == 200), "the custom liveness path");
    assert_eq!(get(port, "/ready").unwrap().0, 200);
    assert_eq!(get(port, "/healthz").unwrap().0, 404);
    child.kill().ok();
    child.wait().ok();
}

/// doctor on a fleet without a monitor host: it scrapes the instance itself (no Prometheus at all).
#[test]
fn doctor_without_a_monitor_scrapes_the_instances_directly() {
    let redis = Redis::start();
    let api = Api::start(&redis, "solo", &[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("solo.yaml");
    std::fs::write(
        &file,
        format!("name: solo\napp: {{port: {}, instances: 1}}\nredis: {{port: {}}}\nhosts:\n  local: {{address: 127.0.0.1, roles: [app, redis]}}\n", api.port, redis.port),
    )
    .unwrap();
    let doctor = |snapshot: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_scalectl"))
            .args(["doctor", "-f", file.to_str().unwrap(), "--window", "3s", "-o", "json", "--save", snapshot.to_str().unwrap()])
            .output()
            .unwrap()
    };
    // Requests between the two scrapes.
    let url = api.url("/");
    let traffic = std::thread::spawn(move || {
        let c = client();
        for _ in 0..40 {
            c.get(&url).send().unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let snap = dir.path().join("s.json");
    let out = doctor(&snap);
    traffic.join().unwrap();
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert!(String::from_utf8_lossy(&out.stderr).contains("scraping every instance and exporter directly"));
    let up = d["trace"].as_array().unwrap().iter().find(|s| s["question"] == "every instance up?").unwrap();
    assert_eq!(up["answer"], "yes", "{d:#}");
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&snap).unwrap()).unwrap();
    let i = &s["instances"][0];
    assert_eq!(i["instance"], format!("local-{}", api.port));
    assert!(i["requests_per_s"].as_f64().unwrap() > 1.0, "{i:#}");
    assert!(i["p99_ms"].as_f64().is_some() && i["open_fds"].as_f64().unwrap() > 0.0, "{i:#}");
    // This machine, measured by sysinfo: its cores and a CPU figure.
    let h = &s["hosts"][0];
    assert!(h["cores"].as_u64().unwrap() >= 1 && h["cpu_busy_percent"].as_array().unwrap().len() == 1, "{h:#}");
    assert!(h["memory_available_percent"].as_f64().unwrap() > 0.0, "{h:#}");

    // The instance gone: instance-down, exit 2.
    drop(api);
    let out = doctor(&snap);
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(2), "{d:#}");
    assert!(d["findings"].as_array().unwrap().iter().any(|f| f["id"] == "instance-down"), "{d:#}");
}

/// Read until the server closes the connection (or 10 s pass); how long that took.
fn closed_after(mut s: std::net::TcpStream) -> Option<Duration> {
    use std::io::Read;
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(start.elapsed()),
            Err(_) => return None,
        }
    }
}

/// A client that never finishes its headers (slowloris), a keep-alive connection left idle and a
/// connection that never sends a byte are all closed once the header timeout passes, so neither can hold a file descriptor for long.
#[test]
fn slow_and_idle_connections_are_closed_after_the_header_timeout() {
    use std::io::Write;
    let redis = Redis::start();
    let a = Api::start(&redis, "slow-1", &["--header-timeout", "1s"]);
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n").unwrap();
    let took = closed_after(slow).expect("a slow client's connection is closed");
    assert!(took < Duration::from_secs(5), "closed only after {took:?}");

    let mut idle = std::net::TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let took = closed_after(idle).expect("an idle keep-alive connection is closed");
    assert!(took < Duration::from_secs(5), "closed only after {took:?}");
    // A client that connects and never sends a byte (hyper's own timer waits for the first one).
    let silent = std::net::TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    let took = closed_after(silent).expect("a connection that sends nothing is closed");
    assert!(took < Duration::from_secs(5), "closed only after {took:?}");
    // Requests that send their headers in time are unaffected.
    assert_eq!(get(a.port, "/").unwrap().0, 200);
}

/// Beyond `--max-connections`, a new connection is closed on arrival and counted; once one closes,
/// new ones are served again.
#[test]
fn connections_beyond_the_limit_are_closed_on_arrival() {
    let redis = Redis::start();
    let a = Api::start(&redis, "limit-1", &["--max-connections", "4", "--header-timeout", "30s"]);
    std::thread::sleep(Duration::from_millis(200)); // the readiness probe's connection is gone
    let held: Vec<std::net::TcpStream> = (0..4).map(|_| std::net::TcpStream::connect(("127.0.0.1", a.port)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let extra = std::net::TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    let took = closed_after(extra).expect("the fifth connection is closed");
    assert!(took < Duration::from_secs(2), "{took:?}");
    drop(held);
    wait_until(|| get(a.port, "/").is_ok_and(|(s, _)| s == 200), "a connection to be served once the others closed");
    let metrics = get(a.port, "/metrics").unwrap().1;
    assert!(metrics.lines().any(|l| l.starts_with("scale_api_connections_refused_total") && !l.ends_with(" 0")), "{metrics}");
}

/// Made-up methods are counted as `other`: a thousand of them add no series.
#[test]
fn made_up_methods_add_no_series() {
    let redis = Redis::start();
    let a = Api::start(&redis, "methods-1", &[]);
    let c = client();
    for i in 0..1000 {
        let m = reqwest::Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
        c.request(m, a.url("/")).send().unwrap();
    }
    let metrics = get(a.port, "/metrics").unwrap().1;
    let methods: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("scale_api_http_request_duration_seconds_count"))
        .filter_map(|l| l.split("method=\"").nth(1).and_then(|r| r.split('"').next()))
        .collect();
    assert!(methods.contains("other"), "{methods:?}");
    assert!(methods.iter().all(|m| ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "other"].contains(m)), "{methods:?}");
}

/// One `scale-api worker`, its log lines (JSON) kept.
struct Worker {
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Worker {
    fn start(redis: &Redis, name: &str, claim_idle: &str) -> Worker {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("worker.log");
        let child = Command::new(crate::support::scale_api())
            .arg("worker")
            .env("INSTANCE", name)
            .env("REDIS_URL", redis.url())
            .env("JOBS_CLAIM_IDLE", claim_idle)
            .stdout(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let w = Worker { child, log, _dir: dir };
        wait_until(|| w.log().contains("worker ready"), "the worker to join its group");
        w
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, s: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), s).unwrap();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn post_job(port: u16, body: serde_json::Value) -> String {
    let r = client().post(format!("http://127.0.0.1:{port}/jobs")).json(&body).send().unwrap();
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    assert_eq!(status, 202, "POST /jobs: {text}");
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["id"].as_str().unwrap().to_string()
}

/// The job's state, asked until it is `state` (or 20 s passed).
fn job_until(port: u16, id: &str, state: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let j = json(port, &format!("/jobs/{id}"));
        if j["state"] == state || start.elapsed() > Duration::from_secs(20) {
            return j;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn redis_cli(redis: &Redis, args: &[&str]) -> String {
    let out = Command::new(require("redis-cli")).args(["-p", &redis.port.to_string()]).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn jobs_posted_to_two_instances_each_complete_once_by_two_workers() {
    let redis = Redis::start();
    let (a, b) = (Api::start(&redis, "a", &[]), Api::start(&redis, "b", &[]));
    let _workers = (Worker::start(&redis, "w1", "5s"), Worker::start(&redis, "w2", "5s"));
    let ids: Vec<String> = (0..200).map(|i| post_job(if i % 2 == 0 { a.port } else { b.port }, serde_json::json!({"rows": 100 + i, "ms": 5}))).collect();
    let mut by_worker = std::collections::BTreeMap::<String, u32>::new();
    for (i, id) in ids.iter().enumerate() {
        let j = job_until(a.port, id, "completed");
        assert_eq!(j["state"], "completed", "{j}");
        assert_eq!(j["result"]["rows"], 100 + i as u64, "{j}");
        assert_eq!(j["attempts"], 1, "{j}");
        *by_worker.entry(j["worker"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(redis_cli(&redis, &["GET", "jobs:completed"]), "200", "each job completed once");
    assert_eq!(by_worker.len(), 2, "both workers took jobs: {by_worker:?}");
    // Done entries are deleted: the stream holds only what waits or is in hand.
    assert_eq!(redis_cli(&redis, &["XLEN", "jobs"]), "0");
    // An ended job's record expires (Redis that holds a queue evicts nothing).
    let ttl: i64 = redis_cli(&redis, &["TTL", &format!("jobs:job:{}", ids[0])]).parse().unwrap();
    assert!((3000..=3600).contains(&ttl), "a completed job's record expires within the hour: TTL {ttl}");
    assert_eq!(get(a.port, "/jobs/99999").unwrap().0, 404);
    assert_eq!(client().post(a.url("/jobs")).json(&serde_json::json!({"rows": 1, "ms": 99999})).send().unwrap().status().as_u16(), 400);
    assert_eq!(client().post(a.url("/jobs")).json(&serde_json::json!({"rowz": 1})).send().unwrap().status().as_u16(), 400, "an unknown field is refused");
}

#[test]
fn a_job_whose_worker_was_killed_mid_job_is_taken_over_and_completed() {
    let redis = Redis::start();
    let a = Api::start(&redis, "a", &[]);
    let w1 = Worker::start(&redis, "w1", "1s");
    let id = post_job(a.port, serde_json::json!({"ms": 3000}));
    assert_eq!(job_until(a.port, &id, "active")["worker"], "w1");
    w1.signal(nix::sys::signal::Signal::SIGKILL);
    let _w2 = Worker::start(&redis, "w2", "1s");
    let j = job_until(a.port, &id, "completed");
    assert_eq!((j["state"].as_str(), j["worker"].as_str(), j["attempts"].as_u64()), (Some("completed"), Some("w2"), Some(2)), "{j}");
    assert_eq!(redis_cli(&redis, &["GET", "jobs:completed"]), "1");
}

#[test]
fn a_job_a_hung_worker_held_completes_once() {
    use nix::sys::signal::Signal;
    let redis = Redis::start();
    let a = Api::start(&redis, "a", &[]);
    let w1 = Worker::start(&redis, "w1", "1s");
    let id = post_job(a.port, serde_json::json!({"ms": 2500}));
    assert_eq!(job_until(a.port, &id, "active")["worker"], "w1");
    // w1 hangs (it stops renewing its claim); w2 takes the job over after a second.
    w1.signal(Signal::SIGSTOP);
    let _w2 = Worker::start(&redis, "w2", "1s");
    wait_until(|| _w2.log().contains("job started"), "w2 to take the job over");
    w1.signal(Signal::SIGCONT);
    let j = job_until(a.port, &id, "completed");
    assert_eq!(j["state"], "completed", "{j}");
    // Both finish it; one completes it, the other only acknowledges.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(redis_cli(&redis, &["GET", "jobs:completed"]), "1", "w1: {}\nw2: {}", w1.log(), _w2.log());
    assert_eq!(redis_cli(&redis, &["XPENDING", "jobs", "workers"]).lines().next(), Some("0"), "nothing left pending");
}

#[test]
fn a_job_that_always_fails_reaches_the_dead_letters_after_its_attempts() {
    let redis = Redis::start();
    let a = Api::start(&redis, "a", &[]);
    let _w = Worker::start(&redis, "w1", "300ms");
    let id = post_job(a.port, serde_json::json!({"fail": true}));
    let j = job_until(a.port, &id, "failed");
    assert_eq!((j["state"].as_str(), j["attempts"].as_u64()), (Some("failed"), Some(3)), "{j}");
    assert!(j["error"].as_str().unwrap().contains("always fails"), "{j}");
    let dead = redis_cli(&redis, &["XRANGE", "jobs:dead", "-", "+"]);
    assert!(dead.contains(&id) && dead.contains("always fails"), "{dead}");
    assert_eq!(redis_cli(&redis, &["XLEN", "jobs"]), "0");
    assert_eq!(redis_cli(&redis, &["GET", "jobs:completed"]), "");
}

#[test]
fn sigterm_lets_a_worker_finish_the_job_in_hand_and_exit_0() {
    let redis = Redis::start();
    let a = Api::start(&redis, "a", &[]);
    let mut w = Worker::start(&redis, "w1", "5s");
    let id = post_job(a.port, serde_json::json!({"ms": 1500}));
    job_until(a.port, &id, "active");
    w.signal(nix::sys::signal::Signal::SIGTERM);
    let exit = w.child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "{}", w.log());
    let j = json(a.port, &format!("/jobs/{id}"));
    assert_eq!((j["state"].as_str(), j["worker"].as_str()), (Some("completed"), Some("w1")), "{j}");
}

#[test]
fn a_worker_makes_its_group_again_when_redis_lost_it() {
    let redis = Redis::start();
    let a = Api::start(&redis, "a", &[]);
    let w = Worker::start(&redis, "w1", "1s");
    // The stream and its group gone, as after a restart of a Redis without persistence.
    assert_eq!(redis_cli(&redis, &["DEL", "jobs"]), "1");
    let id = post_job(a.port, serde_json::json!({"rows": 3}));
    let j = job_until(a.port, &id, "completed");
    assert_eq!((j["state"].as_str(), j["result"]["sum"].as_u64()), (Some("completed"), Some(5)), "{j}\n{}", w.log());
    assert!(w.log().contains("the consumer group is gone: made again"), "{}", w.log());
}

/// The Node example (examples/node-app, real Node.js from Debian's nodejs) on the same databases:
/// its release command `node migrate.js`, then `node server.js` with the URLs scalectl gives it.
#[test]
fn the_node_example_migrates_then_reads_and_writes_users_through_its_two_pools() {
    let redis = Redis::start();
    let pg = Postgres::start();
    let dir = crate::support::node_app_dir();
    let node = require("node");
    let migrate = Command::new(&node).arg("migrate.js").current_dir(&dir).env("DB_WRITER_URL", pg.url()).env_remove("DATABASE_URL").output().unwrap();
    assert!(migrate.status.success(), "node migrate.js: {}", String::from_utf8_lossy(&migrate.stderr));
    assert_eq!(pg.psql("select count(*) from users").unwrap(), "0");
    let start = |env: &[(&str, String)]| {
        let port = free_port();
        let child = Command::new(&node)
            .arg("server.js")
            .current_dir(&dir)
            .env("PORT", port.to_string())
            .env("REDIS_URL", redis.url())
            .env_remove("DATABASE_URL")
            .env_remove("DB_WRITER_URL")
            .env_remove("DB_READER_URL")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let api = Api { port, child };
        wait_until(|| get(api.port, "/readyz").is_ok_and(|(s, _)| s == 200), "the Node example to be ready");
        api
    };
    let none = start(&[]);
    assert_eq!(client().get(none.url("/users/3")).send().unwrap().status(), 503, "no database configured");
    let db = [("DB_WRITER_URL", pg.url()), ("DB_READER_URL", pg.url()), ("DB_POOL_SIZE", "2".to_string())];
    let (a, b) = (start(&db), start(&db));
    let c = client();
    assert_eq!(c.get(a.url("/users/3")).send().unwrap().status(), 404);
    assert_eq!(c.put(a.url("/users/3")).json(&serde_json::json!({"name": "Lin"})).send().unwrap().status(), 200);
    assert_eq!(pg.psql("select name from users where id = 3").unwrap(), "Lin");
    let read = json(b.port, "/users/3");
    assert_eq!((read["source"].as_str(), read["name"].as_str()), (Some("db"), Some("Lin")), "{read}");
    assert_eq!(json(a.port, "/users/3")["source"], "cache");
    c.put(b.url("/users/3")).json(&serde_json::json!({"name": "Mo"})).send().unwrap();
    assert_eq!(json(a.port, "/users/3")["name"], "Mo", "the write dropped the cached copy");
}

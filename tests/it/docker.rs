//! End to end on the real Docker engine: examples/docker.yaml deployed by `scalectl apply` through
//! the Engine API. No registry is reachable here, so the official nginx, redis and prometheus images
//! are replaced by local stand-ins built from Debian's packages (tests/it/standins/Dockerfile), and
//! the scale-api image is built on the lab's Debian base. Requests go to 127.0.0.1:8081 only.
//!
//! The tests share one deployment and take turns (with the other end-to-end tests of their
//! process, support::turn); each starts from a converged one.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::{
    Load, Machine, Restore, Turn, collected_in, collector_outage_loses_no_line, count_at, every_dashboard_query_returns_data, instances_seen_at, new_release, release,
    request_id_reaches_the_collector, request_ids, run_id, text, timed, turn,
};

const LB: &str = "http://127.0.0.1:8081";
const NAME: &str = "dock";

static TOPOLOGY: OnceLock<tempfile::TempPath> = OnceLock::new();

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// The stand-in images, built once per Dockerfile version (tagged by its digest). Both test streams
/// of scripts/test.sh need them: a lock file keeps them from building the same images at once.
fn standins() -> [String; 7] {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/standins");
    let lock = std::fs::File::create(concat!(env!("CARGO_MANIFEST_DIR"), "/target/standins.lock")).unwrap();
    lock.lock().unwrap();
    let dockerfile = std::fs::read(format!("{dir}/Dockerfile")).unwrap();
    let tag = &scalectl::plan::sha256_hex(&dockerfile)[..12];
    let base = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(scalectl::exec::lab::base_image(&|m: &str| eprintln!("{m}")))
        .unwrap();
    ["nginx", "redis", "prometheus", "node-exporter", "redis-exporter", "nginx-exporter", "node"].map(|target| {
        let image = format!("scalectl-test/{target}:{tag}");
        if !docker(&["image", "inspect", &image]).status.success() {
            let t = Instant::now();
            docker_ok(&["build", "-q", "--build-arg", &format!("BASE={base}"), "--target", target, "-t", &image, dir]);
            eprintln!("built stand-in {image} in {:.1} s", t.elapsed().as_secs_f64());
        }
        image
    })
}

/// examples/docker.yaml with the stand-ins, the lab base for scale-api's image, Prometheus
/// published for the checks, and an open-files limit this machine's dockerd can grant (its own
/// hard limit is 20,000 here; a systemd-started dockerd has 1,048,576).
fn topology_with(edits: &[(&str, &str)]) -> tempfile::TempPath {
    let [nginx, redis, prometheus, node_exporter, redis_exporter, nginx_exporter, _] = standins();
    let base = scalectl::exec::lab::LOCAL_IMAGE;
    let mut src = std::fs::read_to_string(crate::example_path("docker")).unwrap();
    for (from, to) in [
        (
            "    nginx: nginx:1.27\n",
            format!(
                "    nginx: {nginx}\n    prometheus: {prometheus}\n    base: {base}\n    node_exporter: {node_exporter}\n    redis_exporter: {redis_exporter}\n    nginx_exporter: {nginx_exporter}\n"
            )
            .as_str(),
        ),
        ("    redis: redis:7\n", format!("    redis: {redis}\n").as_str()),
        ("nofile: 65536", "nofile: 16384"),
        ("    load_balancer: 8081\n", "    load_balancer: 8081\n    prometheus: 9091\n"),
        // Secrets, which must reach the replicas and the exporter and show in no `docker inspect`.
        ("  persistence: rdb\n", "  persistence: rdb\n  password: {env: DOCK_REDIS_PASSWORD}\n"),
        // Alerts for what is down fire after 20 s, not the default minute.
        ("  grafana: false\n", "  grafana: false\n  alerts: {down_for: 20s}\n"),
        ("  instances: 2 ", "  secrets: {API_KEY: {env: DOCK_API_KEY}}\n  instances: 2 "),
        // A dead worker's job is taken over after 1 s, not the default 30.
        ("    queue: {kind: stream, name: jobs}\n", "    queue: {kind: stream, name: jobs}\n    env: {JOBS_CLAIM_IDLE: 1s}\n"),
    ]
    .iter()
    .map(|(a, b)| (*a, *b))
    .chain(edits.iter().copied())
    {
        assert!(src.contains(from), "examples/docker.yaml no longer has {from:?}");
        src = src.replace(from, to);
    }
    let f = tempfile::Builder::new().prefix("docker-").suffix(".yaml").tempfile().unwrap();
    std::fs::write(f.path(), src).unwrap();
    f.into_temp_path()
}

fn topology() -> String {
    TOPOLOGY.get_or_init(|| topology_with(&[])).to_str().unwrap().to_string()
}

fn scalectl(args: &[&str]) -> Output {
    with_secrets(&mut Command::new(env!("CARGO_BIN_EXE_scalectl"))).args(args).env_remove("SCALECTL_PROGRESS").output().unwrap()
}

/// The test topology's secret values (the Redis password is the labs').
const API_KEY: &str = "dock-api-key-4c0ffee";

fn with_secrets(c: &mut Command) -> &mut Command {
    c.env("DOCK_REDIS_PASSWORD", crate::lab::lab_redis_password()).env("DOCK_API_KEY", API_KEY)
}

fn apply(file: &str, release: &str) -> Output {
    scalectl(&["apply", "-f", file, "--release", release, "--yes"])
}

fn apply_ok(file: &str, release: &str) -> String {
    let out = apply(file, release);
    assert!(out.status.success(), "apply failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// The deployment, converged on the example with the built release; held for one test.
fn deployed() -> Turn {
    let turn = turn(Machine::Shared);
    deployed_in_turn();
    turn
}

static CONVERGED: OnceLock<()> = OnceLock::new();

/// The deployment converged, for a test that already holds its turn on the machine. The first
/// test of the process applies (a run before may have left anything); every test after it finds
/// the deployment converged or fails: a test that changes it restores it itself ([`restore`]),
/// and nothing repairs or reloads anything between tests.
fn deployed_in_turn() {
    crate::require("docker");
    CONVERGED.get_or_init(|| {
        let t = Instant::now();
        let out = apply_ok(&topology(), release().to_str().unwrap());
        eprintln!("converge apply: {:.1} s ({})", t.elapsed().as_secs_f64(), out.lines().last().unwrap_or(""));
    });
    let out = scalectl(&["plan", "-f", &topology(), "--release", release().to_str().unwrap(), "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "the test before left the deployment changed:\n{}{}", text(&out.stdout), text(&out.stderr));
}

/// Applies the test topology with the built release when the test ends, passed or failed: for a
/// test that changes the deployment.
fn restore() -> Restore {
    Restore::new(|| apply(&topology(), release().to_str().unwrap()))
}

/// Labelled containers of the topology: (name, slot, state).
fn containers() -> Vec<(String, String, String)> {
    docker_ok(&["ps", "-a", "--filter", &format!("label=scalectl.topology={NAME}"), "--format", "{{.Names}} {{.Label \"scalectl.slot\"}} {{.State}}"])
        .lines()
        .map(|l| {
            let v: Vec<&str> = l.split_whitespace().collect();
            (v[0].to_string(), v[1].to_string(), v[2].to_string())
        })
        .collect()
}

/// Every image built for the topology (`repository:tag`): one per release, and the log image.
fn labelled_images() -> Vec<String> {
    docker_ok(&["image", "ls", "--filter", &format!("label=scalectl.image.topology={NAME}"), "--format", "{{.Repository}}:{{.Tag}}"]).lines().map(String::from).collect()
}

/// The release images built for the topology.
fn release_images() -> Vec<String> {
    labelled_images().into_iter().filter(|i| !i.starts_with("scalectl-tools:")).collect()
}

fn replicas() -> Vec<String> {
    let mut v: Vec<String> = containers().into_iter().filter(|(_, slot, _)| slot.starts_with("api-")).map(|(n, _, _)| n).collect();
    v.sort();
    v
}

/// Docker Compose v2, which scripts/setup.sh unpacks from Debian's package into target/tools.
fn compose_bin() -> std::path::PathBuf {
    let p = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/tools/docker-compose"));
    assert!(p.is_file(), "{} is missing: scripts/setup.sh fetches it", p.display());
    p
}

/// `docker compose down` of a bundle when the test ends, passed or not, and the images it tagged.
struct ComposeUp(std::path::PathBuf, Vec<String>);

impl Drop for ComposeUp {
    fn drop(&mut self) {
        // The file names the secrets' variables, which compose reads for `down` too.
        let down = with_secrets(&mut Command::new(compose_bin())).current_dir(&self.0).args(["down", "--volumes", "--remove-orphans", "--timeout", "5"]).output();
        if let Some(out) = down.ok().filter(|o| !o.status.success()) {
            eprintln!("docker compose down failed: {}", text(&out.stderr));
        }
        for image in &self.1 {
            let _ = docker(&["rmi", image]);
        }
    }
}

/// The compose bundle `scalectl render` writes starts as it is, with a Redis that requires its
/// password: every secret (a shell variable or a file) reaches its containers as a file, the
/// replicas have them as variables, Redis makes its ACL users from the password, and no value
/// shows in `docker inspect`.
/// A build context's `.dockerignore` is honoured: the tar scalectl sends the engine leaves out what
/// it lists, so a real build's `COPY . .` bakes no `.env` into the image (it did: the engine takes
/// the context as it is given). `FROM scratch` needs no image.
#[test]
fn docker_build_context_leaves_out_what_dockerignore_lists() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("app");
    std::fs::create_dir_all(ctx.join("secrets")).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY . /ctx/\n").unwrap();
    std::fs::write(ctx.join(".dockerignore"), ".env\nsecrets/\n!secrets/public.pem\n*.log\n").unwrap();
    for (f, body) in [(".env", "TOKEN=hunter2\n"), ("secrets/key.pem", "private\n"), ("secrets/public.pem", "public\n"), ("debug.log", "x\n"), ("server.js", "1\n")] {
        std::fs::write(ctx.join(f), body).unwrap();
    }
    let topo = dir.path().join("t.yaml");
    std::fs::write(&topo, "name: ignoring\ntarget: docker\napp:\n  port: 4000\n  instances: 1\n  program: {release: ./app, command: [node, server.js]}\n").unwrap();
    let tar = dir.path().join("ctx.tar");
    let out = scalectl(&["pack", "-f", topo.to_str().unwrap(), "-o", tar.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tag = format!("scalectl-test-dockerignore:{}", std::process::id());
    let built = Command::new("docker").args(["build", "-q", "-t", &tag, "-"]).stdin(std::fs::File::open(&tar).unwrap()).output().unwrap();
    assert!(built.status.success(), "{}", text(&built.stderr));
    let container = docker_ok(&["create", &tag, "x"]).trim().to_string();
    let exported = Command::new("docker").args(["export", &container]).output().unwrap();
    docker(&["rm", &container]);
    docker(&["rmi", &tag]);
    let mut files: Vec<String> = tar::Archive::new(exported.stdout.as_slice()).entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
    files.retain(|f| f.starts_with("ctx/") && !f.ends_with('/'));
    files.sort();
    assert_eq!(files, ["ctx/.dockerignore", "ctx/Dockerfile", "ctx/secrets/public.pem", "ctx/server.js"]);
}

#[test]
fn docker_compose_bundle_starts_with_redis_auth_and_every_secret_as_a_file() {
    let _d = deployed(); // the turn, and scalectl's tools image on the engine
    let dir = tempfile::tempdir().unwrap();
    let token = "file-token-9f1c";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let t = topology_with(&[
        ("name: dock\n", "name: dockc\n"),
        ("  network: dock\n", "  network: dockc\n"),
        ("    scale_api: scale-api:latest", "    scale_api: scalectl-test/dockc-api:latest"),
        ("    load_balancer: 8081\n    prometheus: 9091\n", "    load_balancer: 8084\n    prometheus: 9094\n"),
        ("  secrets: {API_KEY: {env: DOCK_API_KEY}}\n", &format!("  secrets: {{API_KEY: {{env: DOCK_API_KEY}}, TOKEN: {{file: {}}}}}\n", token_file.display())),
    ]);
    let out_dir = dir.path().join("bundle");
    let out = scalectl(&["render", "-f", t.to_str().unwrap(), "-o", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bundle = out_dir.join("docker");
    let compose = std::fs::read_to_string(bundle.join("compose.yaml")).unwrap();
    let password = crate::lab::lab_redis_password();
    assert!(!compose.contains(password) && !compose.contains(API_KEY) && !compose.contains(token), "a secret value in compose.yaml");
    // The image, built as the bundle's Dockerfile says: scale-api's binary beside it.
    std::fs::copy(release(), bundle.join("scale-api")).unwrap();
    let api_image = "scalectl-test/dockc-api:latest";
    docker_ok(&["build", "-q", "-t", api_image, bundle.to_str().unwrap()]);
    // scalectl's tools image, which compose would build from ./rsyslog (as the docker target did
    // for the deployment, from a Dockerfile that differs in its topology's name only): the
    // deployment's, named as the bundle names it, saves the test a build of Debian's packages.
    let tools = compose.lines().find_map(|l| l.trim().strip_prefix("image: \"scalectl-tools:")).map(|tag| format!("scalectl-tools:{}", tag.trim_end_matches('"'))).unwrap();
    let deployed_tools = docker_ok(&["inspect", "-f", "{{.Config.Image}}", &containers().into_iter().find(|(_, slot, _)| slot == "mtail").unwrap().0]);
    docker_ok(&["tag", deployed_tools.trim(), &tools]);

    let _down = ComposeUp(bundle.clone(), vec![api_image.to_string(), tools]);
    let up = with_secrets(&mut Command::new(compose_bin())).current_dir(&bundle).args(["up", "--detach", "--no-build", "--wait", "--wait-timeout", "120"]).output().unwrap();
    let logs = || text(&with_secrets(&mut Command::new(compose_bin())).current_dir(&bundle).args(["logs", "--no-color", "--tail", "20"]).output().unwrap().stdout);
    assert!(up.status.success(), "docker compose up failed:\n{}\n{}", text(&up.stderr), logs());

    // The replicas reach Redis with the password: the counter advances through the load balancer.
    let lb = "http://127.0.0.1:8084";
    let deadline = Instant::now() + Duration::from_secs(30);
    while crate::support::client().get(format!("{lb}/count")).send().map_or(true, |r| !r.status().is_success()) {
        assert!(Instant::now() < deadline, "the bundle's load balancer never answered /count:\n{}", logs());
        std::thread::sleep(Duration::from_millis(500));
    }
    let before = count_at(lb);
    assert_eq!(count_at(lb), before + 1);
    // Redis refuses a client without the password; its users file is Redis' alone, and Redis runs as redis.
    let noauth = docker(&["exec", "dockc-redis-1", "redis-cli", "set", "k", "v"]);
    assert!(text(&noauth.stdout).contains("NOAUTH"), "Redis answered without a password: {}", text(&noauth.stdout));
    assert_eq!(docker_ok(&["exec", "dockc-redis-1", "stat", "-c", "%a %U", "/run/secrets/redis-auth.conf", "/proc/1"]), "400 redis\n555 redis\n");
    // The replica has both secrets as variables, from files.
    let environ = docker_ok(&["exec", "dockc-api-1-1", "sh", "-c", "tr '\\0' '\\n' < /proc/1/environ"]);
    for want in [format!("API_KEY={API_KEY}"), format!("TOKEN={token}"), format!("REDIS_PASSWORD={password}")] {
        assert!(environ.lines().any(|l| l == want), "the replica lacks {}", want.split('=').next().unwrap());
    }
    // The exporter logs in as its own user.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = docker_ok(&["exec", "dockc-prometheus-1", "sh", "-c", "curl -fsS redis-exporter:9121/metrics || wget -qO- redis-exporter:9121/metrics"]);
        if metrics.lines().any(|l| l == "redis_up 1") {
            break;
        }
        assert!(Instant::now() < deadline, "the Redis exporter never logged in:\n{}", logs());
        std::thread::sleep(Duration::from_secs(1));
    }
    // No value in what the engine tells of any of the bundle's containers.
    let names = docker_ok(&["ps", "-a", "--filter", "label=com.docker.compose.project=dockc", "--format", "{{.Names}}"]);
    assert!(names.lines().count() >= 8, "{names}");
    for name in names.lines() {
        let inspect = docker_ok(&["inspect", name]);
        assert!(!inspect.contains(password) && !inspect.contains(API_KEY) && !inspect.contains(token), "{name} shows a secret in docker inspect");
    }
}

#[test]
fn docker_requests_reach_every_replica_count_is_exact_and_a_second_apply_changes_nothing() {
    let _d = deployed();
    let seen = instances_seen_at(LB, 40);
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["api-1-3000", "api-2-3000"]);
    let access_log = access_log_file(&container_in_slot("lb"));
    let before = count_at(LB);
    let c = reqwest::blocking::Client::new();
    for _ in 0..50 {
        assert!(c.get(format!("{LB}/count")).send().unwrap().status().is_success());
    }
    assert_eq!(count_at(LB), before + 51, "50 increments and the read itself");
    // The load balancer's access log goes to the engine's log, which rotates it: no file grows in
    // the container (one left by an older scalectl stays as it was).
    let lb = container_in_slot("lb");
    let logged = docker(&["logs", "--since", "2m", &lb]);
    assert!(text(&logged.stdout).contains(r#""uri":"/count""#), "the access log is not in the engine's log of {lb}");
    assert_eq!(access_log_file(&lb), access_log, "an access log file grows in {lb}");

    let out = apply_ok(&topology(), release().to_str().unwrap());
    assert!(out.contains("No changes"), "{out}");
    // status: every container of the topology, running and healthy where it has a check.
    let status = scalectl(&["status", "-f", &topology()]);
    let table = text(&status.stdout);
    assert_eq!(status.status.code(), Some(0), "{table}");
    let slots: Vec<&str> = table.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
    let want = ["api-1", "api-2", "balancer", "collector", "lb", "logship", "mtail", "nginx-exporter", "node-exporter", "prometheus", "redis", "redis-exporter", "worker-1", "worker-2"];
    assert_eq!(slots, want, "{table}");
    assert!(table.lines().skip(1).all(|l| l.split_whitespace().nth(2) == Some("running")), "{table}");
    let plan = scalectl(&["plan", "-f", &topology(), "--release", release().to_str().unwrap(), "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stdout));
    // Prometheus scrapes every replica, under the instance names the dashboards use, and the
    // node, Redis and Nginx exporters, the balancer's own and mtail, which answer with their
    // services' figures.
    let deadline = Instant::now() + Duration::from_secs(40);
    let query = |q: &str| -> serde_json::Value { c.get(reqwest::Url::parse_with_params("http://127.0.0.1:9091/api/v1/query", [("query", q)]).unwrap()).send().unwrap().json().unwrap() };
    loop {
        let v = query("up == 1");
        let mut up: Vec<String> = v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| format!("{} {}", r["metric"]["job"].as_str().unwrap(), r["metric"]["instance_name"].as_str().or(r["metric"]["host"].as_str()).unwrap_or("")))
            .collect();
        up.sort();
        if up == ["app api-1-3000", "app api-2-3000", "haproxy balancer", "nginx lb", "nginx-log lb", "node engine", "prometheus ", "redis redis"] {
            break;
        }
        assert!(Instant::now() < deadline, "Prometheus sees {up:?} up");
        std::thread::sleep(Duration::from_secs(1));
    }
    for (q, what) in [("redis_up", "Redis"), ("nginx_up", "Nginx"), ("node_memory_MemTotal_bytes", "the engine's memory")] {
        let v = query(q);
        assert_eq!(v["data"]["result"][0]["value"][1].as_str().map(|s| s != "0"), Some(true), "{what} through its exporter: {v:#}");
    }
    // doctor finds the replicas through the published Prometheus container, and them healthy. Its
    // request rates are over the last minute, which may still hold the load of a test before,
    // aimed at replicas being replaced (so truly uneven): judged once that load has left it
    // (fewer than doctor's 5 requests a second, below which it judges no balance).
    let quiet = Instant::now();
    loop {
        let v = query("sum(rate(scale_api_http_request_duration_seconds_count[1m]))");
        let rps: f64 = v["data"]["result"][0]["value"][1].as_str().and_then(|s| s.parse().ok()).unwrap_or(0.0);
        if rps < 4.0 {
            eprintln!("the replicas quiet ({rps:.1} requests a second) after {:.0} s", quiet.elapsed().as_secs_f64());
            break;
        }
        assert!(quiet.elapsed() < Duration::from_secs(90), "the replicas still serve {rps:.1} requests a second");
        std::thread::sleep(Duration::from_secs(2));
    }
    let out = scalectl(&["doctor", "-f", &topology(), "--window", "30s", "-o", "json"]);
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out.stderr)));
    assert_eq!(d["findings"], serde_json::json!([]), "{d:#}");
    assert_eq!(out.status.code(), Some(0), "{d:#}");
    let judged = d["trace"].as_array().unwrap().iter().filter(|s| s["question"] == "every instance up?").count();
    assert_eq!(judged, 1, "{d:#}");
}

#[test]
fn docker_secrets_are_files_of_their_user_and_every_container_is_hardened() {
    let _d = deployed();
    let password = crate::lab::lab_redis_password();
    let names: Vec<(String, String)> = containers().into_iter().map(|(n, slot, _)| (n, slot)).collect();
    for (name, slot) in &names {
        // No secret value anywhere in what the engine tells about a container.
        let inspect = docker_ok(&["inspect", name]);
        assert!(!inspect.contains(password) && !inspect.contains(API_KEY), "{slot} shows a secret in docker inspect");
        let host = |f: &str| docker_ok(&["inspect", "-f", f, name]).trim().to_string();
        assert!(host("{{json .HostConfig.SecurityOpt}}").contains(r#""no-new-privileges""#), "{slot}");
        assert!(host("{{.HostConfig.PidsLimit}}").parse::<i64>().is_ok_and(|n| (1..=4096).contains(&n)), "{slot}: pids limit");
    }
    let slot = |s: &str| names.iter().find(|(_, slot)| slot == s).map(|(n, _)| n.clone()).unwrap();
    let api = slot("api-1");
    let get = |n: &str, f: &str| docker_ok(&["inspect", "-f", f, n]).trim().to_string();
    assert_eq!(get(&api, "{{json .HostConfig.CapDrop}}"), r#"["ALL"]"#);
    for exporter in ["node-exporter", "nginx-exporter"] {
        let e = slot(exporter);
        assert_eq!((get(&e, "{{json .HostConfig.CapDrop}}"), get(&e, "{{.HostConfig.ReadonlyRootfs}}")), (r#"["ALL"]"#.into(), "true".into()), "{exporter}");
    }
    // The replica's secrets: files only its user reads, exported before scale-api starts (it
    // reaches Redis with the password: /count answers).
    let files = docker_ok(&["exec", &api, "stat", "-c", "%a %U %n", "/run/secrets/scalectl/API_KEY", "/run/secrets/scalectl/REDIS_PASSWORD"]);
    assert_eq!(files, "400 scale-api /run/secrets/scalectl/API_KEY\n400 scale-api /run/secrets/scalectl/REDIS_PASSWORD\n");
    let environ = docker_ok(&["exec", &api, "sh", "-c", "tr '\\0' '\\n' < /proc/1/environ"]);
    assert!(environ.lines().any(|l| l == format!("API_KEY={API_KEY}")), "the app has its secret as a variable");
    let before = count_at(LB);
    assert_eq!(count_at(LB), before + 1, "the replicas count in Redis with the password");
    // Redis' include with the password is Redis' alone.
    let auth = docker_ok(&["exec", &slot("redis"), "sh", "-c", "stat -c '%a %U' /run/secrets/redis-auth.conf"]);
    assert_eq!(auth.trim(), "400 redis");
}

/// Rotating the Redis password under load, to a new one and back: the Redis container is kept
/// (its data, its run id), its users take the new password before any replica has it and drop
/// the old one only after every replica and the exporter rolled onto the new one, so no request
/// to /count (Redis on every request) fails; afterwards the old password is refused.
#[test]
fn docker_rotated_redis_password_fails_no_request_and_keeps_redis() {
    let _d = deployed();
    let _restore = restore();
    let redis = container_in_slot("redis");
    let old = crate::lab::lab_redis_password().to_string();
    let new = format!("rotated-{}", std::process::id());
    let cli = |pw: &str, cmd: &str| {
        docker_ok(&["exec", &redis, "sh", "-c", &format!("REDISCLI_AUTH='{}' redis-cli --no-auth-warning --user scalectl-exporter {cmd} 2>&1", scalectl::render::redis_exporter_password(pw))])
    };
    let run_id = |pw: &str| cli(pw, "INFO server").lines().find(|l| l.starts_with("run_id:")).map(str::to_string).unwrap_or_default();
    let before = run_id(&old);
    assert!(!before.is_empty(), "{}", cli(&old, "INFO server"));
    let rel = release();
    for (now, gone) in [(new.as_str(), old.as_str()), (old.as_str(), new.as_str())] {
        let count = count_at(LB);
        let load = Load::start_url(format!("{LB}/count"), 2);
        std::thread::sleep(Duration::from_secs(1));
        eprintln!("docker rotation to {}", if now == old { "the lab's password" } else { "a new password" });
        let (out, span) = timed(|| {
            with_secrets(&mut Command::new(env!("CARGO_BIN_EXE_scalectl")))
                .env("DOCK_REDIS_PASSWORD", now)
                .env_remove("SCALECTL_PROGRESS")
                .args(["apply", "-f", &topology(), "--release", rel.to_str().unwrap(), "--yes"])
                .output()
                .unwrap()
        });
        std::thread::sleep(Duration::from_millis(500));
        let report = load.finish();
        assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
        report.assert_covers(span, &text(&out.stdout));
        assert!(text(&out.stdout).contains("the old ones still work"), "{}", text(&out.stdout));
        assert_eq!(container_in_slot("redis"), redis, "the Redis container was replaced");
        assert_eq!(cli(now, "PING").trim(), "PONG");
        assert!(cli(gone, "PING").contains("WRONGPASS"), "the old password still works: {}", cli(gone, "PING"));
        assert_eq!(run_id(now), before, "Redis was restarted");
        // Every increment the load got an answer for is in the counter (and the read itself).
        crate::support::check_counter(count_at(LB), count + report.ok() + 1);
    }
}

#[test]
fn docker_scaling_2_to_4_to_2_converges() {
    let _d = deployed();
    let _restore = restore();
    let four = topology_with(&[("  instances: 2 ", "  instances: 4 ")]);
    let out = apply_ok(four.to_str().unwrap(), release().to_str().unwrap());
    assert!(out.contains("+ container dock-api-3-") && out.contains("+ container dock-api-4-"), "{out}");
    assert_eq!(instances_seen_at(LB, 60).len(), 4);
    assert_eq!(replicas().len(), 4);
    let out = apply_ok(&topology(), release().to_str().unwrap());
    assert!(out.contains("api-3 is no longer in the topology"), "{out}");
    assert_eq!(instances_seen_at(LB, 40).len(), 2);
    assert_eq!(replicas().len(), 2, "{:?}", containers());
}

#[test]
fn docker_rolling_release_under_load_fails_no_request() {
    let _d = deployed();
    let _restore = restore();
    let before = replicas();
    // Older releases for the roll to prune: a release image under three more tags (an image's
    // label comes with every tag), so there are more than 3 whatever ran before.
    let deployed_image = release_images().into_iter().next().expect("the deployed release image");
    let repository = deployed_image.rsplit_once(':').unwrap().0.to_string();
    for n in 1..=3 {
        docker_ok(&["tag", &deployed_image, &format!("{repository}:scalectl-test-older-{n}")]);
    }
    assert!(release_images().len() >= 4);
    let next = new_release("docker-roll");
    let load = Load::start_at(LB, 2);
    std::thread::sleep(Duration::from_millis(500));
    let (out, span) = timed(|| apply(&topology(), next.to_str().unwrap()));
    std::thread::sleep(Duration::from_millis(500));
    let report = load.finish();
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    eprintln!("rolled 2 replicas under load in {:.1} s", (span.end - span.start).as_secs_f64());
    report.assert_covers(span, "the roll");
    let after = replicas();
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|n| !before.contains(n)), "every replica was replaced: {before:?} -> {after:?}");
    // Old release images go as old release directories do on hosts: the last 3 stay.
    let images = release_images();
    assert!(!images.is_empty() && images.len() <= 3, "{images:?}");
    assert_eq!(instances_seen_at(LB, 40).len(), 2);
}

#[test]
fn docker_release_that_never_turns_healthy_is_rolled_back() {
    let _d = deployed();
    let _restore = restore();
    let before = replicas();
    let broken = tempfile::Builder::new().prefix("broken-").tempfile().unwrap();
    std::fs::write(broken.path(), "#!/bin/sh\n# listens nowhere: never healthy\nexec sleep 600\n").unwrap();
    let broken = broken.into_temp_path();
    let load = Load::start_at(LB, 1);
    std::thread::sleep(Duration::from_millis(500));
    let (out, span) = timed(|| scalectl(&["apply", "-f", &topology(), "--release", broken.to_str().unwrap(), "--yes", "--ready-timeout", "15s"]));
    let report = load.finish();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("never became healthy") && err.contains("rolled back"), "{err}");
    assert!(err.contains("last health answers"), "{err}");
    report.assert_covers(span, "the failed deploy");
    assert_eq!(replicas(), before, "the old replicas serve, the broken one is gone");
    assert_eq!(instances_seen_at(LB, 40).len(), 2);
}

/// A new liveness path, rolled under load: the running balancer checks the old path, which the
/// new replicas do not answer. Each goes back with its check paused and the balancer reloads for
/// the new path once, after the roll: no request fails, and the balancer never has a replica
/// down (before, it took each new replica down within two checks, and after its reload each old
/// one, for seconds at a time).
#[test]
fn docker_a_new_liveness_path_rolls_under_load_with_every_replica_up() {
    let _d = deployed();
    let _restore = restore();
    let balancer = containers().into_iter().find(|(_, slot, _)| slot == "balancer").map(|(n, _, _)| n).expect("the balancer");
    // `be_id be_name srv_id srv_name ...`: the replicas' servers (`api-N:PORT`).
    let show = move || {
        let out = docker(&["exec", &balancer, "sh", "-c", "printf 'show servers state\\n' | socat stdio UNIX-CONNECT:/run/haproxy/admin.sock"]);
        text(&out.stdout).lines().filter(|l| l.split_whitespace().nth(3).is_some_and(|s| s.starts_with("api-"))).map(|l| format!("{l}\n")).collect::<String>()
    };
    let watch = crate::support::BalancerWatch::start(show.clone());
    let live = topology_with(&[("  instances: 2 ", "  health: {liveness: /live}\n  instances: 2 ")]);
    let load = Load::start_at(LB, 2);
    std::thread::sleep(Duration::from_millis(500));
    let (out, span) = timed(|| apply(live.to_str().unwrap(), release().to_str().unwrap()));
    std::thread::sleep(Duration::from_secs(5));
    let report = load.finish();
    let down = watch.finish();
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(down.is_empty(), "the balancer had replicas down: {down:#?}");
    report.assert_covers(span, "the roll onto a new liveness path");
    assert!(text(&out.stdout).contains("its health check paused until the balancer reloads"), "{}", text(&out.stdout));
    let conf = docker_ok(&["exec", &replicas()[0], "printenv", "LIVENESS_PATH"]);
    assert_eq!(conf.trim(), "/live");
    // The balancer's reload at the end checks every replica again, at the new path.
    let state = show();
    assert!(!state.is_empty(), "the balancer does not answer");
    let paused: Vec<&str> = state.lines().filter(|l| crate::support::check_paused(l)).collect();
    assert!(paused.is_empty(), "checks still paused after the apply: {paused:#?}");
}

#[test]
fn docker_killed_replica_is_restarted_by_the_engine() {
    let _d = deployed();
    let name = replicas().remove(0);
    let pid = docker_ok(&["inspect", "-f", "{{.State.Pid}}", &name]).trim().to_string();
    let restarts = || docker_ok(&["inspect", "-f", "{{.RestartCount}}", &name]).trim().parse::<u32>().unwrap();
    let before = restarts();
    // A crash: SIGKILL to the replica's process from outside (not `docker kill`, which counts as a stop).
    assert!(Command::new("kill").args(["-9", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let killed = Instant::now();
    while restarts() == before || docker_ok(&["inspect", "-f", "{{.State.Health.Status}}", &name]).trim() != "healthy" {
        assert!(Instant::now() < deadline, "{name} was not restarted and healthy within 30 s");
        std::thread::sleep(Duration::from_millis(250));
    }
    let healthy = killed.elapsed();
    // Back in the load balancer's rotation, wherever the engine put it: it may return at another
    // address (the load balancer's follower then reloads nginx), and nginx, which counted failed
    // attempts while it was down (max_fails), tries it again after fail_timeout (30 s here), as
    // it should for a crash. Requests meanwhile go to the other replica.
    let deadline = Instant::now() + Duration::from_secs(45);
    while instances_seen_at(LB, 20).len() < 2 {
        if Instant::now() > deadline {
            let lb = container_in_slot("lb");
            let ip = docker_ok(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &name]);
            let resolved = text(&docker(&["exec", &lb, "getent", "hosts", &name]).stdout);
            let log = text(&docker(&["exec", &lb, "tail", "-n", "8", "/var/log/nginx/error.log"]).stdout);
            panic!("{name} is healthy but not back behind the load balancer 45 s later; its address {ip}, as the lb resolves it now: {resolved}\nnginx error log:\n{log}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("killed replica healthy after {:.1} s, back in rotation after {:.1} s", healthy.as_secs_f64(), killed.elapsed().as_secs_f64());
}

#[test]
fn docker_destroy_removes_every_labelled_resource_and_nothing_else() {
    let _d = deployed();
    let _restore = restore();
    let bystander = format!("scalectl-bystander-{}", std::process::id());
    docker_ok(&["run", "-d", "--name", &bystander, "--label", "scalectl.topology=someone-else", scalectl::exec::lab::LOCAL_IMAGE, "sleep", "300"]);
    // A container made by hand from the deployed release image (a debugging session): it inherits
    // the image's labels, and is still nobody's but its maker's.
    let by_hand = format!("scalectl-by-hand-{}", std::process::id());
    let release_image = docker_ok(&["inspect", "-f", "{{.Config.Image}}", &replicas()[0]]).trim().to_string();
    docker_ok(&["create", "--name", &by_hand, &release_image]);
    let out = apply(&topology(), release().to_str().unwrap());
    assert!(out.status.success() && text(&out.stdout).contains("No changes"), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let status = text(&scalectl(&["status", "-f", &topology()]).stdout);
    assert!(!status.contains(&by_hand), "{status}");

    let out = scalectl(&["destroy", "-f", &topology(), "--yes"]);
    let alive = docker(&["inspect", "-f", "{{.State.Running}}", &bystander]);
    let hand_left = docker(&["inspect", "-f", "{{.Image}}", &by_hand]);
    docker(&["rm", "-f", &bystander]);
    docker(&["rm", "-f", &by_hand]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(containers().is_empty(), "{:?}", containers());
    let filter = format!("label=scalectl.topology={NAME}");
    assert_eq!(docker_ok(&["network", "ls", "-q", "--filter", &filter]).trim(), "");
    assert_eq!(docker_ok(&["volume", "ls", "-q", "--filter", &filter]).trim(), "");
    assert_eq!(text(&alive.stdout).trim(), "true", "destroy touched a container that is not the topology's");
    assert!(hand_left.status.success(), "destroy removed the container made by hand from the release image");
    // Only the image that container used may outlive destroy (the engine refuses to remove it).
    let hand_image = text(&hand_left.stdout).trim().to_string();
    for image in labelled_images() {
        assert_eq!(docker_ok(&["image", "inspect", "-f", "{{.Id}}", &image]).trim(), hand_image, "{image} outlived destroy");
        docker(&["rmi", &image]);
    }

    // A first apply onto the empty engine, with readiness at a path of the topology's own: every
    // replica turns healthy on it, and the load balancer reaches both.
    let custom = topology_with(&[("  instances: 2 ", "  health: {liveness: /live, readiness: /ready}\n  instances: 2 ")]);
    let out = apply_ok(custom.to_str().unwrap(), release().to_str().unwrap());
    assert!(out.contains("+ container dock-api-1-"), "{out}");
    assert_eq!(instances_seen_at(LB, 40).len(), 2);
    let health = docker_ok(&["inspect", "-f", "{{json .Config.Healthcheck.Test}} {{.State.Health.Status}}", &replicas()[0]]);
    assert!(health.contains("\"/ready\"") && health.contains("healthy"), "{health}");
}

#[test]
fn docker_second_concurrent_apply_is_refused_by_the_lock() {
    let _d = deployed();
    let _restore = restore();
    let next = new_release("docker-concurrent");
    // A lock that lives 3 s: the first apply (an image build, then a rolling replace) outlasts it,
    // and keeps it only by renewing it.
    let started = Instant::now();
    let mut first = with_secrets(&mut Command::new(env!("CARGO_BIN_EXE_scalectl")))
        .args(["apply", "-f", &topology(), "--release", next.to_str().unwrap(), "--yes", "--lock-ttl", "3s"])
        .env("SCALECTL_PROGRESS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(first.stderr.take().unwrap()).lines();
    // The first apply holds the lock from before it observes until it ends.
    for line in lines.by_ref() {
        if line.unwrap().contains("building image") {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(4500).saturating_sub(started.elapsed()));
    let second = apply(&topology(), next.to_str().unwrap());
    let overlapped = started.elapsed();
    let running = first.try_wait().unwrap().is_none();
    let locked = text(&scalectl(&["lock", "status", "-f", &topology()]).stdout);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = first.wait().unwrap();
    let err = text(&second.stderr);
    assert!(running, "the first apply ended before the second tried: {rest:#?}");
    eprintln!("second apply refused {:.1} s into the first (lock time to live 3 s)", overlapped.as_secs_f64());
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains("the fleet is locked: held by"), "{err}");
    assert!(locked.starts_with("locked: held by"), "{locked}");
    assert!(status.success(), "the first apply failed: {rest:#?}");
    assert_eq!(text(&scalectl(&["lock", "status", "-f", &topology()]).stdout).trim(), "unlocked");
    // The lock is no container of the topology's: status and a converged plan do not see it.
    let plan = scalectl(&["plan", "-f", &topology(), "--release", next.to_str().unwrap(), "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stdout));
}

#[test]
fn docker_reload_three_times_under_load_fails_no_request() {
    // Alone: its check that every replica answers right after a reload is about the balancer's
    // spread, which the other stream's load skews (on a shared run 24 requests reached 1 of 2).
    let _alone = turn(Machine::Alone);
    let _d = deployed_in_turn();
    let before = replicas();
    let started = |n: &str| docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", n]).trim().to_string();
    let first_start: Vec<String> = before.iter().map(|n| started(n)).collect();
    let load = Load::start_at(LB, 2);
    std::thread::sleep(Duration::from_millis(500));
    let mut outs = Vec::new();
    let mut seen = Vec::new();
    let ((), span) = timed(|| {
        for _ in 0..3 {
            outs.push(scalectl(&["reload", "-f", &topology(), "--yes", "-o", "json"]));
            // Once a reload returns, the balancer sends to every replica again.
            seen.push(instances_seen_at(LB, 24).len());
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let report = load.finish();
    for out in &outs {
        assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    }
    eprintln!("3 reloads of 2 replicas under load in {:.1} s", (span.end - span.start).as_secs_f64());
    report.assert_covers(span, "the reloads");
    // Each replica left the balancer before it stopped and came back after, through its runtime
    // API (no file written, nothing reloaded): the plan says so.
    let plan: serde_json::Value = serde_json::from_slice(&outs[0].stdout).unwrap();
    let steps: Vec<String> = plan["activate"].as_array().unwrap().iter().map(|s| s["action"].as_str().unwrap().to_string()).collect();
    // Then each worker, stopped with its drain time and started again.
    assert_eq!(steps, ["drain", "stop", "start", "serve", "drain", "stop", "start", "serve", "stop", "start", "stop", "start"], "{plan:#}");
    // Same containers (no configuration changed), each started anew.
    assert_eq!(replicas(), before);
    for (n, s) in before.iter().zip(&first_start) {
        assert_ne!(&started(n), s, "{n} was not restarted");
    }
    assert_eq!(seen, [2, 2, 2], "replicas answering right after each reload");
}

#[test]
fn docker_rollback_brings_the_previous_release_back_one_replica_at_a_time() {
    let _d = deployed();
    let _restore = restore();
    let image_of = |n: &str| docker_ok(&["inspect", "-f", "{{.Config.Image}}", n]).trim().to_string();
    let old = image_of(&replicas()[0]);
    let next = new_release("docker-rollback");
    apply_ok(&topology(), next.to_str().unwrap());
    let new = image_of(&replicas()[0]);
    assert_ne!(old, new);
    let load = Load::start_at(LB, 2);
    std::thread::sleep(Duration::from_millis(500));
    let (out, span) = timed(|| scalectl(&["rollback", "-f", &topology(), "--yes", "-o", "json"]));
    std::thread::sleep(Duration::from_millis(500));
    let report = load.finish();
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    report.assert_covers(span, "the rollback");
    let after = replicas();
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|n| image_of(n) == old), "{after:?} run {:?}, not {old}", after.iter().map(|n| image_of(n)).collect::<Vec<_>>());
    // One at a time: each new replica is healthy before its slot leaves the balancer, its old one
    // stops, and the slot comes back pointed at it (the balancer's file follows, unreloaded).
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps: Vec<String> = plan["activate"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] != "write_live" || s["container"].as_str().is_some_and(|c| c.contains("-lb-")))
        .map(|s| match s["action"].as_str().unwrap() {
            "create" => format!("create {}", s["spec"]["slot"].as_str().unwrap()),
            // `dock-SLOT-HASH`
            "stop" => format!("stop {}", s["name"].as_str().unwrap().strip_prefix("dock-").and_then(|n| n.rsplit_once('-')).unwrap().0),
            other => other.to_string(),
        })
        .collect();
    // Then the workers, each new one running before its old one stops.
    assert_eq!(
        steps,
        ["create api-1", "drain", "stop api-1", "serve", "create api-2", "drain", "stop api-2", "serve", "create worker-1", "stop worker-1", "create worker-2", "stop worker-2"],
        "{plan:#}"
    );
    assert_eq!(instances_seen_at(LB, 40).len(), 2);
    assert!(workers().iter().all(|(_, n)| image_of(n) == old), "the workers run the release rolled back to: {:?}", workers());
}

#[test]
fn docker_saved_plan_is_applied_exactly_and_refused_when_stale_or_edited() {
    let _d = deployed();
    let _restore = restore();
    let rel = release();
    let rel = rel.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let planfile = dir.path().join("plan.json");
    let planfile = planfile.to_str().unwrap();
    let edited = topology_with(&[("  strategy: least_conn\n", "  strategy: round_robin\n")]);
    let file = edited.to_str().unwrap();
    let save = || {
        let out = scalectl(&["plan", "-f", file, "--release", rel, "--out", planfile, "--detailed-exitcode"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    };
    let lb = || container_in_slot("lb");
    // The strategy is the balancer's.
    let conf = || docker_ok(&["exec", &container_in_slot("balancer"), "cat", "/etc/haproxy/haproxy.cfg"]);

    // The engine drifted since the plan was made: refused, nothing changed.
    save();
    docker_ok(&["exec", &lb(), "sh", "-c", "echo '# drift' >> /etc/nginx/conf.d/default.conf"]);
    let out = scalectl(&["apply", planfile, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("the plan is stale: engine changed since it was made"), "{}", text(&out.stderr));
    assert!(conf().contains("balance leastconn\n"));

    // An edited plan (a command to run in the load balancer) is refused, nothing changed.
    save();
    let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(planfile).unwrap()).unwrap();
    let step = doc["plan"]["activate"].as_array_mut().unwrap().iter_mut().find(|s| s["action"] == "write_live").expect("a write_live step");
    step["commands"] = serde_json::json!([["sh", "-c", "touch /tmp/edited-plan-ran"]]);
    let edited_in = step["container"].as_str().unwrap().to_string();
    std::fs::write(planfile, serde_json::to_string(&doc).unwrap()).unwrap();
    let out = scalectl(&["apply", planfile, "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is not the plan its topology, release and a fresh observation give now"), "{}", text(&out.stderr));
    assert!(!docker(&["exec", &edited_in, "test", "-e", "/tmp/edited-plan-ran"]).status.success(), "the edited command ran");
    assert!(conf().contains("balance leastconn\n"));

    // Made again, it is applied exactly: the engine then matches the edited topology.
    save();
    let out = scalectl(&["apply", planfile, "--yes"]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(conf().contains("balance roundrobin\n"));
    let out = scalectl(&["plan", "-f", file, "--release", rel, "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

/// The size of an access log file in the load balancer's container, if it has one.
fn access_log_file(lb: &str) -> String {
    text(&docker(&["exec", lb, "stat", "-c", "%s", "/var/log/nginx/dock.access.log"]).stdout)
}

/// Lines on the collector container that contain `needle`, with the file each is in.
fn collected(needle: &str) -> Vec<(String, String)> {
    collected_in(&container_in_slot("collector"), needle)
}

fn container_in_slot(slot: &str) -> String {
    containers().into_iter().find(|(_, s, _)| s == slot).unwrap_or_else(|| panic!("no {slot} container: {:?}", containers())).0
}

#[test]
fn docker_request_id_reaches_the_collector_per_replica() {
    let _d = deployed();
    // The instance is `<slot>-<port>`: the collector's file is /var/log/scalectl/<slot>/scale-api-<port>.log.
    request_id_reaches_the_collector(LB, &collected);
}

#[test]
fn docker_collector_outage_loses_no_log_line() {
    let _d = deployed();
    let collector = container_in_slot("collector");
    collector_outage_loses_no_line(LB, &collected, &|| drop(docker_ok(&["stop", &collector])), &|| drop(docker_ok(&["start", &collector])));
}

#[test]
fn docker_shipper_replaced_neither_loses_nor_repeats_a_line() {
    let _d = deployed();
    let _restore = restore();
    let shipper = container_in_slot("logship");
    let run_id = run_id("reship");
    let c = reqwest::blocking::Client::new();
    let send = |from: usize, to: usize| {
        for n in from..to {
            assert!(c.get(format!("{LB}/")).header("X-Request-Id", format!("{run_id}-{n}")).send().unwrap().status().is_success());
        }
    };
    // Lines before the stop, while it is stopped, and after a new shipper container took over
    // (apply recreates the removed one on the same volume): each arrives exactly once.
    send(0, 20);
    docker_ok(&["stop", &shipper]);
    send(20, 60);
    docker_ok(&["rm", &shipper]);
    apply_ok(&topology(), release().to_str().unwrap());
    assert_eq!(container_in_slot("logship"), shipper, "the same spec, so the same name");
    send(60, 80);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ids = request_ids(&collected(&run_id));
        let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "a line arrived twice");
        if ids.len() == 80 {
            break;
        }
        assert!(Instant::now() < deadline, "{} of 80 lines arrived around a replaced shipper", ids.len());
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn docker_stopped_redis_is_found_by_doctor_and_fires_the_redis_down_alert() {
    let _d = deployed();
    let redis = container_in_slot("redis");
    docker_ok(&["stop", &redis]);
    let stopped = Instant::now();
    // Redis is started again however the checks end.
    struct Restart<'a>(&'a str);
    impl Drop for Restart<'_> {
        fn drop(&mut self) {
            docker(&["start", self.0]);
        }
    }
    let _restart = Restart(&redis);
    // The Redis exporter reports redis_up 0 at Prometheus' next scrape (every 15 s here).
    let found = loop {
        let out = scalectl(&["doctor", "-f", &topology(), "--window", "30s", "-o", "json"]);
        let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out.stderr)));
        if d["findings"].as_array().unwrap().iter().any(|f| f["id"] == "redis-down") {
            assert_eq!(out.status.code(), Some(2), "{d:#}");
            break stopped.elapsed();
        }
        assert!(stopped.elapsed() < Duration::from_secs(45), "doctor did not find redis-down within 45 s: {d:#}");
        std::thread::sleep(Duration::from_secs(2));
    };
    // RedisDown: the topology's `alerts.down_for: 20s`, plus a scrape and an evaluation interval
    // (15 s each), plus slack.
    let fired = loop {
        let v: serde_json::Value = reqwest::blocking::get("http://127.0.0.1:9091/api/v1/alerts").unwrap().json().unwrap();
        let firing = v["data"]["alerts"].as_array().unwrap().iter().any(|a| a["labels"]["alertname"] == "RedisDown" && a["state"] == "firing");
        if firing {
            break stopped.elapsed();
        }
        assert!(stopped.elapsed() < Duration::from_secs(80), "RedisDown did not fire within 80 s of stopping Redis: {v:#}");
        std::thread::sleep(Duration::from_secs(1));
    };
    eprintln!("redis stopped: doctor found redis-down after {:.0} s, RedisDown fired after {:.0} s", found.as_secs_f64(), fired.as_secs_f64());
    assert!(fired >= Duration::from_secs(19), "fired before its `for: 20s` window: {fired:?}");
    // Back: the replicas count again (their circuit breakers close) before the next test.
    drop(_restart);
    // nginx counted the replicas' 503s while Redis was down as failures of both upstreams (no
    // live upstream until fail_timeout): the restore is done when 20 requests in a row succeed.
    let back = Instant::now();
    let mut in_a_row = 0;
    while in_a_row < 20 {
        let ok = reqwest::blocking::Client::new().post(format!("{LB}/jobs")).json(&serde_json::json!({"ms": 1})).send().is_ok_and(|r| r.status().is_success())
            && reqwest::blocking::get(format!("{LB}/count")).is_ok_and(|r| r.status().is_success());
        in_a_row = if ok { in_a_row + 1 } else { 0 };
        assert!(back.elapsed() < Duration::from_secs(60), "requests still fail 60 s after Redis came back");
        if !ok {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    eprintln!("serving again {:.1} s after Redis came back", back.elapsed().as_secs_f64());
}

#[test]
fn docker_every_dashboard_query_returns_data_under_load() {
    let _d = deployed();
    // Scrapes every 15 s (the example's default): 40 s gives rate() over 1m windows two loaded
    // samples. The load balancer's series per replica come from the mtail container.
    // The workers' queue is charted (jobs are posted meanwhile); the workers' up series is the
    // hosts' (scalectl-instances): on docker the engine counts them, for doctor.
    // No database and no cache on docker yet.
    every_dashboard_query_returns_data(LB, "http://127.0.0.1:9091", Duration::from_secs(40), &[&["scalectl_worker_"][..], crate::support::DATABASE_AND_CACHE_SERIES].concat());
}

/// The user's app on docker: examples/node-docker.yaml with the stand-ins, its image built from a
/// copy of examples/node-app whose Dockerfile starts from the stand-in for the official node image.
mod node {
    use super::*;

    const LB: &str = "http://127.0.0.1:8083";

    /// A copy of the app's directory (a release of its own when `tag` differs), built FROM the stand-in.
    fn release_dir(tag: &str) -> tempfile::TempDir {
        let node = standins()[6].clone();
        let dir = crate::support::node_app_copy("node-docker-");
        let dockerfile = dir.path().join("Dockerfile");
        let src = std::fs::read_to_string(&dockerfile).unwrap();
        assert!(src.contains("FROM node:20-bookworm-slim\n"), "examples/node-app/Dockerfile no longer starts FROM node:20-bookworm-slim");
        std::fs::write(&dockerfile, src.replace("FROM node:20-bookworm-slim\n", &format!("FROM {node}\n"))).unwrap();
        std::fs::write(dir.path().join("release.txt"), format!("{tag}\n")).unwrap();
        dir
    }

    fn node_topology() -> &'static str {
        static T: OnceLock<tempfile::TempPath> = OnceLock::new();
        T.get_or_init(|| {
            let [nginx, redis, prometheus, node_exporter, redis_exporter, nginx_exporter, _] = standins();
            let mut src = std::fs::read_to_string(crate::example_path("node-docker")).unwrap();
            let from = "  network: hello-dock\n";
            assert!(src.contains(from));
            let base = scalectl::exec::lab::LOCAL_IMAGE;
            src = src.replace(
                from,
                &format!("  network: hello-dock\n  images: {{nginx: {nginx}, redis: {redis}, prometheus: {prometheus}, base: {base}, node_exporter: {node_exporter}, redis_exporter: {redis_exporter}, nginx_exporter: {nginx_exporter}}}\n"),
            );
            src = src.replace("nofile: 65536", "nofile: 16384");
            // Prometheus published, for doctor.
            assert!(src.contains("    load_balancer: 8083\n"));
            src = src.replace("    load_balancer: 8083\n", "    load_balancer: 8083\n    prometheus: 9093\n");
            let f = tempfile::Builder::new().prefix("node-docker-").suffix(".yaml").tempfile().unwrap();
            std::fs::write(f.path(), src).unwrap();
            f.into_temp_path()
        })
        .to_str()
        .unwrap()
    }

    /// The app measures no requests of its own (prom-client's default metrics, or no metrics at
    /// all): doctor finds each replica's requests and p99 among the load balancer's answers, which
    /// the mtail container counts by the address the engine gave the replica.
    fn replicas_judged_from_the_load_balancer(topology: &str) {
        let snapshot = tempfile::NamedTempFile::new().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for _ in 0..40 {
                count_at(LB);
            }
            let out = scalectl(&["doctor", "-f", topology, "--window", "30s", "-o", "json", "--save", snapshot.path().to_str().unwrap()]);
            let s: serde_json::Value = serde_json::from_slice(&std::fs::read(snapshot.path()).unwrap_or_default()).unwrap_or_else(|_| panic!("no snapshot: {}", text(&out.stderr)));
            let judged: Vec<(String, f64, bool)> = s["instances"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| (i["instance"].as_str().unwrap_or("").to_string(), i["requests_per_s"].as_f64().unwrap_or(0.0), i["p99_ms"].is_number()))
                .collect();
            if judged.len() == 2 && judged.iter().all(|(_, rps, p99)| *rps > 0.0 && *p99) {
                eprintln!("node on docker, per replica from the load balancer: {judged:?}");
                break;
            }
            assert!(Instant::now() < deadline, "doctor saw no requests per replica from the load balancer: {judged:?}\n{s:#}");
            std::thread::sleep(Duration::from_secs(3));
        }
    }

    /// The series an instant query gives on the published Prometheus of the node app; None while
    /// it does not answer (a new Prometheus container, after a change of its configuration, is
    /// running before it listens).
    fn prometheus_9093(q: &str) -> Option<Vec<serde_json::Value>> {
        let url = reqwest::Url::parse_with_params("http://127.0.0.1:9093/api/v1/query", [("query", q)]).unwrap();
        let v: serde_json::Value = crate::support::client().get(url).send().ok()?.json().ok()?;
        Some(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The release images of a repository, as `repository:tag`.
    fn release_images_of(repo: &str) -> Vec<String> {
        docker_ok(&["images", repo, "--format", "{{.Repository}}:{{.Tag}}"]).lines().map(String::from).collect()
    }

    fn app_replicas() -> Vec<String> {
        let out = docker_ok(&["ps", "--filter", "label=scalectl.topology=hello-dock", "--filter", "label=scalectl.role=app", "--format", "{{.Names}}"]);
        out.lines().map(String::from).collect()
    }

    #[test]
    fn docker_node_app_built_from_its_context_is_rolled_under_load_and_rolled_back() {
        let _turn = turn(Machine::Shared);
        crate::require("docker");
        let first = release_dir("first");
        let t = Instant::now();
        let out = apply(node_topology(), first.path().to_str().unwrap());
        assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
        eprintln!("node on docker, apply: {:.1} s", t.elapsed().as_secs_f64());
        let image_of = |n: &str| docker_ok(&["inspect", "-f", "{{.Config.Image}}", n]).trim().to_string();
        let replicas = app_replicas();
        assert_eq!(replicas.len(), 2, "{replicas:?}");
        let old = image_of(&replicas[0]);
        let id = scalectl::plan::Release::new(&scalectl::cli::release::pack(first.path()).unwrap(), true).id;
        assert_eq!(old, format!("hello-dock:{id}"), "tagged by the digest of its context");
        assert_eq!(instances_seen_at(LB, 40).len(), 2);
        let before = count_at(LB);
        for _ in 0..20 {
            count_at(LB);
        }
        assert_eq!(count_at(LB), before + 21);
        replicas_judged_from_the_load_balancer(node_topology());
        // Without metrics nothing scrapes the replicas: doctor finds them on the engine.
        let src = std::fs::read_to_string(node_topology()).unwrap();
        assert!(src.contains("    metrics: /metrics\n"));
        let unscraped = tempfile::Builder::new().prefix("node-docker-").suffix(".yaml").tempfile().unwrap().into_temp_path();
        std::fs::write(&unscraped, src.replace("    metrics: /metrics\n", "")).unwrap();
        let out = apply(unscraped.to_str().unwrap(), first.path().to_str().unwrap());
        assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
        let deadline = Instant::now() + Duration::from_secs(40);
        while prometheus_9093(r#"up{job="app"}"#).is_none_or(|up| !up.is_empty()) {
            assert!(Instant::now() < deadline, "Prometheus still scrapes the replicas");
            std::thread::sleep(Duration::from_secs(1));
        }
        replicas_judged_from_the_load_balancer(unscraped.to_str().unwrap());
        // The topology back (its metrics path: nginx's site changes and nginx reloads), before the
        // release: what the load below covers is a release and its rollback, which reload nothing.
        let out = apply(node_topology(), first.path().to_str().unwrap());
        assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));

        let next = release_dir("next");
        let load = Load::start_at(LB, 4);
        std::thread::sleep(Duration::from_millis(500));
        let ((out, out_rb), span) = timed(|| {
            let out = apply(node_topology(), next.path().to_str().unwrap());
            (out, scalectl(&["rollback", "-f", node_topology(), "--yes"]))
        });
        std::thread::sleep(Duration::from_millis(500));
        let report = load.finish();
        assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
        assert!(out_rb.status.success(), "{}\n{}", text(&out_rb.stdout), text(&out_rb.stderr));
        report.assert_covers(span, "the node app's release and rollback");
        let after = app_replicas();
        assert!(after.iter().all(|n| image_of(n) == old), "rolled back to {old}: {:?}", after.iter().map(|n| image_of(n)).collect::<Vec<_>>());
        assert_eq!(instances_seen_at(LB, 40).len(), 2);

        // An image the engine has, named instead of a release directory: the image behind the
        // name is the release (labelled as this topology's, tagged with its ID).
        let named = "scalectl-test/hello-image:v1";
        let next_image = format!("hello-dock:{}", scalectl::plan::Release::new(&scalectl::cli::release::pack(next.path()).unwrap(), true).id);
        assert!(release_images_of("hello-dock").contains(&next_image), "the image of the release rolled back from is kept");
        docker_ok(&["tag", &old, named]);
        let src = std::fs::read_to_string(node_topology()).unwrap();
        let with_image = |image: &str| {
            let from = "    release: ./node-app            # the build context (with its Dockerfile)\n";
            assert!(src.contains(from), "examples/node-docker.yaml no longer names its release as the test expects");
            let f = tempfile::Builder::new().prefix("node-image-").suffix(".yaml").tempfile().unwrap();
            std::fs::write(f.path(), src.replace(from, &format!("    image: {image}\n"))).unwrap();
            f.into_temp_path()
        };
        let by_image = with_image(named);
        let by_image = by_image.to_str().unwrap();
        let refused = scalectl(&["plan", "-f", by_image, "--release", next.path().to_str().unwrap()]);
        assert!(!refused.status.success() && text(&refused.stderr).contains("app.program.image"), "--release beside an image: {}", text(&refused.stderr));
        let image_id = |reference: &str| docker_ok(&["image", "inspect", "-f", "{{.Id}}", reference]).trim().trim_start_matches("sha256:")[..12].to_string();
        let want = format!("hello-dock:{}", image_id(named));
        let _ = docker(&["rmi", &want]); // left by an earlier run of this test
        let out = scalectl(&["apply", "-f", by_image, "--yes"]);
        assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
        assert!(text(&out.stdout).contains(&format!("build image {want} (labelled, from the engine's image sha256:")), "{}", text(&out.stdout));
        assert!(app_replicas().iter().all(|n| image_of(n) == want), "replicas run {:?}, not {want}", app_replicas().iter().map(|n| image_of(n)).collect::<Vec<_>>());
        let before = count_at(LB);
        for _ in 0..9 {
            count_at(LB);
        }
        assert_eq!(count_at(LB), before + 10);
        assert_eq!(instances_seen_at(LB, 40).len(), 2);
        // The name moved to another image: that is a new release.
        docker_ok(&["tag", &next_image, named]);
        let out = scalectl(&["plan", "-f", by_image, "--detailed-exitcode"]);
        assert_eq!(out.status.code(), Some(2), "{}\n{}", text(&out.stdout), text(&out.stderr));
        assert!(text(&out.stdout).contains(&format!("hello-dock:{}", image_id(&next_image))), "{}", text(&out.stdout));
        // An image neither on the engine nor pullable (no registry is reachable here).
        let absent = with_image("scalectl-test/never-built:1");
        let out = scalectl(&["plan", "-f", absent.to_str().unwrap()]);
        assert!(!out.status.success(), "{}", text(&out.stdout));
        assert!(text(&out.stderr).contains("`scalectl-test/never-built:1` is not on the engine and could not be pulled"), "{}", text(&out.stderr));
        docker_ok(&["rmi", named]);

        // Its containers (a log shipper among them) would only load the machine for the tests after.
        let out = scalectl(&["destroy", "-f", node_topology(), "--yes"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(app_replicas().is_empty());
    }

    /// A program without shared state runs with no Redis container, exporter or REDIS_URL, and a
    /// program that takes its port (and name) as arguments gets each replica's own in its argv.
    #[test]
    fn docker_program_without_redis_gets_its_port_and_instance_as_arguments() {
        let _turn = turn(Machine::Shared);
        crate::require("docker");
        let dir = release_dir("argv");
        let src = std::fs::read_to_string(node_topology()).unwrap();
        let edits = [
            ("name: hello-dock\n", "name: argv-dock\n"),
            ("  network: hello-dock\n", "  network: argv-dock\n"),
            ("redis:\n  persistence: none\n", ""),
            ("    load_balancer: 8083\n    prometheus: 9093\n", "    load_balancer: 8085\n"),
            ("    metrics: /metrics\n", ""),
            (
                "    command: [node, server.js]\n",
                "    command: [node, -e, \"require('http').createServer((q, s) => s.end(process.argv[1] + ' ' + process.argv[2])).listen(+process.argv[2])\", \"$(INSTANCE)\", \"$(PORT)\"]\n",
            ),
        ];
        let mut edited = src.clone();
        for (from, to) in edits {
            assert!(edited.contains(from), "examples/node-docker.yaml no longer has {from:?}");
            edited = edited.replacen(from, to, 1);
        }
        let file = tempfile::Builder::new().prefix("argv-dock-").suffix(".yaml").tempfile().unwrap().into_temp_path();
        std::fs::write(&file, edited).unwrap();
        let file = file.to_str().unwrap().to_string();
        let destroy = file.clone();
        let _gone = Restore::new(move || scalectl(&["destroy", "-f", &destroy, "--yes"]));
        let out = apply(&file, dir.path().to_str().unwrap());
        assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
        let slots = docker_ok(&["ps", "--filter", "label=scalectl.topology=argv-dock", "--format", "{{.Label \"scalectl.slot\"}}"]);
        assert!(!slots.lines().any(|s| s.contains("redis")), "no Redis where the topology places none: {slots}");
        let mut answers = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let body = crate::support::client().get("http://127.0.0.1:8085/").send().unwrap().text().unwrap();
            answers.insert(body);
        }
        assert_eq!(answers, ["api-1-4000 4000", "api-2-4000 4000"].map(String::from).into(), "each replica's argv holds its own name and port");
        for name in docker_ok(&["ps", "--filter", "label=scalectl.topology=argv-dock", "--filter", "label=scalectl.role=app", "--format", "{{.Names}}"]).lines() {
            let env = docker_ok(&["inspect", "-f", "{{json .Config.Env}}", name]);
            assert!(!env.contains("REDIS"), "{name}: {env}");
        }
    }
}

/// The worker containers of the test topology, by slot: (slot, container).
fn workers() -> Vec<(String, String)> {
    let mut w: Vec<(String, String)> = containers().into_iter().filter(|(_, slot, state)| slot.starts_with("worker-") && state == "running").map(|(n, s, _)| (s, n)).collect();
    w.sort();
    w
}

/// Jobs posted through the load balancer; each settled job read back.
struct Jobs(reqwest::blocking::Client);

impl Jobs {
    fn post(&self, body: serde_json::Value) -> String {
        let r = self.0.post(format!("{LB}/jobs")).json(&body).send().unwrap();
        let status = r.status();
        let text = r.text().unwrap_or_default();
        assert_eq!(status, 202, "POST /jobs: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST /jobs answered {text:?}: {e}"));
        v["id"].as_str().unwrap().to_string()
    }

    /// The job's record; an answer that is not one (a replica whose Redis breaker is still open
    /// after the test before restarted Redis answers 503) is a state of its own, asked again by
    /// [`Jobs::settled`] and shown by any assertion on it.
    fn get(&self, id: &str) -> serde_json::Value {
        let r = self.0.get(format!("{LB}/jobs/{id}")).send().unwrap();
        let status = r.status();
        let text = r.text().unwrap_or_default();
        serde_json::from_str(&text).ok().filter(|_| status.is_success()).unwrap_or_else(|| serde_json::json!({ "state": format!("unanswered: {status} {text}") }))
    }

    /// The job once completed or failed for good (60 s at most).
    fn settled(&self, id: &str) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let v = self.get(id);
            if v["state"] == "completed" || v["state"] == "failed" || start.elapsed() > Duration::from_secs(60) {
                return v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Jobs completed since the queue began (`jobs:completed`, which the completing script counts
    /// once per job), read as the exporter reads it.
    fn completed(&self) -> u64 {
        let redis = container_in_slot("redis");
        let pw = scalectl::render::redis_exporter_password(crate::lab::lab_redis_password());
        let out = docker_ok(&["exec", &redis, "sh", "-c", &format!("REDISCLI_AUTH='{pw}' redis-cli --no-auth-warning --user scalectl-exporter GET jobs:completed")]);
        out.trim().parse().unwrap_or(0)
    }
}

/// scale-api's workers as containers (examples/docker.yaml: two on the stream `jobs`), with the
/// hosts' semantics: each job posted through the load balancer completes once, by both workers; a
/// job that always fails is a dead letter after 3 attempts; a worker SIGKILLed mid-job loses
/// nothing (the engine restarts it, the job is taken over); a roll of the workers during a stream
/// of jobs loses none, replaces every worker, restarts no replica; status and logs show them.
#[test]
fn docker_workers_take_each_job_once_survive_a_kill_and_lose_none_in_a_roll() {
    let _d = deployed();
    let _restore = restore();
    let jobs = Jobs(crate::support::client());
    // The test before may have restarted Redis (the Redis-down test): the replicas' breaker lets
    // jobs in again once it closes (a few seconds after Redis is back).
    let start = Instant::now();
    let first = loop {
        let sent = jobs.0.post(format!("{LB}/jobs")).json(&serde_json::json!({"ms": 1})).send();
        if let Ok(r) = sent
            && r.status() == reqwest::StatusCode::ACCEPTED
        {
            break r.json::<serde_json::Value>().unwrap()["id"].as_str().unwrap().to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "POST /jobs was not accepted within 30 s");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(jobs.settled(&first)["state"], "completed");
    eprintln!("jobs accepted after {:.1} s", start.elapsed().as_secs_f64());
    let before = workers();
    assert_eq!(before.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(), ["worker-1", "worker-2"]);
    let completed = jobs.completed();
    let failing = jobs.post(serde_json::json!({"fail": true}));
    let ids: Vec<String> = (0..200).map(|i| jobs.post(serde_json::json!({"rows": 1000 + i, "ms": 10}))).collect();
    let mut by_worker: std::collections::BTreeMap<String, u32> = Default::default();
    for (i, id) in ids.iter().enumerate() {
        let v = jobs.settled(id);
        assert_eq!((v["state"].as_str(), v["result"]["rows"].as_u64()), (Some("completed"), Some(1000 + i as u64)), "{v}");
        *by_worker.entry(v["worker"].as_str().unwrap_or("").to_string()).or_default() += 1;
    }
    eprintln!("200 jobs on docker, by worker: {by_worker:?}");
    assert_eq!(by_worker.keys().cloned().collect::<Vec<_>>(), ["worker-1", "worker-2"], "{by_worker:?}");
    // The workers' lines are shipped to the collector, filed under their slot.
    let start = Instant::now();
    let shipped = loop {
        let found = collected(&ids[0]);
        if !found.is_empty() || start.elapsed() > Duration::from_secs(20) {
            break found;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(shipped.iter().any(|(file, line)| file.contains("/worker-") && line.contains("job completed")), "the worker's line for job {} at the collector: {shipped:?}", ids[0]);
    let v = jobs.settled(&failing);
    assert_eq!((v["state"].as_str(), v["attempts"].as_u64()), (Some("failed"), Some(3)), "{v}");
    assert_eq!(jobs.completed() - completed, 200, "each job completed once");

    // SIGKILL to the worker that holds a 3 s job, from outside (a crash, not a stop).
    let slow = jobs.post(serde_json::json!({"rows": 7, "ms": 3000}));
    let start = Instant::now();
    let holder = loop {
        let v = jobs.get(&slow);
        if v["state"] == "active" {
            break v["worker"].as_str().unwrap().to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no worker took the slow job: {v}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let name = container_in_slot(&holder);
    let pid = docker_ok(&["inspect", "-f", "{{.State.Pid}}", &name]).trim().to_string();
    let restarts = || docker_ok(&["inspect", "-f", "{{.RestartCount}}", &name]).trim().parse::<u32>().unwrap();
    let restarts_before = restarts();
    assert!(Command::new("kill").args(["-9", &pid]).status().unwrap().success());
    let v = jobs.settled(&slow);
    assert_eq!((v["state"].as_str(), v["attempts"].as_u64()), (Some("completed"), Some(2)), "taken again and completed once: {v}");
    let start = Instant::now();
    while restarts() == restarts_before || docker_ok(&["inspect", "-f", "{{.State.Running}}", &name]).trim() != "true" {
        assert!(start.elapsed() < Duration::from_secs(20), "the engine did not restart {name}");
        std::thread::sleep(Duration::from_millis(250));
    }

    // A roll of the workers (their own env changed) during a stream of jobs.
    let replicas_before = replicas();
    let rolled = topology_with(&[("JOBS_CLAIM_IDLE: 1s", "JOBS_CLAIM_IDLE: 2s")]);
    let completed = jobs.completed();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poster = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let jobs = Jobs(crate::support::client());
            let mut ids = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                ids.push(jobs.post(serde_json::json!({"rows": 3, "ms": 50})));
                std::thread::sleep(Duration::from_millis(20));
            }
            ids
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let out = apply(rolled.to_str().unwrap(), release().to_str().unwrap());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let posted = poster.join().unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    for id in &posted {
        let v = jobs.settled(id);
        assert_eq!(v["state"].as_str(), Some("completed"), "{v}");
    }
    assert_eq!(jobs.completed() - completed, posted.len() as u64, "each of the {} jobs posted during the roll completed once", posted.len());
    let after = workers();
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|(_, n)| before.iter().all(|(_, b)| b != n)), "every worker replaced: {before:?} -> {after:?}");
    assert_eq!(replicas(), replicas_before, "a change of the workers' env restarts no replica");
    eprintln!("rolled 2 workers during {} jobs, none lost", posted.len());

    // status shows them with their release; logs have their lines.
    let status = scalectl(&["status", "-f", rolled.to_str().unwrap(), "-o", "json"]);
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_else(|_| panic!("{}", text(&status.stderr)));
    let places: Vec<&str> = s["items"].as_array().unwrap().iter().filter(|i| i["release"].is_string()).map(|i| i["place"].as_str().unwrap()).collect();
    assert!(places.contains(&"worker-1") && places.contains(&"worker-2"), "{s:#}");
    let logs = scalectl(&["logs", "-f", rolled.to_str().unwrap(), "--instance", "worker-1", "--since", "5m"]);
    assert!(logs.status.success() && !logs.stdout.is_empty(), "{}", text(&logs.stderr));

    // A worker stopped: doctor counts the workers from the engine (nothing reports them to
    // Prometheus on docker) and finds it down; the restore starts it again.
    docker_ok(&["stop", "-t", "40", &after[1].1]);
    let out = scalectl(&["doctor", "-f", rolled.to_str().unwrap(), "--window", "30s", "-o", "json"]);
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out.stderr)));
    let down = d["findings"].as_array().unwrap().iter().find(|f| f["id"] == "workers-down").unwrap_or_else(|| panic!("no workers-down: {d:#}"));
    assert!(down["summary"].as_str().unwrap_or("").contains("1 of the 2 workers"), "{down:#}");
}

/// The database tier on docker: examples/docker-database.yaml with the stand-ins. PostgreSQL,
/// Patroni, etcd, HAProxy and the postgres exporter are Debian's packages in scalectl's own image,
/// built here on the lab's Debian base. Requests go to 127.0.0.1:8087 only; the deployment is
/// destroyed at the end, pass or fail (nothing else uses it).
mod database {
    use super::*;

    const LB: &str = "http://127.0.0.1:8087";
    const NAME: &str = "dockdb";
    /// The test's passwords: none may show in a plan, `docker inspect` or an argv.
    const PASSWORDS: [(&str, &str); 3] =
        [("DOCKDB_DB_PASSWORD", "dockdb-app-pw-5e1f0a"), ("DOCKDB_DB_REPLICATION_PASSWORD", "dockdb-repl-pw-77c2b9"), ("DOCKDB_DB_REST_PASSWORD", "dockdb-rest-pw-0d93e4")];

    fn topology_with(edits: &[(&str, &str)]) -> tempfile::TempPath {
        let [nginx, redis, prometheus, node_exporter, redis_exporter, nginx_exporter, _] = standins();
        let base = scalectl::exec::lab::LOCAL_IMAGE;
        let mut src = std::fs::read_to_string(crate::example_path("docker-database")).unwrap();
        let images = format!(
            "    nginx: {nginx}\n    prometheus: {prometheus}\n    base: {base}\n    node_exporter: {node_exporter}\n    redis_exporter: {redis_exporter}\n    nginx_exporter: {nginx_exporter}\n"
        );
        let redis = format!("    redis: {redis}\n");
        for (from, to) in [("    nginx: nginx:1.27\n", images.as_str()), ("    redis: redis:7\n", redis.as_str()), ("nofile: 65536", "nofile: 16384")].into_iter().chain(edits.iter().copied()) {
            assert!(src.contains(from), "examples/docker-database.yaml no longer has {from:?}");
            src = src.replace(from, to);
        }
        let f = tempfile::Builder::new().prefix("docker-database-").suffix(".yaml").tempfile().unwrap();
        std::fs::write(f.path(), src).unwrap();
        f.into_temp_path()
    }

    fn scalectl(args: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_scalectl"));
        c.env("DOCKDB_REDIS_PASSWORD", crate::lab::lab_redis_password()).env_remove("SCALECTL_PROGRESS");
        for (var, value) in PASSWORDS {
            c.env(var, value);
        }
        c.args(args).output().unwrap()
    }

    /// Destroys the deployment when the test ends, pass or fail.
    struct Destroy(String);

    impl Drop for Destroy {
        fn drop(&mut self) {
            let out = scalectl(&["destroy", "-f", &self.0, "--yes"]);
            if !out.status.success() && !std::thread::panicking() {
                panic!("destroy failed: {}{}", text(&out.stdout), text(&out.stderr));
            }
        }
    }

    fn users(method: &str, id: u32, body: Option<&str>) -> (u16, serde_json::Value) {
        let c = crate::support::client();
        let url = format!("{LB}/users/{id}");
        let r = match body {
            Some(b) => c.request(method.parse().unwrap(), url).header("content-type", "application/json").body(b.to_string()),
            None => c.request(method.parse().unwrap(), url),
        };
        let r = r.send().unwrap();
        (r.status().as_u16(), r.json().unwrap_or_default())
    }

    fn release_records() -> Vec<String> {
        docker_ok(&["ps", "-a", "--filter", &format!("label=scalectl.topology={NAME}"), "--filter", "label=scalectl.role=release", "--format", "{{.Names}} {{.Status}}"])
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn docker_database_serves_users_through_its_proxy_runs_the_release_command_once_and_keeps_the_old_release_when_it_fails() {
        let _turn = turn(Machine::Shared);
        crate::require("docker");
        let topology = topology_with(&[]);
        let file = topology.to_str().unwrap().to_string();
        let _destroy = Destroy(file.clone());
        let first = release();
        let t = Instant::now();
        let out = scalectl(&["apply", "-f", &file, "--release", first.to_str().unwrap(), "--yes"]);
        assert!(out.status.success(), "apply failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
        eprintln!("docker database: a first apply (the tier bootstrapped, the release command run) took {:.1} s", t.elapsed().as_secs_f64());
        let printed = text(&out.stdout) + &text(&out.stderr);

        // Patroni: one leader and one replica.
        let members = docker_ok(&["exec", &container("db-1"), "curl", "-fsS", "http://127.0.0.1:8008/cluster"]);
        let cluster: serde_json::Value = serde_json::from_str(&members).unwrap();
        let roles: Vec<(String, String)> =
            cluster["members"].as_array().unwrap().iter().map(|m| (m["role"].as_str().unwrap_or("").into(), m["name"].as_str().unwrap_or("").into())).collect();
        let leaders: Vec<&str> = roles.iter().filter(|(r, _)| r == "leader").map(|(_, n)| n.as_str()).collect();
        assert_eq!(leaders.len(), 1, "{roles:?}");
        assert!(roles.iter().any(|(r, _)| r == "replica"), "{roles:?}");
        let psql = |sql: &str| docker_ok(&["exec", &container(leaders[0]), "psql", "-XtAq", "-c", sql]).trim().to_string();

        // A write through the load balancer and the writer, read back through the reader once the
        // replica has replayed it (its LSN, not a sleep).
        let (status, put) = users("PUT", 42, Some(r#"{"name":"grace"}"#));
        assert_eq!(status, 200, "{put}");
        let lsn = psql("select pg_current_wal_lsn()");
        let waited = Instant::now();
        while psql(&format!("select count(*) from pg_stat_replication where state = 'streaming' and replay_lsn >= '{lsn}'::pg_lsn")) != "1" {
            assert!(waited.elapsed() < Duration::from_secs(30), "the replica never replayed {lsn}");
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("docker database: the write replayed by the replica {:.3} s after it returned", waited.elapsed().as_secs_f64());
        let (status, got) = users("GET", 42, None);
        assert_eq!((status, got["name"].as_str()), (200, Some("grace")), "{got}");
        let (status, _) = users("GET", 4242, None);
        assert_eq!(status, 404, "an unknown user");

        // The release command ran once, and its container is the record: the next apply changes nothing.
        let records = release_records();
        assert!(records.len() == 1 && records[0].contains("Exited (0)"), "{records:?}");
        // It ended before any replica was created.
        let record = records[0].split_whitespace().next().unwrap();
        let finished = docker_ok(&["inspect", "-f", "{{.State.FinishedAt}}", record]).trim().to_string();
        for slot in ["api-1", "api-2"] {
            let created = docker_ok(&["inspect", "-f", "{{.Created}}", &container(slot)]).trim().to_string();
            assert!(finished < created, "the release command ended at {finished}, after {slot} was created at {created}");
        }
        // A status of the deployment calls it healthy: the stopped record is no failed container.
        let status = scalectl(&["status", "-f", &file]);
        assert_eq!(status.status.code(), Some(0), "{}", text(&status.stdout));
        let again = scalectl(&["plan", "-f", &file, "--release", first.to_str().unwrap(), "--detailed-exitcode"]);
        assert_eq!(again.status.code(), Some(0), "a converged engine plans nothing:\n{}", text(&again.stdout));

        // Every member's exporter reads its PostgreSQL over the socket they share (peer, no
        // password); Patroni's own metrics of each member, and db-proxy's HAProxy, are scraped.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (up, patroni, proxy) = (values("pg_up"), values("patroni_postgres_running"), values("count(haproxy_server_status{host=\"db-proxy\"})"));
            if up == [1.0, 1.0] && patroni == [1.0, 1.0] && proxy.first().is_some_and(|n| *n > 0.0) {
                break;
            }
            assert!(Instant::now() < deadline, "pg_up {up:?}, patroni_postgres_running {patroni:?}, db-proxy's servers {proxy:?}");
            std::thread::sleep(Duration::from_secs(2));
        }

        // No password in the plan, in any container's configuration (environment, command) or argv.
        let plan = scalectl(&["plan", "-f", &file, "--release", first.to_str().unwrap(), "-o", "json"]);
        let ids = docker_ok(&["ps", "-aq", "--filter", &format!("label=scalectl.topology={NAME}")]);
        let inspect = docker_ok(&[&["inspect"][..], &ids.split_whitespace().collect::<Vec<_>>()].concat());
        let argv = docker_ok(&["exec", &container("db-1"), "ps", "-eo", "args"]);
        for (_, pw) in PASSWORDS {
            for (what, s) in [("apply's output", &printed), ("the plan", &text(&plan.stdout)), ("docker inspect", &inspect), ("the argv on db-1", &argv)] {
                assert!(!s.contains(pw), "a database password in {what}");
            }
        }

        // A release whose command fails: the apply stops with its output, the old release serves.
        let failing = topology_with(&[("release_command: [scale-api, migrate]", "release_command: [scale-api, migrate, --no-such-flag]")]);
        let second = new_release("dockdb-failing");
        let before = docker_ok(&["ps", "--filter", &format!("label=scalectl.topology={NAME}"), "--filter", "label=scalectl.role=app", "--format", "{{.Image}}"]);
        let out = scalectl(&["apply", "-f", failing.to_str().unwrap(), "--release", second.to_str().unwrap(), "--yes"]);
        let said = text(&out.stdout) + &text(&out.stderr);
        assert!(!out.status.success(), "{said}");
        // Its own output too: clap's refusal of the flag.
        assert!(said.contains("the release command `migrate --no-such-flag` failed") && said.contains("unexpected argument"), "{said}");
        let after = docker_ok(&["ps", "--filter", &format!("label=scalectl.topology={NAME}"), "--filter", "label=scalectl.role=app", "--format", "{{.Image}}"]);
        assert_eq!(before, after, "the replicas still run the old release");
        let (status, got) = users("GET", 42, None);
        assert_eq!((status, got["name"].as_str()), (200, Some("grace")), "{got}");
        assert_eq!(release_records().len(), 1, "the failed run left no record: {:?}", release_records());

        compose_bundle_runs_the_tier_with_its_passwords_as_files();
    }

    /// `docker compose` in `dir`, with the topology's secrets as its shell's variables.
    fn compose(dir: &std::path::Path, args: &[&str]) -> Output {
        let mut c = Command::new(compose_bin());
        c.current_dir(dir).env("DOCKDB_REDIS_PASSWORD", crate::lab::lab_redis_password());
        for (var, value) in PASSWORDS {
            c.env(var, value);
        }
        c.args(args).output().unwrap()
    }

    /// The bundle taken down, its volumes and images removed, pass or fail.
    struct Down(std::path::PathBuf, Vec<String>);

    impl Drop for Down {
        fn drop(&mut self) {
            let out = compose(&self.0, &["down", "--volumes", "--remove-orphans", "--timeout", "5"]);
            if !out.status.success() {
                eprintln!("docker compose down failed: {}", text(&out.stderr));
            }
            for image in &self.1 {
                let _ = docker(&["rmi", image]);
            }
        }
    }

    /// The compose bundle of the same topology (another name and ports, beside the engine's
    /// deployment, whose tools image it borrows): `up --wait` starts etcd, the members with their
    /// passwords written at start, db-proxy, the release command (which must succeed before the
    /// replicas start), and a user written through the load balancer is read back; no value shows
    /// in compose.yaml or `docker inspect`.
    fn compose_bundle_runs_the_tier_with_its_passwords_as_files() {
        let t = topology_with(&[
            ("name: dockdb\n", "name: dockdbc\n"),
            ("  network: dockdb\n", "  network: dockdbc\n"),
            ("    scale_api: dockdb-api:latest", "    scale_api: scalectl-test/dockdbc-api:latest"),
            ("    load_balancer: 8087\n    prometheus: 9097\n", "    load_balancer: 8088\n    prometheus: 9098\n"),
        ]);
        let dir = tempfile::Builder::new().prefix("dockdbc-").tempdir().unwrap();
        let out = scalectl(&["render", "-f", t.to_str().unwrap(), "-o", dir.path().to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let bundle = dir.path().join("docker");
        let file = std::fs::read_to_string(bundle.join("compose.yaml")).unwrap();
        for (_, pw) in PASSWORDS {
            assert!(!file.contains(pw), "a database password in compose.yaml");
        }
        std::fs::copy(release(), bundle.join("scale-api")).unwrap();
        let api_image = "scalectl-test/dockdbc-api:latest";
        docker_ok(&["build", "-q", "-t", api_image, bundle.to_str().unwrap()]);
        // The engine deployment's tools image, named as the bundle names it (the two Dockerfiles
        // differ in the topology's name only): no second build of Debian's packages.
        let tools = file.lines().find_map(|l| l.trim().strip_prefix("image: \"scalectl-tools:")).map(|tag| format!("scalectl-tools:{}", tag.trim_end_matches('"'))).unwrap();
        let deployed_tools = docker_ok(&["inspect", "-f", "{{.Config.Image}}", &container("db-1")]);
        docker_ok(&["tag", deployed_tools.trim(), &tools]);
        let _down = Down(bundle.clone(), vec![api_image.to_string(), tools]);
        let t0 = Instant::now();
        let up = compose(&bundle, &["up", "--detach", "--no-build", "--wait", "--wait-timeout", "180"]);
        let logs = || text(&compose(&bundle, &["logs", "--no-color", "--tail", "20"]).stdout);
        assert!(up.status.success(), "docker compose up failed:\n{}\n{}", text(&up.stderr), logs());
        eprintln!("docker database: the compose bundle up, the tier bootstrapped and the release command run, in {:.1} s", t0.elapsed().as_secs_f64());
        let release = docker_ok(&["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "dockdbc-release-1"]);
        assert_eq!(release.trim(), "exited 0", "the release command's container");
        let c = crate::support::client();
        let lb = "http://127.0.0.1:8088";
        let put = c.put(format!("{lb}/users/9")).header("content-type", "application/json").body(r#"{"name":"hopper"}"#).send().unwrap();
        assert_eq!(put.status().as_u16(), 200, "{}\n{}", put.text().unwrap_or_default(), logs());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got: serde_json::Value = c.get(format!("{lb}/users/9")).send().unwrap().json().unwrap_or_default();
            if got["name"] == "hopper" {
                break;
            }
            assert!(Instant::now() < deadline, "the bundle never read the user back: {got}\n{}", logs());
            std::thread::sleep(Duration::from_millis(200));
        }
        // The members' password files are PostgreSQL's user's alone; no value in `docker inspect`.
        assert_eq!(docker_ok(&["exec", "dockdbc-db-1-1", "stat", "-c", "%a %U", "/etc/patroni/scalectl.env", "/etc/patroni/scalectl-app-password"]), "400 postgres\n400 postgres\n");
        let names = docker_ok(&["ps", "-a", "--filter", "label=com.docker.compose.project=dockdbc", "--format", "{{.Names}}"]);
        for name in names.lines() {
            let inspect = docker_ok(&["inspect", name]);
            for (_, pw) in PASSWORDS {
                assert!(!inspect.contains(pw), "{name} shows a database password in docker inspect");
            }
        }
    }

    /// The values of an instant query on the published Prometheus (none while it does not answer).
    fn values(query: &str) -> Vec<f64> {
        let url = reqwest::Url::parse_with_params("http://127.0.0.1:9097/api/v1/query", [("query", query)]).unwrap();
        let v: serde_json::Value = crate::support::client().get(url).send().ok().and_then(|r| r.json().ok()).unwrap_or_default();
        v["data"]["result"].as_array().into_iter().flatten().filter_map(|r| r["value"][1].as_str()?.parse().ok()).collect()
    }

    /// The running container of `slot`.
    fn container(slot: &str) -> String {
        docker_ok(&["ps", "--filter", &format!("label=scalectl.topology={NAME}"), "--filter", &format!("label=scalectl.slot={slot}"), "--format", "{{.Names}}"]).trim().to_string()
    }
}

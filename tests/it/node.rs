//! The user's own app on the lab: examples/node.yaml deploys the Express service of
//! examples/node-app (real Node.js from Debian's nodejs, Redis, nginx, systemd) to a lab of three
//! hosts. Requests go to 127.0.0.1 only. Takes turns with the other end-to-end tests (support::turn).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::lab::{docker_exec, run, run_ok};
use crate::support::{Load, Machine, Restore, Turn, count_at, instances_seen_at, node_app_copy, node_app_dir, run_id, text, timed, turn};

const LB: &str = "http://127.0.0.1:8082";

fn node_yaml() -> String {
    crate::example_path("node")
}


/// The first apply onto fresh hosts: its output, and doctor's verdict right after it.
struct First {
    apply: String,
    doctor: (Option<i32>, serde_json::Value),
}

static FIRST: OnceLock<First> = OnceLock::new();

/// The node lab, up and converged on examples/node.yaml; held for one test. The lab is made fresh
/// once per run, so the first test's apply is a first deploy (judged by doctor right after it:
/// alone on the machine). Every test after it finds the lab converged, or fails: a test that
/// changes it restores it itself ([`restore`]), and nothing repairs or reloads between tests.
fn node_lab() -> Turn {
    node_lab_with(if FIRST.get().is_none() { Machine::Alone } else { Machine::Shared })
}

/// The node lab, for a test that judges it with doctor: the other test process waits meanwhile.
fn node_lab_alone() -> Turn {
    node_lab_with(Machine::Alone)
}

fn node_lab_with(machine: Machine) -> Turn {
    let turn = turn(machine);
    crate::require("docker");
    node_app_dir();
    FIRST.get_or_init(|| {
        let _ = run(&["lab", "down", "-f", &node_yaml()]);
        let t = Instant::now();
        run_ok(&["lab", "up", "-f", &node_yaml()]);
        eprintln!("node lab up: {:.1} s", t.elapsed().as_secs_f64());
        let t = Instant::now();
        let apply = text(&run_ok(&["apply", "-f", &node_yaml(), "--yes"]).stdout);
        eprintln!("node first deploy: {:.1} s", t.elapsed().as_secs_f64());
        First { apply, doctor: crate::lab::doctor(&node_yaml(), &["--window", "60s"]) }
    });
    let out = run(&["plan", "-f", &node_yaml(), "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "the test before left the node lab changed:\n{}{}", text(&out.stdout), text(&out.stderr));
    turn
}

/// Applies examples/node.yaml when the test ends, passed or failed: for a test that changes the lab.
fn restore() -> Restore {
    Restore::new(|| run(&["apply", "-f", &node_yaml(), "--yes"]))
}

/// Each instance's systemd invocation id (new at every start of its unit), by host and unit.
fn invocations() -> std::collections::BTreeMap<String, String> {
    let mut ids = std::collections::BTreeMap::new();
    for host in ["hello-app-1", "hello-app-2"] {
        let units = docker_exec(host, "systemctl list-units --plain --no-legend --state=active 'hello@*.service' | awk '{print $1}'");
        for unit in units.lines() {
            let id = docker_exec(host, &format!("systemctl show -p InvocationID --value {unit}")).trim().to_string();
            ids.insert(format!("{host} {unit}"), id);
        }
    }
    assert!(ids.len() >= 4, "{ids:?}");
    ids
}

/// A copy of the app's directory with one file changed: a release of its own.
fn release_copy(tag: &str, server_js: impl FnOnce(String) -> String) -> tempfile::TempDir {
    let dir = node_app_copy("node-release-");
    let js = dir.path().join("server.js");
    let src = std::fs::read_to_string(&js).unwrap();
    std::fs::write(&js, format!("{}\n// {}\n", server_js(src), run_id(tag))).unwrap();
    dir
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn node_app_serves_from_every_instance_one_per_core_and_counts_exactly_in_redis() {
    let _lab = node_lab();
    let cores: usize = docker_exec("hello-app-1", "nproc").trim().parse().unwrap();
    let units = docker_exec("hello-app-1", "systemctl list-units --plain --no-legend --state=active 'hello@*.service' | wc -l");
    assert_eq!(units.trim().parse::<usize>().unwrap(), cores, "instances: max runs one process per core");
    let running = docker_exec("hello-app-1", "ps -o args= -C node");
    assert!(running.lines().filter(|l| l.trim() == "node server.js").count() == cores, "{running}");
    let seen = instances_seen_at(LB, 80);
    assert_eq!(seen.len(), 2 * cores, "every instance on both hosts answers: {seen:?}");
    // prom-client's metrics are scraped by Prometheus, not served to the public.
    assert_eq!(crate::support::client().get(format!("{LB}/metrics")).send().unwrap().status(), 404);
    assert!(seen.iter().any(|s| s.starts_with("app-1-")) && seen.iter().any(|s| s.starts_with("app-2-")), "{seen:?}");
    // The counter lives in Redis: N requests spread over every instance advance it by exactly N.
    let before = count_at(LB);
    for _ in 0..40 {
        count_at(LB);
    }
    assert_eq!(count_at(LB), before + 41);
    // The release is the packed directory: the same files plan nothing new.
    let out = run_ok(&["plan", "-f", &node_yaml()]);
    assert!(text(&out.stdout).contains("No changes"), "{}", text(&out.stdout));
}

#[test]
fn node_new_release_and_three_reloads_under_load_fail_no_request() {
    let _lab = node_lab();
    let _restore = restore();
    let next = release_copy("node-rolling", |s| s);
    let load = Load::start_at(LB, 8);
    std::thread::sleep(Duration::from_millis(500));
    let ((), span) = timed(|| {
        let t = Instant::now();
        let out = run_ok(&["apply", "-f", &node_yaml(), "--release", path(next.path()), "--yes"]);
        eprintln!("node release under load: {:.1} s", t.elapsed().as_secs_f64());
        let said = text(&out.stdout);
        assert!(said.contains("archive, unpacked") && said.contains("rolling restart") && said.contains("out of the balancer"), "{said}");
        for _ in 0..3 {
            let before = invocations();
            let out = run_ok(&["reload", "-f", &node_yaml(), "--yes"]);
            let after = invocations();
            assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>());
            for (unit, id) in &before {
                assert_ne!(&after[unit], id, "{unit} was not restarted by the reload:\n{}", text(&out.stdout));
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    // Once in two full runs every client waited 13.4 s for an answer during these reloads when
    // each drain reloaded nginx and waited for its old workers; no drain reloads anything now.
    load.finish().assert_covers(span, "the node app's release and reloads");
}

#[test]
fn node_release_that_never_becomes_ready_is_rolled_back_with_its_logs() {
    let _lab = node_lab();
    let _restore = restore();
    // Listens, but never ready: the readiness route answers 503 with a line in the log.
    let broken = release_copy("node-broken", |s| {
        s.replace("app.get('/readyz', (req, res) => {", "app.get('/readyz', (req, res) => {\n  log('error', 'broken release: never ready', {});\n  return res.status(503).send('broken\\n');")
    });
    let load = Load::start_at(LB, 2);
    std::thread::sleep(Duration::from_millis(500));
    // Long enough for Node to start on a busy machine and answer its 503 at least once.
    let (out, span) = timed(|| run(&["apply", "-f", &node_yaml(), "--release", path(broken.path()), "--yes", "--ready-timeout", "10s"]));
    let report = load.finish();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("hello@4000.service never became ready") && err.contains("HTTP 503 broken"), "{err}");
    assert!(err.contains("broken release: never ready"), "its log lines are shown: {err}");
    assert!(err.contains("app-1: rolled back (release"), "{err}");
    report.assert_covers(span, "the failed deploy");
    let cores: usize = docker_exec("hello-app-1", "nproc").trim().parse().unwrap();
    assert_eq!(instances_seen_at(LB, 80).len(), 2 * cores, "the old release serves on every instance");
    let out = run_ok(&["plan", "-f", &node_yaml(), "-o", "json"]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for h in plan["hosts"].as_array().unwrap() {
        assert_eq!(h["activate"], serde_json::json!([]), "{}: {}", h["host"], h["activate"]);
    }
}

#[test]
fn node_logs_show_a_request_id_from_the_instance_that_served_it() {
    let _lab = node_lab();
    let id = run_id("node-logs");
    let r = crate::support::client().get(format!("{LB}/")).header("x-request-id", &id).send().unwrap();
    let served = r.headers()["x-instance"].to_str().unwrap().to_string();
    let found = |args: &[&str]| {
        // The journal may take a moment to have the line: a few tries, each a fresh `logs`.
        (0..10).find_map(|_| {
            let out = run_ok(args);
            let lines = text(&out.stdout);
            let hit = lines.lines().find(|l| l.contains(&id)).map(String::from);
            if hit.is_none() {
                std::thread::sleep(Duration::from_millis(500));
            }
            hit
        })
    };
    let line = found(&["logs", "-f", &node_yaml(), "--since", "2m"]).unwrap_or_else(|| panic!("{id} not in `scalectl logs`"));
    assert_eq!(line.split_whitespace().nth(1), Some(served.as_str()), "labelled with the instance that served it: {line}");
    let only = found(&["logs", "-f", &node_yaml(), "--since", "2m", "--instance", &served, "-o", "json"]).expect("the instance's own lines");
    let v: serde_json::Value = serde_json::from_str(&only).unwrap();
    assert_eq!(v["instance"], served.as_str());
    let other = if served.ends_with("-4000") { served.replace("-4000", "-4001") } else { served.replace("-4001", "-4000") };
    let out = run_ok(&["logs", "-f", &node_yaml(), "--since", "2m", "--instance", &other]);
    assert!(!text(&out.stdout).contains(&id), "another instance's lines do not have it");

    // --follow: a request made while it runs shows up as it is logged.
    let mut follow = crate::lab::scalectl(&["logs", "-f", &node_yaml(), "--since", "1s", "--follow"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let lines = std::io::BufRead::lines(std::io::BufReader::new(follow.stdout.take().unwrap()));
    let later = run_id("node-follow");
    let sender = {
        let later = later.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(3)); // the streams are open by then
            crate::support::client().get(format!("{LB}/")).header("x-request-id", &later).send().unwrap();
        })
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = false;
    while let Ok(l) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if l.contains(&later) {
            seen = true;
            break;
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    sender.join().unwrap();
    assert!(seen, "{later} never came through `scalectl logs --follow`");
}

/// The hosts were busy installing packages during the first apply, not with the app: that is no
/// reason to scale it.
#[test]
fn node_doctor_right_after_the_first_apply_is_healthy() {
    let _lab = node_lab();
    let first = FIRST.get().unwrap();
    assert!(first.apply.contains("install packages"), "the first apply deployed onto fresh hosts: {}", first.apply);
    let (code, d) = &first.doctor;
    assert_eq!(*code, Some(0), "{d:#}");
    assert_eq!(d["healthy"], true, "{d:#}");
}

/// Doctor judges the user's app by what it exposes (prom-client's metrics): healthy when idle, and
/// a blocked event loop, naming the instances, while the deliberately blocking `/heavy` is hammered.
#[test]
fn node_doctor_finds_the_idle_fleet_healthy_and_the_blocked_event_loop_under_heavy() {
    let _lab = node_lab_alone();
    let (code, d) = crate::lab::doctor(&node_yaml(), &["--window", "30s"]);
    assert_eq!(code, Some(0), "{d:#}");
    assert_eq!(d["healthy"], true, "{d:#}");

    let load = Load::start_url(format!("{LB}/heavy?ms=250"), 4);
    // The app measures none of its requests: their latency is the load balancer's, per instance.
    let slow = |d: &serde_json::Value| d["trace"].as_array().unwrap().iter().find(|s| s["question"] == "is the app slow?").unwrap()["answer"].as_str().unwrap().to_string();
    let worst = |slow: &str| -> Option<f64> { slow.split("worst p99 ").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()) };
    // Until the scrapes (every 5 s) hold a window of blocked loops and of slow answers (the fast
    // ones of the test before gone from it): doctor asked again until it says so, or 60 s passed.
    let (code, d) = crate::lab::doctor_until(&node_yaml(), &["--window", "15s"], "event-loop-blocked", &|_, d| worst(&slow(d)).is_some_and(|w| w >= 200.0), Duration::from_secs(60));
    let report = load.finish();
    // Blocking the loop slows requests; none may fail for it.
    report.assert_no_failure("");
    let ok = report.ok();
    assert_eq!(code, Some(2), "{d:#}");
    let slow = slow(&d);
    assert!(worst(&slow).is_some_and(|w| w >= 200.0) && (slow.contains(" on app-1-400") || slow.contains(" on app-2-400")), "250 ms requests, seen by the load balancer: {slow}");
    let blocked: Vec<&serde_json::Value> = d["findings"].as_array().unwrap().iter().filter(|f| f["id"] == "event-loop-blocked").collect();
    assert!(!blocked.is_empty(), "{d:#}");
    for f in &blocked {
        let subject = f["subject"].as_str().unwrap();
        assert!(subject.starts_with("app-1-400") || subject.starts_with("app-2-400"), "names the instance: {f:#}");
        assert!(f["recommendation"].as_str().unwrap().contains("worker threads"), "{f:#}");
        assert!(f["topology_edit"].is_null(), "scale-api's heavy_pool is no remedy for a Node app: {f:#}");
    }
    eprintln!("{} of the instances blocked under {ok} heavy requests", blocked.len());
}

/// The Ansible path deploys the user's program as apply does: the tar `scalectl pack` writes,
/// unpacked into the same release directory, the same units; scalectl then plans nothing but the
/// secret files, and a second run changes nothing.
#[test]
fn node_ansible_playbook_deploys_the_program_as_apply_does() {
    let _lab = node_lab();
    let _restore = restore();
    run_ok(&["destroy", "-f", &node_yaml(), "--yes"]);
    let dir = tempfile::tempdir().unwrap();
    let render = dir.path().join("render");
    run_ok(&["render", "-f", &node_yaml(), "-o", path(&render)]);
    let tar = dir.path().join("hello.tar");
    let packed = text(&run_ok(&["pack", "-f", &node_yaml(), "-o", path(&tar)]).stdout);
    let t = Instant::now();
    crate::lab::ansible_playbook(&render, "hello", &tar);
    eprintln!("ansible-playbook of the node app after destroy: {:.1} s ({})", t.elapsed().as_secs_f64(), packed.trim());

    assert_eq!(instances_seen_at(LB, 60).len(), 4, "every instance of the program serves");
    let before = count_at(LB);
    assert_eq!(count_at(LB), before + 1);
    // The same release id as apply's, from the same files: packed or not, nothing to upload.
    crate::lab::plan_after_ansible_is_only_secrets(&node_yaml(), path(&node_app_dir()));
    let recap = crate::lab::ansible_playbook(&render, "hello", &tar);
    let changed = crate::lab::changed_hosts(&recap);
    assert!(changed.is_empty(), "a second ansible-playbook run changed things: {changed:#?}");

    // A new Redis password through the playbook, under load: Redis' users change live (its run id
    // stays), the app hosts roll onto it one instance at a time, each out of the load balancer
    // while it restarts (as apply drains), so no request fails; the old password is refused after
    // the last play, and the program counts in Redis with the new one. (The restoring apply
    // rotates back, live too.)
    let old = crate::lab::lab_redis_password().to_string();
    let new = format!("ansible-rotated-{}", std::process::id());
    let cli = |pw: &str, cmd: &str| docker_exec("hello-lb-1", &format!("REDISCLI_AUTH='{}' redis-cli --no-auth-warning --user scalectl-exporter {cmd} 2>&1", scalectl::render::redis_exporter_password(pw)));
    let redis_run = |pw: &str| cli(pw, "INFO server").lines().find(|l| l.starts_with("run_id:")).map(str::to_string).unwrap_or_default();
    let before = redis_run(&old);
    assert!(!before.is_empty(), "{}", cli(&old, "INFO server"));
    let count = count_at(LB);
    let load = Load::start_at(LB, 4);
    std::thread::sleep(Duration::from_millis(500));
    let (played, span) = timed(|| crate::lab::ansible_playbook_with(&render, "hello", &tar, &new));
    std::thread::sleep(Duration::from_millis(500));
    eprintln!("ansible-playbook, new Redis password, under load: {:.1} s", (span.end - span.start).as_secs_f64());
    load.finish().assert_covers(span, &played);
    // Each of the 4 instances out of the load balancer and back: tasks run on it for an app host.
    let delegated = played.lines().filter(|l| l.starts_with("changed: [") && l.contains(" -> ")).count();
    assert!(delegated >= 8, "the playbook drained {delegated} times, not each instance out and back:\n{played}");
    assert_eq!(cli(&new, "PING").trim(), "PONG");
    assert!(cli(&old, "PING").contains("WRONGPASS"), "the old password still works: {}", cli(&old, "PING"));
    assert_eq!(count_at(LB), count + 1, "the program counts in Redis with the new password, and kept the count");
    assert_eq!(redis_run(&new), before, "Redis was restarted");
}

const PROMETHEUS: &str = "http://127.0.0.1:9092";

/// One instant query against the node lab's Prometheus: every series' labels and value.
fn query(q: &str) -> Vec<(serde_json::Value, f64)> {
    let url = reqwest::Url::parse_with_params(&format!("{PROMETHEUS}/api/v1/query"), &[("query", q)]).unwrap();
    let v: serde_json::Value = crate::support::client().get(url).send().unwrap().json().unwrap();
    v["data"]["result"].as_array().unwrap().iter().map(|r| (r["metric"].clone(), r["value"][1].as_str().unwrap().parse().unwrap())).collect()
}

/// A program that serves no metrics at all is still seen per instance: up, restarts, CPU, memory
/// and open files from systemd and the kernel (the node exporter's textfile), its requests and
/// latency from the load balancer; doctor lists and judges its instances.
#[test]
fn node_program_without_metrics_is_measured_by_its_hosts_and_the_load_balancer() {
    let _lab = node_lab();
    let _restore = restore();
    let src = std::fs::read_to_string(node_yaml()).unwrap();
    let line = src.lines().find(|l| l.trim_start().starts_with("metrics: /metrics")).expect("node.yaml scrapes /metrics").to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.yaml");
    std::fs::write(&file, src.replacen(&format!("{line}\n"), "", 1)).unwrap();
    // The release directory is relative to the topology file: give it explicitly.
    run_ok(&["apply", "-f", path(&file), "--release", path(&node_app_dir()), "--yes"]);

    // What the hosts report for every instance, in the exposition format promtool accepts.
    let prom = docker_exec("hello-app-1", "cat /var/lib/prometheus/node-exporter/scalectl-instances.prom");
    let dir2 = tempfile::tempdir().unwrap();
    std::fs::write(dir2.path().join("m.prom"), &prom).unwrap();
    let check = std::process::Command::new(crate::require("promtool")).args(["check", "metrics"]).stdin(std::fs::File::open(dir2.path().join("m.prom")).unwrap()).output().unwrap();
    assert!(check.status.success(), "promtool check metrics:\n{}\n{prom}", text(&check.stdout));
    // Gentle traffic (about 20 requests a second): enough for the load balancer's per-instance series.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let c = crate::support::client();
            let (mut ok, mut failed) = (0u32, Vec::new());
            for _ in 0..3000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match crate::support::answered(c.get(format!("{LB}/")).send()) {
                    Ok(()) => ok += 1,
                    Err(e) => failed.push(e),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (ok, failed)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = loop {
        let up = query("scalectl_instance_up == 1");
        let fds = query("scalectl_instance_open_fds > 0 and scalectl_instance_open_fds < scalectl_instance_max_fds");
        let mem = query("scalectl_instance_memory_bytes > 1e6");
        let cpu = query("rate(scalectl_instance_cpu_seconds_total[30s]) > 0");
        let scraped = query(r#"up{job="app"}"#);
        if up.len() == 4 && fds.len() == 4 && mem.len() == 4 && cpu.len() == 4 && scraped.is_empty() {
            break true;
        }
        if Instant::now() > deadline {
            eprintln!("up {up:?}\nfds {fds:?}\nmem {mem:?}\ncpu {cpu:?}\nscraped {scraped:?}");
            break false;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    assert!(ready, "every instance's host figures in Prometheus, and no scrape of the instances");
    let (_, d) = crate::lab::doctor(path(&file), &["--window", "20s", "--save", path(&dir.path().join("s.json"))]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = traffic.join().unwrap();
    assert!(failed.is_empty(), "{} of the gentle traffic's requests failed: {:?}", failed.len(), &failed[..failed.len().min(5)]);
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("s.json")).unwrap()).unwrap();
    let instances = s["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 4, "doctor lists the instances the hosts report: {s:#}");
    for i in instances {
        assert_eq!(i["up"], true, "{i:#}");
        assert!(i["requests_per_s"].as_f64().unwrap() > 0.0 && i["p99_ms"].as_f64().is_some(), "the load balancer's view of {i:#}");
        assert!(i["open_fds"].as_f64().unwrap() > 0.0 && i["max_fds"].as_f64().unwrap() > 0.0 && !i["resident_bytes"].as_array().unwrap().is_empty(), "{i:#}");
    }
    let up = d["trace"].as_array().unwrap().iter().find(|t| t["question"] == "every instance up?").unwrap_or_else(|| panic!("{d:#}"));
    assert!(up["answer"].as_str().unwrap().starts_with("yes"), "after {ok} requests: {d:#}");

    // A killed instance is restarted by systemd, and counted.
    docker_exec("hello-app-1", "systemctl kill -s KILL hello@4000.service");
    let deadline = Instant::now() + Duration::from_secs(30);
    while query(r#"scalectl_instance_restarts_total{instance_name="app-1-4000"} > 0"#).is_empty() {
        assert!(Instant::now() < deadline, "the restart of app-1-4000 never reached Prometheus");
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The plain express-generator skeleton (examples/express.yaml: one route, no metrics, no Redis,
/// no SIGTERM handling) on the node lab's hosts: deployed with no Redis at all, reloaded under
/// load with no request failed, and judged healthy by doctor when idle.
#[test]
fn express_skeleton_without_redis_deploys_reloads_under_load_and_doctor_calls_it_healthy() {
    let _lab = node_lab_alone();
    let _restore = restore();
    let express = crate::example_path("express");
    let app = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/express-app");
    assert!(app.join("node_modules/express").is_dir(), "examples/express-app has no node_modules: scripts/setup.sh runs npm ci there");
    run_ok(&["apply", "-f", &express, "--yes"]);
    for host in ["hello-app-1", "hello-app-2"] {
        let env = docker_exec(host, "cat /etc/hello/hello.env");
        assert!(!env.contains("REDIS"), "an app without Redis gets no REDIS_URL:\n{env}");
        let secrets = docker_exec(host, "cat /etc/hello/secrets.env 2>/dev/null || true");
        assert!(!secrets.contains("REDIS"), "{secrets}");
    }
    let targets = docker_exec("hello-lb-1", "cat /etc/prometheus/scalectl/targets.json");
    assert!(!targets.contains("\"redis\""), "no Redis exporter is scraped:\n{targets}");
    let page = crate::support::client().get(format!("{LB}/")).send().unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().unwrap().contains("Welcome to Express"), "the skeleton's own page");

    let load = Load::start_at(LB, 8);
    std::thread::sleep(Duration::from_millis(500));
    let ((), span) = timed(|| {
        let before = invocations();
        let out = run_ok(&["reload", "-f", &express, "--yes"]);
        let after = invocations();
        for (unit, id) in &before {
            assert_ne!(&after[unit], id, "{unit} was not restarted by the reload:\n{}", text(&out.stdout));
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    load.finish().assert_covers(span, "the express skeleton's reload");

    // Idle, after the reload: healthy, once the scrapes hold a window without the load.
    std::thread::sleep(Duration::from_secs(20));
    let (code, d) = crate::lab::doctor(&express, &["--window", "15s"]);
    assert_eq!(code, Some(0), "{d:#}");
    assert_eq!(d["healthy"], true, "{d:#}");
    let instances = d["trace"].as_array().unwrap().iter().find(|t| t["question"] == "every instance up?").unwrap_or_else(|| panic!("{d:#}"));
    assert!(instances["answer"].as_str().unwrap().starts_with("yes"), "{d:#}");
}

/// A program that takes its port as an argument (`python3 -m http.server $(PORT)`, as a Procfile's
/// `--bind :$PORT` would) runs with no wrapper script: each instance gets its own port there.
#[test]
fn a_program_given_its_port_as_an_argument_runs_each_instance_on_its_own_port() {
    let _lab = node_lab();
    let _restore = restore();
    let site = tempfile::tempdir().unwrap();
    let marker = run_id("http-server");
    std::fs::write(site.path().join("index.html"), format!("<p>{marker}</p>\n")).unwrap();
    let src = std::fs::read_to_string(crate::example_path("express")).unwrap();
    let topology = src
        .replace("release: ./express-app", &format!("release: {}", path(site.path())))
        .replace("command: [node, bin/www]       # `npm start`; bin/www reads PORT, which each instance gets", r#"command: [python3, -m, http.server, "$(PORT)", --directory, .]"#)
        .replace("packages: [nodejs]", "packages: [python3]");
    assert!(topology.contains("$(PORT)"), "{topology}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("http-server.yaml");
    std::fs::write(&file, topology).unwrap();
    run_ok(&["apply", "-f", path(&file), "--yes"]);
    let unit = docker_exec("hello-app-1", "cat /etc/systemd/system/hello@.service");
    assert!(unit.contains(r#""http.server" "${PORT}""#), "{unit}");
    for host in ["hello-app-1", "hello-app-2"] {
        let ports = docker_exec(host, "systemctl list-units --plain --no-legend --state=active 'hello@*.service' | sed -E 's/hello@([0-9]+).*/\\1/'");
        let ports: Vec<&str> = ports.split_whitespace().collect();
        assert!(!ports.is_empty(), "{host} runs no instance");
        for port in ports {
            let page = docker_exec(host, &format!("curl -fsS http://127.0.0.1:{port}/"));
            assert!(page.contains(&marker), "{host}:{port} answered {page}");
        }
    }
    let page = crate::support::client().get(format!("{LB}/")).send().unwrap().text().unwrap();
    assert!(page.contains(&marker), "{page}");
}

// The app's workers (app.workers): `POST /reports` queues a job on Redis (BullMQ), a worker
// process of the same release on each app host makes it, `GET /reports/:id` tells its state.

/// POSTs `n` reports with `body` through the load balancer, each on a connection of its own and
/// never resent: their ids. A report not queued (anything but 202 with an id) fails the test.
fn post_reports(n: usize, body: &serde_json::Value) -> Vec<String> {
    let c = crate::support::client();
    (0..n)
        .map(|i| {
            let r = c.post(format!("{LB}/reports")).json(body).send().unwrap_or_else(|e| panic!("POST /reports ({} of {n}) failed: {e:?}", i + 1));
            let status = r.status();
            let answer = r.text().unwrap_or_default();
            assert_eq!(status, 202, "POST /reports ({} of {n}): {answer}", i + 1);
            let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("POST /reports answered {answer} ({e})"));
            v["id"].as_str().unwrap_or_else(|| panic!("POST /reports answered no id: {answer}")).to_string()
        })
        .collect()
}

/// Every report's last answer, asked again until each one is completed or failed or `deadline`
/// passes (then those still waiting are returned as they were).
fn reports_settled(ids: &[String], deadline: Duration) -> BTreeMap<String, serde_json::Value> {
    let c = crate::support::client();
    let start = Instant::now();
    let mut settled = BTreeMap::new();
    loop {
        for id in ids.iter().filter(|id| !settled.contains_key(*id)).cloned().collect::<Vec<_>>() {
            let r = c.get(format!("{LB}/reports/{id}")).send().unwrap_or_else(|e| panic!("GET /reports/{id} failed: {e:?}"));
            assert_eq!(r.status(), 200, "GET /reports/{id}");
            let v: serde_json::Value = r.json().unwrap();
            if v["state"] == "completed" || v["state"] == "failed" || start.elapsed() > deadline {
                settled.insert(id, v);
            }
        }
        if settled.len() == ids.len() {
            return settled;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// What a report over `rows` rows sums to (examples/node-app/reports.js).
fn report_sum(rows: u64) -> u64 {
    (1..=rows).map(|i| i % 7).sum()
}

/// The time to read the workers' journals from (a second early): job ids start again at 1 when
/// Redis starts empty, so only lines since a test began are its jobs'.
fn journal_mark() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 1
}

/// How many times each job of `ids` was completed since `mark`, as the workers' journals on both
/// hosts say.
fn completions(ids: &[String], mark: u64) -> BTreeMap<String, usize> {
    let mut done: BTreeMap<String, usize> = ids.iter().map(|i| (i.clone(), 0)).collect();
    for host in ["hello-app-1", "hello-app-2"] {
        for line in docker_exec(host, &format!("journalctl -u 'hello-worker@*' -o cat --no-pager --since=@{mark}")).lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if v["msg"] == "job completed"
                && let Some(n) = v["id"].as_str().and_then(|id| done.get_mut(id))
            {
                *n += 1;
            }
        }
    }
    done
}

#[test]
fn node_workers_on_both_hosts_make_every_report_posted_through_the_load_balancer_once() {
    let _lab = node_lab();
    for host in ["hello-app-1", "hello-app-2"] {
        assert_eq!(docker_exec(host, "systemctl is-active hello-worker@1.service").trim(), "active", "{host}");
        // The worker has no port of its own and runs the release the web instances run.
        let env = docker_exec(host, "tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value hello-worker@1.service)/environ");
        assert!(env.lines().any(|l| l.starts_with("REDIS_URL=")) && !env.lines().any(|l| l.starts_with("PORT=")), "{host}: {env}");
        assert!(env.lines().any(|l| l == format!("INSTANCE={}-worker-1", host.trim_start_matches("hello-"))), "{host}: {env}");
    }
    let mark = journal_mark();
    let ids = post_reports(1000, &serde_json::json!({"rows": 500}));
    let (settled, span) = timed(|| reports_settled(&ids, Duration::from_secs(120)));
    eprintln!("1000 reports made by 2 workers in {:.1} s after the last was queued", (span.end - span.start).as_secs_f64());
    let mut by_worker: BTreeMap<String, usize> = BTreeMap::new();
    for (id, r) in &settled {
        assert_eq!(r["state"], "completed", "report {id}: {r}");
        assert_eq!(r["result"]["sum"].as_u64(), Some(report_sum(500)), "report {id}: {r}");
        assert_eq!(r["attempts"], 1, "report {id} was tried more than once: {r}");
        *by_worker.entry(r["result"]["worker"].as_str().unwrap_or("?").to_string()).or_default() += 1;
    }
    assert_eq!(by_worker.keys().collect::<Vec<_>>(), ["app-1-worker-1", "app-2-worker-1"], "both hosts' workers make reports: {by_worker:?}");
    let twice: Vec<(String, usize)> = completions(&ids, mark).into_iter().filter(|(_, n)| *n != 1).collect();
    assert!(twice.is_empty(), "reports not completed exactly once: {twice:?}");
    // A report that always fails ends in the failed set after its attempts, with its reason.
    let failing = post_reports(1, &serde_json::json!({"fail": true}));
    let r = &reports_settled(&failing, Duration::from_secs(60))[&failing[0]];
    assert_eq!((r["state"].as_str(), r["attempts"].as_u64()), (Some("failed"), Some(3)), "{r}");
    assert!(r["failed_reason"].as_str().unwrap_or("").contains("always fails"), "{r}");
}

#[test]
fn node_a_worker_killed_mid_job_loses_no_job() {
    let _lab = node_lab();
    // Long jobs, more than both workers take at once (4 each): some are in hand at the kill.
    let mark = journal_mark();
    let ids = post_reports(12, &serde_json::json!({"rows": 100, "ms": 4000}));
    let c = crate::support::client();
    let start = Instant::now();
    while !ids.iter().any(|id| c.get(format!("{LB}/reports/{id}")).send().unwrap().json::<serde_json::Value>().unwrap()["state"] == "active") {
        assert!(start.elapsed() < Duration::from_secs(20), "no report became active");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    docker_exec("hello-app-1", "systemctl kill -s KILL hello-worker@1.service");
    // Its jobs' locks lapse (WORKER_LOCK_MS, 10 s) and a worker takes them again.
    let settled = reports_settled(&ids, Duration::from_secs(90));
    let mut stalled = 0;
    for (id, r) in &settled {
        assert_eq!(r["state"], "completed", "report {id} was lost with the killed worker: {r}");
        assert_eq!(r["result"]["sum"].as_u64(), Some(report_sum(100)), "report {id}: {r}");
        stalled += usize::from(r["stalled"].as_u64().unwrap_or(0) > 0);
    }
    assert!(stalled > 0, "the kill hit no job in hand: {settled:#?}");
    let twice: Vec<(String, usize)> = completions(&ids, mark).into_iter().filter(|(_, n)| *n != 1).collect();
    assert!(twice.is_empty(), "reports not completed exactly once: {twice:?}");
    // systemd started the killed worker again; a restart after a failure is what doctor counts.
    assert_eq!(docker_exec("hello-app-1", "systemctl is-active hello-worker@1.service").trim(), "active");
}

#[test]
fn node_workers_rolled_for_their_own_settings_during_a_stream_of_jobs_lose_none_and_leave_the_web_instances() {
    let _lab = node_lab();
    let _restore = restore();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.yaml");
    let src = std::fs::read_to_string(node_yaml()).unwrap();
    let edited = src.replace("    drain_timeout: 30s ", "    env: {WORKER_CONCURRENCY: \"2\"}\n    drain_timeout: 30s ");
    assert_ne!(edited, src);
    std::fs::write(&file, edited).unwrap();
    let web = invocations();
    // A stream of jobs, each a second long, while apply rolls the workers one at a time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poster = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut ids = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                ids.extend(post_reports(1, &serde_json::json!({"rows": 100, "ms": 1000})));
                std::thread::sleep(Duration::from_millis(50));
            }
            ids
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let out = run_ok(&["apply", "-f", path(&file), "--release", path(&node_app_dir()), "--yes"]);
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ids = poster.join().unwrap();
    let said = text(&out.stdout);
    assert!(said.contains("rolling restart hello-worker@1.service") && !said.contains("hello@4000"), "{said}");
    assert_eq!(invocations(), web, "the web instances restarted for the workers' settings");
    let settled = reports_settled(&ids, Duration::from_secs(90));
    for (id, r) in &settled {
        assert_eq!(r["state"], "completed", "report {id}: {r}");
        // Each worker finished its jobs in hand before it stopped: none was taken again.
        assert_eq!((r["attempts"].as_u64(), r["stalled"].as_u64()), (Some(1), Some(0)), "report {id}: {r}");
    }
    eprintln!("{} reports queued while the workers rolled, every one made once", ids.len());
    assert!(ids.len() >= 20, "{}", ids.len());
    let env = docker_exec("hello-app-2", "tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value hello-worker@1.service)/environ");
    assert!(env.lines().any(|l| l == "WORKER_CONCURRENCY=2"), "{env}");
}

/// One Prometheus value of `q` (the first series'), if any.
fn query_one(q: &str) -> Option<f64> {
    query(q).first().map(|(_, v)| *v)
}

/// A job load that one worker cannot keep up with: the queue's backlog, measured by the Redis
/// exporter's checks of BullMQ's keys (through its own read-only ACL), grows, and doctor says to
/// add workers, naming the topology edit.
#[test]
fn node_doctor_finds_a_growing_backlog_with_one_worker_and_says_add_workers() {
    let _lab = node_lab_alone();
    let _restore = restore();
    // One worker (on app-1, taking one job at a time) for the whole fleet.
    let src = std::fs::read_to_string(node_yaml()).unwrap();
    let one = src
        .replacen("  app-2: {address: hello-app-2, roles: [app, worker]}", "  app-2: {address: hello-app-2, roles: [app]}", 1)
        .replacen("    instances: 1                   # per worker host", "    instances: 1\n    env: {WORKER_CONCURRENCY: \"1\"}   # per worker host", 1);
    assert!(one.contains("roles: [app]}") && one.contains("WORKER_CONCURRENCY"), "node.yaml changed: edit this test\n{one}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.yaml");
    std::fs::write(&file, one).unwrap();
    run_ok(&["apply", "-f", path(&file), "--release", path(&node_app_dir()), "--yes"]);
    assert_eq!(docker_exec("hello-app-2", "systemctl is-active hello-worker@1.service || true").trim(), "inactive", "app-2 no longer runs a worker");

    // About 8 reports a second of 400 ms each: the one worker makes 2.5.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poster = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let c = crate::support::client();
            let (mut posted, mut failed) = (0u32, Vec::new());
            let end = Instant::now() + Duration::from_secs(150);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
                match c.post(format!("{LB}/reports")).json(&serde_json::json!({"rows": 1000, "ms": 400})).send() {
                    Ok(r) if r.status() == 202 => posted += 1,
                    Ok(r) => failed.push(format!("HTTP {}", r.status())),
                    Err(e) => failed.push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(120));
            }
            (posted, failed)
        })
    };
    let edit = |f: &serde_json::Value, _: &serde_json::Value| f["subject"] == "queue reports";
    let (code, d) = crate::lab::doctor_until(path(&file), &["--window", "30s"], "queue-backlog-add-workers", &edit, Duration::from_secs(100));
    // What Prometheus holds of the queue: the exporter's key sizes and the recorded series.
    let wait_key = query_one(r#"redis_key_size{key="bull:reports:wait"}"#);
    let waiting = query_one(r#"scalectl_queue_waiting{queue="reports"}"#);
    let workers = query_one("sum(scalectl_worker_up)");
    let oldest = query_one(r#"scalectl_queue_oldest_waiting_seconds{queue="reports"}"#);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (posted, failed) = poster.join().unwrap();
    eprintln!("{posted} reports posted; the exporter saw {wait_key:?} waiting in bull:reports:wait, recorded {waiting:?}, the oldest {oldest:?} s old; {workers:?} worker running");
    assert!(failed.is_empty(), "POST /reports failed: {failed:?}");
    assert!(wait_key.is_some_and(|w| w >= 10.0), "the exporter measures BullMQ's wait list: {wait_key:?}");
    assert!(waiting.is_some_and(|w| w >= 10.0), "the rules record the queue's backlog: {waiting:?}");
    assert_eq!(workers, Some(1.0), "the hosts measure their workers' units");
    // A backlog of 10 or more at 2.5 jobs a second: the oldest has waited seconds (the exporter's script).
    assert!(oldest.is_some_and(|s| s >= 1.0), "the oldest waiting report's age: {oldest:?}");
    assert_eq!(code, Some(2), "{d:#}");
    let f = d["findings"].as_array().unwrap().iter().find(|f| f["id"] == "queue-backlog-add-workers").unwrap_or_else(|| panic!("no queue-backlog-add-workers finding in {d:#}"));
    assert_eq!(f["topology_edit"], "app.workers.instances: 2   (or add a host with roles: [worker])", "{f:#}");
    assert!(f["summary"].as_str().unwrap().contains("while its 1 workers take jobs") && f["summary"].as_str().unwrap().contains("the oldest has waited"), "{f:#}");
    let path_text = f["path"].to_string();
    assert!(path_text.contains("every worker running? yes: 1 of 1") && path_text.contains("workers taking jobs? yes"), "{f:#}");
    // The fleet's own workers back (one per worker host, taking several jobs at a time) work off
    // the backlog this test made, and Prometheus sees the queue empty again: the test after this
    // one judges its own window.
    drop(_restore);
    let restored = Instant::now();
    loop {
        let waiting = query_one(r#"scalectl_queue_waiting{queue="reports"}"#);
        if waiting == Some(0.0) {
            break;
        }
        assert!(restored.elapsed() < Duration::from_secs(120), "the restored workers never emptied the queue: {waiting:?} waiting");
        std::thread::sleep(Duration::from_secs(1));
    }
}

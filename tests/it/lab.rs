//! End to end on the lab of examples/lab.yaml: five containers with systemd and sshd, deployed by
//! `scalectl apply` over SSH. Real nginx, Redis, systemd and sshd; requests go to 127.0.0.1 only.
//!
//! The tests share one lab and take turns (a lock); each starts from a converged fleet, so their
//! order does not matter. Timings are printed, never asserted.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::{
    Load, Machine, Restore, Turn, client, collected_in, collector_outage_loses_no_line, count_at, every_dashboard_query_returns_data, instances_reached_at, instances_seen_at, new_release,
    Span, check_counter, release, request_id_reaches_the_collector, run_id, text, timed, turn,
};

const LB: &str = "http://127.0.0.1:8080";
const INSTANCES: [&str; 4] = ["app-1-3000", "app-1-3001", "app-2-3000", "app-2-3001"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn lab_yaml() -> String {
    crate::example_path("lab")
}

/// The labs' Redis password (examples/lab.yaml and node.yaml refer to it as `{env: LAB_REDIS_PASSWORD}`),
/// the one scripts/setup.sh made for the demo and the benchmarks too.
pub(crate) fn lab_redis_password() -> &'static str {
    static PW: OnceLock<String> = OnceLock::new();
    PW.get_or_init(|| lab_secret("lab-redis-password"))
}

/// A labs' secret scripts/setup.sh made once in target/ (Redis' password, the database's).
pub(crate) fn lab_secret(name: &str) -> String {
    let f = root().join("target").join(name);
    let value = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e} (scripts/setup.sh makes it)", f.display()));
    value.trim().to_string()
}

pub(crate) fn scalectl(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_scalectl"));
    c.args(args)
        .env("SCALECTL_HOME", root().join("target/lab-home"))
        .env("LAB_REDIS_PASSWORD", lab_redis_password())
        .env_remove("SCALECTL_PROGRESS");
    c
}

/// redis-cli on the lab's Redis host as the exporter's ACL user, which may read the configuration
/// (all the tests ask), with its own password, authenticated through the environment, not an argument.
fn redis_cli(args: &str) -> String {
    let out = Command::new("docker")
        .args(["exec", "-e", &format!("REDISCLI_AUTH={}", scalectl::render::redis_exporter_password(lab_redis_password())), "lab-cache-1", "sh", "-c", &format!("redis-cli --user scalectl-exporter {args}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "redis-cli {args}: {}", text(&out.stderr));
    text(&out.stdout)
}

pub(crate) fn run(args: &[&str]) -> Output {
    scalectl(args).output().unwrap()
}

pub(crate) fn run_ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(out.status.success(), "scalectl {args:?} failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
    out
}

fn apply_args<'a>(file: &'a str, release: &'a str) -> Vec<&'a str> {
    vec!["apply", "-f", file, "--release", release, "--yes"]
}

static UP: OnceLock<()> = OnceLock::new();

/// The lab, up and converged on examples/lab.yaml with the built release; held for one test.
fn lab() -> Turn {
    lab_with(Machine::Shared)
}

/// The lab, for a test that judges it with doctor: the other test process waits meanwhile.
fn lab_alone() -> Turn {
    lab_with(Machine::Alone)
}

/// The first test of the process converges the lab (a run before may have left anything); every
/// test after it finds it converged, or fails: a test that changes the fleet restores it itself
/// ([`restore`]), and nothing repairs, restarts or reloads between tests (an nginx reload would
/// reset the failures nginx counted during the test before, max_fails, and hide a restart that
/// counted as an instance failure).
fn lab_with(machine: Machine) -> Turn {
    let turn = turn(machine);
    crate::require("docker");
    let rel = release();
    UP.get_or_init(|| {
        let t = Instant::now();
        run_ok(&["lab", "up", "-f", &lab_yaml()]);
        eprintln!("lab up: {:.1} s", t.elapsed().as_secs_f64());
        let t = Instant::now();
        let out = run_ok(&apply_args(&lab_yaml(), rel.to_str().unwrap()));
        eprintln!("converge apply: {:.1} s ({})", t.elapsed().as_secs_f64(), text(&out.stdout).lines().last().unwrap_or(""));
    });
    let out = run(&["plan", "-f", &lab_yaml(), "--release", rel.to_str().unwrap(), "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "the test before left the lab changed:\n{}{}", text(&out.stdout), text(&out.stderr));
    turn
}

/// Applies examples/lab.yaml with the built release when the test ends, passed or failed: for a
/// test that changes the fleet (another release, an edited topology, a destroy).
fn restore() -> Restore {
    Restore::new(|| run(&apply_args(&lab_yaml(), release().to_str().unwrap())))
}

/// The load balancer's latest errors, for the message of a failed assertion about requests.
fn lb_errors() -> String {
    let out = Command::new("docker").args(["exec", "lab-lb-1", "tail", "-n", "25", "/var/log/nginx/error.log"]).output();
    out.map(|o| text(&o.stdout)).unwrap_or_default()
}

fn instances_seen(n: usize) -> BTreeSet<String> {
    instances_seen_at(LB, n)
}

fn all_instances() -> BTreeSet<String> {
    INSTANCES.iter().map(|s| s.to_string()).collect()
}

fn count() -> u64 {
    count_at(LB)
}

pub(crate) fn docker_exec(container: &str, script: &str) -> String {
    let out = Command::new("docker").args(["exec", container, "sh", "-c", script]).output().unwrap();
    assert!(out.status.success(), "docker exec {container} {script}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// examples/lab.yaml with one edit, in a file of its own (same topology name, so the same lab).
fn edited_topology(from: &str, to: &str) -> tempfile::TempPath {
    edited_topology_many(&[(from, to)])
}

fn edited_topology_many(edits: &[(&str, &str)]) -> tempfile::TempPath {
    let mut src = std::fs::read_to_string(lab_yaml()).unwrap();
    for (from, to) in edits {
        assert!(src.contains(from), "lab.yaml has no `{from}`");
        src = src.replacen(from, to, 1);
    }
    let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(f.path(), src).unwrap();
    f.into_temp_path()
}

/// A new liveness path, rolled under load: the instances restart first and the balancer reloads
/// for the new path last, so each instance goes back with its check paused; no request fails and
/// the balancer never has an instance down (before, the old check took each restarted instance
/// down within two checks: with all four rolled, the whole app until the balancer reloaded).
#[test]
fn lab_a_new_liveness_path_rolls_under_load_with_every_instance_up() {
    let _lab = lab();
    let _restore = restore();
    // A moment without an answer (the balancer's reload) is not a server down.
    let watch = crate::support::BalancerWatch::start(|| text(&Command::new("docker").args(["exec", "lab-lb-1", "sh", "-c", SHOW_SERVERS]).output().unwrap().stdout));
    let edited = edited_topology("  instances: 2\n", "  instances: 2\n  health: {liveness: /live}\n");
    let load = Load::start_at(LB, 4);
    std::thread::sleep(Duration::from_millis(500));
    let (out, span) = timed(|| run(&apply_args(edited.to_str().unwrap(), release().to_str().unwrap())));
    std::thread::sleep(Duration::from_secs(5));
    let report = load.finish();
    let down = watch.finish();
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(down.is_empty(), "the balancer had instances down: {down:#?}");
    report.assert_covers(span, "the roll onto a new liveness path");
    assert!(text(&out.stdout).contains("health check paused until the balancer reloads"), "{}", text(&out.stdout));
    assert!(docker_exec("lab-lb-1", "cat /etc/haproxy/haproxy.cfg").contains("GET /live"));
    // The balancer's reload after the app hosts checks every instance again, at the new path.
    let state = docker_exec("lab-lb-1", SHOW_SERVERS);
    let paused: Vec<&str> = state.lines().filter(|l| crate::support::check_paused(l)).collect();
    assert!(paused.is_empty(), "checks still paused after the apply: {paused:#?}");
}

#[test]
fn lab_requests_reach_every_instance_and_share_redis_state() {
    let _lab = lab();
    // The instances' metrics are not public: the load balancer refuses the path.
    assert_eq!(client().get(format!("{LB}/metrics")).send().unwrap().status(), 404);
    let seen = instances_seen(60);
    assert_eq!(seen, INSTANCES.iter().map(|s| s.to_string()).collect(), "x-instance values through the load balancer");

    // The seeds' Redis counter, across hosts: N requests advance it by exactly N.
    let before = count();
    let c = client();
    let mut answered_by = BTreeSet::new();
    for _ in 0..40 {
        let v: serde_json::Value = c.get(format!("{LB}/count")).send().unwrap().json().unwrap();
        answered_by.insert(v["instance"].as_str().unwrap().to_string());
    }
    assert_eq!(count(), before + 41);
    assert!(answered_by.len() >= 2, "the counter was served by only {answered_by:?}");

    // A session made through one instance is read through others.
    let login: serde_json::Value = c.post(format!("{LB}/login")).json(&serde_json::json!({"username": "ada"})).send().unwrap().json().unwrap();
    let token = login["token"].as_str().unwrap().to_string();
    let made_on = login["instance"].as_str().unwrap().to_string();
    let mut read_on = BTreeSet::new();
    for _ in 0..20 {
        let r = c.get(format!("{LB}/profile")).bearer_auth(&token).send().unwrap();
        assert!(r.status().is_success(), "profile: {}", r.status());
        let v: serde_json::Value = r.json().unwrap();
        assert_eq!(v["username"], "ada", "{v}");
        read_on.insert(v["instance"].as_str().unwrap().to_string());
    }
    assert!(read_on.iter().any(|i| *i != made_on), "every read landed on {made_on}, where the session was made");
}

#[test]
fn lab_second_apply_is_a_no_op_and_one_edit_is_exactly_one_diff() {
    let _lab = lab();
    let _restore = restore();
    let rel = release();
    let rel = rel.to_str().unwrap();
    let t = Instant::now();
    let out = run_ok(&apply_args(&lab_yaml(), rel));
    eprintln!("no-change apply: {:.2} s", t.elapsed().as_secs_f64());
    assert!(text(&out.stdout).contains("No changes"), "{}", text(&out.stdout));
    let out = run(&["plan", "-f", &lab_yaml(), "--release", rel, "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let edited = edited_topology("maxmemory: 64MiB", "maxmemory: 96MiB");
    let file = edited.to_str().unwrap();
    let out = run(&["plan", "-f", file, "--release", rel, "--detailed-exitcode", "-o", "json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut actions = Vec::new();
    for h in plan["hosts"].as_array().unwrap() {
        for stage in ["prepare", "activate", "cleanup"] {
            for a in h[stage].as_array().unwrap() {
                // The record of owed restarts (so a killed apply's successor restarts) is bookkeeping.
                if a["action"] != "mark_pending" && a["action"] != "clear_pending" {
                    actions.push((h["host"].as_str().unwrap().to_string(), a.clone()));
                }
            }
        }
    }
    assert_eq!(actions.len(), 2, "{actions:#?}");
    let (host, write) = &actions[0];
    assert_eq!((host.as_str(), write["action"].as_str(), write["path"].as_str()), ("cache-1", Some("write_file"), Some("/etc/redis/redis.conf")));
    let diff = write["diff"].as_str().unwrap();
    let changed: Vec<&str> = diff.lines().filter(|l| (l.starts_with('+') || l.starts_with('-')) && !l.starts_with("+++") && !l.starts_with("---")).collect();
    assert_eq!(changed, vec!["-maxmemory 67108864", "+maxmemory 100663296"]);
    assert_eq!(actions[1].1, serde_json::json!({"action": "restart", "unit": "redis-server.service"}));

    let t = Instant::now();
    run_ok(&apply_args(file, rel));
    eprintln!("one-file change apply: {:.2} s", t.elapsed().as_secs_f64());
    assert!(redis_cli("config get maxmemory").contains("100663296"));
}

#[test]
fn lab_new_release_and_reload_under_load_fail_no_request() {
    let _lab = lab_alone(); // all 4 instances must answer right after each reload
    let _restore = restore();
    let load = Load::start_at(LB, 8);
    std::thread::sleep(Duration::from_millis(500));
    let next = new_release("rolling");
    // Neither nginx nor the balancer behind it reloads for a roll: the same processes serve
    // throughout, so no client's connection is closed under it.
    let proxies = lb_processes();
    let ((), span) = timed(|| {
        let t = Instant::now();
        let before = invocations();
        let out = run_ok(&apply_args(&lab_yaml(), next.to_str().unwrap()));
        eprintln!("release apply under load: {:.1} s", t.elapsed().as_secs_f64());
        assert!(text(&out.stdout).contains("rolling restart"), "{}", text(&out.stdout));
        assert!(text(&out.stdout).contains("out of the balancer on lb-1"), "{}", text(&out.stdout));
        // Every instance was started anew on the new release.
        let after = invocations();
        for (instance, id) in &before {
            assert_ne!(&after[instance], id, "{instance} still runs the release from before:\n{}", text(&out.stdout));
        }
        // Back to back: a planned restart never counts toward an instance's failures (three in
        // a row once marked every instance down).
        for _ in 0..3 {
            let before = invocations();
            let t = Instant::now();
            let out = run_ok(&["reload", "-f", &lab_yaml(), "--yes"]);
            eprintln!("reload under load: {:.1} s", t.elapsed().as_secs_f64());
            assert_eq!(text(&out.stdout).matches("rolling restart").count(), 2, "{}", text(&out.stdout));
            // Every instance was started anew.
            let after = invocations();
            for (instance, id) in &before {
                assert_ne!(&after[instance], id, "{instance} was not restarted by the reload:\n{}", text(&out.stdout));
            }
            // Once it returns, the balancer has every instance back and up, and all four answer.
            let servers = balancer_servers();
            assert_eq!(servers.len(), 4, "the balancer's servers: {servers:?}");
            for (server, (op, admin)) in &servers {
                assert_eq!((op.as_str(), admin.as_str()), ("2", "0"), "{server} is not up and in service right after the reload: {servers:?}");
            }
            let seen = instances_reached_at(LB, 4, 400);
            assert_eq!(seen.len(), 4, "instances answering right after a reload: {seen:?}");
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lb_processes(), proxies, "nginx or the balancer reloaded during the roll");
    load.finish().assert_covers(span, &format!("nginx's error log:\n{}", lb_errors()));
}

/// nginx's workers and the balancer's worker on the load balancer, by pid: a reload of either
/// replaces them.
fn lb_processes() -> String {
    docker_exec("lab-lb-1", "ps -o pid=,args= --ppid \"$(cat /run/nginx.pid)\"; printf 'show info\\n' | socat stdio UNIX-CONNECT:/run/haproxy/admin.sock | grep '^Pid:'")
}

/// The balancer's servers on the load balancer: name -> (operational state, admin state), as
/// its runtime API reports them (2 and 0: up and in service).
fn balancer_servers() -> BTreeMap<String, (String, String)> {
    servers_in(&docker_exec("lab-lb-1", SHOW_SERVERS))
}

const SHOW_SERVERS: &str = "printf 'show servers state lab_app\\n' | socat stdio UNIX-CONNECT:/run/haproxy/admin.sock";

/// [`balancer_servers`] from the runtime API's answer.
fn servers_in(answer: &str) -> BTreeMap<String, (String, String)> {
    answer
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() > 6).then(|| (w[3].to_string(), (w[5].to_string(), w[6].to_string())))
        })
        .collect()
}

/// Each app instance's systemd invocation id (new at every start of its unit), by instance.
fn invocations() -> BTreeMap<String, String> {
    INSTANCES
        .iter()
        .map(|i| {
            let (host, port) = i.rsplit_once('-').unwrap();
            let id = docker_exec(&format!("lab-{host}"), &format!("systemctl show -p InvocationID --value scale-api@{port}.service")).trim().to_string();
            assert!(!id.is_empty(), "{i} is not running");
            (i.to_string(), id)
        })
        .collect()
}

#[test]
fn lab_instance_killed_with_sigkill_is_restarted_and_traffic_flows() {
    let _lab = lab();
    let pid = |c: &str| docker_exec(c, "systemctl show -p MainPID --value scale-api@3000.service").trim().to_string();
    let before = pid("lab-app-1");
    let load = Load::start_at(LB, 2);
    std::thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    docker_exec("lab-app-1", "systemctl kill -s KILL scale-api@3000.service");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = pid("lab-app-1");
        let ready = docker_exec("lab-app-1", "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:3000/readyz || true");
        if now != before && now != "0" && ready == "200" {
            break;
        }
        assert!(Instant::now() < deadline, "scale-api@3000 was not restarted (pid {before} -> {now}, readyz {ready})");
        std::thread::sleep(Duration::from_millis(200));
    }
    let span = Span { start: killed, end: Instant::now() };
    std::thread::sleep(Duration::from_millis(500));
    load.finish().assert_covers(span, &format!("an instance was killed; nginx's error log:\n{}", lb_errors()));
    assert!(instances_seen(40).contains("app-1-3000"));
}

#[test]
fn lab_release_that_never_becomes_ready_is_rolled_back() {
    let _lab = lab();
    let _restore = restore();
    let broken = tempfile::Builder::new().prefix("broken-").tempfile().unwrap();
    // A release of its own each run: uploaded now, so the newest release directory on the hosts.
    std::fs::write(broken.path(), format!("#!/bin/sh\n# listens nowhere: never ready ({})\nexec sleep 600\n", run_id("broken"))).unwrap();
    let broken = broken.into_temp_path();
    let load = Load::start_at(LB, 1);
    std::thread::sleep(Duration::from_millis(200));
    let (out, span) = timed(|| run(&["apply", "-f", &lab_yaml(), "--release", broken.to_str().unwrap(), "--yes", "--ready-timeout", "4s"]));
    let report = load.finish();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("never became ready"), "{err}");
    assert!(err.contains("Rolled back") && err.contains("app-1: rolled back (release"), "{err}");
    assert!(err.contains("last answer from http://127.0.0.1:3000/readyz: HTTP 000"), "{err}");
    report.assert_covers(span, &format!("the failed deploy; nginx's error log:\n{}", lb_errors()));
    // The old release serves everywhere: planning the good release again changes nothing but
    // pruning the broken one (kept for inspection until then).
    assert_eq!(instances_seen(60), all_instances());
    let rel = release();
    let out = run(&["plan", "-f", &lab_yaml(), "--release", rel.to_str().unwrap(), "-o", "json"]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for h in plan["hosts"].as_array().unwrap() {
        for stage in ["prepare", "activate"] {
            assert_eq!(h[stage], serde_json::json!([]), "{}: {}", h["host"], h[stage]);
        }
    }
    // `rollback` returns to the last release that was ready, never to the broken one, although
    // it is the newest release directory on the app hosts (kept until pruned).
    let good = new_release("ready-target");
    run_ok(&apply_args(&lab_yaml(), good.to_str().unwrap()));
    let releases = docker_exec("lab-app-1", "ls /opt/scale-api/releases");
    let broken_id = scalectl::plan::Release::of(&std::fs::read(&broken).unwrap()).id;
    assert!(releases.contains(&broken_id), "the broken release is still there to be avoided: {releases}");
    let out = run_ok(&["rollback", "-f", &lab_yaml(), "--yes", "-o", "json"]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ready_id = scalectl::plan::Release::of(&std::fs::read(&rel).unwrap()).id;
    for h in plan["hosts"].as_array().unwrap().iter().filter(|h| h["app"] == true) {
        assert_eq!(h["activate"][0]["to"], ready_id.as_str(), "{}: {}", h["host"], h["activate"]);
    }
    assert_eq!(instances_seen(60), all_instances());
}

#[test]
fn lab_changed_host_key_is_refused() {
    let _lab = lab();
    docker_exec("lab-cache-1", "rm -f /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null && systemctl restart ssh");
    let rel = release();
    let out = run(&["plan", "-f", &lab_yaml(), "--release", rel.to_str().unwrap()]);
    // Trust the new key again (the lab reads it through the engine) before asserting anything.
    run_ok(&["lab", "up", "-f", &lab_yaml()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("cache-1: HOST KEY CHANGED"), "{err}");
    run_ok(&["plan", "-f", &lab_yaml(), "--release", rel.to_str().unwrap()]);
}

/// The fleet's internal ports answer only the hosts that use them (scalectl's nftables table on
/// each host): from an app host, the exporters, mtail and Prometheus of the other hosts reset
/// the connection; from the monitor host (and on the host itself) the exporters answer; the app's
/// instances answer the load balancer and the monitor only; every host reaches the log collector;
/// people reach Prometheus from outside the fleet.
#[test]
fn lab_internal_ports_answer_only_the_hosts_that_use_them() {
    let _lab = lab();
    // A connection either opens, or is refused (the firewall's `reject with tcp reset`, which
    // is also what a port with no listener gives): only a refusal proves a port closed. Anything
    // else (a timeout, a name that does not resolve) is no answer about the port, and fails.
    let probe = |from: &str, target: &str, port: u16| -> bool {
        let said = docker_exec(from, &format!("timeout 3 bash -c 'exec 3<>/dev/tcp/{target}/{port}' 2>&1 && echo open || echo \"exit $?\""));
        match said.trim() {
            "open" => true,
            s if s.contains("Connection refused") => false,
            s => panic!("{from} -> {target}:{port}: neither open nor refused: {s}"),
        }
    };
    let open = |from: &str, target: &str, port: u16| assert!(probe(from, target, port), "{target}:{port} does not answer {from}");
    let closed = |from: &str, target: &str, port: u16| assert!(!probe(from, target, port), "{target}:{port} answers {from}");
    // Each port an app host may not reach, next to a host that must reach it (its twin: the port
    // listens, and the rule lets the right host in).
    for (target, port) in [("lab-cache-1", 9121), ("lab-lb-1", 9113), ("lab-lb-1", 3903), ("lab-app-2", 9100), ("lab-mon-1", 9100), ("lab-mon-1", 9090)] {
        closed("lab-app-1", target, port);
        open("lab-mon-1", target, port);
    }
    open("lab-cache-1", "lab-cache-1", 9121); // the host itself
    // The app's instances answer the load balancer and the monitor, and no other host (their
    // /metrics and every route would be reached past the balancer's rate limit and block).
    for from in ["lab-lb-1", "lab-mon-1"] {
        open(from, "lab-app-1", 3000);
    }
    for from in ["lab-cache-1", "lab-app-2"] {
        closed(from, "lab-app-1", 3000);
    }
    // Prometheus answers people outside the fleet (here, this machine through the published port).
    assert!(client().get(format!("{PROMETHEUS}/-/ready")).send().is_ok_and(|r| r.status().is_success()), "Prometheus does not answer from outside the fleet");
    // The collector has a port per host (2514 + its place in the file): app-1 reaches its own
    // (2515) and not lb-1's (2514), which lb-1 reaches.
    open("lab-app-1", "lab-mon-1", 2515);
    closed("lab-app-1", "lab-mon-1", 2514);
    open("lab-lb-1", "lab-mon-1", 2514);
    // The collector speaks RELP over TLS only: a session in the clear, even from a fleet host, gets
    // no RELP answer (in the clear, this open is answered `1 rsp ...`).
    let plain = docker_exec("lab-app-1", "timeout 5 bash -c 'exec 3<>/dev/tcp/lab-mon-1/2515; printf \"1 open 14 relp_version=0\\n\" >&3; head -c 64 <&3' 2>/dev/null; true");
    assert!(!plain.contains("rsp"), "the collector answered RELP in the clear: {plain:?}");
    // apply issued each host's certificate from the fleet's log CA, which is on the monitor host only;
    // each host's key is its own (0400).
    for host in ["lab-lb-1", "lab-app-1", "lab-app-2", "lab-cache-1", "lab-mon-1"] {
        let name = host.trim_start_matches("lab-");
        let seen = docker_exec(host, "cd /etc/scalectl/tls && openssl verify -CAfile log-ca.pem log.pem && stat -c %a log.key && openssl x509 -in log.pem -noout -ext subjectAltName; ls ca 2>&1; true");
        assert!(seen.contains("log.pem: OK\n400\n") && seen.contains(&format!("DNS:{name}\n")), "{host}: {seen}");
        assert_eq!(seen.contains("log-ca.key"), host == "lab-mon-1", "{host}: {seen}");
    }
    assert!(prometheus_scalar("count(up == 1)").is_some_and(|n| n >= 10.0), "Prometheus scrapes: {:?}", prometheus_scalar("count(up == 1)"));
}

/// A topology that only shares the lab's name (a host at another address: production, say) is
/// refused with what differs, never silently sent to the lab's containers.
#[test]
fn lab_topology_that_only_shares_the_labs_name_is_refused() {
    let _lab = lab();
    let other = edited_topology("  app-1:   {address: lab-app-1,", "  app-1:   {address: 10.77.0.1,");
    let rel = release();
    let out = run(&["plan", "-f", other.to_str().unwrap(), "--release", rel.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("its host `app-1` is at `10.77.0.1` where the lab's is at `lab-app-1`"), "{err}");
}

/// How scalectl reaches a lab host (the lab's key and known_hosts).
fn lab_endpoint(host: &str) -> scalectl::exec::ssh::Endpoint {
    let dir = scalectl::exec::lab::LabDir(root().join("target/lab-home/lab/lab"));
    let state = dir.load().unwrap().expect("the lab is up");
    let h = &state.hosts[host];
    scalectl::exec::ssh::Endpoint {
        host: host.into(),
        address: "127.0.0.1".into(),
        port: h.ssh_port,
        user: h.user.clone(),
        key: Some(dir.key()),
        known_hosts: dir.known_hosts(),
        accept_new_host_keys: false,
        connect_timeout: Duration::from_secs(10),
    }
}

/// An SSH connection to a lab host, as scalectl makes it.
fn lab_conn(host: &str) -> scalectl::exec::ssh::Conn {
    scalectl::exec::ssh::Conn::connect(&lab_endpoint(host)).unwrap()
}

/// A host that prints without end (compromised, or a runaway script) is read up to the cap and
/// refused, over a real SSH session: this machine's memory is not the host's to fill.
#[test]
fn lab_a_host_that_prints_without_end_is_cut_off() {
    let _lab = lab();
    let c = lab_conn("app-1");
    let e = c.script("head -c 100000000 /dev/zero", Duration::from_secs(60)).unwrap_err().to_string();
    assert!(e.contains("printed more than 32 MiB"), "{e}");
    // The connection still works for what is not endless.
    assert_eq!(lab_conn("app-1").script("echo ok", Duration::from_secs(10)).unwrap().stdout, "ok\n");
}

/// A known_hosts that holds only the host's RSA (or ECDSA) key, as older files do, is honoured:
/// scalectl asks the server for that key type instead of calling the Ed25519 key it prefers a
/// changed key. A wrong key of that type is still refused as changed.
#[test]
fn lab_known_hosts_with_one_key_type_is_honoured_and_a_wrong_key_of_it_refused() {
    let _lab = lab();
    let dir = tempfile::tempdir().unwrap();
    let ep = lab_endpoint("app-1");
    let entry = |key_line: &str| {
        let f: Vec<&str> = key_line.split_whitespace().collect();
        format!("[127.0.0.1]:{} {} {}\n", ep.port, f[0], f[1])
    };
    for kt in ["rsa", "ecdsa"] {
        let known = dir.path().join(format!("known_hosts_{kt}"));
        std::fs::write(&known, entry(&docker_exec("lab-app-1", &format!("cat /etc/ssh/ssh_host_{kt}_key.pub")))).unwrap();
        let c = scalectl::exec::ssh::Conn::connect(&scalectl::exec::ssh::Endpoint { known_hosts: known, ..ep.clone() })
            .unwrap_or_else(|e| panic!("only its {kt} key known: {e}"));
        assert_eq!(c.run("echo ok", b"", Duration::from_secs(10)).unwrap().stdout, "ok\n");
    }
    // Another RSA key, made where ssh-keygen surely is (the lab host; the key is thrown away).
    let other = docker_exec("lab-app-1", "d=$(mktemp -d) && ssh-keygen -q -t rsa -b 2048 -N '' -f $d/k && cat $d/k.pub && rm -r $d");
    let known = dir.path().join("known_hosts_wrong");
    std::fs::write(&known, entry(&other)).unwrap();
    match scalectl::exec::ssh::Conn::connect(&scalectl::exec::ssh::Endpoint { known_hosts: known, ..ep.clone() }) {
        Err(e @ scalectl::exec::ssh::SshError::ChangedHostKey { .. }) => assert!(e.to_string().contains("HOST KEY CHANGED"), "{e}"),
        Err(e) => panic!("a wrong RSA key gave: {e}"),
        Ok(_) => panic!("a wrong RSA key was accepted"),
    }
}

#[test]
fn lab_ssh_reads_a_command_that_fills_stderr_before_writing_stdout() {
    let _lab = lab();
    let c = lab_conn("app-1");
    // 4 MiB on stderr first (more than an SSH channel's window), then stdout: a reader that blocks
    // on stdout until it ends would wait forever while the command waits for stderr to drain.
    let t = Instant::now();
    let out = c.run("head -c 4194304 /dev/zero | tr '\\0' e >&2; echo done", b"", Duration::from_secs(20)).unwrap();
    eprintln!("4 MiB of stderr, then stdout, read in {:.2} s", t.elapsed().as_secs_f64());
    assert_eq!((out.status, out.stdout.as_str(), out.stderr.len()), (0, "done\n", 4 << 20));
    // And the other way round, interleaved, with the exit status.
    let out = c.run("for i in $(seq 1 2000); do echo out$i; echo err$i >&2; done; exit 3", b"", Duration::from_secs(20)).unwrap();
    assert_eq!((out.status, out.stdout.lines().count(), out.stderr.lines().count()), (3, 2000, 2000));
}

#[test]
fn lab_instances_max_is_checked_again_with_the_cores_observed() {
    let _lab = lab();
    // Valid as written (one instance per `max` host before its cores are known), but the lab's
    // app hosts have 2 cores: instance 9100 would meet the node exporter.
    let edited = edited_topology_many(&[("  port: 3000\n  instances: 2\n", "  port: 9099\n  instances: max\n")]);
    let file = edited.to_str().unwrap();
    run_ok(&["validate", "-f", file]);
    let out = run(&["plan", "-f", file, "--release", release().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let cores: u32 = docker_exec("lab-app-1", "nproc").trim().parse().unwrap();
    let said = format!("app-1: with the {cores} cores observed there it runs {cores} app instances, and then port 9100 on host `app-1` is used by both scale-api instance 9100 and the node exporter");
    assert!(err.contains(&said), "{err}");
}

#[test]
fn lab_apply_killed_half_way_converges_on_the_next_apply() {
    let _lab = lab();
    let _restore = restore();
    let next = new_release("killed");
    let mut child = scalectl(&apply_args(&lab_yaml(), next.to_str().unwrap()))
        .env("SCALECTL_PROGRESS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.starts_with("app-1: switching to release") {
            child.kill().unwrap(); // SIGKILL: no cleanup, the lock stays behind
            break;
        }
    }
    child.wait().unwrap();
    assert!(seen.iter().any(|l| l.starts_with("app-1: switching")), "{seen:#?}");
    // The killed apply's audit line was written before it began.
    let audit = || docker_exec("lab-app-1", "tail -n 1 /var/log/scalectl/audit.log");
    let last = audit();
    assert!(last.contains("\"outcome\":\"started\"") && last.contains("\"topology\":\"lab\""), "{last}");
    // `lock release --force --id` removes only the lock it names.
    let status = text(&run_ok(&["lock", "status", "-f", &lab_yaml()]).stdout);
    assert!(status.starts_with("locked: held by"), "{status}");
    let wrong = run(&["lock", "release", "-f", &lab_yaml(), "--force", "--id", "000000000000"]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(text(&wrong.stderr).contains("nothing was released"), "{}", text(&wrong.stderr));
    assert_eq!(text(&run_ok(&["lock", "status", "-f", &lab_yaml()]).stdout), status, "the lock stays");
    // The next apply takes over the dead process's lock and finishes the job.
    let out = run_ok(&apply_args(&lab_yaml(), next.to_str().unwrap()));
    assert!(text(&out.stderr).contains("taking over the fleet lock"), "{}", text(&out.stderr));
    assert!(audit().contains("\"outcome\":\"ok\""), "{}", audit());
    let out = run(&["plan", "-f", &lab_yaml(), "--release", next.to_str().unwrap(), "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert_eq!(instances_seen(60).len(), 4);
}

/// An apply of `release` with a fleet lock that lives 3 s (kept only by renewing it), once it is
/// uploading the release; its progress lines from there on.
fn apply_under_way(release: &Path) -> (std::process::Child, std::io::Lines<BufReader<std::process::ChildStderr>>) {
    let mut child = scalectl(&[apply_args(&lab_yaml(), release.to_str().unwrap()).as_slice(), &["--lock-ttl", "3s"]].concat())
        .env("SCALECTL_PROGRESS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("uploading release") {
            break;
        }
    }
    (child, lines)
}

#[test]
fn lab_second_concurrent_apply_is_refused_by_the_lock() {
    let _lab = lab();
    let _restore = restore();
    let next = new_release("concurrent");
    // A lock that lives 3 s: the first apply (under load, so its drains take a while) outlasts
    // it, and keeps it only by renewing it.
    let load = Load::start_at(LB, 4);
    let started = Instant::now();
    // Under way: it holds the lock from before it observes.
    let (mut first, lines) = apply_under_way(&next);
    std::thread::sleep(Duration::from_millis(4500).saturating_sub(started.elapsed()));
    let second = run(&apply_args(&lab_yaml(), next.to_str().unwrap()));
    let overlapped = started.elapsed();
    let running = first.try_wait().unwrap().is_none();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = first.wait().unwrap();
    let span = Span { start: started, end: Instant::now() };
    let report = load.finish();
    let err = text(&second.stderr);
    assert!(running, "the first apply ended before the second tried: {rest:#?}");
    report.assert_covers(span, &format!("nginx's error log:\n{}", lb_errors()));
    eprintln!("second apply refused {:.1} s into the first (lock time to live 3 s)", overlapped.as_secs_f64());
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains("the fleet is locked: held by"), "{err}");
    assert!(status.success(), "the first apply failed: {rest:#?}");
    let out = run_ok(&["lock", "status", "-f", &lab_yaml()]);
    assert_eq!(text(&out.stdout).trim(), "unlocked");
}

/// An apply whose fleet lock is taken from it (here by `lock release --force`, as a second run
/// taking over an expired lock would) stops before its next step and says so, rather than going
/// on changing hosts beside another run; what it had not done yet stays undone, and the old
/// release keeps serving.
#[test]
fn lab_an_apply_that_loses_the_fleet_lock_stops_before_its_next_step() {
    let _lab = lab();
    let _restore = restore();
    let next = new_release("lost-lock");
    let (mut first, lines) = apply_under_way(&next);
    run_ok(&["lock", "release", "-f", &lab_yaml(), "--force"]);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = first.wait().unwrap();
    let said = rest.join("\n");
    assert!(!status.success(), "the apply went on without its lock:\n{said}");
    assert!(said.contains("was lost: the lock is now") && said.contains("Stopped before the next step"), "{said}");
    assert!(!said.contains("rolling back"), "it undid steps on a fleet that may be another run's:\n{said}");
    // Not every instance restarted on the new release: the rest is still to do.
    let out = run(&["plan", "-f", &lab_yaml(), "--release", next.to_str().unwrap(), "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2), "the whole apply ran anyway:\n{said}");
    assert_eq!(instances_seen(40).len(), 4, "{}", lb_errors());
}

/// Rotating the Redis password under load, to a new one and back: Redis (never restarted) takes
/// the new password before any app host has it and drops the old one only after every instance
/// rolled onto the new one, so no request fails; afterwards the old password is refused.
#[test]
fn lab_rotated_redis_password_fails_no_request_under_load() {
    let _lab = lab();
    let _restore = restore();
    let old = lab_redis_password().to_string();
    let new = format!("rotated-{}", std::process::id());
    let mut pw_file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut pw_file, new.as_bytes()).unwrap();
    let rotated = edited_topology("password: {env: LAB_REDIS_PASSWORD}", &format!("password: {{file: {}}}", pw_file.path().display()));
    let rel = release();
    let cli = |pw: &str, cmd: &str| docker_exec("lab-cache-1", &format!("REDISCLI_AUTH='{}' redis-cli --no-auth-warning --user scalectl-exporter {cmd} 2>&1", scalectl::render::redis_exporter_password(pw)));
    let run_id = |pw: &str| cli(pw, "INFO server").lines().find(|l| l.starts_with("run_id:")).map(str::to_string).unwrap_or_default();
    let before = run_id(&old);
    assert!(!before.is_empty(), "{}", cli(&old, "INFO server"));
    for (file, now, gone) in [(rotated.to_str().unwrap(), new.as_str(), old.as_str()), (lab_yaml().as_str(), old.as_str(), new.as_str())] {
        let count_before = count();
        let load = Load::start_url(format!("{LB}/count"), 2);
        std::thread::sleep(Duration::from_secs(1));
        eprintln!("rotation to {}", if now == old { "the lab's password" } else { "a new password" });
        let (out, span) = timed(|| run_ok(&apply_args(file, rel.to_str().unwrap())));
        std::thread::sleep(Duration::from_millis(500));
        let report = load.finish();
        report.assert_covers(span, &text(&out.stdout));
        assert_eq!(cli(now, "PING").trim(), "PONG");
        assert!(cli(gone, "PING").contains("WRONGPASS"), "the old password still works: {}", cli(gone, "PING"));
        assert_eq!(run_id(now), before, "Redis was restarted");
        // Every increment the load got an answer for is in the counter (and the read itself).
        let counted = count();
        check_counter(counted, count_before + report.ok() + 1);
    }
}

#[test]
fn lab_secrets_reach_their_hosts_and_never_the_plan() {
    let _lab = lab();
    let _restore = restore();
    let pw = lab_redis_password();
    const TOKEN: &str = "tok-5678-secret";
    let edited = edited_topology_many(&[("  drain_timeout: 5s\n", "  drain_timeout: 5s\n  secrets: {API_TOKEN: {env: LAB_API_TOKEN}}\n")]);
    let file = edited.to_str().unwrap();
    let rel = release();
    let rel = rel.to_str().unwrap();
    let with_secrets = |args: &[&str]| scalectl(args).env("LAB_API_TOKEN", TOKEN).output().unwrap();
    // Every secret of the topology: the app's token, the Redis password and the exporter's, derived from it.
    let secrets = [TOKEN.to_string(), pw.to_string(), scalectl::render::redis_exporter_password(pw)];
    let no_secret_in = |what: &str, said: &str| {
        for (i, secret) in secrets.iter().enumerate() {
            assert!(!said.contains(secret.as_str()), "secret {} of {} reached {what}", i + 1, secrets.len());
        }
    };
    let since = docker_exec("lab-app-1", "date +%s").trim().to_string();

    // Without the variables, nothing is planned.
    let out = run(&["plan", "-f", file, "--release", rel]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("environment variable `LAB_API_TOKEN` is not set"), "{}", text(&out.stderr));
    let out = scalectl(&["plan", "-f", &lab_yaml(), "--release", rel]).env_remove("LAB_REDIS_PASSWORD").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("environment variable `LAB_REDIS_PASSWORD` is not set"), "{}", text(&out.stderr));

    for format in ["text", "json"] {
        let out = with_secrets(&["plan", "-f", file, "--release", rel, "-o", format, "--detailed-exitcode"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        no_secret_in(&format!("the {format} plan"), &all);
        assert!(all.contains("/etc/scale-api/secrets.env"));
    }
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("plan.json");
    let out = with_secrets(&["plan", "-f", file, "--release", rel, "--out", saved.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    no_secret_in("the saved plan", &std::fs::read_to_string(&saved).unwrap());
    let rendered = dir.path().join("render");
    let out = with_secrets(&["render", "-f", file, "-o", rendered.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for entry in walkdir(&rendered) {
        no_secret_in(&format!("the rendered {}", entry.display()), &String::from_utf8_lossy(&std::fs::read(&entry).unwrap()));
    }
    let out = with_secrets(&apply_args(file, rel));
    assert!(out.status.success(), "{}", text(&out.stderr));
    no_secret_in("apply's output", &format!("{}{}", text(&out.stdout), text(&out.stderr)));
    // The token reached the app (its instances' environment), and nowhere it should not: no
    // process's arguments, no audit line, no journal entry since the test began, on any host.
    let pid = docker_exec("lab-app-1", "systemctl show -p MainPID --value scale-api@3000.service").trim().to_string();
    assert!(docker_exec("lab-app-1", &format!("tr '\\0' '\\n' < /proc/{pid}/environ")).lines().any(|l| l == format!("API_TOKEN={TOKEN}")), "the instance has no API_TOKEN");
    for host in ["lab-lb-1", "lab-app-1", "lab-app-2", "lab-cache-1", "lab-mon-1"] {
        no_secret_in(&format!("a process's arguments on {host}"), &docker_exec(host, "ps -eo args"));
        no_secret_in(&format!("the audit log on {host}"), &docker_exec(host, "cat /var/log/scalectl/audit.log 2>/dev/null || true"));
        no_secret_in(&format!("the journal on {host}"), &docker_exec(host, &format!("journalctl --since @{since} --no-pager -o cat")));
    }

    // Redis listens on its address and loopback only, and answers nobody without the password:
    // not a client on another lab host (a plain TCP connection from app-1), nor one on its own host.
    // Listening sockets on 6379 (0x18EB) by local address, from the kernel's table: loopback
    // (0100007F) and the container's address, never the wildcard (00000000).
    let listening = docker_exec("lab-cache-1", "awk '$4 == \"0A\" && $2 ~ /:18EB$/ {print $2}' /proc/net/tcp | sort");
    assert!(listening.contains("0100007F:18EB") && !listening.contains("00000000:18EB") && listening.lines().count() == 2, "{listening}");
    let ask = |cmd: &str| {
        let script = format!("exec 3<>/dev/tcp/lab-cache-1/6379; printf '{cmd}\\r\\n' >&3; timeout 5 head -c 7 <&3 || true");
        text(&Command::new("docker").args(["exec", "lab-app-1", "bash", "-c", &script]).output().unwrap().stdout)
    };
    for cmd in ["PING", "CONFIG GET requirepass", "KEYS session:*"] {
        let answer = ask(cmd);
        assert_eq!(answer, "-NOAUTH", "`{cmd}` from another host without the password: {answer:?}");
    }
    assert!(docker_exec("lab-cache-1", "redis-cli ping 2>&1 || true").contains("NOAUTH"), "redis answers without a password");
    // With the password, as the apps log in: their ACL user runs no dangerous command.
    let script = "exec 3<>/dev/tcp/lab-cache-1/6379; printf 'AUTH %s\\r\\nFLUSHALL\\r\\nCONFIG GET requirepass\\r\\nREPLICAOF 10.9.9.9 6379\\r\\n' \"$PW\" >&3; timeout 2 cat <&3 || true";
    let answers = text(&Command::new("docker").args(["exec", "-e", &format!("PW={pw}"), "lab-app-1", "bash", "-c", script]).output().unwrap().stdout);
    assert!(answers.starts_with("+OK\r\n") && answers.matches("-NOPERM").count() == 3, "the apps' user: {answers:?}");
    assert!(redis_cli("ping").contains("PONG"));
    assert_eq!(docker_exec("lab-app-1", "stat -c '%a %U' /etc/scale-api/secrets.env").trim(), "600 root");
    assert!(docker_exec("lab-app-1", "cat /etc/scale-api/secrets.env").lines().any(|l| l == format!("API_TOKEN=\"{TOKEN}\"")), "the secrets file has the token");
    let before = count();
    assert_eq!(count(), before + 1, "scale-api reaches the password-protected Redis");
    let out = with_secrets(&["plan", "-f", file, "--release", rel, "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // Dropping the token converges back: the secrets file keeps only the Redis password.
    run_ok(&apply_args(&lab_yaml(), rel));
    let secrets = docker_exec("lab-app-1", "cat /etc/scale-api/secrets.env");
    assert!(!secrets.contains("API_TOKEN") && secrets.contains("REDIS_PASSWORD"), "the secrets file after the token was dropped");
    let before = count();
    assert_eq!(count(), before + 1);
}

#[test]
fn lab_destroy_removes_what_scalectl_deployed_and_apply_brings_it_back() {
    let _lab = lab();
    let _restore = restore();
    let out = run(&["destroy", "-f", &lab_yaml()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("refusing to DESTROY"), "{}", text(&out.stderr));
    assert_eq!(instances_seen(60), all_instances(), "destroy without --yes changed something");

    run_ok(&["destroy", "-f", &lab_yaml(), "--yes"]);
    let exists = |c: &str, p: &str| docker_exec(c, &format!("test -e {p} && echo yes || echo no")).trim() == "yes";
    assert_eq!(docker_exec("lab-app-1", "systemctl is-active scale-api@3000.service scale-api@3000.socket || true").trim(), "inactive\ninactive");
    assert!(!exists("lab-app-1", "/opt/scale-api/current") && !exists("lab-app-1", "/etc/scale-api/scale-api.env"));
    assert!(!exists("lab-lb-1", "/etc/nginx/conf.d/lab.conf"));
    assert_eq!(docker_exec("lab-cache-1", "systemctl is-active redis-server || true").trim(), "inactive");
    let out = run_ok(&["destroy", "-f", &lab_yaml(), "--yes"]);
    assert!(text(&out.stdout).contains("No changes"), "{}", text(&out.stdout));

    // A first apply onto the bare fleet, with readiness at a path of the topology's own: every
    // instance is started and waited for on that path (the plan says which), not on /readyz.
    let rel = release();
    let custom = edited_topology("  drain_timeout: 5s\n", "  drain_timeout: 5s\n  health: {liveness: /live, readiness: /ready}\n");
    let out = run_ok(&apply_args(custom.to_str().unwrap(), rel.to_str().unwrap()));
    assert!(text(&out.stdout).contains("start scale-api@3000.service (wait until 127.0.0.1:3000/ready is ready)"), "{}", text(&out.stdout));
    assert_eq!(instances_seen(60).len(), 4);
    assert_eq!(docker_exec("lab-app-1", "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:3000/ready"), "200");
}

// Observability deployed by apply (issue 6, hosts half).

const PROMETHEUS: &str = "http://127.0.0.1:9090";

fn prometheus(path: &str) -> serde_json::Value {
    client().get(format!("{PROMETHEUS}{path}")).send().unwrap().json().unwrap()
}

#[test]
fn lab_prometheus_scrapes_every_expected_target() {
    let _lab = lab();
    let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
    for i in INSTANCES {
        let (host, port) = i.rsplit_once('-').unwrap();
        expected.insert(("app".into(), format!("lab-{host}:{port}")));
    }
    for h in ["lb-1", "app-1", "app-2", "cache-1", "mon-1"] {
        expected.insert(("node".into(), format!("lab-{h}:9100")));
    }
    expected.insert(("redis".into(), "lab-cache-1:9121".into()));
    expected.insert(("nginx".into(), "lab-lb-1:9113".into()));
    expected.insert(("nginx-log".into(), "lab-lb-1:3903".into()));
    expected.insert(("haproxy".into(), "lab-lb-1:8405".into()));
    expected.insert(("prometheus".into(), "lab-mon-1:9090".into()));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = prometheus("/api/v1/targets");
        let targets = v["data"]["activeTargets"].as_array().unwrap();
        let up: BTreeSet<(String, String)> = targets
            .iter()
            .filter(|t| t["health"] == "up")
            .map(|t| (t["labels"]["job"].as_str().unwrap().to_string(), t["labels"]["instance"].as_str().unwrap().to_string()))
            .collect();
        if up == expected {
            break;
        }
        assert!(Instant::now() < deadline, "targets up: {up:#?}\nexpected: {expected:#?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // Prometheus sends its alerts to the Alertmanager on its host (observability.alertmanager).
    let v = prometheus("/api/v1/alertmanagers");
    let active: Vec<&str> = v["data"]["activeAlertmanagers"].as_array().unwrap().iter().filter_map(|a| a["url"].as_str()).collect();
    assert_eq!(active, ["http://127.0.0.1:9093/api/v2/alerts"], "{v:#}");
    // Its lifecycle API is off: whoever reaches it (here, from outside the fleet) cannot stop it.
    let quit = client().post(format!("{PROMETHEUS}/-/quit")).send().unwrap().status();
    assert_eq!(quit.as_u16(), 403, "POST /-/quit");
    assert!(prometheus("/api/v1/status/buildinfo")["status"] == "success", "Prometheus still runs");
    // The fleet's internals listen on their host's address only (the kernel's table of listening
    // sockets, ports in hex), never on every interface, where a public one would expose them.
    for (host, ports) in [
        ("lab-lb-1", &[9100, 9113, 3903][..]),
        ("lab-app-1", &[9100][..]),
        ("lab-cache-1", &[9100, 9121][..]),
        ("lab-mon-1", &[9100, 9090, 2514, 2515, 2518][..]),
    ] {
        let table = docker_exec(host, "awk '$4 == \"0A\" {print $2}' /proc/net/tcp /proc/net/tcp6");
        for port in ports {
            let on: Vec<&str> = table.lines().filter(|l| l.ends_with(&format!(":{port:04X}"))).collect();
            assert!(!on.is_empty(), "{host}: nothing listens on {port}:\n{table}");
            let wildcard = |a: &&str| a.starts_with("00000000:") || a.starts_with("00000000000000000000000000000000:");
            assert!(!on.iter().any(wildcard), "{host}: port {port} listens on every interface: {on:?}");
        }
    }
}

/// Lines on the collector (mon-1) that contain `needle`, with the file each is in.
fn collected(needle: &str) -> Vec<(String, String)> {
    collected_in("lab-mon-1", needle)
}

/// Lines under /var/log/scalectl/ in the container `collector` that contain `needle`, with the file each is in.
#[test]
fn lab_request_id_reaches_the_collector_per_host_and_instance() {
    let _lab = lab();
    // A local user's (and root's) line tagged as an instance: not the app's unit, never shipped.
    let forged = run_id("forged");
    docker_exec("lab-app-1", &format!("logger -t scale-api-3000 {forged}; setpriv --reuid=nobody --regid=nogroup --clear-groups logger -t scale-api-3001 {forged}"));
    // The app's own line (sent after the forged ones, so once it arrived they would have too).
    request_id_reaches_the_collector(LB, &collected);
    std::thread::sleep(Duration::from_secs(1));
    assert!(collected(&forged).is_empty(), "a line tagged scale-api-PORT by someone else was shipped: {:?}", collected(&forged));
    assert!(docker_exec("lab-app-1", &format!("journalctl -t scale-api-3000 -t scale-api-3001 --no-pager | grep -c {forged} || true")).trim() != "0", "the forged lines never reached the journal: the test proves nothing");
}

#[test]
fn lab_collector_outage_loses_no_log_line() {
    let _lab = lab();
    // syslog.socket would start rsyslog again at the next local message: stop both.
    collector_outage_loses_no_line(
        LB,
        &collected,
        &|| drop(docker_exec("lab-mon-1", "systemctl stop syslog.socket rsyslog.service")),
        &|| drop(docker_exec("lab-mon-1", "systemctl start syslog.socket rsyslog.service")),
    );
}

#[test]
fn lab_stopping_redis_fires_the_redis_down_alert() {
    let _lab = lab();
    // A test before may have stopped Redis (doctor's redis-down): the alert's `for:` window counts
    // from its first pending evaluation, so start from an inactive alert seen by two evaluations.
    let listed = || {
        prometheus("/api/v1/alerts")["data"]["alerts"].as_array().unwrap().iter().any(|a| a["labels"]["alertname"] == "RedisDown")
    };
    let quiet = Instant::now();
    while listed() || {
        std::thread::sleep(Duration::from_secs(6)); // an evaluation interval (5 s) and slack
        listed()
    } {
        assert!(quiet.elapsed() < Duration::from_secs(90), "RedisDown stays pending or firing with Redis running");
        std::thread::sleep(Duration::from_secs(1));
    }
    docker_exec("lab-cache-1", "systemctl stop redis-server.service");
    let stopped = Instant::now();
    // lab.yaml's `alerts.down_for: 20s`, plus a scrape and an evaluation interval (5 s each), plus slack.
    let deadline = stopped + Duration::from_secs(60);
    let fired = loop {
        let v = prometheus("/api/v1/alerts");
        let firing = v["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["labels"]["alertname"] == "RedisDown" && a["state"] == "firing");
        if firing {
            break stopped.elapsed();
        }
        if Instant::now() > deadline {
            break Duration::MAX;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    // Prometheus hands the firing alert to Alertmanager (kept there: lab.yaml gives no webhook).
    let in_alertmanager = (0..20).any(|_| {
        let alerts = docker_exec("lab-mon-1", "curl -fsS 127.0.0.1:9093/api/v2/alerts?filter=alertname%3DRedisDown");
        alerts.contains("\"RedisDown\"") || {
            std::thread::sleep(Duration::from_millis(500));
            false
        }
    });
    docker_exec("lab-cache-1", "systemctl start redis-server.service");
    assert!(fired != Duration::MAX, "RedisDown did not fire within 60 s of stopping Redis");
    assert!(in_alertmanager, "RedisDown fired in Prometheus but never reached Alertmanager");
    eprintln!("RedisDown firing {:.0} s after Redis stopped", fired.as_secs_f64());
    assert!(fired >= Duration::from_secs(19), "fired before its `for: 20s` window: {fired:?}");
}

/// Grafana cannot run here: under load through `lb`, each dashboard panel's query is run against
/// the Prometheus at `prometheus` once it has had `settle` to scrape the load; every one must return
/// data, except queries naming a metric in `absent` (the caller says why those have none).
#[test]
fn lab_every_dashboard_query_returns_data_under_load() {
    let _lab = lab();
    // Enough scrapes (every 5 s in lab.yaml) for rate() over 1m windows to see the load.
    // lab.yaml runs no workers, no database and no cache: the queue's panels, the database's
    // (the database lab asks those) and the cache's hit ratio have nothing to show.
    every_dashboard_query_returns_data(LB, PROMETHEUS, Duration::from_secs(20), &[&["scalectl_queue_", "scalectl_worker_"][..], crate::support::DATABASE_AND_CACHE_SERIES].concat());
}

#[test]
fn lab_saved_plan_is_applied_exactly_and_refused_when_stale() {
    let _lab = lab();
    let _restore = restore();
    let rel = release();
    let rel = rel.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let planfile = dir.path().join("plan.json");
    let planfile = planfile.to_str().unwrap();
    let edited = edited_topology("maxmemory: 64MiB", "maxmemory: 80MiB");
    let file = edited.to_str().unwrap();
    let save = || {
        let out = run(&["plan", "-f", file, "--release", rel, "--out", planfile, "--detailed-exitcode"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    };

    // A host that drifted since the plan was made: refused, nothing changed.
    save();
    docker_exec("lab-cache-1", "echo '# drift' >> /etc/redis/redis.conf");
    let out = run(&["apply", planfile, "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("the plan is stale: cache-1 changed since it was made"), "{}", text(&out.stderr));
    assert!(redis_cli("config get maxmemory").contains("67108864"));

    // An edited plan file runs nothing: a command, a path, a file's content changed in it.
    save();
    let original = std::fs::read_to_string(planfile).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&original).unwrap();
    let edits: [(&str, &dyn Fn(&mut serde_json::Value)); 3] = [
        ("a command", &|a| {
            if a["action"] == "install_packages" || a["action"] == "validate" {
                a["command"] = "touch /tmp/edited-plan-ran".into();
            }
        }),
        ("a path", &|a| {
            if a["action"] == "write_file" {
                a["path"] = "/etc/cron.d/edited-plan".into();
            }
        }),
        ("a file's content", &|a| {
            if a["action"] == "write_file" {
                a["content"] = "maxmemory 1mb\n".into();
            }
        }),
    ];
    for (what, edit) in edits {
        let mut d = doc.clone();
        for h in d["plan"]["hosts"].as_array_mut().unwrap() {
            for stage in ["prepare", "activate", "cleanup"] {
                for a in h[stage].as_array_mut().unwrap() {
                    edit(a);
                }
            }
        }
        // A validate step where there is none: the command edit adds one to cache-1.
        if what == "a command" {
            let cache = d["plan"]["hosts"].as_array_mut().unwrap().iter_mut().find(|h| h["host"] == "cache-1").unwrap();
            cache["prepare"].as_array_mut().unwrap().push(serde_json::json!({"action": "validate", "unit": "x", "command": "touch /tmp/edited-plan-ran"}));
        }
        std::fs::write(planfile, serde_json::to_string(&d).unwrap()).unwrap();
        let out = run(&["apply", planfile, "--yes"]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out.stdout));
        assert!(text(&out.stderr).contains("is not the plan its topology, release and a fresh observation give now"), "{what}: {}", text(&out.stderr));
        assert!(redis_cli("config get maxmemory").contains("67108864"), "{what}");
        assert_eq!(docker_exec("lab-cache-1", "ls /tmp/edited-plan-ran /etc/cron.d/edited-plan 2>/dev/null || true").trim(), "", "{what}");
    }

    // Made again, it is applied exactly: the fleet then matches the edited topology.
    save();
    let out = run_ok(&["apply", planfile, "--yes"]);
    assert!(text(&out.stdout).contains("restart redis-server.service"), "{}", text(&out.stdout));
    assert!(redis_cli("config get maxmemory").contains("83886080"));
    let out = run(&["plan", "-f", file, "--release", rel, "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // The topology file changed since the plan: refused before connecting.
    let out = run(&["plan", "-f", file, "--release", rel, "--out", planfile]);
    assert!(out.status.success());
    std::fs::write(file, std::fs::read_to_string(file).unwrap() + "# edited\n").unwrap();
    let out = run(&["apply", planfile, "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("changed since the plan was made"), "{}", text(&out.stderr));
}

/// ansible-playbook over a render and a lab's connection inventory; its output (it must succeed).
/// The Redis password comes as an Ansible user's vault would give it: a variables file (0600).
pub(crate) fn ansible_playbook(render: &Path, lab: &str, release: &Path) -> String {
    ansible_playbook_with(render, lab, release, lab_redis_password())
}

/// [`ansible_playbook`] with another Redis password in the vault.
pub(crate) fn ansible_playbook_with(render: &Path, lab: &str, release: &Path, redis_password: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let vault = render.with_file_name("vault.json");
    std::fs::write(&vault, serde_json::json!({"scalectl_redis_password": redis_password}).to_string()).unwrap();
    std::fs::set_permissions(&vault, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(crate::require("ansible-playbook"))
        .current_dir(root().join("ansible"))
        .args(["-i"])
        .arg(render.join("ansible/inventory.yml"))
        .args(["-i"])
        .arg(root().join(format!("target/lab-home/lab/{lab}/inventory.yml")))
        .arg("site.yml")
        .arg("-e")
        .arg(format!("scalectl_render_dir={}", render.display()))
        .arg("-e")
        .arg(format!("scalectl_release={}", release.display()))
        .arg("-e")
        .arg(format!("@{}", vault.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "ansible-playbook failed:\n{}", text(&out.stdout));
    text(&out.stdout)
}

/// After ansible-playbook, scalectl sees the same files, packages, release and services; only the
/// secret files (which Ansible users give through Vault, and `render` never writes) and what they
/// restart remain.
pub(crate) fn plan_after_ansible_is_only_secrets(file: &str, release: &str) {
    let out = run(&["plan", "-f", file, "--release", release, "-o", "json"]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out.stderr)));
    for h in plan["hosts"].as_array().unwrap() {
        for stage in ["prepare", "activate", "cleanup"] {
            for a in h[stage].as_array().unwrap() {
                let ok = match a["action"].as_str().unwrap() {
                    "write_file" => a["sensitive"] == true || only_upstreams_resolved(a),
                    // Redis' users are then changed live to the ACL include's (its comments differ).
                    // The secrets file rolls the app's instances, workers too.
                    "mark_pending" | "clear_pending" | "rolling_restart" | "roll_workers" | "credentials" => true,
                    // Alertmanager's config holds the webhook secret: until it is written, it cannot run.
                    "reload" | "restart" if a["unit"] == "prometheus-alertmanager.service" => true,
                    "restart" => a["unit"] == "redis-server.service" || a["unit"] == "prometheus-redis-exporter.service",
                    _ => false,
                };
                assert!(ok, "{}: after ansible-playbook, scalectl still plans {a}", h["host"]);
            }
        }
    }
}

/// The one fact `render` cannot know and apply observes: the IP the load balancer resolves an app
/// host's name to, which labels the host's instances (`upstream`, in the Prometheus targets and in
/// the instances' measuring script) so that doctor joins them with the load balancer's per-upstream
/// series. A diff that changes only those labels, each line from a name to an IP and otherwise
/// equal, is that and nothing else.
fn only_upstreams_resolved(a: &serde_json::Value) -> bool {
    if a["path"] != "/etc/prometheus/scalectl/targets.json" && a["path"] != scalectl::render::INSTANCES_SCRIPT {
        return false;
    }
    let diff = a["diff"].as_str().unwrap_or("");
    let changed = |sign: char| -> Vec<&str> { diff.lines().filter(|l| l.starts_with(sign) && !l.starts_with("---") && !l.starts_with("+++")).map(|l| &l[1..]).collect() };
    // The upstream value of a line, and the line with it taken out.
    let split = |l: &str| -> Option<(String, String)> {
        let (before, after) = l.split_once("upstream")?;
        let rest = after.trim_start_matches(['"', ':', '=', ' ']);
        let (value, tail) = rest.split_once('"')?;
        Some((value.to_string(), format!("{before}upstream{}{tail}", &after[..after.len() - rest.len()])))
    };
    let is_ip = |v: &str| v.rsplit_once(':').is_some_and(|(h, _)| h.parse::<std::net::IpAddr>().is_ok());
    let (removed, added) = (changed('-'), changed('+'));
    !removed.is_empty()
        && removed.len() == added.len()
        && removed.iter().zip(&added).all(|(r, a)| match (split(r), split(a)) {
            (Some((name, r)), Some((ip, a))) => !is_ip(&name) && is_ip(&ip) && r == a,
            _ => false,
        })
}

/// What a playbook run changed, by its recap lines (none on a second run).
pub(crate) fn changed_hosts(recap: &str) -> Vec<String> {
    recap.lines().filter(|l| l.contains(" changed=") && !l.contains(" changed=0 ")).map(String::from).collect()
}

#[test]
fn lab_ansible_playbook_deploys_what_apply_deploys() {
    let _lab = lab();
    let _restore = restore();
    // Start from hosts without scalectl's files, release or services (packages stay).
    run_ok(&["destroy", "-f", &lab_yaml(), "--yes"]);
    let out_dir = tempfile::tempdir().unwrap();
    let render = out_dir.path().join("render");
    run_ok(&["render", "-f", &lab_yaml(), "-o", render.to_str().unwrap()]);
    let rel = release();
    let t = Instant::now();
    ansible_playbook(&render, "lab", &rel);
    eprintln!("ansible-playbook after destroy: {:.1} s", t.elapsed().as_secs_f64());

    // The fleet serves as after apply.
    assert_eq!(instances_seen(60), INSTANCES.iter().map(|s| s.to_string()).collect());
    let before = count();
    assert_eq!(count(), before + 1);
    plan_after_ansible_is_only_secrets(&lab_yaml(), rel.to_str().unwrap());

    // A second run changes nothing.
    let t = Instant::now();
    let recap = ansible_playbook(&render, "lab", &rel);
    eprintln!("ansible-playbook, no change: {:.1} s", t.elapsed().as_secs_f64());
    let changed = changed_hosts(&recap);
    assert!(changed.is_empty(), "a second ansible-playbook run changed things: {changed:#?}");
}

// doctor on the live lab (issue 7): conditions caused for real, the finding expected.

pub(crate) fn doctor(file: &str, extra: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut args = vec!["doctor", "-f", file, "-o", "json"];
    args.extend_from_slice(extra);
    let out = run(&args);
    let d = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| serde_json::json!({"stderr": text(&out.stderr)}));
    (out.status.code(), d)
}

/// Until the app hosts' CPU (the machine's, in the lab) stays below 40% for 10 s; at most 3 minutes.
fn wait_for_quiet_cpu() {
    // The fleet's own instances, not the machine: other deployments on this machine (the node lab,
    // the docker tests) may keep it busy, which doctor must not count as the app's.
    let query = r#"100 * sum(rate(process_cpu_seconds_total{job="app"}[1m])) / 2"#;
    let start = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    loop {
        let cpu = prometheus_scalar(query).unwrap_or(100.0);
        match quiet_since {
            Some(t) if cpu < 40.0 && t.elapsed() >= Duration::from_secs(10) => return,
            Some(_) if cpu < 40.0 => {}
            _ if cpu < 40.0 => quiet_since = Some(Instant::now()),
            _ => quiet_since = None,
        }
        assert!(start.elapsed() < Duration::from_secs(180), "the instances stayed busy ({cpu:.0}% of 2 cores) for 3 minutes: no idle fleet to judge");
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn finding_ids(d: &serde_json::Value) -> Vec<String> {
    d["findings"].as_array().map(|f| f.iter().map(|x| x["id"].as_str().unwrap_or("").to_string()).collect()).unwrap_or_default()
}

#[test]
fn lab_doctor_finds_an_idle_fleet_healthy_and_a_stopped_redis_down() {
    let _lab = lab_alone();
    // Idle means idle: wait until the load of the tests before has left the instances' 1-minute
    // CPU rate (what else keeps the machine busy is no finding: doctor attributes CPU).
    wait_for_quiet_cpu();
    // A short window: the other tests' deploys restart instances, which a long one would count.
    let (code, d) = doctor(&lab_yaml(), &["--window", "20s"]);
    assert_eq!(code, Some(0), "{d:#}");
    assert_eq!(d["healthy"], true);

    docker_exec("lab-cache-1", "systemctl stop redis-server.service");
    // Until Prometheus has the exporter's sample of a stopped Redis.
    let stopped = Instant::now();
    while prometheus_scalar("redis_up") != Some(0.0) {
        if stopped.elapsed() > Duration::from_secs(30) {
            docker_exec("lab-cache-1", "systemctl start redis-server.service");
            panic!("Prometheus never saw Redis down: redis_up {:?}", prometheus_scalar("redis_up"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("redis_up 0 in Prometheus {:.1} s after the stop", stopped.elapsed().as_secs_f64());
    let (code, d) = doctor(&lab_yaml(), &["--window", "30s"]);
    docker_exec("lab-cache-1", "systemctl start redis-server.service");
    assert_eq!(code, Some(2), "{d:#}");
    assert!(finding_ids(&d).contains(&"redis-down".to_string()), "{d:#}");
}

#[test]
fn lab_doctor_finds_unequal_weights_as_load_imbalance() {
    let _lab = lab();
    let _restore = restore();
    // Round robin follows weights exactly (4 requests to each of app-1's instances for 1 to each
    // of app-2's); least_conn, with requests this short, rarely finds an instance busy and spreads
    // them about evenly whatever the weights.
    let edited = edited_topology_many(&[
        ("  app-1:   {address: lab-app-1,   roles: [app]}", "  app-1:   {address: lab-app-1,   roles: [app], weight: 4}"),
        ("  strategy: least_conn\n", "  strategy: round_robin\n"),
    ]);
    let file = edited.to_str().unwrap();
    let rel = release();
    run_ok(&apply_args(file, rel.to_str().unwrap()));
    let load = Load::start_at(LB, 2);
    std::thread::sleep(Duration::from_millis(500));
    let ((code, d), span) = timed(|| doctor_until(file, &["--window", "1m"], "load-imbalance", &|f, _| f["summary"].as_str().is_some_and(|s| s.contains("weights 4 and 1")), Duration::from_secs(60)));
    load.finish().assert_covers(span, &lb_errors());
    assert_eq!(code, Some(2), "{d:#}");
    let f = finding(&d, "load-imbalance");
    assert!(f["summary"].as_str().unwrap().contains("weights 4 and 1"), "{f:#}");
}

/// doctor, asked again every 3 s until it reports a finding `id` that `holds` (given the finding and
/// the whole diagnosis) or `deadline` passes (the condition is what Prometheus has scraped by then,
/// not a fixed time): its last verdict.
pub(crate) fn doctor_until(file: &str, extra: &[&str], id: &str, holds: &dyn Fn(&serde_json::Value, &serde_json::Value) -> bool, deadline: Duration) -> (Option<i32>, serde_json::Value) {
    let start = Instant::now();
    loop {
        let (code, d) = doctor(file, extra);
        let found = d["findings"].as_array().is_some_and(|f| f.iter().any(|f| f["id"] == id && holds(f, &d)));
        if found || start.elapsed() > deadline {
            eprintln!("doctor's verdict after {:.0} s: {:?}", start.elapsed().as_secs_f64(), finding_ids(&d));
            return (code, d);
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

fn finding<'a>(d: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    d["findings"].as_array().and_then(|f| f.iter().find(|f| f["id"] == id)).unwrap_or_else(|| panic!("no {id} finding in {d:#}"))
}

#[test]
fn lab_doctor_finds_an_instance_killed_repeatedly_in_a_crash_loop() {
    let _lab = lab();
    // systemd's count of the restarts it made after a failure (NRestarts), as Prometheus has it.
    let restarts = || prometheus_scalar(r#"scalectl_instance_restarts_total{instance_name="app-1-3001"}"#);
    for _ in 0..4 {
        let before = restarts();
        docker_exec("lab-app-1", "systemctl kill -s KILL scale-api@3001.service");
        // Restarted by systemd, and counted in Prometheus.
        let killed = Instant::now();
        while restarts().is_none_or(|n| Some(n) == before) {
            assert!(killed.elapsed() < Duration::from_secs(30), "Prometheus never counted app-1-3001's restart");
            std::thread::sleep(Duration::from_millis(500));
        }
        eprintln!("app-1-3001 restarted and counted {:.1} s after its kill", killed.elapsed().as_secs_f64());
    }
    let (code, d) = doctor(&lab_yaml(), &["--window", "40s"]);
    assert_eq!(code, Some(2), "{d:#}");
    let f = finding(&d, "crash-loop");
    assert_eq!(f["subject"], "app-1-3001", "{f:#}");
    assert!(f["evidence"][0]["value"].as_f64().unwrap() >= 3.0, "{f:#}");
    // The other instances are not in it.
    let crashed: Vec<&str> = d["findings"].as_array().unwrap().iter().filter(|f| f["id"] == "crash-loop").map(|f| f["subject"].as_str().unwrap()).collect();
    assert_eq!(crashed, ["app-1-3001"], "{d:#}");
}

/// Planned restarts are not crashes: five deploys in a row (reload, a new release, reload,
/// rollback, reload) restart every instance five times, and doctor over a window holding all of
/// them still finds the idle fleet healthy.
#[test]
fn lab_five_deploys_in_a_row_leave_doctor_calling_the_idle_fleet_healthy() {
    let _lab = lab_alone();
    let _restore = restore();
    let next = new_release("five-deploys");
    let started = Instant::now();
    let yaml = lab_yaml();
    let reload = vec!["reload", "-f", yaml.as_str(), "--yes"];
    let deploys = [reload.clone(), apply_args(&yaml, next.to_str().unwrap()), reload.clone(), vec!["rollback", "-f", yaml.as_str(), "--yes"], reload];
    for args in &deploys {
        let before = invocations();
        run_ok(args);
        // Each deploy started every instance anew (systemd's invocation ids).
        let after = invocations();
        for (instance, id) in &before {
            assert_ne!(&after[instance], id, "{instance} was not restarted by {args:?}");
        }
    }
    // Every instance's new process scraped, then doctor over a window that holds all five and
    // nothing before them (the test before may have ended with load seconds before this one began).
    std::thread::sleep(Duration::from_secs(15));
    let window = format!("{}s", started.elapsed().as_secs() + 1);
    let (code, d) = doctor(&lab_yaml(), &["--window", &window]);
    assert_eq!(code, Some(0), "{d:#}");
    assert!(!finding_ids(&d).contains(&"crash-loop".to_string()), "{d:#}");
    // Prometheus saw the process start times move (what doctor no longer counts as crashes);
    // deploys quicker than its scrapes show fewer than five.
    let moved = prometheus_scalar(&format!(r#"max(changes(process_start_time_seconds{{job="app"}}[{window}]))"#)).unwrap_or(0.0);
    assert!(moved >= 2.0, "Prometheus saw the instances restart: {moved} start times seen");
}

/// /heavy through the load balancer from 4 clients; doctor over the last 30 s of it.
#[test]
fn lab_doctor_finds_saturated_cpu_to_scale_out_and_with_fewer_instances_than_cores_to_scale_up() {
    let _lab = lab_alone();
    let _restore = restore();
    // Both app hosts run an instance on each of their 2 cores: saturated, the answer is another host.
    let load = Load::start_url(format!("{LB}/heavy?ms=100"), 4);
    // CPU is judged over the window, each point a rate over four scrapes: until the load fills it.
    let (code, d) = doctor_until(&lab_yaml(), &["--window", "30s"], "cpu-saturated-scale-out", &|_, _| true, Duration::from_secs(150));
    assert_eq!(code, Some(2), "{d:#}");
    let f = finding(&d, "cpu-saturated-scale-out");
    assert!(f["evidence"][0]["value"].as_f64().unwrap() > 70.0, "{f:#}");
    assert!(!finding_ids(&d).contains(&"cpu-saturated-scale-up".to_string()), "{d:#}");

    // One instance per 2-core host, rolled in under the same load, which keeps the cores busy
    // (its heavy pool has a thread per core): use every core first.
    let one = edited_topology("  instances: 2\n", "  instances: 1\n");
    let file = one.to_str().unwrap();
    let rel = release();
    run_ok(&apply_args(file, rel.to_str().unwrap()));
    let (code, d) = doctor_until(file, &["--window", "30s"], "cpu-saturated-scale-up", &|_, _| true, Duration::from_secs(120));
    let report = load.finish();
    // The only failures allowed are the heavy pool's refusals when its queue is full (its
    // backpressure, by design): no request may fail for the roll onto one instance per host.
    let other: Vec<&String> = report.failed.iter().filter(|f| !(f.starts_with("HTTP 503") && f.contains("heavy-work queue is full"))).collect();
    assert!(other.is_empty(), "{report}: {other:#?}");
    assert_eq!(code, Some(2), "{d:#}");
    let f = finding(&d, "cpu-saturated-scale-up");
    assert!(f["summary"].as_str().unwrap().contains("1 instances on 2 cores"), "{f:#}");
    assert!(f["topology_edit"].as_str().unwrap().contains("app.instances: max"), "{f:#}");
}

#[test]
fn lab_doctor_finds_an_instance_near_its_open_files_limit() {
    let _lab = lab();
    let _restore = restore();
    let low = edited_topology("  drain_timeout: 5s\n", "  drain_timeout: 5s\n  limits: {nofile: 1024}\n");
    let file = low.to_str().unwrap();
    let rel = release();
    run_ok(&apply_args(file, rel.to_str().unwrap()));
    // 1,000 idle connections to one instance (the lowest limit allowed is 1,024), opened by one shell
    // on its host (loopback only) and held until scale-api's 10 s header timeout closes them: doctor
    // judges the open files' peak in its window, not only the last scrape.
    docker_exec(
        "lab-app-1",
        "nohup timeout 30 bash -c 'for i in $(seq 1000); do exec {fd}<>/dev/tcp/127.0.0.1/3000 || break; done; sleep 30' >/dev/null 2>&1 &",
    );
    // Accepted, then scraped.
    let opened = Instant::now();
    while prometheus_scalar(r#"process_open_fds{job="app",instance_name="app-1-3000"}"#).is_none_or(|n| n < 900.0) {
        assert!(opened.elapsed() < Duration::from_secs(20), "Prometheus never saw app-1-3000 with 900 open files");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (code, d) = doctor(file, &["--window", "30s"]);
    assert_eq!(code, Some(2), "{d:#}");
    let f = finding(&d, "fd-exhaustion");
    assert_eq!(f["subject"], "app-1-3000", "{f:#}");
    assert!(f["topology_edit"].as_str().unwrap().starts_with("app.limits.nofile: "), "{f:#}");
}

fn prometheus_scalar(query: &str) -> Option<f64> {
    let url = reqwest::Url::parse_with_params(&format!("{PROMETHEUS}/api/v1/query"), &[("query", query)]).unwrap();
    let v: serde_json::Value = client().get(url).send().unwrap().json().unwrap();
    v["data"]["result"][0]["value"][1].as_str().and_then(|s| s.parse().ok())
}

#[test]
fn lab_gateway_errors_from_the_load_balancer_reach_prometheus() {
    let _lab = lab();
    let errors = || prometheus_scalar("sum(scalectl_nginx_gateway_errors_total)");
    let deadline = Instant::now() + Duration::from_secs(20);
    let before = loop {
        if let Some(v) = errors() {
            break v;
        }
        assert!(Instant::now() < deadline, "mtail's counter never reached Prometheus");
        std::thread::sleep(Duration::from_millis(500));
    };
    // Every instance gone, sockets included (systemd would start an instance on a connection).
    let units = "scale-api@3000.socket scale-api@3001.socket scale-api@3000.service scale-api@3001.service";
    for h in ["lab-app-1", "lab-app-2"] {
        docker_exec(h, &format!("systemctl stop {units}"));
    }
    let c = client();
    let statuses: Vec<u16> = (0..5).map(|_| c.get(format!("{LB}/")).send().map(|r| r.status().as_u16()).unwrap_or(0)).collect();
    for h in ["lab-app-1", "lab-app-2"] {
        docker_exec(h, &format!("systemctl start {units}"));
    }
    // The balancer answers itself: no instance up (503), or none reached in time (502, 504).
    assert!(statuses.iter().all(|s| [502, 503, 504].contains(s)), "{statuses:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = errors().unwrap_or(before);
        if now >= before + 5.0 {
            break;
        }
        assert!(Instant::now() < deadline, "gateway errors in Prometheus went from {before} to {now}, expected +5");
        std::thread::sleep(Duration::from_millis(500));
    }
    // The balancer checks a down instance every 2 s, so one started a moment ago may not be back
    // yet (Prometheus can show the errors within a second of the restart): each comes back within
    // a few of its checks, or the test fails. Least_conn picks the least busy instance, so a few
    // hundred requests, not a handful (instances_reached_at's reason).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = instances_reached_at(LB, 4, 400);
        if seen.len() == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "the instances do not all serve again 30 s after their restart: only {seen:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every file under `dir`, at any depth.
fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walkdir(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// scale-api's own workers, on both app hosts, take the jobs posted through the load balancer
/// from a Redis stream (its consumer group): each completes once, by the workers of both hosts; a
/// job that always fails reaches the dead letters after 3 attempts. The Redis exporter reads the
/// stream through its read-only ACL, Prometheus records the queue, the hosts report the workers.
#[test]
fn lab_scale_api_workers_take_jobs_from_a_stream_on_both_app_hosts() {
    let _lab = lab();
    let _restore = restore();
    let src = std::fs::read_to_string(lab_yaml()).unwrap();
    let edited = src
        .replacen("  drain_timeout: 5s\n", "  drain_timeout: 5s\n  workers:\n    command: [scale-api, worker]\n    queue: {kind: stream, name: jobs}\n    env: {JOBS_CLAIM_IDLE: 1s}\n", 1)
        .replace("roles: [app]}", "roles: [app, worker]}");
    assert_eq!(edited.matches("roles: [app, worker]}").count(), 2, "lab.yaml changed: edit this test\n{edited}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lab.yaml");
    std::fs::write(&file, &edited).unwrap();
    let out = run_ok(&apply_args(file.to_str().unwrap(), release().to_str().unwrap()));
    let applied = text(&out.stdout);
    for host in ["lab-app-1", "lab-app-2"] {
        assert_eq!(docker_exec(host, "systemctl is-active scale-api-worker@1.service").trim(), "active", "{applied}");
    }
    let c = client();
    let post = |body: serde_json::Value| -> String {
        let r = c.post(format!("{LB}/jobs")).json(&body).send().unwrap();
        let status = r.status();
        let v: serde_json::Value = r.json().unwrap();
        assert_eq!(status, 202, "{v}");
        v["id"].as_str().unwrap().to_string()
    };
    let failing = post(serde_json::json!({"fail": true}));
    let ids: Vec<String> = (0..300).map(|i| post(serde_json::json!({"rows": 1000 + i, "ms": 10}))).collect();
    let settled = |id: &str| -> serde_json::Value {
        let start = Instant::now();
        loop {
            let v: serde_json::Value = c.get(format!("{LB}/jobs/{id}")).send().unwrap().json().unwrap();
            if v["state"] == "completed" || v["state"] == "failed" || start.elapsed() > Duration::from_secs(60) {
                return v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let mut by_worker: BTreeMap<String, u32> = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        let v = settled(id);
        assert_eq!((v["state"].as_str(), v["result"]["rows"].as_u64()), (Some("completed"), Some(1000 + i as u64)), "{v}");
        *by_worker.entry(v["worker"].as_str().unwrap_or("").to_string()).or_default() += 1;
    }
    eprintln!("300 jobs through the load balancer, by worker: {by_worker:?}");
    assert_eq!(by_worker.keys().cloned().collect::<Vec<_>>(), ["app-1-worker-1", "app-2-worker-1"], "{by_worker:?}");
    let v = settled(&failing);
    assert_eq!((v["state"].as_str(), v["attempts"].as_u64()), (Some("failed"), Some(3)), "{v}");
    // Prometheus: the stream measured (through the exporter's ACL), the queue recorded, the workers seen.
    let start = Instant::now();
    let seen = loop {
        let seen = (prometheus_scalar(r#"scalectl_queue_failed{queue="jobs"}"#), prometheus_scalar(r#"scalectl_queue_waiting{queue="jobs"}"#), prometheus_scalar("sum(scalectl_worker_up)"));
        if seen == (Some(1.0), Some(0.0), Some(2.0)) || start.elapsed() > Duration::from_secs(30) {
            break seen;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(seen, (Some(1.0), Some(0.0), Some(2.0)), "dead letters, jobs waiting, workers running as Prometheus has them");
}

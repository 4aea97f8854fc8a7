//! The database tier on the lab: examples/database.yaml deploys PostgreSQL 15 on two hosts, run
//! by Patroni (real Patroni, etcd, PostgreSQL and HAProxy from Debian's packages, systemd, sshd),
//! and HAProxy's writer and reader ports on each app host. Queries are psql's on the app hosts,
//! through those ports, as the app's own connections go; nothing resends a failed query. Takes
//! turns with the other end-to-end tests (support::turn).

use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::lab::docker_exec;
use crate::support::{Machine, Turn, run_id, text, turn};

fn db_yaml() -> String {
    crate::example_path("database")
}

/// The lab's database passwords (scripts/setup.sh makes them once, as it makes Redis').
fn password(name: &str) -> String {
    crate::lab::lab_secret(name)
}

fn passwords() -> [(&'static str, String); 3] {
    [
        ("LAB_DB_PASSWORD", password("lab-db-password")),
        ("LAB_DB_REPLICATION_PASSWORD", password("lab-db-replication-password")),
        ("LAB_DB_REST_PASSWORD", password("lab-db-rest-password")),
    ]
}

fn run(args: &[&str]) -> Output {
    let mut c: Command = crate::lab::scalectl(args);
    for (k, v) in passwords() {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn run_ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(out.status.success(), "scalectl {args:?} failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
    out
}

fn release() -> String {
    crate::support::release().to_str().unwrap().to_string()
}

static FIRST: OnceLock<String> = OnceLock::new();

/// The database lab, made fresh once per run and converged on examples/database.yaml; held for
/// one test. Every test after the first finds it converged with every member running, or fails: a
/// test that stops a member starts it again itself.
fn db_lab() -> Turn {
    let turn = turn(Machine::Shared);
    crate::require("docker");
    FIRST.get_or_init(|| {
        let _ = run(&["lab", "down", "-f", &db_yaml()]);
        let t = Instant::now();
        run_ok(&["lab", "up", "-f", &db_yaml()]);
        eprintln!("database lab up: {:.1} s", t.elapsed().as_secs_f64());
        let t = Instant::now();
        let out = text(&run_ok(&["apply", "-f", &db_yaml(), "--release", &release(), "--yes"]).stdout);
        eprintln!("database lab first apply (PostgreSQL, Patroni and etcd installed, the cluster bootstrapped): {:.1} s", t.elapsed().as_secs_f64());
        out
    });
    let out = run(&["plan", "-f", &db_yaml(), "--release", &release(), "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "the test before left the database lab changed:\n{}{}", text(&out.stdout), text(&out.stderr));
    wait_healthy(2);
    turn
}

/// `db status` as JSON, with its exit code.
fn db_status() -> (Option<i32>, serde_json::Value) {
    let out = run(&["db", "status", "-f", &db_yaml(), "-o", "json"]);
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("db status -o json: {e}\n{}{}", text(&out.stdout), text(&out.stderr)));
    (out.status.code(), doc)
}

/// Waits until `db status` says one member leads and `members` run (a replica copying, or
/// rejoining after a stop, takes a while).
fn wait_healthy(members: usize) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let (code, doc) = db_status();
        let running = doc["members"].as_array().map_or(0, |m| m.len());
        if code == Some(0) && running == members {
            return doc;
        }
        assert!(t.elapsed() < Duration::from_secs(180), "the database never became healthy with {members} members: {doc:#}");
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn leader(doc: &serde_json::Value) -> String {
    doc["members"].as_array().unwrap().iter().find(|m| m["role"] == "leader").and_then(|m| m["name"].as_str()).unwrap_or_else(|| panic!("no leader: {doc:#}")).to_string()
}

/// psql on an app host through one of HAProxy's ports (`DB_WRITER_URL` or `DB_READER_URL` from the
/// app's secrets file, as the app reads them); the SQL on stdin.
fn psql(host: &str, url: &str, sql: &str) -> String {
    let script = format!("set -a; . /etc/scale-api/secrets.env; set +a; psql \"${url}\" -X -A -t -q -v ON_ERROR_STOP=1 <<'SQL'\n{sql}\nSQL");
    docker_exec(&format!("dblab-{host}"), &script)
}

#[test]
fn db_a_write_on_the_primary_is_read_back_from_a_replica_on_another_app_host() {
    let _t = db_lab();
    let status = db_status().1;
    let primary = leader(&status);
    let value = run_id("row");
    let lsn = psql(
        "app-1",
        "DB_WRITER_URL",
        &format!("CREATE TABLE IF NOT EXISTS notes (id bigserial PRIMARY KEY, body text NOT NULL);\nINSERT INTO notes (body) VALUES ('{value}');\nSELECT pg_current_wal_lsn();"),
    );
    let lsn = lsn.trim();
    // The reader is a replica: wait until it has replayed the write (its LSN), not for a while.
    let t = Instant::now();
    loop {
        let replayed = psql("app-2", "DB_READER_URL", &format!("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn;"));
        assert!(replayed.starts_with("t|"), "the reader port reached the primary though a replica is in good standing: {replayed}");
        if replayed.trim() == "t|t" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "the replica never replayed {lsn}: {replayed}");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("a write on {primary} replayed by the replica within {:.3} s", t.elapsed().as_secs_f64());
    let read = psql("app-2", "DB_READER_URL", &format!("SELECT count(*) FROM notes WHERE body = '{value}';"));
    assert_eq!(read.trim(), "1");
    // The writer is the primary, whichever member leads.
    assert_eq!(psql("app-2", "DB_WRITER_URL", "SELECT pg_is_in_recovery();").trim(), "f");
    // Patroni's view, as `db status` prints it.
    let out = run_ok(&["db", "status", "-f", &db_yaml()]);
    let table = text(&out.stdout);
    assert!(table.lines().any(|l| l.starts_with(&primary) && l.contains(" leader ")), "{table}");
    assert!(table.lines().any(|l| l.contains(" replica ") && l.contains(" running ")), "{table}");
}

#[test]
fn db_passwords_stay_out_of_plans_renders_logs_and_process_arguments() {
    let _t = db_lab();
    let secrets: Vec<String> = passwords().into_iter().map(|(_, v)| v).collect();
    let mut seen = Vec::new();
    // A plan (text and JSON) with every file in it, and a render.
    for args in [vec!["plan", "-f", &db_yaml(), "--release", "RELEASE"], vec!["plan", "-f", &db_yaml(), "--release", "RELEASE", "-o", "json"]] {
        let rel = release();
        let args: Vec<&str> = args.into_iter().map(|a| if a == "RELEASE" { rel.as_str() } else { a }).collect();
        let out = run_ok(&args);
        seen.push((format!("{args:?}"), format!("{}{}", text(&out.stdout), text(&out.stderr))));
    }
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    run_ok(&["render", "-f", &db_yaml(), "-o", out_dir.to_str().unwrap()]);
    let rendered = Command::new("grep").args(["-r", "-l", "-F", "-e", &secrets[0], "-e", &secrets[1], "-e", &secrets[2]]).arg(&out_dir).output().unwrap();
    assert!(text(&rendered.stdout).is_empty(), "a password in rendered files: {}", text(&rendered.stdout));
    // What runs on each host, and the journal of every unit there.
    for host in ["app-1", "app-2", "db-1", "db-2"] {
        let c = format!("dblab-{host}");
        seen.push((format!("{host} ps"), docker_exec(&c, "ps -eo args")));
        seen.push((format!("{host} journal"), docker_exec(&c, "journalctl --no-pager -o cat | tail -n 5000")));
    }
    // Patroni's configuration holds none; the file that does is root's alone, and the app role's
    // password is in no PostgreSQL process' environment.
    for host in ["db-1", "db-2"] {
        let c = format!("dblab-{host}");
        seen.push((format!("{host} config.yml"), docker_exec(&c, "cat /etc/patroni/config.yml")));
        // (Patroni's own environment holds its passwords, readable by root and postgres as their
        // 0600 file is; the app's is not among them.)
        let environments = docker_exec(&c, "for p in $(pgrep -u postgres); do tr '\\0' '\\n' < /proc/$p/environ 2>/dev/null; done");
        assert!(!environments.contains(secrets[0].as_str()), "the app role's password in a PostgreSQL process' environment on {host}");
        assert_eq!(docker_exec(&c, "stat -c '%a %U' /etc/patroni/scalectl.env").trim(), "600 root");
        assert_eq!(docker_exec(&c, "stat -c '%a %U %G' /etc/patroni/scalectl-app-password").trim(), "440 root postgres");
    }
    // pg_stat_statements (which pg_monitor's members read) kept no statement with a password in it
    // (the regular expression's text does not match itself).
    let leader_host = format!("dblab-{}", leader(&db_status().1));
    let kept = docker_exec(&leader_host, "su postgres -c \"psql -d app -XAtc \\\"select count(*) from pg_stat_statements where query ~* 'pass[w]ord'\\\"\"");
    assert_eq!(kept.trim(), "0", "statements with a password kept by pg_stat_statements");
    for (what, content) in &seen {
        for (i, s) in secrets.iter().enumerate() {
            assert!(!content.contains(s.as_str()), "database password {i} appears in {what}");
        }
    }
    // The app's secrets file has the URLs, for the app's user only.
    assert_eq!(docker_exec("dblab-app-1", "stat -c '%a' /etc/scale-api/secrets.env").trim(), "600");
    let env = docker_exec("dblab-app-1", "cat /etc/scale-api/secrets.env");
    for name in ["DATABASE_URL=", "DB_WRITER_URL=", "DB_READER_URL="] {
        assert!(env.lines().any(|l| l.starts_with(name) && l.contains(&secrets[0])), "{name} missing from the app's secrets file");
    }
}

/// Whether `from` can open a TCP connection to `to:port` (bash's /dev/tcp, within 3 s).
fn reaches(from: &str, to: &str, port: u16) -> bool {
    let out = Command::new("docker").args(["exec", &format!("dblab-{from}"), "timeout", "3", "bash", "-c", &format!("exec 3<>/dev/tcp/dblab-{to}/{port}")]).output().unwrap();
    out.status.success()
}

#[test]
fn db_ports_answer_only_the_hosts_that_use_them() {
    let _t = db_lab();
    // PostgreSQL and Patroni's API: the app hosts (HAProxy) and the other member. PostgreSQL not
    // the load balancer's host; Patroni's API that host too, which is the monitor (its /metrics).
    for port in [5432, 8008] {
        assert!(reaches("app-1", "db-1", port), "app-1 cannot reach db-1:{port}");
        assert!(reaches("db-2", "db-1", port), "db-2 cannot reach db-1:{port}");
    }
    assert!(!reaches("lb-1", "db-1", 5432), "lb-1 reaches db-1:5432");
    assert!(reaches("lb-1", "db-1", 8008), "the monitor host cannot reach Patroni's /metrics on db-1");
    // etcd: Patroni on the database hosts only.
    assert!(reaches("db-2", "db-1", 2379), "db-2 cannot reach etcd");
    assert!(!reaches("app-1", "db-1", 2379), "app-1 reaches etcd");
    // HAProxy's writer and reader listen on the app host's loopback only.
    assert!(!reaches("lb-1", "app-1", 5433), "lb-1 reaches app-1's writer port");
    // pg_hba.conf: the app's role from an app host, nothing from elsewhere, even with the password.
    let pw = password("lab-db-password");
    let from_member = Command::new("docker")
        .args(["exec", "-e", &format!("PGPASSWORD={pw}"), "dblab-db-2", "psql", "-h", "dblab-db-1", "-U", "app", "-d", "app", "-XAtc", "select 1"])
        .output()
        .unwrap();
    assert!(!from_member.status.success(), "the app's role logs in from a database host");
    assert!(text(&from_member.stderr).contains("pg_hba.conf"), "{}", text(&from_member.stderr));
}

/// A loop of one-query connections on `host` through `url` for `secs` seconds, in the background:
/// each query's start and end times and outcome (`ok VALUE` or `fail MESSAGE`), one per line.
fn query_loop(host: &str, url: &str, sql: &str, secs: u64) -> std::process::Child {
    let script = format!(
        "set -a; . /etc/scale-api/secrets.env; set +a; end=$(( $(date +%s) + {secs} )); \
         while [ $(date +%s) -lt $end ]; do s=$(date +%s.%N); if r=$(psql \"${url}\" -XAtqc \"{sql}\" 2>&1); then echo \"$s $(date +%s.%N) ok $r\"; else echo \"$s $(date +%s.%N) fail $(echo $r | head -c 200)\"; sleep 0.1; fi; done"
    );
    Command::new("docker").args(["exec", &format!("dblab-{host}"), "bash", "-c", &script]).stdout(std::process::Stdio::piped()).spawn().unwrap()
}

/// (end time, ok, answer) of each query of a finished [`query_loop`], with its start time apart.
fn outcomes(child: std::process::Child) -> Vec<(f64, bool, String)> {
    timed_outcomes(child).into_iter().map(|(_, end, ok, answer)| (end, ok, answer)).collect()
}

/// (start, end, ok, answer) of each query of a finished [`query_loop`].
fn timed_outcomes(child: std::process::Child) -> Vec<(f64, f64, bool, String)> {
    let out = child.wait_with_output().unwrap();
    text(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut p = l.splitn(4, ' ');
            Some((p.next()?.parse().ok()?, p.next()?.parse().ok()?, p.next()? == "ok", p.next().unwrap_or("").to_string()))
        })
        .collect()
}

/// Starts a member's Patroni again when dropped, the test passed or failed: the tests after it
/// find every member running.
struct Started<S: AsRef<str>>(S);

impl<S: AsRef<str>> Drop for Started<S> {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["exec", &format!("dblab-{}", self.0.as_ref()), "systemctl", "start", "patroni"]).output();
    }
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn db_a_stopped_replica_moves_reads_to_the_primary_and_a_stopped_primary_is_replaced_by_its_replica() {
    let _t = db_lab();
    let before = db_status().1;
    let primary = leader(&before);
    let replica = if primary == "db-1" { "db-2" } else { "db-1" };

    // The replica stops under a read load: the reads go to the primary once HAProxy sees it gone
    // (the first refused connection marks it down); a query on a connection the stop closed fails.
    // Meanwhile `GET /users/{id}` through the load balancer, each of a user never read before (no
    // cache has it: every one is a query on the reader), by a client that never resends: scale-api
    // asks again on a fresh connection when the stop closed its own, so no GET may fail.
    // scale-api takes ids from 1 to 1,000,000.
    let base = 100_000 + (std::process::id() % 40) * 20_000;
    psql("app-1", "DB_WRITER_URL", &format!("INSERT INTO users (id, name) SELECT g, 'user ' || g FROM generate_series({base}, {}) g ON CONFLICT (id) DO NOTHING;", base + 19_999));
    // Every reader has them before the first GET (a replica behind would say "no such user").
    let lsn = psql("app-1", "DB_WRITER_URL", "SELECT pg_current_wal_lsn();");
    let t = Instant::now();
    while psql_as_superuser(replica, "postgres", &format!("select pg_last_wal_replay_lsn() >= '{}'::pg_lsn", lsn.trim())).trim() != "t" {
        assert!(t.elapsed() < Duration::from_secs(30), "{replica} never replayed {lsn}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let reading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let gets = {
        let reading = reading.clone();
        std::thread::spawn(move || {
            let c = crate::support::client();
            let mut outcomes: Vec<(f64, Result<String, String>)> = Vec::new();
            for id in base..base + 20_000 {
                if !reading.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let started = now();
                let outcome = match c.get(format!("http://127.0.0.1:8086/users/{id}")).send() {
                    Ok(r) if r.status() == 200 => r.json::<serde_json::Value>().map(|v| v["source"].as_str().unwrap_or_default().to_string()).map_err(|e| e.to_string()),
                    Ok(r) => Err(format!("{} {}", r.status(), r.text().unwrap_or_default())),
                    Err(e) => Err(format!("{e:?}")),
                };
                outcomes.push((started, outcome));
            }
            outcomes
        })
    };
    let reads = query_loop("app-1", "DB_READER_URL", "select pg_is_in_recovery()", 12);
    std::thread::sleep(Duration::from_secs(3));
    let stopping = now();
    let replica_back = Started(replica);
    docker_exec(&format!("dblab-{replica}"), "systemctl stop patroni");
    // `systemctl stop` returns once PostgreSQL is down: a query that began after that must not fail.
    let stopped = now();
    let reads = timed_outcomes(reads);
    reading.store(false, std::sync::atomic::Ordering::Relaxed);
    let gets = gets.join().unwrap();
    let failed_gets: Vec<&(f64, Result<String, String>)> = gets.iter().filter(|g| g.1.is_err()).collect();
    eprintln!(
        "GET /users/{{id}} through the load balancer while the replica stopped: {} answered ({} before the stop began), {} failed {:?}",
        gets.len() - failed_gets.len(),
        gets.iter().filter(|g| g.0 < stopping).count(),
        failed_gets.len(),
        &failed_gets[..failed_gets.len().min(5)]
    );
    assert!(gets.iter().filter(|g| g.0 < stopping).count() >= 20 && gets.iter().filter(|g| g.0 > stopped).count() >= 20, "too few GETs around the stop to judge: {}", gets.len());
    assert!(failed_gets.is_empty(), "{} GETs failed while a replica stopped, the first: {:?}", failed_gets.len(), &failed_gets[..failed_gets.len().min(5)]);
    assert!(gets.iter().all(|g| g.1.as_deref() == Ok("db")), "a GET was not read from the database");
    let failed: Vec<&(f64, f64, bool, String)> = reads.iter().filter(|r| !r.2).collect();
    let after: Vec<&(f64, f64, bool, String)> = reads.iter().filter(|r| r.0 > stopped).collect();
    eprintln!("reads while the replica stopped ({:.2} s to stop): {} answered, {} failed {:?}", stopped - stopping, reads.len() - failed.len(), failed.len(), failed);
    assert!(reads.iter().any(|r| r.1 < stopping && r.2 && r.3 == "t"), "no read reached the replica before it stopped: {reads:?}");
    assert!(after.len() >= 5 && after.iter().all(|r| r.2 && r.3 == "f"), "reads begun after the replica stopped did not all reach the primary: {after:?}");
    assert!(failed.iter().all(|r| r.0 < stopped), "a read begun after the stop failed: {failed:?}");
    drop(replica_back);
    wait_healthy(2);

    // The primary stops under a write load: Patroni promotes the replica; writes fail only while
    // it does, and the reader still answers meanwhile.
    psql("app-1", "DB_WRITER_URL", "CREATE TABLE IF NOT EXISTS ticks (at timestamptz NOT NULL DEFAULT now());");
    let writes = query_loop("app-1", "DB_WRITER_URL", "insert into ticks default values returning 1", 25);
    let reads = query_loop("app-2", "DB_READER_URL", "select 1", 25);
    std::thread::sleep(Duration::from_secs(3));
    let stopped_at = now();
    let started_again = Started(primary.clone());
    docker_exec(&format!("dblab-{primary}"), "systemctl stop patroni");
    let (writes, reads) = (outcomes(writes), outcomes(reads));
    let failed: Vec<f64> = writes.iter().filter(|w| !w.1).map(|w| w.0).collect();
    let window = failed.last().map_or(0.0, |last| last - stopped_at);
    eprintln!(
        "the primary stopped: writes failed for {window:.2} s ({} of {}), reads failed {} of {}",
        failed.len(),
        writes.len(),
        reads.iter().filter(|r| !r.1).count(),
        reads.len()
    );
    assert!(writes.iter().any(|w| w.1 && w.0 > stopped_at + window), "no write succeeded after the election: {writes:?}");
    assert!(reads.iter().filter(|r| r.0 > stopped_at).any(|r| r.1), "no read was answered after the primary stopped");
    let doc = db_status().1;
    assert_eq!(leader(&doc), replica, "the replica was not promoted: {doc:#}");
    // The old primary comes back as a replica of the new one; the topology has nothing to change.
    drop(started_again);
    let doc = wait_healthy(2);
    assert_eq!(leader(&doc), replica, "{doc:#}");
    let out = run(&["plan", "-f", &db_yaml(), "--release", &release(), "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "which member leads changed the plan:\n{}", text(&out.stdout));
}

/// The release id apply gives a binary.
fn release_id(path: &std::path::Path) -> String {
    scalectl::plan::Release::of(&std::fs::read(path).unwrap()).id
}

/// The app hosts that recorded the release command of `id` as run.
fn released_on(id: &str) -> Vec<&'static str> {
    ["app-1", "app-2"].into_iter().filter(|h| docker_exec(&format!("dblab-{h}"), "ls -1 /opt/scale-api/released 2>/dev/null || true").lines().any(|l| l == id)).collect()
}

/// GET on one app host's own instance (from inside that host).
fn get_on(host: &str, path: &str) -> serde_json::Value {
    let body = docker_exec(&format!("dblab-{host}"), &format!("curl -fsS http://127.0.0.1:3000{path}"));
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{host} {path}: {e}: {body}"))
}

#[test]
fn db_a_user_put_through_the_load_balancer_is_read_back_from_a_replica_on_the_other_app_host() {
    let _t = db_lab();
    // The first apply ran scale-api's release command (its schema) once, on one app host.
    assert_eq!(released_on(&release_id(&crate::support::release())).len(), 1, "the release command ran on one app host");
    let id = 1 + (std::process::id() % 100_000);
    let name = run_id("user");
    let c = crate::support::client();
    let put = c.put(format!("http://127.0.0.1:8086/users/{id}")).json(&serde_json::json!({ "name": name })).send().unwrap();
    assert_eq!(put.status(), 200, "{}", put.text().unwrap_or_default());
    let wrote_on: serde_json::Value = put.json().unwrap();
    let writer_host = wrote_on["instance"].as_str().unwrap().trim_end_matches("-3000").to_string();
    let other = if writer_host == "app-1" { "app-2" } else { "app-1" };
    // Wait until the other host's reader has replayed the primary's WAL up to now, then read.
    let lsn = psql(&writer_host, "DB_WRITER_URL", "SELECT pg_current_wal_lsn();");
    let t = Instant::now();
    while psql(other, "DB_READER_URL", &format!("SELECT pg_last_wal_replay_lsn() >= '{}'::pg_lsn;", lsn.trim())).trim() != "t" {
        assert!(t.elapsed() < Duration::from_secs(30), "the replica never replayed {lsn}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let read = get_on(other, &format!("/users/{id}"));
    assert_eq!((read["name"].as_str(), read["source"].as_str()), (Some(name.as_str()), Some("db")), "{read}");
    // The instance's pools measured it.
    let metrics = docker_exec(&format!("dblab-{other}"), "curl -fsS http://127.0.0.1:3000/metrics");
    assert!(metrics.lines().any(|l| l.starts_with("scale_api_db_query_duration_seconds_count{pool=\"reader\"}") && !l.ends_with(" 0")), "no reader query counted");
}

#[test]
fn db_the_release_command_runs_once_per_release_and_a_failing_one_leaves_the_old_release_serving() {
    let _t = db_lab();
    let _restore = crate::support::Restore::new(|| run(&["apply", "-f", &db_yaml(), "--release", &release(), "--yes"]));
    // A new release across both app hosts: its command runs once.
    let next = crate::support::new_release("db-release-command");
    let next_id = release_id(&next);
    run_ok(&["apply", "-f", &db_yaml(), "--release", next.to_str().unwrap(), "--yes"]);
    let ran = released_on(&next_id);
    assert_eq!(ran.len(), 1, "the release command of {next_id} ran on {ran:?}");
    let journal = docker_exec(&format!("dblab-{}", ran[0]), &format!("journalctl -u scale-api-release@{next_id}.service -o cat --no-pager"));
    assert!(journal.contains("schema is in place"), "{journal}");
    // A release whose command fails: the apply stops with its output, nothing switches, and the
    // release before keeps serving every request.
    let src = std::fs::read_to_string(db_yaml()).unwrap().replace("release_command: [scale-api, migrate]", "release_command: [scale-api, migrate, --no-such-flag]");
    let broken = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(broken.path(), src).unwrap();
    let failing = crate::support::new_release("db-release-command-fails");
    let out = run(&["apply", "-f", broken.path().to_str().unwrap(), "--release", failing.to_str().unwrap(), "--yes"]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "the apply went on: {said}");
    assert!(said.contains("the release command of release") && said.contains("--no-such-flag"), "{said}");
    for host in ["app-1", "app-2"] {
        let current = docker_exec(&format!("dblab-{host}"), "basename \"$(readlink /opt/scale-api/current)\"");
        assert_eq!(current.trim(), next_id, "{host} switched to a release whose command failed");
    }
    assert!(released_on(&release_id(&failing)).is_empty());
    let c = crate::support::client();
    for _ in 0..20 {
        assert_eq!(c.get("http://127.0.0.1:8086/").send().unwrap().status(), 200);
    }
}

#[test]
fn db_switchover_moves_the_lead_to_the_replica_and_writes_go_on_after_it() {
    let _t = db_lab();
    let before = db_status().1;
    let leader = leader(&before);
    let replica = if leader == "db-1" { "db-2" } else { "db-1" };
    // A name that is not a member, and the leader itself, are refused before anything changes.
    let out = run(&["db", "switchover", "-f", &db_yaml(), "--to", "db-9", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("db-9 is not a member of the database cluster (members: db-1, db-2)"), "{}", text(&out.stderr));
    let out = run(&["db", "switchover", "-f", &db_yaml(), "--to", &leader, "--yes"]);
    assert!(text(&out.stderr).contains(&format!("{leader} already leads")), "{}", text(&out.stderr));

    psql("app-1", "DB_WRITER_URL", "CREATE TABLE IF NOT EXISTS ticks (at timestamptz NOT NULL DEFAULT now());");
    let writes = query_loop("app-1", "DB_WRITER_URL", "insert into ticks default values returning 1", 20);
    std::thread::sleep(Duration::from_secs(3));
    let started = now();
    let out = run_ok(&["db", "switchover", "-f", &db_yaml(), "--yes"]);
    let took = now() - started;
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(said.contains(&format!("from {leader} to {replica}")), "{said}");
    let writes = outcomes(writes);
    let failed = writes.iter().filter(|w| !w.1).count();
    eprintln!("switchover from {leader} to {replica}: {took:.1} s until every member ran again; writes failed {failed} of {}", writes.len());
    assert!(writes.iter().any(|w| w.1 && w.0 > started + took), "no write succeeded after the switchover: {writes:?}");
    let after = wait_healthy(2);
    assert_eq!(self::leader(&after), replica);
    // Its password went to curl on stdin: in no process' arguments, no journal.
    let pw = password("lab-db-rest-password");
    for host in ["db-1", "db-2"] {
        assert!(!docker_exec(&format!("dblab-{host}"), "journalctl --no-pager -o cat | tail -n 3000").contains(&pw), "Patroni's REST password in {host}'s journal");
    }
    let out = run(&["plan", "-f", &db_yaml(), "--release", &release(), "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "the switchover changed the plan:\n{}", text(&out.stdout));
}

/// One PromQL query against the database lab's Prometheus.
fn prometheus(query: &str) -> serde_json::Value {
    let url = reqwest::Url::parse_with_params("http://127.0.0.1:9096/api/v1/query", &[("query", query)]).unwrap();
    let r = crate::support::client().get(url).send().unwrap();
    r.json::<serde_json::Value>().unwrap()["data"]["result"].clone()
}

#[test]
fn db_prometheus_scrapes_every_member_and_sees_one_primary() {
    let _t = db_lab();
    // The exporter on each member logs in over the local socket as its own role (no password).
    let t = Instant::now();
    loop {
        let up = prometheus("pg_up{job=\"postgres\"} == 1");
        let roles = prometheus("sum(scalectl_database_is_replica{job=\"postgres\"})");
        let members = prometheus("count(scalectl_database_is_replica{job=\"postgres\"})");
        let value = |r: &serde_json::Value| r[0]["value"][1].as_str().map(String::from);
        if up.as_array().map_or(0, |a| a.len()) == 2 && value(&roles).as_deref() == Some("1") && value(&members).as_deref() == Some("2") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "Prometheus never saw both members up, one of them the primary: up {up}, replicas {roles}, members {members}");
        std::thread::sleep(Duration::from_secs(2));
    }
    // The primary reports its replica's lag; no alert of the database fires on a healthy cluster.
    let t = Instant::now();
    while prometheus("scalectl_database_replica_lag_bytes{job=\"postgres\"}").as_array().map_or(0, |a| a.len()) != 1 {
        assert!(t.elapsed() < Duration::from_secs(60), "no replica lag from the primary's exporter");
        std::thread::sleep(Duration::from_secs(2));
    }
    // Patroni's own metrics on each member, and HAProxy's on each app host (the database's routes).
    let t = Instant::now();
    loop {
        let patroni = prometheus("patroni_postgres_running{job=\"patroni\"} == 1");
        let haproxy = prometheus("count by (host) (haproxy_server_status{job=\"haproxy\",proxy=~\".*_db_primary\"})");
        if patroni.as_array().map_or(0, |a| a.len()) == 2 && haproxy.as_array().map_or(0, |a| a.len()) == 2 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "Patroni's metrics of both members and the app hosts' HAProxy: {patroni} {haproxy}");
        std::thread::sleep(Duration::from_secs(2));
    }
    let firing = prometheus("ALERTS{alertname=~\"PostgresDown|NoLeader|ReplicaLagHigh|ConnectionsNearMax\",alertstate=\"firing\"}");
    assert_eq!(firing.as_array().map_or(0, |a| a.len()), 0, "{firing}");

    // Every query of the database's dashboard answers with a number once the app has read
    // through its pools (no Grafana here: its queries are asked of the same Prometheus). Users
    // that do not exist: each read asks the database (a missing user is not cached).
    let reads = |n: u32| {
        for id in 0..n {
            let r = crate::support::client().get(format!("http://127.0.0.1:8086/users/{}", 900_000 + id)).send().unwrap();
            assert_eq!(r.status(), 404, "GET /users/{}", 900_000 + id);
        }
    };
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(crate::support::root().join("grafana/dashboards/database.json")).unwrap()).unwrap();
    let exprs: Vec<String> = dashboard["panels"].as_array().unwrap().iter().flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string())).collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let t = Instant::now();
    // A series whose every value is NaN (a ratio of nothing, a quantile of no query) is no answer.
    let number = |r: &serde_json::Value| r.as_array().is_some_and(|a| a.iter().any(|s| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).is_some_and(f64::is_finite)));
    loop {
        reads(20);
        let empty: Vec<&String> = exprs.iter().filter(|e| !number(&prometheus(e))).collect();
        if empty.is_empty() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(90), "the database dashboard's queries with no number: {empty:#?}");
        std::thread::sleep(Duration::from_secs(5));
    }
}

/// Doctor's "is it the database?": a statement made slow on purpose (a sequential scan of two
/// million rows hashing each, run again and again through the writer for 40 s) is named, with the
/// table its scans read, and an index is what it recommends.
#[test]
fn db_doctor_names_a_slow_statement_and_recommends_an_index() {
    let _t = db_lab();
    psql("app-1", "DB_WRITER_URL", "DROP TABLE IF EXISTS doctor_scan; CREATE TABLE doctor_scan (id integer, note text); INSERT INTO doctor_scan SELECT g, md5(g::text) FROM generate_series(1, 2000000) g; ANALYZE doctor_scan;");
    // One call after another: a scan at a time, each slow on its own.
    let t = Instant::now();
    let script = "set -a; . /etc/scale-api/secrets.env; set +a; end=$(( $(date +%s) + 40 )); n=0; \
                  while [ $(date +%s) -lt $end ]; do psql \"$DB_WRITER_URL\" -X -A -t -q -v ON_ERROR_STOP=1 -c \"SELECT count(*) FROM doctor_scan WHERE md5(note) = 'nothing'\" >/dev/null || exit 1; n=$((n+1)); done; echo $n";
    let calls = docker_exec("dblab-app-1", script);
    eprintln!("{} scans in {:.1} s", calls.trim(), t.elapsed().as_secs_f64());
    // Two scrapes after the last scan, so that its counters are in Prometheus.
    std::thread::sleep(Duration::from_secs(11));
    let out = run(&["doctor", "-f", &db_yaml(), "--window", "60s", "-o", "json"]);
    psql("app-1", "DB_WRITER_URL", "DROP TABLE doctor_scan;");
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("doctor -o json: {e}\n{}{}", text(&out.stdout), text(&out.stderr)));
    let finding = d["findings"].as_array().unwrap().iter().find(|f| f["id"] == "database-slow-statement").unwrap_or_else(|| panic!("no slow statement found: {d:#}"));
    let summary = finding["summary"].as_str().unwrap();
    assert!(summary.contains("SELECT count(*) FROM doctor_scan WHERE md5(note) = $1"), "the statement, normalized: {summary}");
    assert!(summary.contains("sequential scans of public.doctor_scan read"), "the table its scans read: {summary}");
    assert!(!summary.contains("nothing"), "a value reached the diagnosis: {summary}");
    assert!(finding["recommendation"].as_str().unwrap().contains("index"), "{finding:#}");
}

/// A third database host added to the topology and applied becomes a streaming replica: Patroni
/// clones it from the primary, the primary streams to it, HAProxy on the app hosts sends it reads,
/// and the next plan has nothing to do. Then it is taken away again (its container removed, the
/// topology applied without it) and the cluster is the two members it was.
#[test]
fn db_a_database_host_added_and_applied_streams_from_the_primary() {
    let _t = db_lab();
    let line = "  db-2:  {address: dblab-db-2,  roles: [database]}\n";
    let (_dir, three) = db_yaml_with(&[(line, &format!("{line}  db-3:  {{address: dblab-db-3,  roles: [database]}}\n"))]);
    let three = three.as_str();
    let _restored = TwoMembersAfter("dblab-db-3");
    run_ok(&["lab", "up", "-f", three]);
    let t = Instant::now();
    let out = text(&run_ok(&["apply", "-f", three, "--release", &release(), "--yes"]).stdout);
    eprintln!("a third database host added and applied: {:.1} s", t.elapsed().as_secs_f64());
    assert!(out.contains("db-3"), "{out}");
    let status = wait_healthy(3);
    let member = status["members"].as_array().unwrap().iter().find(|m| m["name"] == "db-3").unwrap_or_else(|| panic!("{status:#}"));
    assert_eq!(member["role"], "replica", "{status:#}");
    // The primary streams to it (Debian's Patroni 3.0 calls a replica "running" once PostgreSQL
    // runs, before its WAL receiver has connected: the stream starts within seconds of that), and a
    // write reaches it.
    let primary = leader(&status);
    let t = Instant::now();
    loop {
        let state = psql_as_superuser(&primary, "postgres", "select state from pg_stat_replication where application_name = 'db-3'");
        if state.trim() == "streaming" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{primary} does not stream to db-3 30 s after it ran (pg_stat_replication's state: {:?})", state.trim());
        std::thread::sleep(Duration::from_millis(500));
    }
    let id = run_id("db-3");
    psql("app-1", "DB_WRITER_URL", &format!("CREATE TABLE IF NOT EXISTS marks (id text); INSERT INTO marks VALUES ('{id}');"));
    let t = Instant::now();
    while psql_as_superuser("db-3", "app", &format!("select count(*) from marks where id = '{id}'")).trim() != "1" {
        assert!(t.elapsed() < Duration::from_secs(30), "the write never reached db-3");
        std::thread::sleep(Duration::from_millis(500));
    }
    // HAProxy on each app host has it among the readers.
    for host in ["app-1", "app-2"] {
        let cfg = docker_exec(&format!("dblab-{host}"), "cat /etc/haproxy/haproxy.cfg");
        assert!(cfg.lines().any(|l| l.trim_start().starts_with("server db-3 ")), "{host}'s HAProxy has no db-3:\n{cfg}");
    }
    let plan = run(&["plan", "-f", three, "--release", &release(), "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0), "a second apply would change something:\n{}", text(&plan.stdout));
    psql("app-1", "DB_WRITER_URL", "DROP TABLE marks;");
}

/// examples/database.yaml with each (line, replacement) made once, written into a directory of
/// its own (kept while the returned handle lives): its path.
fn db_yaml_with(edits: &[(&str, &str)]) -> (tempfile::TempDir, String) {
    let mut source = std::fs::read_to_string(db_yaml()).unwrap();
    for (from, to) in edits {
        assert!(source.contains(from), "examples/database.yaml no longer has {from:?}");
        source = source.replacen(from, to, 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("database.yaml");
    std::fs::write(&file, source).unwrap();
    let file = file.to_str().unwrap().to_string();
    (dir, file)
}

/// psql as PostgreSQL's superuser on a member, over its socket, in database `db`.
fn psql_as_superuser(host: &str, db: &str, sql: &str) -> String {
    docker_exec(&format!("dblab-{host}"), &format!("sudo -u postgres psql -d {db} -XAtc \"{sql}\""))
}

/// When dropped, whether the test passed or failed: removes the test's extra database host and
/// applies examples/database.yaml again, so that the cluster is the two members it was and the
/// tests after this one find the lab as they expect (a failure here would otherwise fail each of
/// them too, hiding which test broke).
struct TwoMembersAfter(&'static str);

impl Drop for TwoMembersAfter {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", self.0]).output();
        let out = run(&["apply", "-f", &db_yaml(), "--release", &release(), "--yes"]);
        if std::thread::panicking() {
            // A second panic would abort the run: say what went wrong and let the first one stand.
            if !out.status.success() {
                eprintln!("putting the database lab back to two members failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
            }
            return;
        }
        assert!(out.status.success(), "putting the database lab back to two members failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
        wait_healthy(2);
    }
}

/// `instances: max` without declared cores: validate counts one instance per app host, which
/// fits the pools in max_connections; plan counts the cores it observes, and refuses the
/// topology before it changes anything, saying which cores and what to change.
#[test]
fn db_instances_max_is_checked_against_max_connections_with_the_cores_observed() {
    let _t = db_lab();
    // 2 app hosts x 1 instance x 20 x 2 = 80 of the 95 max_connections 100 leaves: valid as written.
    let (_dir, file) = db_yaml_with(&[("  instances: 1\n", "  instances: max\n"), ("  pool: 5\n", "  pool: 20\n")]);
    let file = file.as_str();
    run_ok(&["validate", "-f", file]);
    let cores: u64 = docker_exec("dblab-app-1", "nproc").trim().parse().unwrap();
    let out = run(&["plan", "-f", file, "--release", &release()]);
    let err = text(&out.stderr);
    if cores == 1 {
        assert!(out.status.success(), "{err}");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{err}");
    let wanted = 2 * cores * 20 * 2;
    let said = format!("with the cores observed ({cores} on app-1, {cores} on app-2), {} app instances and workers with a pool of 20 each, to the writer and to the reader, may open {wanted} connections", 2 * cores);
    assert!(err.contains(&said) && err.contains("lower database.pool to"), "{err}");
}

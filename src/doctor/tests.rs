//! Every finding from a snapshot, and the branches that must not fire.

use super::snapshot::*;
use super::*;

/// The host's cores this busy, nine tenths of it the app's instances.
fn busy(h: &mut HostSample, percent: f64) {
    h.cpu_busy_percent = vec![percent; 10];
    h.app_cpu_percent = vec![percent * 0.9; 10];
}

/// Two app hosts of 2 cores with 2 instances each, quiet and fine; Redis and Nginx up.
fn healthy() -> Snapshot {
    let mut s = Snapshot { format_version: 1, topology: "t".into(), taken_at: "2026-11-23T00:00:00Z".into(), window_s: 300, ..Default::default() };
    for h in ["app-1", "app-2"] {
        s.hosts.push(HostSample { host: h.into(), app: true, cores: 2, instances: 2, cpu_busy_percent: vec![20.0; 10], app_cpu_percent: vec![18.0; 10], memory_available_percent: Some(60.0), disk_available_percent: Some(70.0) });
        for port in [3000, 3001] {
            s.instances.push(InstanceSample {
                instance: format!("{h}-{port}"),
                host: h.into(),
                up: true,
                weight: 1,
                requests_per_s: 50.0,
                p99_ms: Some(20.0),
                scheduling_delay_ms: vec![0.1; 10],
                resident_bytes: vec![20e6; 10],
                open_fds: Some(40.0),
                max_fds: Some(65536.0),
                in_flight: 2.0,
                ..Default::default()
            });
        }
    }
    s.hosts.push(HostSample { host: "cache-1".into(), cores: 2, cpu_busy_percent: vec![5.0; 10], memory_available_percent: Some(70.0), ..Default::default() });
    s.redis = Some(RedisSample { up: true, p99_ms: Some(1.0), memory_used_bytes: 2e6, memory_max_bytes: 64e6, errors_per_s: 0.0 });
    s.nginx = Some(NginxSample { up: true, active_connections: 10.0 });
    s
}

fn ids(d: &Diagnosis) -> Vec<&str> {
    d.findings.iter().map(|f| f.id.as_str()).collect()
}

fn only(s: &Snapshot, id: &str) -> Finding {
    let d = diagnose(s, None);
    assert_eq!(ids(&d), vec![id], "{}", render_text(&d, false));
    d.findings[0].clone()
}

fn inst<'a>(s: &'a mut Snapshot, name: &str) -> &'a mut InstanceSample {
    s.instances.iter_mut().find(|i| i.instance == name).unwrap()
}

#[test]
fn a_quiet_fleet_is_healthy() {
    let d = diagnose(&healthy(), None);
    assert!(d.healthy, "{}", render_text(&d, false));
    assert!(render_text(&d, false).contains("healthy: nothing to change"));
}

#[test]
fn instance_down_and_crash_loop() {
    let mut s = healthy();
    inst(&mut s, "app-1-3000").up = false;
    assert_eq!(only(&s, "instance-down").subject, "app-1-3000");
    inst(&mut s, "app-1-3000").restarts = 4;
    assert_eq!(only(&s, "crash-loop").subject, "app-1-3000");
    // Two restarts in the window are not a loop.
    let mut s = healthy();
    inst(&mut s, "app-2-3001").restarts = 2;
    assert!(diagnose(&s, None).healthy);
}

#[test]
fn redis_down_slow_and_full() {
    let mut s = healthy();
    s.redis.as_mut().unwrap().up = false;
    only(&s, "redis-down");
    let mut s = healthy();
    s.redis.as_mut().unwrap().p99_ms = Some(80.0);
    only(&s, "redis-slow");
    let mut s = healthy();
    s.redis.as_mut().unwrap().memory_used_bytes = 62e6;
    let f = only(&s, "redis-memory");
    assert!(f.topology_edit.unwrap().starts_with("redis.maxmemory: "));
}

#[test]
fn cpu_busy_with_spare_cores_says_use_every_core() {
    let mut s = healthy();
    s.hosts[0].instances = 1;
    busy(&mut s.hosts[0], 95.0);
    let f = only(&s, "cpu-saturated-scale-up");
    assert_eq!(f.subject, "app-1");
    assert_eq!(f.evidence[0].value, 95.0);
    assert!(f.topology_edit.unwrap().contains("app.instances: max"));
    assert!(f.path.iter().any(|p| p.contains("1 instances on 2 cores")), "{:?}", f.path);
}

/// Right after a first apply the hosts were busy installing packages, not running the app: CPU
/// the instances do not use is said, and is no reason to scale.
#[test]
fn cpu_the_app_does_not_use_is_no_reason_to_scale() {
    let mut s = healthy();
    for h in s.hosts.iter_mut().filter(|h| h.app) {
        h.instances = 1;
        h.cpu_busy_percent = vec![95.0; 10];
        h.app_cpu_percent = vec![4.0; 10];
    }
    let d = diagnose(&s, None);
    assert!(d.healthy, "{:?}", ids(&d));
    assert!(d.trace.iter().any(|t| t.answer.contains("the app's instances use 4%: something else on app-1 is busy")), "{:#?}", d.trace);
    // The same busy hosts, with the instances using most of it: scale.
    for h in s.hosts.iter_mut().filter(|h| h.app) {
        h.app_cpu_percent = vec![80.0; 10];
    }
    assert_eq!(ids(&diagnose(&s, None)), vec!["cpu-saturated-scale-up", "cpu-saturated-scale-up"]);
    // Instances that report no CPU time yet (just started, never scraped): not judged either way.
    for h in s.hosts.iter_mut().filter(|h| h.app) {
        h.app_cpu_percent.clear();
    }
    let d = diagnose(&s, None);
    assert!(d.healthy && d.trace.iter().any(|t| t.answer.starts_with("unknown: 95% of 2 cores busy")), "{:#?}", d.trace);
}

#[test]
fn every_core_of_every_app_host_busy_says_add_a_host() {
    let mut s = healthy();
    for h in s.hosts.iter_mut().filter(|h| h.app) {
        busy(h, 90.0);
    }
    let f = only(&s, "cpu-saturated-scale-out");
    assert!(f.topology_edit.unwrap().contains("add an app host"));
    // One host at capacity and the other idle is not "scale out".
    s.hosts[1].cpu_busy_percent = vec![10.0; 10];
    assert!(!ids(&diagnose(&s, None)).contains(&"cpu-saturated-scale-out"));
}

#[test]
fn one_spike_does_not_decide_the_median_does() {
    let mut s = healthy();
    s.hosts[0].instances = 1;
    s.hosts[0].cpu_busy_percent = vec![20.0, 20.0, 99.0, 20.0, 20.0];
    assert!(diagnose(&s, None).healthy);
}

#[test]
fn event_loop_blocked() {
    let mut s = healthy();
    inst(&mut s, "app-2-3000").scheduling_delay_ms = vec![250.0; 10];
    let f = only(&s, "event-loop-blocked");
    assert!(f.topology_edit.unwrap().contains("app.heavy_pool"));
    // The user's program (Node's event-loop delay): scale-api's setting is no remedy.
    s.program = true;
    let f = only(&s, "event-loop-blocked");
    assert!(f.topology_edit.is_none() && f.recommendation.contains("worker threads"), "{f:?}");
}

#[test]
fn memory_pressure_and_a_steady_rise() {
    let mut s = healthy();
    s.hosts[1].memory_available_percent = Some(4.0);
    only(&s, "memory-pressure");
    let mut s = healthy();
    inst(&mut s, "app-1-3001").resident_bytes = (0..10).map(|i| 20e6 + i as f64 * 2e6).collect();
    only(&s, "memory-leak-suspected");
    // The same rise over half a minute is a process warming up after a start, not a leak.
    s.window_s = 30;
    assert!(diagnose(&s, None).healthy);
    // A saw-tooth that ends higher is not a steady rise.
    let mut s = healthy();
    inst(&mut s, "app-1-3001").resident_bytes = vec![20e6, 40e6, 20e6, 40e6, 20e6, 40e6, 20e6, 40e6];
    assert!(diagnose(&s, None).healthy);
}

/// The collector's disk: a warning below the threshold, critical below half of it, asked whether
/// the app is slow or not; a disk with room, or one nobody measured, says nothing.
#[test]
fn a_filling_disk_is_found_on_any_host() {
    let mut s = healthy();
    s.hosts[2].disk_available_percent = Some(8.0);
    let f = only(&s, "disk-filling");
    assert_eq!((f.subject.as_str(), f.severity), ("cache-1", Severity::Warning));
    assert!(f.recommendation.contains("du -sh /var/log/scalectl/*"), "{f:?}");
    s.hosts[2].disk_available_percent = Some(3.0);
    assert_eq!(only(&s, "disk-filling").severity, Severity::Critical);
    for room in [Some(11.0), None] {
        s.hosts[2].disk_available_percent = room;
        assert!(diagnose(&s, None).healthy, "{room:?}");
    }
}

#[test]
fn fd_exhaustion_suggests_a_higher_limit() {
    let mut s = healthy();
    let i = inst(&mut s, "app-1-3000");
    i.open_fds = Some(1000.0);
    i.max_fds = Some(1024.0);
    let f = only(&s, "fd-exhaustion");
    assert_eq!(f.topology_edit.as_deref(), Some("app.limits.nofile: 65536"));
}

#[test]
fn instances_that_just_started_are_not_compared_for_balance() {
    // Right after a roll: the instance restarted last took traffic for a few seconds of the
    // minute its rate covers.
    let mut s = healthy();
    inst(&mut s, "app-2-3001").requests_per_s = 5.0;
    inst(&mut s, "app-2-3001").started_recently = true;
    assert!(!ids(&diagnose(&s, None)).contains(&"load-imbalance"));
    // The others are still compared with one another.
    inst(&mut s, "app-1-3001").requests_per_s = 5.0;
    assert!(only(&s, "load-imbalance").summary.ends_with("the traffic of app-1-3001"));
    // Every instance new: nothing is judged, and doctor says why.
    for i in s.instances.iter_mut() {
        i.started_recently = true;
    }
    let d = diagnose(&s, None);
    assert!(d.healthy, "{}", render_text(&d, false));
    assert!(render_text(&d, false).contains("not judged: 4 of 4 instances started within the last minute"), "{}", render_text(&d, false));
}

#[test]
fn uneven_traffic_is_an_imbalance_and_names_unequal_weights() {
    let mut s = healthy();
    inst(&mut s, "app-1-3000").requests_per_s = 300.0;
    inst(&mut s, "app-2-3001").requests_per_s = 10.0;
    let f = only(&s, "load-imbalance");
    assert!(f.topology_edit.unwrap().contains("least_conn"));
    assert!(!f.summary.contains("weights"), "{}", f.summary);
    inst(&mut s, "app-1-3000").weight = 5;
    assert!(only(&s, "load-imbalance").summary.contains("(weights 5 and 1)"));
    // Scrapes alone (a fraction of a request a second) are not traffic to judge.
    let mut s = healthy();
    for i in s.instances.iter_mut() {
        i.requests_per_s = 0.2;
    }
    inst(&mut s, "app-1-3000").requests_per_s = 1.0;
    assert!(diagnose(&s, None).healthy);
}

#[test]
fn errors_and_latency_without_saturation() {
    let mut s = healthy();
    for i in s.instances.iter_mut() {
        i.error_rate_percent = 5.0;
    }
    only(&s, "upstream-errors");
    let mut s = healthy();
    inst(&mut s, "app-1-3000").p99_ms = Some(1800.0);
    let f = only(&s, "high-latency");
    assert!(f.path[0].contains("is the app slow? yes"), "{:?}", f.path);
    // Slow because the CPU is saturated: that is the finding, not "high latency".
    s.hosts[0].instances = 1;
    busy(&mut s.hosts[0], 95.0);
    assert_eq!(ids(&diagnose(&s, None)), vec!["cpu-saturated-scale-up"]);
}

#[test]
fn connections_piling_up() {
    let mut s = healthy();
    inst(&mut s, "app-2-3000").in_flight = 900.0;
    only(&s, "connections-saturated");
}

#[test]
fn hysteresis_keeps_an_active_finding_until_well_below_its_threshold() {
    let mut s = healthy();
    s.hosts[0].instances = 1;
    busy(&mut s.hosts[0], 75.0);
    let first = diagnose(&s, None);
    assert_eq!(ids(&first), vec!["cpu-saturated-scale-up"]);
    // 66% is below 70 but above 63 (70 less 10%): still active after the first diagnosis...
    busy(&mut s.hosts[0], 66.0);
    assert_eq!(ids(&diagnose(&s, Some(&first))), vec!["cpu-saturated-scale-up"]);
    // ...and not for a fresh look.
    assert!(diagnose(&s, None).healthy);
    busy(&mut s.hosts[0], 60.0);
    assert!(diagnose(&s, Some(&first)).healthy);
}

#[test]
fn every_listed_check_is_one_id_with_a_meaning_and_a_change() {
    // (That every id a finding carries is listed is asserted where findings are made, in `find`.)
    let mut ids = std::collections::BTreeSet::new();
    for (id, severity, meaning, change) in CHECKS {
        assert!(ids.insert(*id), "{id} is listed twice");
        assert!(["info", "warning", "critical"].contains(severity), "{id}: {severity}");
        assert!(!meaning.is_empty() && !change.is_empty(), "{id}");
    }
    assert!(ids.contains("disk-filling") && ids.contains("crash-loop"));
}

#[test]
fn a_snapshot_round_trips_through_json() {
    let s = healthy();
    let back: Snapshot = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
    assert_eq!(diagnose(&back, None), diagnose(&s, None));
}

/// The healthy fleet with a queue that keeps up: two workers per host on two hosts, a few jobs
/// waiting and worked off, 1 failure in 500.
fn with_queue() -> Snapshot {
    let mut s = healthy();
    s.queue = Some(QueueSample {
        queue: "reports".into(),
        waiting: vec![5.0, 3.0, 8.0, 2.0, 4.0, 6.0, 1.0, 3.0, 5.0, 2.0],
        active: vec![3.0; 10],
        failed: 1.0,
        ended: 500.0,
        workers: 4,
        workers_up: 4,
        workers_down: 0,
        instances_per_host: Some(2),
        oldest_waiting_s: Some(1.5),
        on_hosts: true,
    });
    s
}

fn q(s: &mut Snapshot) -> &mut QueueSample {
    s.queue.as_mut().unwrap()
}

#[test]
fn a_queue_that_keeps_up_is_healthy() {
    let d = diagnose(&with_queue(), None);
    assert!(d.healthy, "{}", render_text(&d, false));
    // A large backlog being worked off (falling) is no finding either.
    let mut s = with_queue();
    q(&mut s).waiting = (0..10).map(|i| 900.0 - 80.0 * i as f64).collect();
    assert!(diagnose(&s, None).healthy);
    // Nor a growing one below the backlog floor (a few jobs at a time).
    let mut s = with_queue();
    q(&mut s).waiting = (0..10).map(|i| i as f64).collect();
    assert!(diagnose(&s, None).healthy);
}

#[test]
fn a_backlog_growing_while_workers_take_jobs_says_add_workers() {
    let mut s = with_queue();
    q(&mut s).waiting = (0..10).map(|i| 20.0 + 30.0 * i as f64).collect();
    let f = only(&s, "queue-backlog-add-workers");
    assert_eq!(f.subject, "queue reports");
    assert_eq!(f.evidence[0].value, 290.0);
    assert_eq!(f.topology_edit.as_deref(), Some("app.workers.instances: 4   (or add a host with roles: [worker])"));
    assert!(f.summary.contains("270 more than 300 s ago") && f.summary.contains("its 4 workers take jobs"), "{}", f.summary);
    assert!(f.path.iter().any(|p| p.contains("workers taking jobs? yes: 500 ended in 300 s, 3 in hand")), "{:?}", f.path);
    // The oldest job's wait, where the queue tells it.
    q(&mut s).oldest_waiting_s = Some(42.4);
    assert!(only(&s, "queue-backlog-add-workers").summary.contains("wait on queue reports (the oldest has waited 42 s)"));
    // Workers at one per core: the edit is another worker host.
    q(&mut s).instances_per_host = None;
    assert!(only(&s, "queue-backlog-add-workers").topology_edit.unwrap().starts_with("hosts: add a host with roles: [worker]"));
    // Worker containers of one engine: more of them, whatever `instances` says now.
    q(&mut s).on_hosts = false;
    assert_eq!(only(&s, "queue-backlog-add-workers").topology_edit.as_deref(), Some("app.workers.instances: 8"));
    // Slow requests are not explained by a queue (its jobs left the request).
    for i in s.instances.iter_mut() {
        i.p99_ms = Some(3000.0);
    }
    assert_eq!(ids(&diagnose(&s, None)), vec!["high-latency", "queue-backlog-add-workers"]);
}

#[test]
fn a_backlog_with_no_job_ending_is_stuck_workers_and_missing_workers_are_down() {
    let mut s = with_queue();
    q(&mut s).waiting = (0..10).map(|i| 20.0 + 30.0 * i as f64).collect();
    // Hung workers still hold their jobs: in hand, but none ends.
    q(&mut s).active = vec![4.0; 10];
    q(&mut s).ended = 0.0;
    q(&mut s).failed = 0.0;
    let f = only(&s, "workers-stuck");
    assert_eq!(f.severity, Severity::Critical);
    assert!(f.summary.contains("none ended in 300 s with 4 workers running"), "{}", f.summary);
    // One worker of four measured stopped: a warning, whatever the backlog.
    let mut s = with_queue();
    (q(&mut s).workers_up, q(&mut s).workers_down) = (3, 1);
    let f = only(&s, "workers-down");
    assert_eq!((f.severity, f.summary.as_str()), (Severity::Warning, "1 of the 4 workers of queue reports are not running"));
    // One not measured yet (it just started): not down.
    q(&mut s).workers_down = 0;
    let d = diagnose(&s, None);
    assert!(d.healthy && d.trace.iter().any(|t| t.answer == "yes: 3 of 4 (1 not measured yet)"), "{:#?}", d.trace);
    // None running and a growing backlog: down, and critical; not also "stuck" or "add workers".
    (q(&mut s).workers_up, q(&mut s).workers_down) = (0, 4);
    q(&mut s).waiting = (0..10).map(|i| 20.0 + 30.0 * i as f64).collect();
    assert_eq!(only(&s, "workers-down").severity, Severity::Critical);
}

#[test]
fn jobs_failing_for_good_above_the_error_threshold() {
    let mut s = with_queue();
    q(&mut s).failed = 30.0;
    q(&mut s).ended = 500.0;
    let f = only(&s, "jobs-failing");
    assert_eq!(f.evidence[0].value, 6.0);
    assert!(f.summary.contains("30 jobs of queue reports failed for good"), "{}", f.summary);
    // 1% exactly is at the threshold, not above it.
    q(&mut s).failed = 1.0;
    q(&mut s).ended = 100.0;
    assert!(diagnose(&s, None).healthy);
    // Failures counted but no job seen ending (a trimmed count): all of them are failures.
    q(&mut s).ended = 0.0;
    assert_eq!(only(&s, "jobs-failing").evidence[0].value, 100.0);
}

/// The healthy fleet with a primary and a replica: few connections, no waiting, no lag, and the
/// statements' time spread over a fast lookup and a write.
fn with_database() -> Snapshot {
    let mut s = healthy();
    for h in ["db-1", "db-2"] {
        s.hosts.push(HostSample { host: h.into(), cores: 2, cpu_busy_percent: vec![20.0; 10], memory_available_percent: Some(60.0), ..Default::default() });
    }
    s.database = Some(DatabaseSample {
        max_connections: 100.0,
        replica_max_lag_bytes: 16e6,
        members: vec![
            DatabaseMember { host: "db-1".into(), replica: false, connections: 20.0, lag_bytes: None },
            DatabaseMember { host: "db-2".into(), replica: true, connections: 10.0, lag_bytes: Some(4096.0) },
        ],
        pool_waiting: vec![0.0; 10],
        statement_seconds: 10.0,
        statements: vec![
            StatementSample { statement: "SELECT name FROM users WHERE id = $1".into(), calls: 20000.0, seconds: 4.0 },
            StatementSample { statement: "UPDATE users SET name = $1 WHERE id = $2".into(), calls: 5000.0, seconds: 3.0 },
        ],
        tables: vec![TableSample { table: "public.users".into(), seq_scans: 2.0, seq_rows_read: 20.0, index_scans: 25000.0 }],
    });
    s
}

fn db(s: &mut Snapshot) -> &mut DatabaseSample {
    s.database.as_mut().unwrap()
}

#[test]
fn a_database_that_keeps_up_is_healthy() {
    let d = diagnose(&with_database(), None);
    assert!(d.healthy, "{}", render_text(&d, false));
    assert!(d.trace.iter().any(|t| t.question == "one statement takes most of the database's time?" && !t.taken), "{:?}", d.trace);
}

#[test]
fn connections_near_max_and_callers_waiting_for_the_pool() {
    let mut s = with_database();
    db(&mut s).members[0].connections = 85.0;
    let f = only(&s, "database-connections");
    assert_eq!(f.subject, "db-1");
    assert!(f.summary.contains("85 of its 100"), "{}", f.summary);
    db(&mut s).members[0].connections = 79.0;
    assert!(diagnose(&s, None).healthy, "79% is below the threshold");

    let mut s = with_database();
    db(&mut s).pool_waiting = vec![3.0; 10];
    assert!(only(&s, "database-pool-waiting").summary.contains("3 requests wait"));
    // One scrape with callers waiting is a spike, not a short pool.
    let mut spike = vec![0.0; 10];
    spike[4] = 12.0;
    db(&mut s).pool_waiting = spike;
    assert!(diagnose(&s, None).healthy);
}

#[test]
fn a_replica_behind_its_lag_limit() {
    let mut s = with_database();
    db(&mut s).members[1].lag_bytes = Some(64e6);
    let f = only(&s, "replica-lag");
    assert_eq!(f.subject, "db-2");
    db(&mut s).members[1].lag_bytes = Some(15e6);
    assert!(diagnose(&s, None).healthy, "under the limit");
}

#[test]
fn a_slow_statement_taking_most_of_the_time_is_named_with_the_table_it_scans() {
    let mut s = with_database();
    let d = db(&mut s);
    d.statement_seconds = 60.0;
    d.statements.insert(0, StatementSample { statement: "SELECT count(*) FROM orders WHERE note = $1".into(), calls: 200.0, seconds: 50.0 });
    d.tables.insert(0, TableSample { table: "public.orders".into(), seq_scans: 200.0, seq_rows_read: 400e6, index_scans: 0.0 });
    let f = only(&s, "database-slow-statement");
    assert!(f.summary.contains("`SELECT count(*) FROM orders WHERE note = $1`") && f.summary.contains("250 ms a call"), "{}", f.summary);
    assert!(f.summary.contains("sequential scans of public.orders read 2000000 rows each"), "{}", f.summary);
    assert!(f.recommendation.contains("index"), "{}", f.recommendation);

    // Slow but not the database's main cost (30%): not named.
    let mut s2 = s.clone();
    db(&mut s2).statement_seconds = 160.0;
    assert!(diagnose(&s2, None).healthy, "{}", render_text(&diagnose(&s2, None), false));
    // Slow and dominant, but called a few times (someone's report): not named.
    let mut s3 = s.clone();
    db(&mut s3).statements[0].calls = 5.0;
    assert!(diagnose(&s3, None).healthy);
}

#[test]
fn a_busy_primary_gets_a_cache_for_a_repeated_read_and_a_replica_for_reads() {
    // One fast lookup is 80% of the time of a primary whose host is 90% busy: cache it.
    let mut s = with_database();
    busy(s.hosts.iter_mut().find(|h| h.host == "db-1").unwrap(), 90.0);
    db(&mut s).statements[0].seconds = 8.0;
    let f = only(&s, "database-cache-reads");
    assert!(f.summary.contains("SELECT name FROM users WHERE id = $1") && f.summary.contains("can it be cached"), "{}", f.summary);
    // A read of 50 ms a call is not a fast one to cache: the reads on a busy primary are said
    // instead (the replica idles at 20%).
    let mut middling = s.clone();
    db(&mut middling).statements[0].calls = 160.0;
    assert_eq!(ids(&diagnose(&middling, None)), vec!["database-reads-on-primary"], "{}", render_text(&diagnose(&middling, None), false));
    // The same lookup on a quiet primary: nothing to change.
    let mut quiet = with_database();
    db(&mut quiet).statements[0].seconds = 8.0;
    assert!(diagnose(&quiet, None).healthy);

    // Reads spread over many statements on a busy primary, the replica idle: read from the replicas.
    let mut s = with_database();
    busy(s.hosts.iter_mut().find(|h| h.host == "db-1").unwrap(), 90.0);
    s.hosts.iter_mut().find(|h| h.host == "db-2").unwrap().cpu_busy_percent = vec![5.0; 10];
    let d = db(&mut s);
    d.statements = (0..5).map(|i| StatementSample { statement: format!("SELECT * FROM t{i} WHERE id = $1"), calls: 1000.0, seconds: 1.8 }).collect();
    let f = only(&s, "database-reads-on-primary");
    assert!(f.summary.contains("the replica db-2 idles"), "{}", f.summary);
    // No replica idle (or none at all): add one.
    busy(s.hosts.iter_mut().find(|h| h.host == "db-2").unwrap(), 85.0);
    let f = only(&s, "database-add-replica");
    assert!(f.topology_edit.as_deref().unwrap().contains("roles: [database]"));
    // Busy with writes: a replica would not help, and nothing is said of it.
    for st in &mut db(&mut s).statements {
        st.statement = st.statement.replace("SELECT * FROM", "UPDATE").replace(" WHERE", " SET x = 1 WHERE");
    }
    let d = diagnose(&s, None);
    assert!(!ids(&d).iter().any(|i| i.starts_with("database-")), "{}", render_text(&d, false));
}

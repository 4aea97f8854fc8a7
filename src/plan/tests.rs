//! Plans from plain data: desired state and observations in, actions out.

use std::collections::BTreeMap;

use super::*;
use crate::render::{Facts, Templates, render};
use crate::topology::parse;

const TOPOLOGY: &str = "name: t\napp: {port: 3000, instances: 2}\nhosts:\n  lb: {address: 10.0.0.1, roles: [lb]}\n  app: {address: 10.0.0.2, roles: [app]}\n  cache: {address: 10.0.0.3, roles: [redis]}\nredis: {password: {env: P}}\n";

fn desired(release: &str) -> Vec<DesiredHost> {
    let t = parse("t.yaml", TOPOLOGY).unwrap();
    let facts = Facts::with_default_cores(2);
    let files = render(&t, &facts, &Templates::embedded()).unwrap();
    desired_hosts(&t, &facts, &files, Some(&Release { id: release.into(), bytes: 10, archive: false, image: None }))
}

/// What a host looks like once `d` was applied.
fn converged(d: &DesiredHost) -> Observed {
    let mut o = Observed { cores: 2, ..Default::default() };
    for f in &d.files {
        o.files.insert(
            f.path.clone(),
            Some(ObservedFile {
                mode: f.mode,
                owner: f.owner.clone(),
                group: f.group.clone(),
                sha256: sha256_hex(f.content.as_bytes()),
                content: Some(f.content.clone()),
            }),
        );
    }
    for (p, _) in &d.absent {
        o.files.insert(p.clone(), None);
    }
    let active = UnitState { active: "active".into(), enabled: "enabled".into() };
    for u in d.services.iter().chain(&d.enabled) {
        o.units.insert(u.clone(), active.clone());
    }
    for p in &d.instances {
        o.units.insert(instance_unit(&d.app_name, *p), active.clone());
    }
    for i in &d.workers {
        o.units.insert(worker_unit(&d.app_name, *i), active.clone());
    }
    for p in &d.packages {
        o.packages.insert(p.clone(), true);
    }
    if let Some(r) = &d.release {
        o.release = Some(r.id.clone());
        o.releases = vec![r.id.clone()];
        o.ready_releases = vec![r.id.clone()];
    }
    o.admins = d.credentials.iter().map(|c| c.kind).collect();
    if let Some(l) = &d.log_tls {
        o.log_tls = Some(ObservedLogTls { ca_sha256: "ca".into(), good: true, name: l.name.clone() });
        if l.ca_host == d.host {
            o.log_ca = Some("ca".into());
        }
    }
    o
}

fn all_converged(d: &[DesiredHost]) -> BTreeMap<String, Observed> {
    d.iter().map(|h| (h.host.clone(), converged(h))).collect()
}

/// How the app host's instances leave the load balancer `lb` in TOPOLOGY.
fn drain() -> Drain {
    Drain { lbs: vec!["lb".into()], socket: "/run/haproxy/admin.sock".into(), backend: "t_app".into(), host: "app".into(), wait_ms: 10_000, pause_checks: false }
}

fn host<'a>(p: &'a Plan, name: &str) -> &'a HostPlan {
    p.hosts.iter().find(|h| h.host == name).unwrap()
}

/// A first deploy's whole plan (every kind of action a bare fleet gets), saved as `plan --out`
/// saves it and read back: the same plan, so `apply PLANFILE` compares like with like.
#[test]
fn a_first_deploys_plan_reads_back_as_saved() {
    let d = desired("r1");
    let bare: BTreeMap<String, Observed> = d.iter().map(|h| (h.host.clone(), Observed { cores: 2, ..Default::default() })).collect();
    let p = crate::plan::TargetPlan::Hosts(plan("t", &d, &bare)).redacted();
    assert!(p.change_count() > 10, "{}", p.change_count());
    let back: crate::plan::TargetPlan = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(back, p);
}

#[test]
fn a_converged_fleet_plans_nothing() {
    let d = desired("r1");
    let p = plan("t", &d, &all_converged(&d));
    assert!(!p.has_changes(), "{p:#?}");
    assert!(render_text(&p, false).contains("No changes"));
}

#[test]
fn hosts_are_activated_redis_first_and_load_balancer_last() {
    let d = desired("r1");
    let order: Vec<&str> = d.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(order, ["cache", "app", "lb"]);
}

#[test]
fn a_bare_host_gets_packages_files_and_started_services() {
    let d = desired("r1");
    let p = plan("t", &d, &BTreeMap::new());
    let app = host(&p, "app");
    assert!(matches!(&app.prepare[0], Action::MarkPending { entries } if entries.contains(&"rolling".to_string())));
    assert!(matches!(&app.prepare[1], Action::InstallPackages { packages } if packages.contains(&"curl".to_string())));
    assert!(matches!(&app.prepare[2], Action::UploadRelease { release, .. } if release == "r1"));
    assert_eq!(app.activate.last(), Some(&Action::ClearPending));
    let starts: Vec<&Action> = app.activate.iter().filter(|a| matches!(a, Action::Start { ready: Some(_), .. })).collect();
    assert_eq!(starts.len(), 2);
    assert!(app.activate.iter().any(|a| matches!(a, Action::SwitchRelease { from: None, to } if to == "r1")));
    let lb = host(&p, "lb");
    assert!(lb.prepare.iter().any(|a| matches!(a, Action::Validate { unit, .. } if unit == "nginx.service")));
}

#[test]
fn a_new_release_rolls_running_instances_and_keeps_the_previous_one() {
    let d1 = desired("r1");
    let mut obs = all_converged(&d1);
    obs.get_mut("app").unwrap().releases = vec!["r0".into(), "rA".into(), "r1".into()];
    let d2 = desired("r2");
    let p = plan("t", &d2, &obs);
    let app = host(&p, "app");
    assert_eq!(app.prepare, vec![Action::UploadRelease { release: "r2".into(), bytes: 10, archive: false }]);
    assert_eq!(
        app.activate,
        vec![
            Action::SwitchRelease { from: Some("r1".into()), to: "r2".into() },
            Action::RollingRestart { ports: vec![3000, 3001], readiness: "/readyz".into(), drain: Some(drain()) },
            Action::MarkReady { release: "r2".into() },
        ]
    );
    // Keep 3: the new one, the running one (rollback target), and the newest other.
    assert_eq!(app.cleanup, vec![Action::PruneReleases { remove: vec!["r0".into()] }]);
    // The instances are named after the app that runs, whichever it is.
    let mut named = p.clone();
    named.hosts.iter_mut().for_each(|h| h.app_name = "shop".into());
    let text = render_text(&named, false);
    assert!(text.contains("rolling restart shop@3000, shop@3001") && !text.contains("scale-api@"), "{text}");
    assert!(host(&p, "lb").is_empty() && host(&p, "cache").is_empty());
}

#[test]
fn a_changed_file_gives_its_diff_and_its_service_action() {
    let d = desired("r1");
    let mut obs = all_converged(&d);
    let conf = obs.get_mut("cache").unwrap().files.get_mut("/etc/redis/redis.conf").unwrap().as_mut().unwrap();
    let old = conf.content.clone().unwrap().replace("maxmemory-policy allkeys-lru", "maxmemory-policy noeviction");
    conf.sha256 = sha256_hex(old.as_bytes());
    conf.content = Some(old);
    let p = plan("t", &d, &obs);
    let cache = host(&p, "cache");
    assert_eq!(cache.prepare[0], Action::MarkPending { entries: vec!["restart:redis-server.service".into()] });
    let Action::WriteFile(f) = &cache.prepare[1] else { panic!("{cache:#?}") };
    assert_eq!(f.change, Change::Update);
    let diff = f.diff.as_deref().unwrap();
    assert!(diff.contains("-maxmemory-policy noeviction\n+maxmemory-policy allkeys-lru"), "{diff}");
    assert_eq!(cache.activate, vec![Action::Restart { unit: "redis-server.service".into() }, Action::ClearPending]);
    assert_eq!(p.change_count(), 4);
}

#[test]
fn what_a_killed_apply_owed_is_done_by_the_next_one() {
    // Files on disk already match; only the record says nginx was never reloaded and the
    // instances never restarted.
    let d = desired("r1");
    let mut obs = all_converged(&d);
    obs.get_mut("lb").unwrap().pending = vec!["reload:nginx.service".into()];
    obs.get_mut("app").unwrap().pending = vec!["rolling".into()];
    let p = plan("t", &d, &obs);
    let lb = host(&p, "lb");
    assert_eq!(lb.prepare, vec![Action::Validate { unit: "nginx.service".into(), command: "nginx -t -q".into() }]);
    assert_eq!(lb.activate, vec![Action::Reload { unit: "nginx.service".into() }, Action::ClearPending]);
    assert_eq!(
        host(&p, "app").activate,
        vec![Action::RollingRestart { ports: vec![3000, 3001], readiness: "/readyz".into(), drain: Some(drain()) }, Action::ClearPending]
    );
}

/// A file holding a secret, owned by root and `group`, as render's secret jobs place one.
fn secret_file(path: &str, mode: u32, group: &str, content: String, on_change: OnChange) -> DesiredFile {
    DesiredFile { path: path.into(), mode, owner: "root".into(), group: group.into(), content, sensitive: true, on_change, unit_file: false }
}

/// The cache host's ACL include, with `password`'s hash, as the desired state holds it.
fn with_redis_users(d: &mut [DesiredHost], password: &str) {
    let cache = d.iter_mut().find(|h| h.host == "cache").unwrap();
    let content = format!("user default on #{} ~* &* +@all -@dangerous +info\n", sha256_hex(password.as_bytes()));
    cache.files.push(secret_file("/etc/redis/scalectl-auth.conf", 0o640, "redis", content, OnChange::Credentials(Credentials::Redis)));
}

#[test]
fn a_rotated_redis_password_changes_the_users_live_and_settles_after_the_app_hosts() {
    let mut before = desired("r1");
    with_redis_users(&mut before, "old");
    let obs = all_converged(&before);
    let mut d = desired("r1");
    with_redis_users(&mut d, "new");
    let p = plan("t", &d, &obs);
    let cache = host(&p, "cache");
    assert!(matches!(&cache.prepare[0], Action::MarkPending { entries } if entries == &["redis-users".to_string()]), "{cache:#?}");
    assert!(!cache.actions().any(|a| matches!(a, Action::Restart { unit } if unit == "redis-server.service")), "no restart: {cache:#?}");
    assert_eq!(cache.activate, vec![Action::Credentials { credentials: Credentials::Redis, phase: CredentialsPhase::Add, port: 6379 }, Action::ClearPending]);
    assert_eq!(cache.cleanup, vec![Action::Credentials { credentials: Credentials::Redis, phase: CredentialsPhase::Settle, port: 6379 }]);
    assert!(render_text(&p, false).contains("the old ones still work"));

    // Added but never settled (the apply failed on an app host): the next apply settles.
    let mut obs = all_converged(&d);
    obs.get_mut("cache").unwrap().pending = vec!["redis-users".into()];
    let p = plan("t", &d, &obs);
    assert_eq!(host(&p, "cache").cleanup, vec![Action::Credentials { credentials: Credentials::Redis, phase: CredentialsPhase::Settle, port: 6379 }]);

    // A stopped Redis reads the include when it starts: nothing to add live.
    let mut obs = all_converged(&before);
    obs.get_mut("cache").unwrap().units.insert("redis-server.service".into(), UnitState { active: "failed".into(), enabled: "enabled".into() });
    let cache = host(&plan("t", &d, &obs), "cache").clone();
    assert!(!cache.activate.iter().any(|a| matches!(a, Action::Credentials { .. })), "{cache:#?}");
    assert!(cache.activate.iter().any(|a| matches!(a, Action::Start { unit, .. } if unit == "redis-server.service")), "{cache:#?}");
}

#[test]
fn a_redis_host_without_scalectls_admin_user_gets_one_and_a_restart() {
    let d = desired("r1");
    let mut obs = all_converged(&d);
    obs.get_mut("cache").unwrap().admins.clear();
    let p = plan("t", &d, &obs);
    let cache = host(&p, "cache");
    assert!(cache.prepare.contains(&Action::EnsureAdmin { credentials: Credentials::Redis }), "{cache:#?}");
    assert!(cache.activate.contains(&Action::Restart { unit: "redis-server.service".into() }), "{cache:#?}");
    // Only where Redis has a password (and so the include that names the admin).
    assert!(desired("r1").iter().filter(|h| h.host != "cache").all(|h| h.credentials.is_empty()));
}

#[test]
fn sensitive_files_are_never_diffed() {
    let mut d = desired("r1");
    let app = d.iter_mut().find(|h| h.host == "app").unwrap();
    app.files.push(secret_file("/etc/scale-api/secrets.env", 0o600, "root", "API_KEY=hunter2\n".into(), OnChange::Rolling));
    let obs = all_converged(&desired("r1"));
    let p = plan("t", &d, &obs);
    let text = render_text(&p, false);
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("sensitive: content hidden"));
    // What is printed or saved is the redacted plan; the executor keeps the content in memory.
    let saved = serde_json::to_string(&p.redacted()).unwrap();
    assert!(!saved.contains("hunter2"));
    assert!(!saved.contains(&sha256_hex(b"API_KEY=hunter2\n")), "no digest to try a dictionary on: {saved}");
    assert!(render_text(&p, false) == render_text(&p.redacted(), false));
}

#[test]
fn secret_lines_of_an_adopted_file_are_hidden_from_shown_plans_and_kept_for_rollback() {
    let d = desired("r1");
    let mut obs = all_converged(&d);
    let conf = obs.get_mut("cache").unwrap().files.get_mut("/etc/redis/redis.conf").unwrap().as_mut().unwrap();
    // What an admin wrote before scalectl managed the file.
    let old = "bind 0.0.0.0\nrequirepass hunter2-admin\n  masterauth  other-s3cret\n# requirepass commented\nREDIS_PASSWORD=env-s3cret\n".to_string();
    conf.sha256 = sha256_hex(old.as_bytes());
    conf.content = Some(old.clone());
    let p = plan("t", &d, &obs);
    let shown = p.redacted();
    let text = PlanView::text(&p, false);
    let json = serde_json::to_string(&shown).unwrap();
    for secret in ["hunter2-admin", "other-s3cret", "env-s3cret"] {
        assert!(!text.contains(secret) && !json.contains(secret), "{secret} shown:\n{text}");
    }
    assert!(text.contains("-requirepass (redacted)") && text.contains("-  masterauth  (redacted)") && text.contains("-bind 0.0.0.0"), "{text}");
    assert!(text.contains("-# requirepass commented"), "comments stay: {text}");
    // The executor's plan still restores exactly what was there.
    let cache = host(&p, "cache");
    let Action::WriteFile(f) = &cache.prepare[1] else { panic!("{cache:#?}") };
    assert_eq!(f.previous.as_deref(), Some(old.as_str()));
}

#[test]
fn fewer_instances_stop_the_extra_ones_last() {
    let d = desired("r1");
    let mut obs = all_converged(&d);
    let active = UnitState { active: "active".into(), enabled: "enabled".into() };
    obs.get_mut("app").unwrap().units.insert(instance_unit("scale-api", 3002), active);
    let p = plan("t", &d, &obs);
    assert_eq!(host(&p, "app").cleanup, vec![Action::Stop { unit: "scale-api@3002.service".into() }]);
}

#[test]
fn a_stopped_service_is_started_and_a_dead_instance_waits_for_readiness() {
    let d = desired("r1");
    let mut obs = all_converged(&d);
    let failed = UnitState { active: "failed".into(), enabled: "enabled".into() };
    obs.get_mut("lb").unwrap().units.insert("nginx.service".into(), failed.clone());
    obs.get_mut("app").unwrap().units.insert(instance_unit("scale-api", 3001), failed);
    let p = plan("t", &d, &obs);
    assert_eq!(host(&p, "lb").activate, vec![Action::Start { unit: "nginx.service".into(), ready: None }]);
    assert_eq!(host(&p, "app").activate, vec![Action::Start { unit: "scale-api@3001.service".into(), ready: Some(crate::plan::Probe { port: 3001, path: "/readyz".into() }) }]);
}

#[test]
fn reload_restarts_only_running_instances_and_rollback_needs_an_earlier_release() {
    let d = desired("r1");
    let obs = all_converged(&d);
    let p = reload_plan("t", &d, &obs);
    assert_eq!(host(&p, "app").activate, vec![Action::RollingRestart { ports: vec![3000, 3001], readiness: "/readyz".into(), drain: Some(drain()) }]);
    assert_eq!(p.change_count(), 1);
    assert!(rollback_plan("t", &d, &obs).unwrap_err().contains("no earlier release"));
    let mut obs = obs;
    obs.get_mut("app").unwrap().releases = vec!["r0".into(), "r1".into()];
    obs.get_mut("app").unwrap().ready_releases = vec!["r0".into(), "r1".into()];
    let p = rollback_plan("t", &d, &obs).unwrap();
    assert_eq!(host(&p, "app").activate[0], Action::SwitchRelease { from: Some("r1".into()), to: "r0".into() });
    // A newer release that never became ready (a failed apply left it) is never the target.
    obs.get_mut("app").unwrap().releases = vec!["r0".into(), "r1".into(), "rBroken".into()];
    let p = rollback_plan("t", &d, &obs).unwrap();
    assert_eq!(host(&p, "app").activate[0], Action::SwitchRelease { from: Some("r1".into()), to: "r0".into() });
}

#[test]
fn a_release_is_recorded_ready_only_after_every_instance_was() {
    let d = desired("r2");
    let mut obs = all_converged(&desired("r1"));
    obs.get_mut("app").unwrap().releases = vec!["r1".into(), "r2".into()];
    let p = plan("t", &d, &obs);
    let app = &host(&p, "app").activate;
    let rolled = app.iter().position(|a| matches!(a, Action::RollingRestart { .. })).expect("a rolling restart");
    assert_eq!(app.iter().position(|a| *a == Action::MarkReady { release: "r2".into() }), Some(app.len() - 1), "{app:?}");
    assert!(rolled < app.len() - 1);
    // Once recorded, nothing more to do.
    obs.get_mut("app").unwrap().release = Some("r2".into());
    obs.get_mut("app").unwrap().ready_releases = vec!["r1".into(), "r2".into()];
    assert!(!plan("t", &d, &obs).has_changes());
}

#[test]
fn destroy_stops_services_then_removes_files_and_releases_load_balancer_first() {
    let d = desired("r1");
    let obs = all_converged(&d);
    let p = destroy_plan("t", &d, &obs);
    let order: Vec<&str> = p.hosts.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(order, ["lb", "app", "cache"]);
    let app = host(&p, "app");
    assert_eq!(app.activate[0], Action::Stop { unit: "scale-api@3000.service".into() });
    let first_remove = app.activate.iter().position(|a| matches!(a, Action::RemoveFile { .. })).unwrap();
    assert!(app.activate[..first_remove].iter().all(|a| matches!(a, Action::Stop { .. })));
    assert!(app.activate.contains(&Action::RemoveFile { path: current_link("scale-api") }));
    assert_eq!(app.activate.last(), Some(&Action::PruneReleases { remove: vec!["r1".into()] }));
    assert!(!host(&p, "cache").activate.contains(&Action::Stop { unit: "rsyslog.service".into() }));
    // Nothing left: destroying again plans nothing.
    assert!(!destroy_plan("t", &d, &BTreeMap::new()).has_changes());
}

/// A fleet whose logs go to the collector on `mon`: every host has a certificate for RELP over TLS.
fn monitored() -> Vec<DesiredHost> {
    let t = parse("t.yaml", "name: t\napp: {port: 3000, instances: 1}\nhosts:\n  app: {address: 10.0.0.2, roles: [app, redis]}\n  mon: {address: 10.0.0.4, roles: [monitor]}\n").unwrap();
    let facts = Facts::with_default_cores(1);
    let files = render(&t, &facts, &Templates::embedded()).unwrap();
    desired_hosts(&t, &facts, &files, Some(&Release { id: "r1".into(), bytes: 10, archive: false, image: None }))
}

fn issues_certificate(h: &HostPlan) -> bool {
    h.activate.first() == Some(&Action::LogCertificate { name: h.host.clone(), ca_host: "mon".into() })
        && h.activate.contains(&Action::Restart { unit: "rsyslog.service".into() })
        && matches!(&h.prepare[0], Action::MarkPending { entries } if entries.contains(&"restart:rsyslog.service".to_string()))
}

#[test]
fn log_certificates_are_issued_where_a_host_has_no_good_one_from_the_fleets_ca() {
    let d = monitored();
    assert!(d.iter().all(|h| h.log_tls.as_ref().is_some_and(|l| l.ca_host == "mon") && h.packages.contains(&"openssl".to_string())));
    let obs = all_converged(&d);
    assert!(!plan("t", &d, &obs).has_changes());

    // Fresh hosts (no CA yet): every host, the CA's own included.
    let mut fresh = obs.clone();
    for o in fresh.values_mut() {
        (o.log_tls, o.log_ca) = (None, None);
    }
    let p = plan("t", &d, &fresh);
    assert!(p.hosts.iter().all(issues_certificate), "{p:#?}");
    assert!(render_text(&p, false).contains("issue this host's log TLS certificate for app from the fleet's log CA on mon"));

    // destroy removes them (the CA on its host), after rsyslog let go of them.
    let gone = destroy_plan("t", &d, &obs);
    let mon = host(&gone, "mon");
    let restart = mon.activate.iter().position(|a| a == &Action::Restart { unit: "rsyslog.service".into() }).unwrap();
    for path in ["/etc/scalectl/tls/log.key", "/etc/scalectl/tls/ca/log-ca.key"] {
        assert!(mon.activate.iter().position(|a| a == &Action::RemoveFile { path: path.into() }).is_some_and(|i| i > restart), "{mon:#?}");
    }
    assert!(!host(&gone, "app").activate.contains(&Action::RemoveFile { path: "/etc/scalectl/tls/ca/log-ca.key".into() }));

    // A new CA on its host: every certificate is reissued.
    let mut new_ca = obs.clone();
    new_ca.get_mut("mon").unwrap().log_ca = Some("another".into());
    assert!(plan("t", &d, &new_ca).hosts.iter().all(issues_certificate));

    // One host's certificate expiring (or not its key's), or naming another host: that host only.
    for broken in [ObservedLogTls { ca_sha256: "ca".into(), good: false, name: "app".into() }, ObservedLogTls { ca_sha256: "ca".into(), good: true, name: "mon".into() }] {
        let mut one = obs.clone();
        one.get_mut("app").unwrap().log_tls = Some(broken);
        let p = plan("t", &d, &one);
        assert!(issues_certificate(host(&p, "app")), "{p:#?}");
        assert!(host(&p, "mon").is_empty(), "{p:#?}");
    }
}

/// A program with two web instances and `workers` workers on its app host, and a worker-only host.
fn with_workers(workers: u32, release: &str) -> Vec<DesiredHost> {
    let yaml = format!(
        "name: t\napp:\n  port: 3000\n  instances: 2\n  program: {{release: ./r, command: [node, server.js]}}\n  workers: {{command: [node, worker.js], instances: {workers}, drain_timeout: 20s, queue: {{kind: bullmq, name: jobs}}}}\nhosts:\n  lb: {{address: 10.0.0.1, roles: [lb, redis]}}\n  app: {{address: 10.0.0.2, roles: [app, worker]}}\n  w: {{address: 10.0.0.4, roles: [worker]}}\nredis: {{password: {{env: P}}}}\n"
    );
    let t = parse("t.yaml", &yaml).unwrap_or_else(|p| panic!("{p}"));
    let facts = Facts::with_default_cores(2);
    let mut files = render(&t, &facts, &Templates::embedded()).unwrap();
    files.extend(crate::render::render_secrets(&t, &crate::render::SecretValues::default(), &Templates::embedded()).unwrap());
    desired_hosts(&t, &facts, &files, Some(&Release { id: release.into(), bytes: 10, archive: true, image: None }))
}

#[test]
fn workers_start_after_the_web_instances_and_a_worker_only_host_gets_the_release() {
    let d = with_workers(2, "r1");
    let bare: BTreeMap<String, Observed> = d.iter().map(|h| (h.host.clone(), Observed { cores: 2, ..Default::default() })).collect();
    let p = plan("t", &d, &bare);
    let app = host(&p, "app");
    let web = app.activate.iter().position(|a| matches!(a, Action::Start { ready: Some(_), .. })).unwrap();
    let workers = app.activate.iter().position(|a| matches!(a, Action::StartWorkers { .. })).unwrap();
    assert!(web < workers, "{:#?}", app.activate);
    assert_eq!(app.activate[workers], Action::StartWorkers { units: vec!["t-worker@1.service".into(), "t-worker@2.service".into()], drain_ms: 20_000 });
    // The worker-only host: the release, the app's env and secrets, its workers, no web instance.
    let w = host(&p, "w");
    assert!(w.app && w.prepare.iter().any(|a| matches!(a, Action::UploadRelease { .. })), "{w:#?}");
    let written: Vec<&str> = w.actions().filter_map(|a| if let Action::WriteFile(f) = a { Some(f.path.as_str()) } else { None }).collect();
    for path in ["/etc/t/t.env", "/etc/t/worker.env", "/etc/t/secrets.env", "/etc/systemd/system/t-worker@.service", "/etc/systemd/system/t.target"] {
        assert!(written.contains(&path), "{path} not written on the worker host: {written:?}");
    }
    assert!(!written.contains(&"/etc/systemd/system/t@.service"), "{written:?}");
    assert!(w.activate.iter().any(|a| *a == Action::StartWorkers { units: vec!["t-worker@1.service".into(), "t-worker@2.service".into()], drain_ms: 20_000 }), "{w:#?}");
    assert!(!w.actions().any(|a| matches!(a, Action::Start { ready: Some(_), .. } | Action::RollingRestart { .. })), "{w:#?}");
    // Applied: nothing more to do.
    assert!(!plan("t", &d, &all_converged(&d)).has_changes());
}

#[test]
fn a_new_release_rolls_workers_after_the_web_instances_each_given_its_drain() {
    let before = with_workers(1, "r1");
    let observed = all_converged(&before);
    let p = plan("t", &with_workers(1, "r2"), &observed);
    let app = host(&p, "app");
    let web = app.activate.iter().position(|a| matches!(a, Action::RollingRestart { .. })).unwrap();
    let roll = app.activate.iter().position(|a| matches!(a, Action::RollWorkers { .. })).unwrap();
    assert!(web < roll, "{:#?}", app.activate);
    assert_eq!(app.activate[roll], Action::RollWorkers { units: vec!["t-worker@1.service".into()], drain_ms: 20_000 });
    assert!(host(&p, "w").activate.contains(&Action::RollWorkers { units: vec!["t-worker@1.service".into()], drain_ms: 20_000 }));
    // `reload` and `rollback` take the workers along.
    let r = reload_plan("t", &before, &observed);
    assert!(host(&r, "app").activate.iter().any(|a| matches!(a, Action::RollWorkers { .. })) && host(&r, "w").activate.iter().any(|a| matches!(a, Action::RollWorkers { .. })), "{r:#?}");
    let mut two = observed.clone();
    for o in two.values_mut().filter(|o| o.release.is_some()) {
        o.releases.insert(0, "r0".into());
        o.ready_releases.insert(0, "r0".into());
    }
    let b = rollback_plan("t", &before, &two).unwrap();
    let w = host(&b, "w");
    assert_eq!(w.activate[0], Action::SwitchRelease { from: Some("r1".into()), to: "r0".into() });
    assert!(matches!(w.activate[1], Action::RollWorkers { .. }), "{w:#?}");
}

#[test]
fn a_change_to_the_workers_own_settings_rolls_the_workers_only() {
    let observed = all_converged(&with_workers(1, "r1"));
    let mut d = with_workers(1, "r1");
    for h in &mut d {
        for f in h.files.iter_mut().filter(|f| f.path == "/etc/t/worker.env") {
            f.content.push_str("WORKER_CONCURRENCY=\"8\"\n");
        }
    }
    let app = host(&plan("t", &d, &observed), "app").clone();
    assert!(app.activate.contains(&Action::RollWorkers { units: vec!["t-worker@1.service".into()], drain_ms: 20_000 }), "{app:#?}");
    assert!(!app.activate.iter().any(|a| matches!(a, Action::RollingRestart { .. })), "the web instances restarted for the workers' settings: {app:#?}");
    // Recorded as owed before the file changes, so a killed apply's successor still rolls them.
    assert!(app.prepare.contains(&Action::MarkPending { entries: vec!["workers".into()] }), "{app:#?}");
    let mut killed = all_converged(&d);
    killed.get_mut("app").unwrap().pending = vec!["workers".into()];
    assert!(host(&plan("t", &d, &killed), "app").activate.iter().any(|a| matches!(a, Action::RollWorkers { .. })));
}

#[test]
fn fewer_workers_stop_the_extra_ones_and_no_worker_is_taken_for_another_apps_instance() {
    let observed = all_converged(&with_workers(3, "r1"));
    let p = plan("t", &with_workers(1, "r1"), &observed);
    let stops: Vec<&Action> = host(&p, "app").cleanup.iter().filter(|a| matches!(a, Action::Stop { .. })).collect();
    assert_eq!(stops, [&Action::Stop { unit: "t-worker@2.service".into() }, &Action::Stop { unit: "t-worker@3.service".into() }]);
    // The worker kept and the web instances are left alone.
    assert!(!plan("t", &with_workers(3, "r1"), &observed).has_changes());
    // Destroy stops them all.
    let gone = destroy_plan("t", &with_workers(3, "r1"), &observed);
    assert!(host(&gone, "w").activate.contains(&Action::Stop { unit: "t-worker@3.service".into() }));
}

#[test]
fn a_unit_is_read_back_as_its_own_apps_process_whatever_the_app_is_called() {
    use super::{Process, is_app_unit, process_of_app};
    assert!(is_app_unit("hello@4000.service") && is_app_unit("scale-api@3000.socket") && is_app_unit("hello-worker@1.service"));
    assert!(!is_app_unit("nginx.service") && !is_app_unit("getty@tty1.service"));
    assert_eq!(process_of_app("hello@4000.service", "hello"), Some(Process::Web(4000)));
    assert_eq!(process_of_app("hello-worker@2.service", "hello"), Some(Process::Worker(2)));
    // An app whose name ends in -worker: its web units are its own, not another app's workers.
    assert_eq!(process_of_app("report-worker@3000.service", "report-worker"), Some(Process::Web(3000)));
    assert_eq!(process_of_app("report-worker-worker@1.service", "report-worker"), Some(Process::Worker(1)));
    assert_eq!(process_of_app("report-worker@3000.service", "report"), Some(Process::Worker(3000)));
    assert_eq!(process_of_app("other@3000.service", "hello"), None);
    assert_eq!(process_of_app("hello-worker@1.socket", "hello"), None);
}

fn with_release_command(release: &str) -> Vec<DesiredHost> {
    let src = "name: t\napp: {port: 3000, instances: 1, release_command: [scale-api, migrate]}\nhosts:\n  lb: {address: 10.0.0.1, roles: [lb]}\n  app-1: {address: 10.0.0.2, roles: [app]}\n  app-2: {address: 10.0.0.4, roles: [app]}\n  cache: {address: 10.0.0.3, roles: [redis]}\nredis: {password: {env: P}}\n";
    let t = parse("t.yaml", src).unwrap();
    let facts = Facts::with_default_cores(2);
    let files = render(&t, &facts, &Templates::embedded()).unwrap();
    desired_hosts(&t, &facts, &files, Some(&Release { id: release.into(), bytes: 10, archive: false, image: None }))
}

fn release_commands(p: &Plan) -> Vec<(String, usize, usize)> {
    p.hosts
        .iter()
        .flat_map(|h| {
            let at = h.activate.iter().position(|a| matches!(a, Action::ReleaseCommand { .. }));
            let switch = h.activate.iter().position(|a| matches!(a, Action::SwitchRelease { .. }));
            at.map(|at| (h.host.clone(), at, switch.unwrap_or(usize::MAX)))
        })
        .collect()
}

#[test]
fn the_release_command_runs_once_per_release_before_any_host_switches() {
    let old = with_release_command("r1");
    let mut observed = all_converged(&old);
    for o in observed.values_mut() {
        o.released = vec!["r1".into()];
    }
    // A new release: once, on the first app host, before its switch (and so before any other's:
    // hosts activate one after another).
    let new = with_release_command("r2");
    let p = plan("t", &new, &observed);
    let runs = release_commands(&p);
    assert_eq!(runs.len(), 1, "{runs:?}");
    let (host_name, at, switch) = &runs[0];
    assert_eq!(host_name, "app-1");
    assert!(at < switch, "the release command after the switch: {:?}", host(&p, "app-1").activate);
    assert!(matches!(&host(&p, "app-1").activate[*at], Action::ReleaseCommand { release, unit, .. } if release == "r2" && unit == "scale-api-release@r2.service"));
    // The same release again, its command done: nothing runs it again.
    assert!(release_commands(&plan("t", &old, &observed)).is_empty());
    // An apply that stopped after app-1 ran it and switched: app-2 switches without running it.
    let mut partial = observed.clone();
    partial.get_mut("app-1").unwrap().released.push("r2".into());
    partial.get_mut("app-1").unwrap().release = Some("r2".into());
    assert!(release_commands(&plan("t", &new, &partial)).is_empty());
    // The release already runs on app-1 (deployed before the topology had a release command):
    // it runs where a switch is still owed, app-2.
    let mut failed = observed.clone();
    failed.get_mut("app-1").unwrap().release = Some("r2".into());
    assert_eq!(release_commands(&plan("t", &new, &failed)).iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), ["app-2"]);
    // No release command in the topology: nothing.
    assert!(release_commands(&plan("t", &desired("r2"), &all_converged(&desired("r1")))).is_empty());
}

/// A new liveness path: the app host's instances restart first and the load balancer reloads
/// for the new path last, so each instance put back meanwhile has its health check paused (the
/// running balancer would check it at the old path); with the balancer's file unchanged, a roll
/// is checked as ever.
#[test]
fn a_new_liveness_path_rolls_instances_back_unchecked_until_the_balancer_reloads() {
    let obs = all_converged(&desired("r1"));
    let t = parse("t.yaml", &TOPOLOGY.replace("instances: 2}", "instances: 2, health: {liveness: /live}}")).unwrap();
    let facts = Facts::with_default_cores(2);
    let files = render(&t, &facts, &Templates::embedded()).unwrap();
    let d = desired_hosts(&t, &facts, &files, Some(&Release { id: "r1".into(), bytes: 10, archive: false, image: None }));
    let p = plan("t", &d, &obs);
    let rolled = host(&p, "app").activate.iter().find_map(|a| if let Action::RollingRestart { drain, .. } = a { drain.clone() } else { None });
    assert_eq!(rolled, Some(Drain { pause_checks: true, ..drain() }), "{:#?}", host(&p, "app").activate);
    let lb = host(&p, "lb");
    assert!(lb.prepare.iter().any(|a| matches!(a, Action::WriteFile(f) if f.path == crate::topology::tiers::BALANCER_CONFIG)), "{:#?}", lb.prepare);
    assert!(lb.activate.contains(&Action::Reload { unit: crate::topology::tiers::BALANCER_SERVICE.into() }), "{:#?}", lb.activate);
    assert_eq!(p.hosts.last().map(|h| h.host.as_str()), Some("lb"), "the load balancer activates (reloads) last");
    // The same release again, the balancer's file as it is: checked.
    let p = plan("t", &desired("r2"), &obs);
    let rolled = host(&p, "app").activate.iter().find_map(|a| if let Action::RollingRestart { drain, .. } = a { drain.clone() } else { None });
    assert_eq!(rolled, Some(drain()));
    // One host with every role: its balancer reloads before its instances roll, so they go back
    // checked (a pause would last until some later reload).
    let one = |extra: &str| {
        let src = format!("name: t\napp: {{port: 3000, instances: 2{extra}}}\nhosts:\n  a: {{address: 10.0.0.1, roles: [lb, app, redis]}}\nredis: {{password: {{env: P}}}}\n");
        let t = parse("t.yaml", &src).unwrap();
        let files = render(&t, &facts, &Templates::embedded()).unwrap();
        desired_hosts(&t, &facts, &files, Some(&Release { id: "r1".into(), bytes: 10, archive: false, image: None }))
    };
    let p = plan("t", &one(", health: {liveness: /live}"), &all_converged(&one("")));
    let a = host(&p, "a");
    assert!(a.activate.contains(&Action::Reload { unit: crate::topology::tiers::BALANCER_SERVICE.into() }), "{:#?}", a.activate);
    let rolled = a.activate.iter().find_map(|a| if let Action::RollingRestart { drain, .. } = a { drain.clone() } else { None });
    assert!(rolled.is_some_and(|d| !d.pause_checks), "{:#?}", a.activate);
}

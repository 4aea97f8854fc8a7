//! The scalectl binary end to end.

use std::process::Command;

fn scalectl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scalectl"))
}

#[test]
fn validate_lists_problems_with_locations_and_snippets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scale.yaml");
    std::fs::write(&file, "name: t\napp: {instances: 0}\nhosts:\n  a: {address: 10.0.0.1, roles: [app]}\n").unwrap();
    let out = scalectl().args(["validate", "-f"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let f = file.display();
    assert!(err.contains(&format!("{f}:1:7: no host has the redis role")), "{err}");
    assert!(err.contains(&format!("{f}:2:18: instances must be at least 1, found 0")), "{err}");
    assert!(err.contains(" 2 │ app: {instances: 0}"), "no snippet: {err}");
    assert!(err.contains("2 problems"), "{err}");
}

/// An edited plan artifact cannot pick what deploys behind the command line's back: a topology or
/// release named with the plan that differs from the plan's own is refused, naming both.
#[test]
fn apply_planfile_refuses_a_topology_or_release_other_than_the_plans() {
    let dir = tempfile::tempdir().unwrap();
    let (mine, theirs) = (dir.path().join("mine.yaml"), dir.path().join("theirs.yaml"));
    for f in [&mine, &theirs] {
        std::fs::write(f, "name: t\napp: {instances: 1}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n").unwrap();
    }
    let plan = dir.path().join("plan.json");
    let saved = serde_json::json!({"kind": "scalectl-plan", "format_version": 4, "topology_file": theirs, "release_file": "/srv/theirs.tar"});
    std::fs::write(&plan, saved.to_string()).unwrap();
    let out = scalectl().arg("apply").arg(&plan).arg("-f").arg(&mine).arg("--yes").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("applies the topology {}, but -f names {}", theirs.display(), mine.display())), "{err}");
    let out = scalectl().arg("apply").arg(&plan).args(["--release", "/srv/mine.tar", "--yes"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("applies the release /srv/theirs.tar, but --release names /srv/mine.tar"), "{err}");
    // The plan's own topology, however its path is spelt, passes this check (and fails later: the
    // file holds no plan).
    let same = dir.path().join(".").join("theirs.yaml");
    let out = scalectl().arg("apply").arg(&plan).arg("-f").arg(&same).arg("--yes").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("but -f names") && err.contains("is not a plan saved by"), "{err}");
}

#[test]
fn validate_json_is_versioned() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scale.yaml");
    std::fs::write(&file, "name: t\napp: {instances: 0}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n").unwrap();
    let out = scalectl().args(["validate", "-o", "json", "-f"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["format_version"], 4);
    assert_eq!(v["valid"], false);
    assert_eq!(v["problems"][0]["line"], 2);
    assert_eq!(v["problems"][0]["column"], 18);
}

/// One health path for liveness and readiness, as most small apps have (`/health`, or `/`), is
/// valid, with a note saying what it means; the JSON lists the note too.
#[test]
fn one_health_path_for_both_checks_is_valid_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scale.yaml");
    std::fs::write(&file, "name: t\napp:\n  instances: 1\n  health: {liveness: /health, readiness: /health}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n").unwrap();
    let out = scalectl().args(["validate", "-f"]).arg(&file).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("note: `/health` answers both liveness and readiness"), "{said}");
    let out = scalectl().args(["validate", "-o", "json", "-f"]).arg(&file).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["valid"].as_bool(), v["notes"].as_array().map(Vec::len)), (Some(true), Some(1)), "{v}");
    // Two paths: no note.
    std::fs::write(&file, "name: t\napp: {instances: 1}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n").unwrap();
    let out = scalectl().args(["validate", "-f"]).arg(&file).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("note:"));
}

#[test]
fn every_example_validates() {
    for e in super::EXAMPLES {
        let out = scalectl().args(["validate", "-f", &super::example_path(e)]).output().unwrap();
        assert!(out.status.success(), "{e}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = scalectl().args(["validate", "-f", "/nonexistent/scale.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read topology file /nonexistent/scale.yaml"));
}

#[test]
fn render_writes_one_tree_per_host_and_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for out in [&a, &b] {
        let r = scalectl().args(["render", "--cores", "2", "-f", &super::example_path("three-hosts"), "-o"]).arg(out).output().unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
    let nginx = std::fs::read(a.join("lb-1/etc/nginx/conf.d/shop.conf")).unwrap();
    assert_eq!(nginx, std::fs::read(b.join("lb-1/etc/nginx/conf.d/shop.conf")).unwrap());
    for p in ["app-1/etc/systemd/system/scale-api@.service", "lb-1/etc/prometheus/prometheus.yml", "lb-1/etc/redis/redis.conf", "docker/compose.yaml", "ansible/inventory.yml"] {
        assert_eq!(std::fs::read(a.join(p)).unwrap(), std::fs::read(b.join(p)).unwrap(), "{p}");
    }
    let env = std::fs::metadata(a.join("app-1/etc/scale-api/scale-api.env")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&env.permissions()) & 0o777, 0o640);
    // Every example, rendered by two processes (each with its own hash seeds): the same trees,
    // byte for byte.
    for example in super::EXAMPLES {
        let trees: Vec<_> = ["one", "two"]
            .iter()
            .map(|n| {
                let out = dir.path().join(format!("{example}-{n}"));
                let r = scalectl().args(["render", "--cores", "2", "-f", &super::example_path(example), "-o"]).arg(&out).output().unwrap();
                assert!(r.status.success(), "{example}: {}", String::from_utf8_lossy(&r.stderr));
                tree(&out)
            })
            .collect();
        assert!(trees[0].len() > 5, "{example}: {} files", trees[0].len());
        assert!(trees[0] == trees[1], "{example}: two renders differ");
    }
}

/// Every file under `root`, by its path relative to it.
fn tree(root: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn render_replaces_its_own_output_but_refuses_other_directories() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("precious.txt"), "keep me").unwrap();
    let r = scalectl().args(["render", "-f", &super::example_path("lab"), "-o"]).arg(&out).output().unwrap();
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("is not an earlier scalectl render"));
    assert_eq!(std::fs::read_to_string(out.join("precious.txt")).unwrap(), "keep me");

    let out2 = dir.path().join("out2");
    for example in ["three-hosts", "lab"] {
        let r = scalectl().args(["render", "-f", &super::example_path(example), "-o"]).arg(&out2).output().unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
    // The second render replaced the first whole: no file of three-hosts is left behind.
    assert!(!out2.join("lb-1/etc/nginx/conf.d/shop.conf").exists());
    assert!(out2.join("lb-1/etc/nginx/conf.d/lab.conf").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "staging directories left behind: {leftovers:?}");
}

#[test]
fn an_invalid_topology_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scale.yaml");
    std::fs::write(&file, "name: t\napp: {instances: 0}\n").unwrap();
    let out = dir.path().join("out");
    let r = scalectl().args(["render", "-f"]).arg(&file).arg("-o").arg(&out).output().unwrap();
    assert_eq!(r.status.code(), Some(1));
    assert!(!out.exists());
}

#[test]
fn templates_can_be_overridden_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let tpl = dir.path().join("templates/nginx");
    std::fs::create_dir_all(&tpl).unwrap();
    std::fs::write(tpl.join("site.conf.j2"), "# custom site for {{ t.name }} with {{ instances | length }} instances\n").unwrap();
    let out = dir.path().join("out");
    let r = scalectl()
        .args(["render", "--cores", "2", "-f", &super::example_path("three-hosts"), "--templates"])
        .arg(dir.path().join("templates"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(std::fs::read_to_string(out.join("lb-1/etc/nginx/conf.d/shop.conf")).unwrap(), "# custom site for shop with 4 instances\n");
    // Other templates stay the embedded ones.
    assert!(std::fs::read_to_string(out.join("lb-1/etc/redis/redis.conf")).unwrap().contains("maxmemory-policy allkeys-lru"));
}

#[test]
fn a_broken_override_template_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let tpl = dir.path().join("templates/redis");
    std::fs::create_dir_all(&tpl).unwrap();
    std::fs::write(tpl.join("redis.conf.j2"), "port {{ t.redis.nope }}\n").unwrap();
    let out = dir.path().join("out");
    let r = scalectl().args(["render", "-f", &super::example_path("lab"), "--templates"]).arg(dir.path().join("templates")).arg("-o").arg(&out).output().unwrap();
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("template redis/redis.conf.j2"), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(!out.exists());
}

#[test]
fn schema_is_draft_07_and_matches_the_committed_copy() {
    let out = scalectl().arg("schema").output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["$schema"], "http://json-schema.org/draft-07/schema#");
    assert!(v["properties"]["load_balancer"].is_object());
    let committed = std::fs::read_to_string(format!("{}/examples/scale.schema.json", env!("CARGO_MANIFEST_DIR"))).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), committed, "examples/scale.schema.json is stale: run `scalectl schema > examples/scale.schema.json`");
}

#[test]
fn render_check_exits_2_on_drift_and_0_when_the_tree_matches() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let file = crate::example_path("three-hosts");
    let render = |extra: &[&str]| scalectl().args(["render", "-f", &file, "-o"]).arg(&out).args(extra).output().unwrap();
    assert!(render(&[]).status.success());
    let check = render(&["--check"]);
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stdout));
    let conf = out.join("lb-1/etc/nginx/conf.d/shop.conf");
    std::fs::write(&conf, std::fs::read_to_string(&conf).unwrap().replace("proxy_http_version 1.1", "proxy_http_version 1.0")).unwrap();
    std::fs::remove_file(out.join("ansible/inventory.yml")).unwrap();
    std::fs::write(out.join("stray.conf"), "x").unwrap();
    let check = render(&["--check"]);
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("3 differences"), "{stdout}");
    assert!(stdout.contains("shop.conf (content differs)") && stdout.contains("inventory.yml (missing)") && stdout.contains("stray.conf (not rendered"), "{stdout}");
    // --check writes nothing.
    assert!(out.join("stray.conf").exists() && !out.join("ansible/inventory.yml").exists());
}

#[test]
fn the_ci_examples_use_only_commands_and_flags_scalectl_has() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ci");
    let mut checked = 0;
    for name in ["github-actions.yml", "gitlab-ci.yml"] {
        let text = std::fs::read_to_string(format!("{dir}/{name}")).unwrap();
        let _: serde_json::Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        for line in text.lines() {
            let Some(i) = line.find("scalectl ") else { continue };
            let cmd = &line[i + "scalectl ".len()..];
            let sub = cmd.split_whitespace().next().unwrap();
            if !sub.chars().all(|c| c.is_ascii_lowercase()) || line.contains("cargo install") || line.contains("group:") {
                continue;
            }
            let help = scalectl().args([sub, "--help"]).output().unwrap();
            assert!(help.status.success(), "{name}: `scalectl {sub}` is not a command");
            let help = String::from_utf8_lossy(&help.stdout).to_string() + &String::from_utf8_lossy(&scalectl().arg("--help").output().unwrap().stdout);
            for flag in cmd.split_whitespace().filter(|w| w.starts_with("--") || (w.starts_with('-') && w.len() == 2)) {
                assert!(help.contains(flag), "{name}: `scalectl {sub}` has no flag {flag}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "only {checked} flags checked");
}

#[test]
fn doctor_lists_its_checks_and_replays_a_snapshot_with_exit_codes() {
    use scalectl::doctor::snapshot::{InstanceSample, RedisSample, Snapshot};
    let out = scalectl().args(["doctor", "--list"]).output().unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    for id in ["healthy", "crash-loop", "cpu-saturated-scale-up", "cpu-saturated-scale-out", "event-loop-blocked", "fd-exhaustion", "load-imbalance", "redis-down"] {
        assert!(list.contains(id), "--list lacks {id}");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut s = Snapshot { format_version: 1, topology: "t".into(), taken_at: "2026-11-23T00:00:00Z".into(), window_s: 300, ..Default::default() };
    s.instances.push(InstanceSample { instance: "a-3000".into(), host: "a".into(), up: true, weight: 1, ..Default::default() });
    s.redis = Some(RedisSample { up: true, ..Default::default() });
    let path = dir.path().join("snap.json");
    std::fs::write(&path, serde_json::to_string(&s).unwrap()).unwrap();
    let out = scalectl().args(["doctor", "--snapshot"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("healthy"));

    s.redis.as_mut().unwrap().up = false;
    std::fs::write(&path, serde_json::to_string(&s).unwrap()).unwrap();
    let out = scalectl().args(["doctor", "-o", "json", "--snapshot"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["format_version"], 1);
    assert_eq!(d["findings"][0]["id"], "redis-down");
    assert!(d["findings"][0]["path"].as_array().unwrap().iter().any(|p| p.as_str().unwrap().contains("Redis up? no")));

    std::fs::write(&path, "{\"not\": \"a snapshot\"}").unwrap();
    let out = scalectl().args(["doctor", "--snapshot"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a doctor snapshot"));
}

#[test]
fn completions_and_man_page_come_from_the_real_flags() {
    let out = scalectl().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    let bash = String::from_utf8_lossy(&out.stdout);
    // Every subcommand and a flag of one of them, as clap defines them.
    for word in ["rollback", "reload", "completions", "--detailed-exitcode", "--ready-timeout"] {
        assert!(bash.contains(word), "bash completion lacks {word}");
    }
    let out = scalectl().args(["completions", "zsh"]).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("#compdef scalectl"));
    let out = scalectl().arg("man").output().unwrap();
    let man = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(man.contains(".TH scalectl"), "{man}");
    assert!(man.contains("rollback"), "{man}");
}

#[test]
fn a_broken_topology_is_reported_once_by_every_live_command() {
    // A broken topology is reported once, by validation, whatever the target: the file is parsed
    // and validated once per command.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scale.yaml");
    std::fs::write(&file, "name: t\ntarget: docker\napp: {instances: 0}\n").unwrap();
    for cmd in ["plan", "status", "reload", "rollback"] {
        let out = scalectl().args([cmd, "-f"]).arg(&file).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.matches(": 1 problem").count(), 1, "{cmd}: {err}");
        assert!(err.contains("scale.yaml:3:18: instances must be at least 1, found 0"), "{cmd}: {err}");
    }
}

/// `pack` writes app.program's release as the tar apply uploads: the same files give the same
/// bytes, its sha256 prefix is the release id it prints, and real tar lists the app's files.
#[test]
fn pack_writes_the_programs_release_as_one_reproducible_tar() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
    let node = crate::example_path("node");
    for out in [&a, &b] {
        let o = scalectl().args(["pack", "-f", &node, "-o"]).arg(out).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let bytes = std::fs::read(out).unwrap();
        let id = scalectl::plan::Release::new(&bytes, true).id;
        assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("release {id} (")), "{}", String::from_utf8_lossy(&o.stdout));
    }
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(), "two packs of the same files differ");
    let list = Command::new("tar").arg("-tf").arg(&a).output().unwrap();
    let names = String::from_utf8_lossy(&list.stdout);
    assert!(names.lines().any(|l| l.trim_start_matches("./") == "server.js") && names.contains("node_modules/express/"), "{names}");
    // scale-api's release is its binary: nothing to pack, and nothing written.
    let o = scalectl().args(["pack", "-f", &crate::example_path("lab"), "-o"]).arg(dir.path().join("c.tar")).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("pack is for app.program"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!dir.path().join("c.tar").exists());
}

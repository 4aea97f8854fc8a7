//! Every rendered file checked by the real tool that will read it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use scalectl::render::{self, Facts, RenderedFile, Templates};
use scalectl::topology;

use super::{render_example, require, EXAMPLES};

/// A server a test started, killed however the test ends (a failed assertion must not leave it
/// listening on its port).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn files_named<'a>(files: &'a [RenderedFile], suffix: &str) -> Vec<&'a RenderedFile> {
    files.iter().filter(|f| f.path.ends_with(suffix)).collect()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A topology whose TLS files exist: nginx -t opens the certificate and key.
fn tls_topology(dir: &Path) -> topology::Topology {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = run(Command::new(require("openssl")).args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=solo.example.com", "-keyout"]).arg(&key).arg("-out").arg(&cert));
    assert!(out.status.success(), "{}", text(&out));
    let source = std::fs::read_to_string(super::example_path("single-host"))
        .unwrap()
        .replace("/etc/letsencrypt/live/solo.example.com/fullchain.pem", cert.to_str().unwrap())
        .replace("/etc/letsencrypt/live/solo.example.com/privkey.pem", key.to_str().unwrap());
    topology::parse("single-host-tls.yaml", &source).unwrap_or_else(|p| panic!("{p}"))
}

fn nginx_test(site: &str, dir: &Path) -> Output {
    let site_path = dir.join("site.conf");
    std::fs::write(&site_path, site).unwrap();
    let main = format!(
        "pid {dir}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n  include /etc/nginx/mime.types;\n  access_log off;\n  include {site};\n}}\n",
        dir = dir.display(),
        site = site_path.display()
    );
    let main_path = dir.join("nginx.conf");
    std::fs::write(&main_path, main).unwrap();
    run(Command::new(require("nginx")).arg("-t").arg("-c").arg(&main_path))
}

/// Every host's packet filter is accepted by nft (check mode: nothing is loaded). Host names are
/// given TEST-NET addresses first (nft resolves names when it loads the file, and the examples'
/// names resolve only on their own networks); a broken rule is caught.
#[test]
fn nft_accepts_every_hosts_packet_filter() {
    let mut checked = 0;
    for example in EXAMPLES {
        let t = topology::parse(example, &std::fs::read_to_string(super::example_path(example)).unwrap()).unwrap();
        for f in files_named(&render_example(example), "/etc/scalectl/firewall.nft") {
            let mut rules = f.content.clone();
            for (i, h) in t.hosts.iter().enumerate() {
                if h.address.parse::<std::net::IpAddr>().is_err() {
                    rules = rules.replace(&h.address, &format!("192.0.2.{}", i + 1));
                }
            }
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), &rules).unwrap();
            let out = run(Command::new(require("nft")).arg("-c").arg("-f").arg(file.path()));
            assert!(out.status.success(), "{example} {}: {}\n{rules}", f.host, text(&out));
            // scalectl's own table, replaced whole: nothing else of the host's ruleset.
            assert!(rules.contains("\ndelete table inet scalectl\ntable inet scalectl {") && !rules.contains("flush ruleset"), "{rules}");
            checked += 1;
            if checked == 1 {
                let broken = rules.replace("reject with tcp reset", "reject with tcp nonsense");
                std::fs::write(file.path(), &broken).unwrap();
                assert!(!run(Command::new("nft").arg("-c").arg("-f").arg(file.path())).status.success(), "a broken rule passed");
            }
        }
    }
    assert!(checked >= 10, "only {checked} packet filters");
}

#[test]
fn nginx_accepts_every_site_config() {
    let mut checked = 0;
    for example in EXAMPLES {
        let dir = tempfile::tempdir().unwrap();
        let files = if *example == "single-host" {
            render::render(&tls_topology(dir.path()), &Facts::with_default_cores(2), &Templates::embedded()).unwrap()
        } else {
            render_example(example)
        };
        for f in files.iter().filter(|f| f.path.contains("nginx/") && f.path.ends_with(".conf")) {
            // nginx -t resolves upstream host names; lab and compose names resolve only on the
            // fleet's own network, so they stand in as 127.0.0.1 here. And it makes the cache's
            // directory, in the test's own (the image's parent directory may not be here).
            let site: String = f
                .content
                .lines()
                .map(|l| match l.trim_start().strip_prefix("server ") {
                    Some(rest) if l.starts_with("    server ") && !rest.starts_with(|c: char| c.is_ascii_digit() || c == '[') => {
                        let port = rest.split_once(':').map(|(_, p)| p).unwrap_or(rest);
                        format!("    server 127.0.0.1:{port}")
                    }
                    _ => match l.strip_prefix("proxy_cache_path ").and_then(|rest| rest.split_once(' ')) {
                        Some((_, rest)) => format!("proxy_cache_path {} {rest}", dir.path().join("cache").display()),
                        None => l.to_string(),
                    },
                })
                .collect::<Vec<_>>()
                .join("\n");
            let out = nginx_test(&site, dir.path());
            assert!(out.status.success(), "nginx -t refused {example} {}:{}\n{}\n{}", f.host, f.path, text(&out), f.content);
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} nginx configs checked");
}

/// The load balancer's block of the instances' metrics, on a real nginx running the node example's
/// rendered site in front of a backend that answers every path (as Express does, matching paths
/// case-insensitively and with a trailing slash): every spelling such a router takes for
/// `/metrics` gets nginx's 404, and other paths still reach the backend.
/// An example's load-balancer site on a real nginx, on this test's ports, proxying to
/// `backend_port` (the balancer's place), with its cache (if any) in a temporary directory.
struct SiteOnNginx {
    port: u16,
    _dir: tempfile::TempDir,
    _nginx: Killed,
}

impl SiteOnNginx {
    fn start(example: &str, backend_port: u16) -> SiteOnNginx {
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (port, status_port) = (free(), free());
        let files = render_example(example);
        let site = files.iter().find(|f| f.path.starts_with("/etc/nginx/conf.d/")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let content: String = site
            .content
            .lines()
            .map(|l| match l.trim_start() {
                s if s.starts_with("server ") && l.starts_with("    server ") => format!("    server 127.0.0.1:{backend_port};"),
                "listen 80;" => format!("    listen 127.0.0.1:{port};"),
                s if s.starts_with("listen 127.0.0.1:") => format!("    listen 127.0.0.1:{status_port};"),
                s if s.starts_with("access_log /") => "    access_log off;".to_string(),
                s if s.starts_with("proxy_cache_path /") => {
                    let (_, rest) = s.split_once(' ').unwrap();
                    let (_, rest) = rest.split_once(' ').unwrap();
                    format!("proxy_cache_path {} {rest}", cache.display())
                }
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert!(content.contains(&format!("listen 127.0.0.1:{port};")), "{content}");
        let checked = nginx_test(&content, dir.path());
        assert!(checked.status.success(), "{}", text(&checked));
        let nginx = Killed(Command::new(require("nginx")).arg("-c").arg(dir.path().join("nginx.conf")).args(["-g", "daemon off; master_process off;"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap());
        SiteOnNginx { port, _dir: dir, _nginx: nginx }
    }

    /// curl's status code, response headers and body for `path`, with `headers`.
    fn get(&self, path: &str, headers: &[&str]) -> (String, String, String) {
        let mut curl = Command::new(require("curl"));
        curl.args(["-s", "--path-as-is", "--max-time", "5", "-D", "/dev/stderr", "-o", "-", "-w", "\n%{http_code}"]);
        for h in headers {
            curl.args(["-H", h]);
        }
        let out = run(curl.arg(format!("http://127.0.0.1:{}{path}", self.port)));
        let t = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = t.rsplit_once('\n').unwrap_or(("", ""));
        (code.to_string(), String::from_utf8_lossy(&out.stderr).to_lowercase(), body.to_string())
    }
}

#[test]
fn nginx_blocks_every_spelling_of_the_metrics_path() {
    use std::io::{Read, Write};
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_port = backend.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in backend.incoming() {
            let Ok(mut c) = conn else { break };
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nbackend");
        }
    });
    let site = SiteOnNginx::start("node", backend_port);
    let get = |path: &str| {
        let (code, _, body) = site.get(path, &[]);
        (code, body)
    };
    for _ in 0..50 {
        if get("/count").0 == "200" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(get("/count"), ("200".into(), "backend".into()), "the site does not reach its backend");
    assert_eq!(get("/metricsx").0, "200", "a path that only begins like /metrics is the app's");
    for path in ["/metrics", "/METRICS", "/Metrics/", "/metrics//", "//metrics", "/%6Detrics", "/metrics%2F", "/./metrics", "/x/../metrics", "/metrics?x=1"] {
        let (code, body) = get(path);
        assert!(code == "404" && body != "backend", "{path} reached the app: {code} {body}");
    }
}

/// The load balancer's cache on a real nginx (examples/three-hosts.yaml caches `/users/`): a repeated
/// GET is a HIT that never reaches the app; an answer that sets a cookie or says private, a request
/// with Authorization, and a path not listed always reach it.
#[test]
fn nginx_caches_a_repeated_get_and_nothing_private() {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_port = backend.local_addr().unwrap().port();
    let reached: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = reached.clone();
    std::thread::spawn(move || {
        for conn in backend.incoming() {
            let Ok(mut c) = conn else { break };
            let mut buf = [0u8; 4096];
            let n = c.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = request.split(' ').nth(1).unwrap_or("").to_string();
            let mut seen = seen.lock().unwrap();
            seen.push(path.clone());
            let extra = match path.as_str() {
                "/users/cookie" => "Set-Cookie: session=abc\r\n",
                "/users/private" => "Cache-Control: private\r\n",
                _ => "",
            };
            // As scale-api does, the request's id back in the answer.
            let id = request.lines().find_map(|l| l.strip_prefix("X-Request-Id: ").or_else(|| l.strip_prefix("x-request-id: "))).unwrap_or("").trim().to_string();
            let body = format!("{path} answer {}", seen.len());
            let _ = c.write_all(format!("HTTP/1.1 200 OK\r\n{extra}X-Request-Id: {id}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes());
        }
    });
    let site = SiteOnNginx::start("three-hosts", backend_port);
    for _ in 0..50 {
        if site.get("/count", &[]).0 == "200" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let times = |path: &str| reached.lock().unwrap().iter().filter(|p| *p == path).count();
    let status = |headers: &str| headers.lines().find_map(|l| l.strip_prefix("x-cache-status: ")).map(|v| v.trim().to_uppercase());

    let ids = |headers: &str| headers.lines().filter_map(|l| l.strip_prefix("x-request-id: ")).map(|v| v.trim().to_string()).collect::<Vec<_>>();
    let (code, headers, first) = site.get("/users/1", &["X-Request-Id: first-request"]);
    assert_eq!((code.as_str(), status(&headers).as_deref()), ("200", Some("MISS")), "{headers}");
    let (_, headers, again) = site.get("/users/1", &["X-Request-Id: second-request"]);
    assert_eq!(status(&headers).as_deref(), Some("HIT"), "{headers}");
    assert_eq!(again, first, "the cached answer is the first one");
    assert_eq!(times("/users/1"), 1, "a HIT reached the app");
    assert_eq!(ids(&headers), vec!["second-request"], "a cached answer carries this request's id, and only it");

    let (_, headers, _) = site.get("/users/1", &["Authorization: Bearer x"]);
    assert_eq!(status(&headers).as_deref(), Some("BYPASS"), "{headers}");
    assert_eq!(times("/users/1"), 2, "a request with Authorization is the app's");
    let (_, headers, shared) = site.get("/users/1", &[]);
    assert_eq!((status(&headers).as_deref(), shared.as_str()), (Some("HIT"), first.as_str()), "the answer to Authorization was stored over the shared one: {headers}");

    // A request with a cookie is the app's: its answer may be that user's.
    let (_, headers, _) = site.get("/users/1", &["Cookie: session=abc"]);
    assert_eq!(status(&headers).as_deref(), Some("BYPASS"), "{headers}");
    assert_eq!(times("/users/1"), 3, "a request with a cookie is the app's");
    let (_, _, shared) = site.get("/users/1", &[]);
    assert_eq!(shared, first, "the answer to a cookie was stored over the shared one");
    for private in ["/users/cookie", "/users/private"] {
        for _ in 0..2 {
            let (_, headers, _) = site.get(private, &[]);
            assert_ne!(status(&headers).as_deref(), Some("HIT"), "{private}: {headers}");
        }
        assert_eq!(times(private), 2, "{private} was served from the cache");
    }
    let before = times("/count");
    for _ in 0..2 {
        let (_, headers, _) = site.get("/count", &[]);
        assert_eq!(status(&headers), None, "a path not listed is not cached: {headers}");
    }
    assert_eq!(times("/count"), before + 2, "a path not listed was served from the cache");
}

#[test]
fn nginx_test_catches_a_broken_config() {
    // The harness itself must fail on a bad directive, or the test above proves nothing.
    let dir = tempfile::tempdir().unwrap();
    let out = nginx_test("server { listen 80; proxy_pas http://x; }\n", dir.path());
    assert!(!out.status.success());
}

/// A root with the system's units and fake binaries, so `systemd-analyze verify` resolves everything.
fn systemd_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
    let out = run(Command::new("cp").args(["-a", "/usr/lib/systemd/system"]).arg(root.join("usr/lib/systemd/")));
    assert!(out.status.success(), "{}", text(&out));
    // usr/bin/node: examples/node.yaml runs `[node, server.js]` (Debian's nodejs puts it there).
    // usr/sbin/nft: the packet filter's unit (Debian's nftables).
    // usr/sbin/logrotate: the collector's rotation (Debian's logrotate).
    // usr/bin/patroni, usr/bin/etcd: the database's members and their leader lock (Debian's packages).
    // opt/scale-api/releases/i/scale-api: the release command's unit, verified as instance `i`.
    for bin in ["opt/scale-api/current/scale-api", "opt/scale-api/releases/i/scale-api", "usr/bin/redis-server", "usr/bin/prometheus-redis-exporter", "bin/kill", "usr/bin/node", "usr/sbin/nft", "usr/sbin/logrotate", "usr/bin/patroni", "usr/bin/etcd"] {
        let p = root.join(bin);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    root
}

fn verify(root: &Path, units: &[&str]) -> Output {
    run(Command::new(require("systemd-analyze")).args(["verify", "--man=no"]).arg(format!("--root={}", root.display())).args(units))
}

#[test]
fn systemd_accepts_every_unit() {
    let mut checked = 0;
    for example in EXAMPLES {
        let files = render_example(example);
        for f in &files {
            let is_unit = f.path.starts_with("/etc/systemd/system/");
            if !is_unit {
                continue;
            }
            let dir = tempfile::tempdir().unwrap();
            let root = systemd_root(dir.path());
            let dest = root.join(f.path.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::write(&dest, &f.content).unwrap();
            let unit = if f.path.ends_with("scale-api@.service") {
                // The instance requires its socket unit: the same host's rendered one.
                let socket = files.iter().find(|s| s.host == f.host && s.path.ends_with("scale-api@.socket")).unwrap();
                std::fs::write(root.join("etc/systemd/system/scale-api@.socket"), &socket.content).unwrap();
                "scale-api@3000.service".to_string()
            } else if f.path.ends_with("scale-api@.socket") {
                let service = files.iter().find(|s| s.host == f.host && s.path.ends_with("scale-api@.service")).unwrap();
                std::fs::write(root.join("etc/systemd/system/scale-api@.service"), &service.content).unwrap();
                "scale-api@3000.socket".to_string()
            } else if let Some((dir, _)) = f.path.split_once(".service.d/") {
                // A drop-in applies to Debian's unit, which the root gets from the real package.
                let unit = format!("{}.service", dir.rsplit('/').next().unwrap());
                std::fs::copy(format!("/lib/systemd/system/{unit}"), root.join("etc/systemd/system").join(&unit))
                    .unwrap_or_else(|e| panic!("{unit} from Debian's package: {e} (scripts/setup.sh installs it)"));
                unit
            } else {
                Path::new(&f.path).file_name().unwrap().to_string_lossy().into_owned()
            };
            if unit == "scalectl-logrotate.timer" {
                let service = files.iter().find(|s| s.host == f.host && s.path == "/etc/systemd/system/scalectl-logrotate.service").unwrap();
                std::fs::write(root.join("etc/systemd/system/scalectl-logrotate.service"), &service.content).unwrap();
            }
            if unit.starts_with("scalectl-instances.") {
                // The timer runs the service, which runs the rendered script: the root gets both.
                for path in ["/etc/systemd/system/scalectl-instances.service", scalectl::render::INSTANCES_SCRIPT] {
                    let other = files.iter().find(|s| s.host == f.host && s.path == path).unwrap_or_else(|| panic!("{} has no {path}", f.host));
                    let dest = root.join(path.trim_start_matches('/'));
                    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
                    std::fs::write(&dest, &other.content).unwrap();
                    std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(other.mode)).unwrap();
                }
            }
            if unit == "scale-api.target" {
                std::fs::write(root.join("etc/systemd/system/scale-api@.service"), "[Service]\nExecStart=/opt/scale-api/current/scale-api\n").unwrap();
            }
            let out = verify(&root, &[&unit]);
            let complaints: Vec<String> = text(&out).lines().filter(|l| l.contains("/etc/systemd/system/") || l.contains(&unit)).map(String::from).collect();
            assert!(out.status.success() && complaints.is_empty(), "systemd-analyze verify on {example} {}:{}\n{}\n{}", f.host, f.path, text(&out), f.content);
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} units checked");
}

#[test]
fn systemd_verify_catches_an_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = systemd_root(dir.path());
    let unit = render_example("three-hosts").into_iter().find(|f| f.path.ends_with("scale-api@.service")).unwrap();
    std::fs::create_dir_all(root.join("etc/systemd/system")).unwrap();
    std::fs::write(root.join("etc/systemd/system/scale-api@.service"), unit.content.replace("MemoryMax=", "MemoryMx=")).unwrap();
    let out = verify(&root, &["scale-api@3000.service"]);
    assert!(text(&out).contains("Unknown key 'MemoryMx'"), "{}", text(&out));
}

#[test]
fn promtool_accepts_every_prometheus_config_and_rule_file() {
    let promtool = require("promtool");
    let mut checked = 0;
    for example in EXAMPLES {
        let files = render_example(example);
        let dir = tempfile::tempdir().unwrap();
        for f in files_named(&files, "rules.yml") {
            let p = dir.path().join("rules.yml");
            std::fs::write(&p, &f.content).unwrap();
            let out = run(Command::new(&promtool).args(["check", "rules"]).arg(&p));
            assert!(out.status.success(), "promtool check rules on {example} {}:{}\n{}", f.host, f.path, text(&out));
            // Two of them watch Redis, which a topology without it does not run; a queue of the
            // workers adds its six recorded series and three alerts (WorkersDown on hosts only:
            // nothing reports a docker worker to Prometheus).
            let t = super::load_example(example);
            let workers_down = usize::from(f.host != "docker");
            let queue = t.app.workers.as_ref().and_then(|w| w.queue.as_ref()).map_or(0, |_| 8 + workers_down);
            // The database adds its five (PostgresDown, NoLeader, ReplicaLagHigh, ConnectionsNearMax, LeaderChanged).
            let database = if t.database.is_some() { 5 } else { 0 };
            let rules = if t.redis.is_some() { 12 } else { 10 } + queue + database;
            assert!(text(&out).contains(&format!("SUCCESS: {rules} rules found")), "{}", text(&out));
            checked += 1;
        }
        for f in files_named(&files, "prometheus.yml") {
            // Point the absolute paths at this test's copies of the rule and target files.
            let scalectl_dir = dir.path().join("scalectl");
            std::fs::create_dir_all(&scalectl_dir).unwrap();
            for other in files.iter().filter(|o| o.host == f.host && (o.path.ends_with("rules.yml") || o.path.ends_with("targets.json"))) {
                let name = Path::new(&other.path).file_name().unwrap();
                std::fs::write(scalectl_dir.join(name), &other.content).unwrap();
            }
            let config = f.content.replace("/etc/prometheus/scalectl/", &format!("{}/", scalectl_dir.display()));
            let p = dir.path().join("prometheus.yml");
            std::fs::write(&p, config).unwrap();
            let out = run(Command::new(&promtool).args(["check", "config"]).arg(&p));
            assert!(out.status.success(), "promtool check config on {example} {}:{}\n{}", f.host, f.path, text(&out));
            checked += 1;
        }
        for f in files_named(&files, "targets.json") {
            let groups: serde_json::Value = serde_json::from_str(&f.content).unwrap();
            assert!(groups.as_array().is_some_and(|g| !g.is_empty()), "{}", f.content);
        }
    }
    assert!(checked >= 10, "only {checked} prometheus files checked");
}

/// Start redis-server on a rendered config (port, dir and supervision overridden for the test).
fn start_redis(conf: &Path, dir: &Path, port: u16) -> std::process::Child {
    Command::new(require("redis-server"))
        .arg(conf)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
        .arg(dir)
        .args(["--supervised", "no", "--daemonize", "no", "--pidfile", ""])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The Redis auth include apply writes on `host` of an example, with a stand-in password.
fn rendered_auth(example: &str, host: &str) -> String {
    let t = crate::load_example(example);
    let values = scalectl::render::SecretValues { redis_password: Some("test-only-password".into()), ..Default::default() };
    let files = scalectl::render::render_secrets(&t, &values, &scalectl::render::Templates::embedded()).unwrap();
    // The same include on every target (the docker view names its host `redis`).
    files.into_iter().find(|f| (f.host == host || host == "docker") && f.path.contains("auth")).map(|f| f.content).unwrap_or_default()
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = run(Command::new(require("redis-cli")).args(["-p", &port.to_string()]).args(args));
    text(&out).trim().to_string()
}

fn wait_for_redis(port: u16, mut child: std::process::Child, auth: &[&str]) -> std::process::Child {
    for _ in 0..100 {
        let mut args = auth.to_vec();
        args.push("PING");
        if redis_cli(port, &args).ends_with("PONG") {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let out = child.wait_with_output().map(|o| text(&o)).unwrap_or_default();
            panic!("redis-server exited with {status} on the rendered config:\n{out}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("redis-server did not answer on port {port}");
}

#[test]
fn redis_server_runs_on_every_rendered_config() {
    let mut port = 26379;
    for example in EXAMPLES {
        for f in render_example(example).iter().filter(|f| f.path.ends_with("redis.conf")) {
            port += 1;
            // On hosts Redis never listens on every interface, and protected mode stays on.
            if f.host != "docker" {
                let bind = f.content.lines().find(|l| l.starts_with("bind ")).unwrap_or_else(|| panic!("{example}: no bind"));
                assert!(!bind.contains('*') && bind.contains("127.0.0.1"), "{example} {}: {bind}", f.host);
                assert!(f.content.contains("\nprotected-mode yes\n"), "{example} {}", f.host);
            }
            let dir = tempfile::tempdir().unwrap();
            // Redis enters `dir` while reading the file, and the password file is written by apply:
            // both point into this test's directory (the password file as apply renders it).
            let auth_file = dir.path().join("scalectl-auth.conf");
            std::fs::write(&auth_file, rendered_auth(example, &f.host)).unwrap();
            // scalectl's admin user, made by the script apply runs on the Redis host.
            let made = std::process::Command::new("sh").arg("-c").arg(scalectl::exec::commands::ensure_redis_admin_in(dir.path().to_str().unwrap())).output().unwrap();
            assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
            let content: String = f
                .content
                .lines()
                .map(|l| match l.split_once(' ') {
                    Some(("include", p)) if p.ends_with("/scalectl-admin.conf") => format!("include {}", dir.path().join("scalectl-admin.conf").display()),
                    Some(("include", _)) => format!("include {}", auth_file.display()),
                    Some(("dir", _)) => format!("dir {}", dir.path().display()),
                    // The host's address is not this machine's (the lab test binds it for real).
                    Some(("bind", _)) => "bind 127.0.0.1".to_string(),
                    _ => l.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n");
            let auth: Vec<&str> = if f.content.contains("\ninclude ") { vec!["-a", "test-only-password", "--no-auth-warning"] } else { vec![] };
            let conf = dir.path().join("redis.conf");
            std::fs::write(&conf, content).unwrap();
            let mut child = wait_for_redis(port, start_redis(&conf, dir.path(), port), &auth);
            let maxmemory = f.content.lines().find_map(|l| l.strip_prefix("maxmemory ")).unwrap().to_string();
            // Reading the configuration is the exporter's, with a password of its own.
            let exporter_pw = scalectl::render::redis_exporter_password("test-only-password");
            let exporter_auth = ["--user", "scalectl-exporter", "-a", exporter_pw.as_str(), "--no-auth-warning"];
            let reader: Vec<&str> = if auth.is_empty() { vec![] } else { exporter_auth.to_vec() };
            let mut args = reader.clone();
            args.extend(["CONFIG", "GET", "maxmemory"]);
            let answer = redis_cli(port, &args);
            let mut args = reader.clone();
            args.extend(["CONFIG", "GET", "maxmemory-policy"]);
            let policy = redis_cli(port, &args);
            if !auth.is_empty() {
                assert!(redis_cli(port, &["PING"]).contains("NOAUTH"), "password not required");
                // The apps' user reads and writes but runs nothing dangerous; the exporter's user
                // reads what it reports and writes nothing.
                let app = |cmd: &[&str]| redis_cli(port, &[auth.as_slice(), cmd].concat());
                let exporter = |cmd: &[&str]| redis_cli(port, &[&exporter_auth[..], cmd].concat());
                // The apps' password is not the exporter's, nor the other way round.
                let with_apps_password = redis_cli(port, &[&["--user", "scalectl-exporter"], auth.as_slice(), &["PING"]].concat());
                assert!(with_apps_password.contains("WRONGPASS"), "{example}: the exporter's user takes the apps' password: {with_apps_password}");
                assert!(redis_cli(port, &["-a", exporter_pw.as_str(), "--no-auth-warning", "PING"]).contains("WRONGPASS"), "{example}");
                assert_eq!(app(&["SET", "k", "v"]).trim(), "OK");
                assert_eq!(app(&["INCR", "n"]).trim(), "1");
                for cmd in [&["FLUSHALL"][..], &["CONFIG", "SET", "maxmemory", "1"], &["REPLICAOF", "10.0.0.9", "6379"], &["KEYS", "*"], &["CONFIG", "GET", "maxmemory"]] {
                    assert!(app(cmd).contains("NOPERM"), "{example}: the app's user may run {cmd:?}: {}", app(cmd));
                }
                // INFO is read-only, and queue libraries (BullMQ) refuse to start without it.
                assert!(app(&["INFO", "server"]).contains("redis_version:"), "{example}: the app's user cannot read INFO: {}", app(&["INFO", "server"]));
                assert!(exporter(&["INFO", "memory"]).contains("used_memory:"), "{example}: the exporter cannot read INFO");
                assert!(exporter(&["CONFIG", "GET", "maxmemory"]).contains("maxmemory"));
                for cmd in [&["SET", "k", "x"][..], &["GET", "k"], &["FLUSHALL"], &["CONFIG", "SET", "maxmemory", "1"], &["CLIENT", "KILL", "TYPE", "normal"], &["CLIENT", "LIST"]] {
                    assert!(exporter(cmd).contains("NOPERM"), "{example}: the exporter's user may run {cmd:?}");
                }
                if f.host != "docker" {
                    // scalectl's admin user changes users and nothing else.
                    let pw = std::fs::read_to_string(dir.path().join("scalectl-admin.pass")).unwrap();
                    let admin = |cmd: &[&str]| redis_cli(port, &[&["--user", "scalectl-admin", "-a", pw.trim(), "--no-auth-warning"][..], cmd].concat());
                    assert_eq!(admin(&["ACL", "SETUSER", "scalectl-exporter", "on"]).trim(), "OK", "{example}");
                    for cmd in [&["GET", "k"][..], &["FLUSHALL"], &["CONFIG", "GET", "maxmemory"]] {
                        assert!(admin(cmd).contains("NOPERM"), "{example}: the admin user may run {cmd:?}");
                    }
                }
            }
            child.kill().ok();
            child.wait().ok();
            assert!(answer.ends_with(&maxmemory), "{example}: maxmemory {answer} != {maxmemory}");
            // Running as rendered: the default, or with a queue on it (the node and docker
            // examples' workers) nothing evicted, since a job evicted is a job lost.
            let wanted = if ["node", "docker"].contains(example) { "noeviction" } else { "allkeys-lru" };
            assert!(f.content.contains(&format!("\nmaxmemory-policy {wanted}\n")), "{example}: rendered without {wanted}");
            assert!(policy.contains(wanted), "{example}: {policy}");
        }
    }
}

/// The attack of a `/scrape?target=` naming another address, on a real redis_exporter run with the
/// lab's rendered arguments and password file against a real Redis on its rendered config: the
/// exporter scrapes its own Redis with its own password, and sends a stranger's listener no
/// password at all (it used to send `AUTH scalectl-exporter <the apps' password>`).
/// Redis and its exporter as apply renders them for `host` of `t` (a stand-in password), on this
/// test's ports: Redis on its config and users, the exporter with its arguments, password file and
/// (with a queue) its script.
struct ExporterOnRedis {
    web_port: u16,
    redis_port: u16,
    dir: tempfile::TempDir,
    _processes: (Killed, Killed),
}

impl ExporterOnRedis {
    fn get(&self, path: &str) -> String {
        text(&run(Command::new(require("curl")).args(["-s", "--max-time", "20", &format!("http://127.0.0.1:{}{path}", self.web_port)])))
    }

    /// The exporter's metrics, once it has scraped its Redis (10 s at most).
    fn metrics(&self) -> String {
        let mut metrics = String::new();
        for _ in 0..100 {
            metrics = self.get("/metrics");
            if metrics.lines().any(|l| l == "redis_up 1") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        metrics
    }

    /// A command as the apps' Redis user.
    fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.redis_port, &[&["-a", "test-only-password", "--no-auth-warning"][..], args].concat())
    }
}

fn exporter_on_redis(t: &topology::Topology, host: &str) -> ExporterOnRedis {
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (redis_port, web_port) = (free(), free());
    let files = render::render(t, &Facts::with_default_cores(2), &Templates::embedded()).unwrap();
    let values = scalectl::render::SecretValues { redis_password: Some("test-only-password".into()), ..Default::default() };
    let secrets = scalectl::render::render_secrets(t, &values, &Templates::embedded()).unwrap();
    let on_redis_host = |path: &str| -> String {
        files.iter().chain(&secrets).find(|f| f.host == host && f.path == path).unwrap_or_else(|| panic!("{host} has no {path}")).content.clone()
    };
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (format!("127.0.0.1:{}", t.redis_port().unwrap()), format!("127.0.0.1:{redis_port}"));
    // Redis on its rendered config and users, on this test's port.
    let auth_file = dir.path().join("scalectl-auth.conf");
    std::fs::write(&auth_file, on_redis_host("/etc/redis/scalectl-auth.conf")).unwrap();
    let conf: String = on_redis_host("/etc/redis/redis.conf")
        .lines()
        .filter(|l| !l.starts_with("include ") || l.ends_with("scalectl-auth.conf"))
        .map(|l| if l.starts_with("include ") { format!("include {}", auth_file.display()) } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.path().join("redis.conf"), conf).unwrap();
    let redis = Killed(wait_for_redis(redis_port, start_redis(&dir.path().join("redis.conf"), dir.path(), redis_port), &["-a", "test-only-password", "--no-auth-warning"]));
    // The exporter with its rendered arguments, password file and script (the same address, moved to this test's port).
    let pwfile = dir.path().join("redis-exporter.json");
    std::fs::write(&pwfile, on_redis_host(scalectl::render::REDIS_EXPORTER_PASSWORDS).replace(&ours, &theirs)).unwrap();
    let defaults = on_redis_host("/etc/default/prometheus-redis-exporter");
    let args_line = defaults.lines().find_map(|l| l.strip_prefix("ARGS=\"")).unwrap().trim_end_matches('"').to_string();
    let args: Vec<String> = args_line
        .split(' ')
        .map(|a| match a.split_once('=') {
            Some(("-redis.addr", v)) => format!("-redis.addr={}", v.replace(&ours, &theirs)),
            Some(("-redis.password-file", _)) => format!("-redis.password-file={}", pwfile.display()),
            Some(("-web.listen-address", _)) => format!("-web.listen-address=127.0.0.1:{web_port}"),
            Some(("-script", path)) => {
                let script = dir.path().join("queue.lua");
                std::fs::write(&script, on_redis_host(path)).unwrap();
                format!("-script={}", script.display())
            }
            _ => a.to_string(),
        })
        .collect();
    assert!(args.iter().any(|a| a.starts_with("-redis.password-file=")), "{args_line}");
    let log = std::fs::File::create(dir.path().join("exporter.log")).unwrap();
    let exporter = Killed(Command::new(require("prometheus-redis-exporter")).args(&args).env_remove("REDIS_PASSWORD").stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap());
    ExporterOnRedis { web_port, redis_port, dir, _processes: (exporter, redis) }
}

/// The database's members as the rendered files make them, against a real PostgreSQL: Patroni's
/// post-bootstrap script makes the app's role and database and the exporter's role, and the postgres
/// exporter with its rendered arguments and queries logs in as that role over the socket (peer, no
/// password) and reports the member's role.
#[test]
fn the_post_bootstrap_script_and_the_postgres_exporter_work_on_a_real_postgresql() {
    let pg = crate::api::Postgres::start();
    let files = render_example("database");
    let on_db = |path: &str| files.iter().find(|f| f.host == "db-1" && f.path == path).unwrap_or_else(|| panic!("db-1 has no {path}")).content.clone();
    let dir = tempfile::tempdir().unwrap();
    // The script reads the app's password from its file: this test's copy.
    let pw_file = dir.path().join("app-password");
    std::fs::write(&pw_file, "test-only-app-pw").unwrap();
    let script = dir.path().join("post-bootstrap.sh");
    let source = on_db(scalectl::topology::tiers::PATRONI_POST_BOOTSTRAP);
    assert!(source.contains(scalectl::topology::tiers::DATABASE_APP_PASSWORD), "{source}");
    std::fs::write(&script, source.replace(scalectl::topology::tiers::DATABASE_APP_PASSWORD, pw_file.to_str().unwrap())).unwrap();
    let out = run(Command::new("sh").arg(&script).arg(pg.url()));
    assert!(out.status.success(), "post-bootstrap: {}", text(&out));
    assert_eq!(pg.psql("select datname from pg_database where datname = 'app'").unwrap(), "app");
    assert_eq!(pg.psql("select pg_has_role('prometheus', 'pg_monitor', 'member')").unwrap(), "t");
    // The app's role logs in with its password (scram-sha-256), to its database.
    let as_app = |sql: &str| run(Command::new(format!("{}/psql", crate::api::PG_BIN)).arg(format!("postgresql://app:test-only-app-pw@127.0.0.1:{}/app", pg.port)).args(["-XAtc", sql]));
    let app = as_app("select current_user");
    assert_eq!(String::from_utf8_lossy(&app.stdout).trim(), "app", "{}", text(&app));
    // A table of the app's, scanned: what doctor's statement and table series count.
    let scan = "select count(*) from scanned where note = 'x'";
    for sql in ["create table scanned (id int, note text)", "insert into scanned select g, md5(g::text) from generate_series(1, 5000) g", scan, scan] {
        let out = as_app(sql);
        assert!(out.status.success(), "{sql}: {}", text(&out));
    }
    // The exporter: its rendered arguments and queries, its socket moved to this server's.
    let defaults = on_db("/etc/default/prometheus-postgres-exporter");
    let value = |key: &str| defaults.lines().find_map(|l| l.strip_prefix(&format!("{key}=\""))).unwrap().trim_end_matches('"').to_string();
    let queries = dir.path().join("queries.yaml");
    std::fs::write(&queries, on_db(scalectl::topology::tiers::POSTGRES_EXPORTER_QUERIES)).unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&queries, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let web_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let args: Vec<String> = value("ARGS")
        .split(' ')
        .map(|a| match a.split_once('=') {
            Some(("--web.listen-address", _)) => format!("--web.listen-address=127.0.0.1:{web_port}"),
            Some(("--extend.query-path", _)) => format!("--extend.query-path={}", queries.display()),
            _ => a.to_string(),
        })
        .collect();
    let dsn = value("DATA_SOURCE_NAME").replace("host=/var/run/postgresql", &format!("host={} port={}", pg.dir.path().display(), pg.port));
    assert!(dsn.contains("user=prometheus") && !dsn.contains("password"), "{dsn}");
    let exporter = Killed(
        Command::new(require("setpriv"))
            .args(["--reuid=prometheus", "--regid=prometheus", "--clear-groups", "--"])
            .arg(require("prometheus-postgres-exporter"))
            .args(&args)
            .env("DATA_SOURCE_NAME", &dsn)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let metrics = (0..50)
        .find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(200));
            reqwest::blocking::get(format!("http://127.0.0.1:{web_port}/metrics")).ok().and_then(|r| r.text().ok()).filter(|m| m.contains("\npg_up "))
        })
        .expect("the postgres exporter never answered on its rendered arguments");
    drop(exporter);
    for line in ["pg_up 1", "scalectl_database_is_replica{server=", "pg_exporter_last_scrape_error 0"] {
        assert!(metrics.lines().any(|l| l.starts_with(line)), "{line} missing:\n{}", metrics.lines().filter(|l| l.starts_with("pg_up") || l.starts_with("scalectl") || l.starts_with("pg_exporter")).collect::<Vec<_>>().join("\n"));
    }
    assert!(metrics.lines().any(|l| l.starts_with("scalectl_database_is_replica{") && l.ends_with(" 0")), "a primary is no replica");
    // The app's statements, normalized (no value), and its table's sequential scans.
    let scanned = |prefix: &str| metrics.lines().find(|l| l.starts_with(prefix) && l.contains("table=\"public.scanned\"")).and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert_eq!(scanned("scalectl_database_table_seq_scans{"), Some(2.0), "{}", metrics.lines().filter(|l| l.starts_with("scalectl_database_table")).collect::<Vec<_>>().join("\n"));
    assert_eq!(scanned("scalectl_database_table_seq_rows_read{"), Some(10000.0));
    let statement = metrics.lines().find(|l| l.starts_with("scalectl_database_statement_calls{") && l.contains("from scanned where note = $1"));
    assert!(statement.is_some_and(|l| l.ends_with(" 2")), "{}", metrics.lines().filter(|l| l.starts_with("scalectl_database_statement")).collect::<Vec<_>>().join("\n"));
    assert!(!metrics.contains("'x'"), "a statement's value reached the metrics");
    assert!(metrics.lines().any(|l| l.starts_with("scalectl_database_statements_seconds{")), "the statements' total time");
}

/// The oldest waiting job's age, which the queue's sizes cannot tell, measured by the exporter's
/// rendered Lua script as its own Redis user: for BullMQ (the node example) the tail of its wait
/// list; for scale-api's stream the first entry its group has not delivered. Real Redis, real
/// exporter, the ACL apply writes.
#[test]
fn the_exporters_script_measures_the_oldest_waiting_job_of_either_queue_kind() {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let oldest = |running: &ExporterOnRedis| -> f64 {
        let metrics = running.metrics();
        let log = std::fs::read_to_string(running.dir.path().join("exporter.log")).unwrap_or_default();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("redis_script_values{key=\"oldest_waiting_seconds\"} "))
            .unwrap_or_else(|| panic!("no oldest_waiting_seconds:\n{}\n{log}", metrics.lines().filter(|l| l.contains("script")).collect::<Vec<_>>().join("\n")))
            .parse()
            .unwrap()
    };
    // BullMQ: jobs are added at the head of `wait`, taken from its tail.
    let node = crate::load_example("node");
    let running = exporter_on_redis(&node, "lb-1");
    assert_eq!(oldest(&running), 0.0, "no job waits");
    for (id, age_ms) in [("1", 45_000), ("2", 5_000)] {
        running.cli(&["HSET", &format!("bull:reports:{id}"), "timestamp", &(now_ms - age_ms).to_string()]);
        running.cli(&["LPUSH", "bull:reports:wait", id]);
    }
    let age = oldest(&running);
    assert!((45.0..60.0).contains(&age), "BullMQ's oldest waiting job is 45 s old, measured {age}");
    // A prioritized job added 90 s ago with a delay of 30 s has waited 60 s.
    running.cli(&["HSET", "bull:reports:3", "timestamp", &(now_ms - 90_000).to_string(), "delay", "30000"]);
    running.cli(&["ZADD", "bull:reports:prioritized", "1", "3"]);
    let age = oldest(&running);
    assert!((60.0..75.0).contains(&age), "the prioritized job, ready 60 s ago, is the oldest: measured {age}");
    drop(running);
    // scale-api's stream: the entry delivered to a worker is in hand, the next one waits.
    let src = std::fs::read_to_string(crate::example_path("lab")).unwrap();
    let edited = src.replacen("  drain_timeout: 5s\n", "  drain_timeout: 5s\n  workers:\n    command: [scale-api, worker]\n    queue: {kind: stream, name: jobs}\n", 1).replace("roles: [app]}", "roles: [app, worker]}");
    let lab = topology::parse("lab.yaml", &edited).unwrap_or_else(|p| panic!("{p}"));
    let running = exporter_on_redis(&lab, "cache-1");
    assert_eq!(oldest(&running), 0.0, "no stream yet");
    running.cli(&["XGROUP", "CREATE", "jobs", "workers", "0", "MKSTREAM"]);
    for age_ms in [60_000, 30_000] {
        running.cli(&["XADD", "jobs", &format!("{}-0", now_ms - age_ms), "job", "x"]);
    }
    running.cli(&["XREADGROUP", "GROUP", "workers", "w", "COUNT", "1", "STREAMS", "jobs", ">"]);
    let age = oldest(&running);
    assert!((30.0..45.0).contains(&age), "the stream's oldest undelivered entry is 30 s old, measured {age}");
}

#[test]
fn the_redis_exporter_gives_no_password_to_a_target_it_was_not_configured_for() {
    use std::io::{Read, Write};
    let t = crate::load_example("lab");
    let running = exporter_on_redis(&t, "cache-1");
    let dir = running.dir.path();
    // A listener of the attacker's: it answers +OK to anything and keeps every byte it is sent.
    let stranger = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stranger_port = stranger.local_addr().unwrap().port();
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let kept = heard.clone();
    std::thread::spawn(move || {
        for conn in stranger.incoming().take(4) {
            let Ok(mut c) = conn else { break };
            c.set_read_timeout(Some(std::time::Duration::from_millis(500))).ok();
            let mut buf = [0u8; 4096];
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
                kept.lock().unwrap().extend_from_slice(&buf[..n]);
                let _ = c.write_all(b"+OK\r\n");
            }
        }
    });
    // Its own Redis, with its own password: up.
    let metrics = running.metrics();
    assert!(
        metrics.lines().any(|l| l == "redis_up 1"),
        "the exporter cannot scrape its own Redis:\n{}\n{}",
        metrics.lines().filter(|l| l.starts_with("redis_up")).collect::<Vec<_>>().join("\n"),
        std::fs::read_to_string(dir.join("exporter.log")).unwrap_or_default()
    );
    // The attack.
    let _ = running.get(&format!("/scrape?target=redis://127.0.0.1:{stranger_port}"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(running);
    let heard = String::from_utf8_lossy(&heard.lock().unwrap()).to_string();
    assert!(!heard.is_empty(), "the exporter never reached the stranger's listener: the attack did not run");
    let exporter_pw = scalectl::render::redis_exporter_password("test-only-password");
    assert!(!heard.contains(&exporter_pw) && !heard.contains("test-only-password") && !heard.contains("AUTH"), "a password went to another address:\n{heard}");
}

/// The Ansible role writes Redis' users itself (from the vault's password): the same users, with
/// the same rules and passwords (the exporter's derived alike), as apply writes.
#[test]
fn the_ansible_redis_users_are_the_ones_apply_writes() {
    use scalectl::render::{redis_exporter_password, sha256_hex};
    let role = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ansible/roles/scalectl_redis/tasks/main.yml")).unwrap();
    let pw = "test-only-password";
    let exporter = redis_exporter_password(pw);
    assert!(role.contains("scalectl_redis_exporter_password: \"{{ ('scalectl-exporter:' ~ scalectl_redis_password) | hash('sha256') }}\""), "the role derives the exporter's password otherwise");
    let queue_acl = "{{ (' ' ~ scalectl_queue_exporter_acl) if scalectl_queue_exporter_acl is defined else '' }}";
    // Without a queue (the lab) and with one (the node example's, whose exporter may read its keys).
    for example in ["node", "lab"] {
        let t = crate::load_example(example);
        // The inventory's value, as the role reads it.
        let inventory = render_example(example).into_iter().find(|f| f.host == "ansible" && f.path == "inventory.yml").unwrap().content;
        let inv: serde_json::Value = serde_saphyr::from_str(&inventory).unwrap();
        let acl = inv["all"]["vars"]["scalectl_queue_exporter_acl"].as_str().map_or(String::new(), |a| format!(" {a}"));
        assert_eq!(acl.is_empty(), example == "lab", "{example}: {inventory}");
        let from_role: Vec<String> = role
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("user "))
            .map(|l| {
                l.replace("{{ scalectl_redis_password | hash('sha256') }}", &sha256_hex(pw.as_bytes()))
                    .replace("{{ scalectl_redis_exporter_password | hash('sha256') }}", &sha256_hex(exporter.as_bytes()))
                    .replace(queue_acl, &acl)
            })
            .collect();
        let values = scalectl::render::SecretValues { redis_password: Some(pw.into()), ..Default::default() };
        let secrets = scalectl::render::render_secrets(&t, &values, &Templates::embedded()).unwrap();
        let auth = secrets.iter().find(|f| f.path == "/etc/redis/scalectl-auth.conf").unwrap();
        let from_apply: Vec<String> = auth.content.lines().filter(|l| l.starts_with("user ")).map(String::from).collect();
        assert_eq!(from_role, from_apply, "{example}");
    }
    let t = crate::load_example("lab");
    let values = scalectl::render::SecretValues { redis_password: Some(pw.into()), ..Default::default() };
    let secrets = scalectl::render::render_secrets(&t, &values, &Templates::embedded()).unwrap();
    let json = secrets.iter().find(|f| f.path == scalectl::render::REDIS_EXPORTER_PASSWORDS).unwrap();
    let map: serde_json::Value = serde_json::from_str(&json.content).unwrap();
    assert_eq!(map, serde_json::json!({ format!("redis://127.0.0.1:{}", t.redis_port().unwrap()): exporter }));
    assert!(render_example("lab").iter().any(|f| f.host == "ansible" && f.content.contains(&format!("scalectl_redis_exporter_target: \"redis://127.0.0.1:{}\"", t.redis_port().unwrap()))));
}

/// Prometheus asks for `observability.prometheus.password`: a real Prometheus on the lab's rendered
/// config, arguments and (apply's) web config refuses a query without the password or with
/// another, answers doctor's client with it, and scrapes itself with the password file.
#[test]
fn prometheus_asks_for_its_password_and_doctor_gives_it() {
    let src = std::fs::read_to_string(crate::example_path("lab")).unwrap().replacen(
        "  prometheus: {scrape_interval: 5s, retention: 1d}",
        "  prometheus: {scrape_interval: 1s, retention: 1d, password: {env: LAB_PROMETHEUS_PASSWORD}}",
        1,
    );
    let t = topology::parse("lab-prometheus-password.yaml", &src).unwrap_or_else(|p| panic!("{p}"));
    let files = render::render(&t, &Facts::with_default_cores(2), &Templates::embedded()).unwrap();
    let password = "test-only-prometheus-pass";
    let values = render::SecretValues { prometheus_password: Some(password.into()), redis_password: Some("x-redis".into()), ..Default::default() };
    let secrets = render::render_secrets(&t, &values, &Templates::embedded()).unwrap();
    let on_mon = |path: &str| files.iter().chain(&secrets).find(|f| f.host == "mon-1" && f.path == path).unwrap_or_else(|| panic!("mon-1 has no {path}")).content.clone();
    assert!(files.iter().all(|f| !f.content.contains(password)), "the password in a rendered file");
    let web = on_mon(render::PROMETHEUS_WEB_CONFIG);
    assert!(web.contains("$2b$10$") && !web.contains(password), "{web}");
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let address = format!("127.0.0.1:{port}");
    for (name, content) in [("web.yml", web), ("prometheus-password", on_mon(render::PROMETHEUS_PASSWORD_FILE)), ("rules.yml", on_mon("/etc/prometheus/scalectl/rules.yml")), ("targets.json", "[]".into())] {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let config = on_mon("/etc/prometheus/prometheus.yml")
        .replace("/etc/prometheus/scalectl/", &format!("{}/", dir.path().display()))
        .replace(render::PROMETHEUS_PASSWORD_FILE, &dir.path().join("prometheus-password").display().to_string())
        .replace("lab-mon-1:9090", &address)
        .replace("127.0.0.1:9093", "127.0.0.1:1");
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let defaults = on_mon("/etc/default/prometheus");
    assert!(defaults.contains(&format!("--web.config.file={}", render::PROMETHEUS_WEB_CONFIG)), "{defaults}");
    let _prometheus = Killed(
        Command::new(require("prometheus"))
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .arg(format!("--web.config.file={}", dir.path().join("web.yml").display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let status = |auth: Option<&str>| -> String {
        let mut c = Command::new(require("curl"));
        c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"]);
        if let Some(a) = auth {
            c.args(["-u", a]);
        }
        text(&run(c.arg(format!("http://{address}/api/v1/query?query=up"))))
    };
    let mut answered = String::new();
    for _ in 0..100 {
        answered = status(Some(&format!("scalectl:{password}")));
        if answered == "200" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(answered, "200", "Prometheus does not answer its password");
    assert_eq!(status(None), "401", "Prometheus answers without its password");
    assert_eq!(status(Some("scalectl:another")), "401");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let url = format!("http://{address}");
    let refused = rt.block_on(async { scalectl::doctor::collect::Prometheus::new(&url, None).unwrap().instant("up").await.unwrap_err() });
    assert!(refused.to_string().contains("asks for a password: set observability.prometheus.password"), "{refused}");
    let doctor = scalectl::doctor::collect::Prometheus::new(&url, Some(password.into())).unwrap();
    // It scrapes itself with the password file: its own job is up.
    let mut up = None;
    for _ in 0..100 {
        up = rt.block_on(doctor.instant(r#"up{job="prometheus"}"#)).unwrap().first().map(|s| s.1);
        if up == Some(1.0) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(up, Some(1.0), "Prometheus cannot scrape itself with its password file");
}

#[test]
fn terraform_parses_with_hcl() {
    let files = render_example("aws-asg");
    let tf: Vec<_> = files.iter().filter(|f| f.host == "terraform" && f.path.ends_with(".tf")).collect();
    assert!(tf.len() >= 5, "{:?}", tf.iter().map(|f| &f.path).collect::<Vec<_>>());
    for f in &tf {
        let body: hcl::Body = hcl::from_str(&f.content).unwrap_or_else(|e| panic!("{}: {e}\n{}", f.path, f.content));
        assert!(body.iter().count() > 0, "{} is empty", f.path);
    }
    let main: hcl::Body = hcl::from_str(&tf.iter().find(|f| f.path == "main.tf").unwrap().content).unwrap();
    let module = main.blocks().find(|b| b.identifier() == "module").expect("module block");
    let attr = |name: &str| module.body().attributes().find(|a| a.key() == name).map(|a| a.expr().to_string()).unwrap();
    assert_eq!(attr("cpu_scale_out"), "70");
    assert_eq!(attr("cpu_scale_in"), "30");
    assert_eq!(attr("min_size"), "2");
    assert_eq!(attr("source"), "\"./modules/asg\"");
    // The units cloud-init installs are the very ones app hosts get.
    let unit = files.iter().find(|f| f.host == "terraform" && f.path == "files/scale-api@.service").unwrap();
    assert!(unit.content.contains("ExecStart=/opt/scale-api/current/scale-api"));
}

#[test]
fn ansible_inventory_lists_every_host_in_its_groups() {
    for example in ["three-hosts", "lab"] {
        let files = render_example(example);
        let inv = files.iter().find(|f| f.host == "ansible").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("inventory.yml");
        std::fs::write(&p, &inv.content).unwrap();
        let out = run(Command::new(require("ansible-inventory")).arg("-i").arg(&p).arg("--list").env("ANSIBLE_INVENTORY_UNPARSED_FAILED", "true"));
        assert!(out.status.success(), "{}", text(&out));
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let t = super::load_example(example);
        for h in &t.hosts {
            for role in &h.roles {
                let group = serde_json::to_value(role).unwrap();
                let members = &list[group.as_str().unwrap()]["hosts"];
                assert!(members.as_array().unwrap().iter().any(|m| m == h.name.as_str()), "{example}: {} not in {group}: {list}", h.name);
            }
            assert_eq!(list["_meta"]["hostvars"][&h.name]["ansible_host"], h.address.as_str());
        }
    }
}

/// The playbook parses, with every role and task, against each rendered inventory (a quote in a
/// shell task's comment once broke ansible's argument splitting, found only by a lab run).
#[test]
fn ansible_playbook_passes_its_syntax_check() {
    for example in ["lab", "node"] {
        let files = render_example(example);
        let inv = files.iter().find(|f| f.host == "ansible" && f.path == "inventory.yml").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("inventory.yml");
        std::fs::write(&p, &inv.content).unwrap();
        let out = run(Command::new(require("ansible-playbook")).current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("ansible")).arg("--syntax-check").arg("-i").arg(&p).arg("site.yml"));
        assert!(out.status.success(), "{example}: {}", text(&out));
    }
}

/// The Ansible role's secret checks, run by a real ansible-playbook on this machine: a secret with
/// a `"` and a newline would add its own line (`EVIL=1`) to every instance's environment file.
#[test]
fn ansible_refuses_a_secret_that_would_add_environment_lines() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = Path::new(env!("CARGO_MANIFEST_DIR")).join("ansible/roles/scalectl_app/tasks/check-secrets.yml");
    let play = dir.path().join("play.yml");
    std::fs::write(&play, format!("- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n    - ansible.builtin.include_tasks: {}\n", tasks.display())).unwrap();
    let run_with = |secrets: serde_json::Value| {
        let vars = dir.path().join("vars.json");
        std::fs::write(&vars, serde_json::json!({ "scalectl_app_secrets": secrets }).to_string()).unwrap();
        run(Command::new(require("ansible-playbook")).arg("-i").arg("localhost,").arg("-e").arg(format!("@{}", vars.display())).arg(&play))
    };
    let fine = run_with(serde_json::json!({"TOKEN": "a-b_c.d/e+f=g h"}));
    assert!(fine.status.success(), "a plain secret is refused:\n{}", text(&fine));
    for hostile in ["x\"\nEVIL=1", "x\nEVIL=1", "$(id)", "x\\"] {
        let out = run_with(serde_json::json!({"TOKEN": hostile}));
        assert!(!out.status.success(), "{hostile:?} passed the checks");
        let said = text(&out);
        assert!(said.contains("cannot be written safely") && !said.contains("EVIL"), "{said}");
    }
    let bad_name = run_with(serde_json::json!({"TOKEN\nEVIL": "x"}));
    assert!(!bad_name.status.success(), "a name with a newline passed");
}

/// One sender that logs without end fills no disk of the collector: the rendered rotation, run by
/// a real logrotate (as its timer runs it), cuts a file past 100 MiB to nothing and keeps at most
/// 4 compressed generations, every file of every host alike.
#[test]
fn the_collectors_files_are_rotated_by_size_and_bounded() {
    let files = render_example("lab");
    let conf = files.iter().find(|f| f.path == scalectl::render::COLLECTOR_LOGROTATE).expect("the monitor's rotation");
    let service = files.iter().find(|f| f.host == conf.host && f.path == "/etc/systemd/system/scalectl-logrotate.service").unwrap();
    assert!(service.content.contains(&format!("ExecStart=/usr/sbin/logrotate --state /var/lib/logrotate/scalectl-collector.state {}", scalectl::render::COLLECTOR_LOGROTATE)), "{}", service.content);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    // The paths under this test's directory; rsyslog is not running here, so nothing to tell.
    let text_conf = conf.content.replace("/var/log/scalectl/", &format!("{}/", logs.display())).replace("/usr/lib/rsyslog/rsyslog-rotate", "true");
    assert_ne!(text_conf, conf.content);
    let conf_path = dir.path().join("rotate.conf");
    std::fs::write(&conf_path, &text_conf).unwrap();
    let noisy = logs.join("app-1/scale-api-3000.log");
    let quiet = logs.join("app-2/scale-api-3000.log");
    std::fs::create_dir_all(noisy.parent().unwrap()).unwrap();
    std::fs::create_dir_all(quiet.parent().unwrap()).unwrap();
    std::fs::write(&quiet, "one line\n").unwrap();
    let line = "x".repeat(1023) + "\n";
    for round in 0..6 {
        // A `logger` loop's worth between two runs of the timer: 101 MiB.
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&noisy).unwrap();
        for _ in 0..(101 * 1024) {
            std::io::Write::write_all(&mut f, line.as_bytes()).unwrap();
        }
        drop(f);
        let out = run(Command::new(require("logrotate")).arg("--state").arg(dir.path().join("state")).arg(&conf_path));
        assert!(out.status.success(), "round {round}: {}", text(&out));
    }
    let mut kept: Vec<String> = std::fs::read_dir(noisy.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    kept.sort();
    // The live file was moved away (rsyslog makes it again at its next line, once told to reopen).
    assert_eq!(kept, ["scale-api-3000.log.1.gz", "scale-api-3000.log.2.gz", "scale-api-3000.log.3.gz", "scale-api-3000.log.4.gz"]);
    let total: u64 = std::fs::read_dir(noisy.parent().unwrap()).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(total < 10 << 20, "{total} bytes kept of 606 MiB written");
    assert_eq!(std::fs::read_to_string(&quiet).unwrap(), "one line\n", "a small file is left alone");
}

/// Log TLS files for `hosts`, issued by apply's own scripts (a real openssl) into `root/HOST`,
/// the fleet log CA in `root/CA_HOST/ca`, as apply lays them out under /etc/scalectl/tls.
fn issue_log_certificates(root: &Path, ca_host: &str, hosts: &[&str]) {
    use scalectl::exec::commands::{log_tls_install_in, log_tls_request_in, log_tls_sign_in, pem_blocks};
    let dir = |h: &str| root.join(h).display().to_string();
    let sh = |script: &str| {
        let out = run(Command::new("sh").arg("-c").arg(script));
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    for h in hosts {
        let csr = pem_blocks(&sh(&log_tls_request_in(&dir(h), h)), "CERTIFICATE REQUEST").unwrap();
        let certs = pem_blocks(&sh(&log_tls_sign_in(&dir(ca_host), ca_host, h, &csr[0])), "CERTIFICATE").unwrap();
        sh(&log_tls_install_in(&dir(h), &certs[0], &certs[1]));
    }
}

/// A rendered rsyslog file of `host` with its log TLS files under `root/HOST`.
fn with_log_tls(content: &str, root: &Path, host: &str) -> String {
    content.replace(render::LOG_TLS_DIR, &root.join(host).display().to_string())
}

#[test]
fn rsyslog_accepts_the_shipping_and_collector_configs() {
    let rsyslogd = require("rsyslogd");
    let files = render_example("three-hosts");
    let t = super::load_example("three-hosts");
    let certs = tempfile::tempdir().unwrap();
    let names: Vec<&str> = t.hosts.iter().map(|h| h.name.as_str()).collect();
    let monitor = t.hosts.iter().find(|h| h.has(topology::Role::Monitor)).unwrap();
    issue_log_certificates(certs.path(), &monitor.name, &names);
    let mut tls = 0;
    for f in files.iter().filter(|f| f.path.starts_with("/etc/rsyslog.d/")) {
        tls += usize::from(f.content.contains("tls=\"on\""));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rsyslog.conf");
        std::fs::write(&p, format!("global(workDirectory=\"{}\")\n{}", dir.path().display(), with_log_tls(&f.content, certs.path(), &f.host))).unwrap();
        let out = run(Command::new(&rsyslogd).arg("-N1").arg("-f").arg(&p));
        assert!(out.status.success() && !text(&out).contains("error"), "rsyslogd -N1 on {}:{}\n{}\n{}", f.host, f.path, text(&out), f.content);
    }
    assert_eq!(tls, names.len() + 1, "every host's shipper and the collector speak TLS");
    // The docker target's shipper and collector: whole configs, as their containers run them.
    let docker: Vec<_> = render_example("docker").into_iter().filter(|f| f.host == "docker" && f.path.starts_with("rsyslog/") && f.path.ends_with(".conf")).collect();
    assert_eq!(docker.len(), 2);
    for f in docker {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rsyslog.conf");
        std::fs::write(&p, &f.content).unwrap();
        let out = run(Command::new(&rsyslogd).arg("-N1").arg("-f").arg(&p));
        assert!(out.status.success() && !text(&out).contains("error"), "rsyslogd -N1 on docker/{}\n{}\n{}", f.path, text(&out), f.content);
        // A negative control: the same check refuses a broken copy.
        std::fs::write(&p, f.content.replace("action(type=", "action(typo=")).unwrap();
        assert!(!run(Command::new(&rsyslogd).arg("-N1").arg("-f").arg(&p)).status.success(), "rsyslogd -N1 accepted a broken docker/{}", f.path);
    }
}

/// A real rsyslogd running the lab's rendered collector, each host's port moved to a free port of
/// 127.0.0.1, with log TLS files issued under `certs` (mon-1's, and the CA there), writing under
/// `dir/base`.
struct Collector {
    child: std::process::Child,
    /// The port that takes each fleet host's lines.
    ports: std::collections::BTreeMap<String, u16>,
    /// Where it writes (its /var/log/scalectl/).
    base: PathBuf,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Collector {
    fn start(dir: &Path, certs: &Path) -> Collector {
        let base = dir.join("base");
        std::fs::create_dir_all(&base).unwrap();
        let collector = render_example("lab").into_iter().find(|f| f.path == "/etc/rsyslog.d/50-scalectl-collector.conf").unwrap();
        let t = super::load_example("lab");
        let mut content = with_log_tls(&collector.content, certs, "mon-1").replace("/var/log/scalectl/", &format!("{}/", base.display()));
        let mut ports = std::collections::BTreeMap::new();
        for h in &t.hosts {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let rendered = format!("address=\"lab-mon-1\" port=\"{}\"", t.relp_port_of(&h.name));
            assert!(content.contains(&rendered), "no input for {}: {content}", h.name);
            content = content.replace(&rendered, &format!("address=\"127.0.0.1\" port=\"{port}\""));
            ports.insert(h.name.clone(), port);
        }
        let conf = dir.join("collector.conf");
        std::fs::write(&conf, format!("global(workDirectory=\"{}\")\n{content}", dir.display())).unwrap();
        let child = Command::new(require("rsyslogd")).arg("-n").arg("-f").arg(&conf).arg("-i").arg(dir.join("collector.pid")).spawn().unwrap();
        let c = Collector { child, ports, base };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while c.ports.values().any(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_err()) {
            assert!(std::time::Instant::now() < deadline, "rsyslogd does not listen");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        c
    }

    /// A RELP session by hand over TLS (openssl s_client as the transport) to the port of fleet
    /// host `port_of`, presenting the certificate and key of `certs/HOST` and trusting the CA of
    /// `trust/HOST`, checking that the collector's certificate names mon-1. Each frame sent
    /// returns the collector's answer line, or None when it answers nothing (refused).
    fn session_to(&self, port_of: &str, certs: &Path, trust: &Path, host: &str) -> Relp {
        let f = render::LogTlsFiles::in_dir(&certs.join(host).display().to_string());
        let ca = render::LogTlsFiles::in_dir(&trust.join(host).display().to_string()).ca;
        let mut child = Command::new(require("openssl"))
            .args(["s_client", "-quiet", "-verify_return_error", "-verify_hostname", "mon-1", "-connect", &format!("127.0.0.1:{}", self.ports[port_of])])
            .args(["-CAfile", &ca, "-cert", &f.cert, "-key", &f.key])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let reader: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let writer = child.stdin.take().unwrap();
        Relp { child: Some(child), reader: std::io::BufReader::new(reader), writer: Box::new(writer), txnr: 0 }
    }

    /// A fleet host's session to its own port, with its own files.
    fn session(&self, certs: &Path, host: &str) -> Relp {
        self.session_to(host, certs, certs, host)
    }

    /// Until the file `rel` under the base has a line containing `needle` (10 s at most).
    fn wait_for(&self, rel: &str, needle: &str) -> String {
        let file = self.base.join(rel);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match std::fs::read_to_string(&file) {
                Ok(t) if t.contains(needle) => return t,
                seen => assert!(std::time::Instant::now() < deadline, "{needle:?} not collected in {rel}: {seen:?}"),
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// A RELP session in the clear, to the port of `host`.
    fn plain_session(&self, host: &str) -> Relp {
        let stream = std::net::TcpStream::connect(("127.0.0.1", self.ports[host])).unwrap();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let reader: Box<dyn std::io::Read + Send> = Box::new(stream.try_clone().unwrap());
        Relp { child: None, reader: std::io::BufReader::new(reader), writer: Box::new(stream), txnr: 0 }
    }
}

struct Relp {
    /// openssl s_client, for a session over TLS.
    child: Option<std::process::Child>,
    reader: std::io::BufReader<Box<dyn std::io::Read + Send>>,
    writer: Box<dyn std::io::Write + Send>,
    txnr: u32,
}

impl Drop for Relp {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Relp {
    /// RELP: `TXNR COMMAND DATALEN[ DATA]\n`, each answered by `TXNR rsp ...`.
    fn send(&mut self, cmd: &str, data: &str) -> Option<String> {
        use std::io::{BufRead, Write};
        self.txnr += 1;
        let txnr = self.txnr;
        let frame = if data.is_empty() { format!("{txnr} {cmd} 0\n") } else { format!("{txnr} {cmd} {} {data}\n", data.len()) };
        self.writer.write_all(frame.as_bytes()).ok()?;
        self.writer.flush().ok()?;
        let mut line = String::new();
        self.reader.read_line(&mut line).ok()?;
        if !line.starts_with(&format!("{txnr} rsp ")) {
            return None;
        }
        if cmd == "open" {
            // The offer's remaining lines, up to the frame's trailer.
            let mut more = line.clone();
            while !more.trim_end().ends_with("commands=syslog") {
                more.clear();
                if self.reader.read_line(&mut more).ok()? == 0 {
                    return None;
                }
            }
        }
        Some(line)
    }

    fn open(&mut self) -> Option<String> {
        self.send("open", "relp_version=0\nrelp_software=scalectl-test\ncommands=syslog")
    }
}

/// The collector, run by a real rsyslogd, keeps what a sender says its hostname is inside its own
/// directory: RELP messages (written by hand here, as a compromised host could send them) whose
/// hostname climbs out with `../` land under the base, and an ordinary one where it always did.
#[test]
fn the_collector_writes_no_file_outside_its_directory_whatever_a_sender_says() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("tls");
    issue_log_certificates(&certs, "mon-1", &["mon-1", "app-1"]);
    let collector = Collector::start(dir.path(), &certs);
    let base = collector.base.clone();
    let mut relp = collector.session(&certs, "app-1");
    assert!(relp.open().is_some(), "the collector refuses a fleet host's certificate");
    for host in ["../../ESCAPE", "..", "app-1"] {
        assert!(relp.send("syslog", &format!("<13>1 2026-12-01T00:00:00Z {host} scale-api-3000 - - - hello from {host}")).is_some());
    }
    relp.send("close", "");
    // (The line template drops the first character: a forwarded message's leading space.) Every
    // line is filed under the host that sent it, whatever hostname it claims.
    let collected = collector.wait_for("app-1/scale-api-3000.log", "llo from app-1");
    for claimed in ["../../ESCAPE", ".."] {
        assert!(collector.wait_for("app-1/scale-api-3000.log", &format!("llo from {claimed}")).contains(claimed), "{collected}");
    }
    let out = run(Command::new("find").arg(dir.path()).args(["-name", "*.log"]));
    let logs: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(logs, [base.join("app-1/scale-api-3000.log").display().to_string()], "{logs:?}");
    assert!(!dir.path().join("ESCAPE").exists());
}

/// A line is filed under the host whose certificate sent it: app-1 claiming to be app-2 (a
/// compromised host, or its root's `logger`) lands in app-1's directory; app-1's certificate is
/// refused on app-2's port.
#[test]
fn the_collector_files_a_line_under_the_host_that_sent_it() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("tls");
    issue_log_certificates(&certs, "mon-1", &["mon-1", "app-1", "app-2"]);
    let collector = Collector::start(dir.path(), &certs);
    let mut relp = collector.session(&certs, "app-1");
    assert!(relp.open().is_some(), "app-1 is refused on its own port");
    assert!(relp.send("syslog", "<13>1 2026-12-01T00:00:00Z app-2 scale-api-3000 - - - pretending to be app-2").is_some());
    relp.send("close", "");
    // (The line template drops the first character: a forwarded message's leading space.)
    collector.wait_for("app-1/scale-api-3000.log", "retending to be app-2");
    let mut other = collector.session_to("app-2", &certs, &certs, "app-1");
    let took = other.open().is_some() && other.send("syslog", "<13>1 2026-12-01T00:00:00Z app-2 scale-api-3000 - - - on app-2's port").is_some();
    assert!(!took, "app-2's port took app-1's certificate");
    // app-2's own line, on its own port, is its (the positive twin).
    let mut own = collector.session(&certs, "app-2");
    assert!(own.open().is_some() && own.send("syslog", "<13>1 2026-12-01T00:00:00Z app-2 scale-api-3000 - - - app-2 itself").is_some());
    own.send("close", "");
    let app2 = collector.wait_for("app-2/scale-api-3000.log", "pp-2 itself");
    assert!(!app2.contains("retending") && !app2.contains("n app-2's port"), "{app2}");
}

/// The collector takes lines over TLS only, from a certificate of the fleet's log CA that names
/// one of the fleet's hosts: a session in the clear, one with the CA's certificate for a name
/// that is no host of the fleet, and one whose certificate names a fleet host but comes from
/// another CA are refused before any line; a fleet host's session is taken.
#[test]
fn the_collector_takes_lines_only_over_tls_from_the_fleets_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("tls");
    issue_log_certificates(&certs, "mon-1", &["mon-1", "app-1", "stranger"]);
    // Another CA (on "elsewhere") issues a certificate that names app-1.
    let forged = dir.path().join("forged");
    issue_log_certificates(&forged, "elsewhere", &["app-1"]);
    let collector = Collector::start(dir.path(), &certs);

    let mut refused = Vec::new();
    for (who, mut relp) in [
        ("in the clear", collector.plain_session("app-1")),
        ("the fleet CA's certificate for a name that is no host", collector.session_to("app-1", &certs, &certs, "stranger")),
        // The client trusts the fleet's CA (the collector's certificate passes), and presents
        // another CA's certificate for app-1: only the collector can refuse it.
        ("another CA's certificate for app-1", collector.session_to("app-1", &forged, &certs, "app-1")),
    ] {
        if relp.open().is_some() && relp.send("syslog", &format!("<13>1 2026-12-01T00:00:00Z app-1 scale-api-3000 - - - {who}")).is_some() {
            refused.push(who);
        }
    }
    assert!(refused.is_empty(), "the collector took a session {refused:?}");
    let mut relp = collector.session(&certs, "app-1");
    assert!(relp.open().is_some(), "a fleet host is refused");
    assert!(relp.send("syslog", "<13>1 2026-12-01T00:00:00Z app-1 scale-api-3000 - - - from the fleet").is_some());
    relp.send("close", "");
    let collected = collector.wait_for("app-1/scale-api-3000.log", "the fleet");
    assert_eq!(collected.lines().count(), 1, "only the fleet host's line: {collected}");
}

#[test]
fn yaml_and_json_bundles_parse() {
    let (mut yaml, mut json) = (0, 0);
    for example in EXAMPLES {
        for f in render_example(example) {
            if f.path.ends_with(".yaml") || f.path.ends_with(".yml") {
                // Kubernetes' manifests hold several documents each.
                let v: Result<Vec<serde_json::Value>, _> = serde_saphyr::from_multiple(&f.content);
                assert!(v.is_ok(), "{example} {}:{} is not YAML: {:?}\n{}", f.host, f.path, v.err(), f.content);
                yaml += 1;
            }
            if f.path.ends_with(".json") {
                let v: Result<serde_json::Value, _> = serde_json::from_str(&f.content);
                assert!(v.is_ok(), "{example} {}:{} is not JSON: {:?}\n{}", f.host, f.path, v.err(), f.content);
                json += 1;
            }
        }
    }
    // Prometheus' targets and the dashboards are JSON; compose, Grafana's provisioning, rules are YAML.
    assert!(yaml >= 20 && json >= 10, "{yaml} YAML and {json} JSON files checked");
}

/// compose.yaml's services are the docker target's container specs, field by field (as the
/// cloud-init test holds the autoscaling group to the hosts target).
/// Every docker example, and docker.yaml with secrets of both kinds and a Redis password.
pub fn compose_topologies() -> Vec<(String, topology::Topology)> {
    let mut all: Vec<(String, topology::Topology)> = EXAMPLES.iter().map(|e| (e.to_string(), super::load_example(e))).collect();
    let src = std::fs::read_to_string(super::example_path("docker")).unwrap();
    let from = "redis:\n  persistence: rdb\n";
    assert!(src.contains(from));
    let src = src.replace(from, "redis:\n  persistence: rdb\n  password: {env: DOCK_REDIS_PASSWORD}\n").replace(
        "  instances: 2 ",
        "  secrets: {API_KEY: {env: DOCK_API_KEY}, TOKEN: {file: /etc/dock/token}}\n  instances: 2 ",
    );
    all.push(("docker with secrets".into(), topology::parse("docker-secrets.yaml", &src).unwrap_or_else(|p| panic!("{p}"))));
    all
}

#[test]
fn compose_services_equal_the_docker_targets_container_specs() {
    use serde_json::{Value, json};
    let ms = |v: &Value| humantime::parse_duration(v.as_str().unwrap_or_default()).map(|d| d.as_millis() as u64).unwrap_or(u64::MAX);
    for (example, t) in compose_topologies() {
        let compose = scalectl::plan::docker::compose_file(&t, 2, &Templates::embedded()).unwrap();
        let bundle = render::render(&t, &Facts::with_default_cores(2), &Templates::embedded()).unwrap();
        let c: Value = serde_saphyr::from_str(&compose.content).unwrap();
        let specs = scalectl::plan::docker::bundle_specs(&t, 2, &Templates::embedded()).unwrap();
        let services = c["services"].as_object().unwrap();
        // And the release command's one-off container, when the topology has one.
        assert_eq!(services.len(), specs.containers().len() + specs.release_command.iter().count(), "{example}: one service per container spec");
        for spec in specs.containers() {
            // Compose reads `$X` as a variable of its shell: the service's own `$` are written `$$`.
            let s = &unescape_dollars(&c["services"][&spec.slot]);
            let at = format!("{example}: service {}", spec.slot);
            assert_eq!(s["image"], spec.image.as_str(), "{at}");
            // Secrets reach a container as compose secrets (files), never as variables: replicas
            // export them behind the wrapper, Redis makes its users from the password at start.
            let secret_files: Vec<Value> = s.get("secrets").and_then(Value::as_array).cloned().unwrap_or_default();
            let users_file = spec.role == "redis" && t.redis_password().is_some();
            let mut env: serde_json::Map<String, Value> = spec.env.iter().filter_map(|e| e.split_once('=')).map(|(k, v)| (k.to_string(), json!(v))).collect();
            let cmd: Vec<Value> = spec.cmd.iter().map(|a| json!(a)).collect();
            // A database member: its passwords from compose secrets into the files apply writes, then Patroni.
            let member = spec.role == "database" && spec.user.as_deref() == Some("postgres");
            let database_urls = ["DATABASE_URL", "DB_WRITER_URL", "DB_READER_URL"];
            if member {
                assert_eq!(s["user"], "root", "{at}");
                let want: Vec<Value> = ["DB_REPLICATION_PASSWORD", "DB_REST_PASSWORD", "PGPASSWORD"].iter().map(|n| json!({"source": n, "target": format!("/run/secrets/scalectl/{n}")})).collect();
                assert_eq!(json!(secret_files), json!(want), "{at}");
                let script = s["entrypoint"][2].as_str().unwrap_or_default();
                assert!(script.contains("> /etc/patroni/scalectl.env") && script.ends_with("exec setpriv --reuid=postgres --regid=postgres --init-groups \"$@\""), "{at}: {script}");
                assert_eq!(s["command"], json!(cmd), "{at}");
            } else if spec.secret_env.is_empty() && !users_file {
                assert!(s.get("entrypoint").is_none() && secret_files.is_empty(), "{at}");
                assert_eq!(s.get("command").cloned().unwrap_or(json!([])), json!(cmd), "{at}");
            } else if spec.secrets == scalectl::plan::docker::SecretDelivery::Files {
                let wrapper = scalectl::plan::docker::secrets_entrypoint();
                if t.database.is_some() {
                    // The wrapper, then the database's URLs made from PGPASSWORD (compose has no value to write them with).
                    let script = s["entrypoint"][2].as_str().unwrap_or_default();
                    let urls = script.strip_prefix(wrapper[2].trim_end_matches("exec \"$@\"")).unwrap_or_else(|| panic!("{at}: {script}"));
                    assert!(urls.contains("@db-proxy") && urls.contains("export DATABASE_URL=") && urls.ends_with("exec \"$@\""), "{at}: {urls}");
                } else {
                    assert_eq!(s["entrypoint"], json!(wrapper), "{at}");
                }
                let names: Vec<String> = spec.secret_env.iter().map(|e| e.name.clone()).filter(|n| !database_urls.contains(&n.as_str())).collect();
                let want: Vec<Value> = names.iter().map(|n| json!({"source": n, "target": format!("{}/{n}", scalectl::plan::docker::SECRETS_DIR)})).collect();
                assert_eq!(json!(secret_files), json!(want), "{at}");
                if t.app.program.is_none() {
                    // scale-api's image: its entrypoint behind the wrapper, then the spec's arguments.
                    let mut full = vec![json!("/usr/local/bin/scale-api")];
                    full.extend(cmd.iter().cloned());
                    assert_eq!(s["command"], json!(full), "{at}");
                } else {
                    assert_eq!(s["command"], json!(cmd), "{at}");
                }
            } else if users_file {
                assert_eq!(s["user"], "root", "{at}");
                assert_eq!(json!(secret_files), json!([{"source": "REDIS_PASSWORD", "target": "/run/secrets/scalectl/REDIS_PASSWORD"}]), "{at}");
                assert_eq!(s["command"], json!(cmd), "{at}");
            } else if !matches!(t.redis_password(), Some(topology::SecretRef::Env(_))) {
                // A `{file:}` password cannot reach the exporter's shell-less image.
                assert_eq!(spec.slot, "redis-exporter", "{at}");
                assert!(secret_files.is_empty() && s.get("configs").is_none(), "{at}");
            } else {
                // The Redis exporter: its password map, made by compose from the shell's variable.
                assert_eq!(spec.slot, "redis-exporter", "{at}");
                assert!(secret_files.is_empty(), "{at}");
                let path = scalectl::plan::docker::redis_exporter_password_file();
                assert_eq!(s["configs"], json!([{"source": "redis-exporter-password", "target": path}]), "{at}");
                env.insert("REDIS_PASSWORD_FILE".into(), json!(path));
                let content = c["configs"]["redis-exporter-password"]["content"].as_str().unwrap();
                // The one `$` compose is to read: the password's variable.
                let Some(topology::SecretRef::Env(var)) = t.redis_password() else { unreachable!() };
                assert_eq!(content, format!(r#"{{"redis://redis:6379": "${{{var}:?set {var} for secret REDIS_PASSWORD}}"}}"#), "{at}");
            }
            for (name, secret) in c.get("secrets").and_then(Value::as_object).into_iter().flatten() {
                assert!(!database_urls.contains(&name.as_str()), "{at}: the URL {name} is made at start, not a compose secret");
                let want = match spec.secret_env.iter().find(|e| &e.name == name).and_then(|e| e.from.clone()) {
                    Some(topology::SecretRef::Env(var)) => json!({"environment": var}),
                    Some(topology::SecretRef::File(path)) => json!({"file": path}),
                    None => continue,
                };
                assert_eq!(secret, &want, "{at}: secret {name}");
            }
            let compose_env = s.get("environment").and_then(Value::as_object).cloned().unwrap_or_default();
            assert_eq!(Value::Object(compose_env), Value::Object(env), "{at}: environment");
            match &spec.health {
                Some(h) => {
                    let hc = &s["healthcheck"];
                    assert_eq!(hc["test"], json!(h.test), "{at}");
                    assert_eq!((ms(&hc["interval"]), ms(&hc["timeout"]), ms(&hc["start_period"])), (h.interval_ms, h.timeout_ms, h.start_period_ms), "{at}");
                    assert_eq!(hc["retries"], h.retries, "{at}");
                }
                None => assert!(s.get("healthcheck").is_none(), "{at}"),
            }
            assert_eq!(ms(&s["stop_grace_period"]), spec.stop_timeout_s as u64 * 1000, "{at}");
            assert_eq!(s.get("mem_limit").and_then(Value::as_u64), spec.memory_bytes, "{at}");
            assert_eq!(s.get("cpus").and_then(Value::as_f64), spec.nano_cpus.map(|n| n as f64 / 1e9), "{at}");
            assert_eq!(s["ulimits"]["nofile"]["soft"].as_u64(), spec.nofile, "{at}");
            let ports: Vec<String> = spec.publish.iter().map(|p| format!("127.0.0.1:{}:{}", p.host_port, p.container_port)).collect();
            assert_eq!(s.get("ports").cloned().unwrap_or(json!([])), json!(ports), "{at}");
            // Volumes, read-only binds, and every non-secret file the spec bakes in, mounted from the
            // bundle (Redis' users file: its template, which the start fills in).
            let mut mounts: Vec<String> = spec.volumes.iter().map(|(v, p)| format!("{v}:{p}")).collect();
            mounts.extend(spec.binds_ro.iter().map(|(h, p)| format!("{h}:{p}:ro")));
            mounts.extend(spec.files.iter().filter(|f| !f.sensitive).map(|f| format!("./{}:{}:ro", f.source, f.path)));
            if users_file {
                mounts.push(format!("./{}:/etc/scalectl/redis-auth.conf.in:ro", render::REDIS_AUTH_TEMPLATE));
            }
            assert_eq!(s.get("volumes").cloned().unwrap_or(json!([])), json!(mounts), "{at}");
            let labels: serde_json::Map<String, Value> = spec.labels(&t.name).into_iter().map(|(k, v)| (k, json!(v))).collect();
            assert_eq!(s["labels"], Value::Object(labels), "{at}");
            let opts: serde_json::Map<String, Value> = spec.log_opts.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            assert_eq!(s["logging"]["options"], Value::Object(opts), "{at}");
            assert_eq!(s.get("cap_drop").is_some(), spec.cap_drop_all, "{at}");
            assert_eq!(s.get("pid").is_some(), spec.pid_host, "{at}");
            // A bundle file each mount names exists in the bundle.
            for m in mounts.iter().filter_map(|m| m.strip_prefix("./")) {
                let source = m.split(':').next().unwrap();
                assert!(bundle.iter().any(|r| r.host == "docker" && r.path == source), "{at}: ./{source} is not in the bundle");
            }
        }
    }
}

/// Every string in `v` with compose's `$$` read as the `$` it stands for.
fn unescape_dollars(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(s.replace("$$", "$")),
        Value::Array(a) => Value::Array(a.iter().map(unescape_dollars).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), unescape_dollars(v))).collect()),
        other => other.clone(),
    }
}

/// Docker Compose v2 itself (unpacked by scripts/setup.sh) accepts every bundle, secrets included.
#[test]
fn docker_compose_accepts_every_bundle() {
    let compose = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/tools/docker-compose"));
    assert!(compose.is_file(), "{} is missing: scripts/setup.sh fetches it", compose.display());
    for (example, t) in compose_topologies() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = render::render(&t, &Facts::with_default_cores(2), &Templates::embedded()).unwrap();
        files.push(scalectl::plan::docker::compose_file(&t, 2, &Templates::embedded()).unwrap());
        for f in files.iter().filter(|f| f.host == "docker") {
            let path = dir.path().join(&f.path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &f.content).unwrap();
        }
        let out = Command::new(&compose)
            .current_dir(dir.path())
            .args(["config", "--quiet"])
            .env("DOCK_REDIS_PASSWORD", "p")
            .env("DOCKDB_REDIS_PASSWORD", "p")
            .env("LAB_REDIS_PASSWORD", "p")
            .env("DOCK_API_KEY", "k")
            .output()
            .unwrap();
        assert!(out.status.success(), "{example}: docker compose config:\n{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn dashboards_are_well_formed_and_use_the_provisioned_datasource() {
    // No Grafana server runs here: check the structure Grafana needs and the datasource uid.
    let files = render_example("three-hosts");
    let datasource = files.iter().find(|f| f.path.ends_with("datasources/scalectl.yaml") && f.host == "lb-1").unwrap();
    let ds: serde_json::Value = serde_saphyr::from_str(&datasource.content).unwrap();
    let uid = ds["datasources"][0]["uid"].as_str().unwrap().to_string();
    let dashboards: Vec<_> = files.iter().filter(|f| f.host == "lb-1" && f.path.starts_with("/var/lib/grafana/dashboards/scalectl/")).collect();
    assert!(!dashboards.is_empty());
    for f in dashboards {
        let d: serde_json::Value = serde_json::from_str(&f.content).unwrap_or_else(|e| panic!("{}: {e}", f.path));
        assert!(d["uid"].is_string() && d["title"].is_string(), "{}", f.path);
        let panels = d["panels"].as_array().unwrap();
        assert!(!panels.is_empty());
        for p in panels {
            assert_eq!(p["datasource"]["uid"], uid.as_str(), "{}: panel {}", f.path, p["title"]);
            for t in p["targets"].as_array().unwrap() {
                assert!(!t["expr"].as_str().unwrap().is_empty());
            }
        }
    }
}

/// Run promtool's unit tests of tests/it/promtool/`tests` against `rules`.
fn promtool_test_rules_of(tests: &str, rules: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
    std::fs::copy(format!("{}/tests/it/promtool/{tests}", env!("CARGO_MANIFEST_DIR")), dir.path().join(tests)).unwrap();
    run(Command::new(require("promtool")).current_dir(dir.path()).args(["test", "rules", tests]))
}

/// Run promtool's unit tests (tests/it/promtool/lab_rules_test.yml) against `rules`.
fn promtool_test_rules(rules: &str) -> Output {
    promtool_test_rules_of("lab_rules_test.yml", rules)
}

/// The queue's recorded series and its alerts (QueueBacklogGrowing, JobsFailing, WorkersDown), as
/// examples/node.yaml renders them, fire when they should and not before; a queue rule with a
/// wrong key, threshold or window fails them.
#[test]
fn queue_rules_record_bullmq_keys_and_fire_when_they_should() {
    let files = render_example("node");
    let rules = files.into_iter().find(|f| f.path == "/etc/prometheus/scalectl/rules.yml").unwrap().content;
    let out = promtool_test_rules_of("node_queue_rules_test.yml", &rules);
    assert!(out.status.success(), "{}", text(&out));
    for (from, to) in [("(wait|paused|prioritized)", "(wait|paused)"), ("deriv(scalectl_queue_waiting[10m]) > 0\n        for: 10m", "deriv(scalectl_queue_waiting[10m]) > 0\n        for: 30m"), ("clamp_min(delta(scalectl_queue_ended[10m]), 1) > 1.0", "clamp_min(delta(scalectl_queue_ended[10m]), 1) > 10.0"), ("scalectl_worker_up == 0", "scalectl_worker_up == 2")] {
        assert!(rules.contains(from), "{from} not in\n{rules}");
        let out = promtool_test_rules_of("node_queue_rules_test.yml", &rules.replacen(from, to, 1));
        assert!(!out.status.success(), "promtool passed a broken queue rule ({from} -> {to})");
    }
}

/// The database's alerts (PostgresDown, NoLeader, ReplicaLagHigh, ConnectionsNearMax,
/// LeaderChanged), as examples/database.yaml renders them, fire when they should and not before;
/// a rule with a wrong series, threshold or window fails them.
#[test]
fn database_rules_fire_when_they_should() {
    let files = render_example("database");
    let rules = files.into_iter().find(|f| f.path == "/etc/prometheus/scalectl/rules.yml").unwrap().content;
    let out = promtool_test_rules_of("database_rules_test.yml", &rules);
    assert!(out.status.success(), "{}", text(&out));
    for (from, to) in [
        ("pg_up{job=\"postgres\"} == 0", "pg_up{job=\"postgres\"} == 2"),
        ("(count(scalectl_database_is_replica{job=\"postgres\"} == 0) or vector(0)) == 0", "count(scalectl_database_is_replica{job=\"postgres\"} == 0) == 0"),
        ("scalectl_database_replica_lag_bytes{job=\"postgres\"} > 1048576", "scalectl_database_replica_lag_bytes{job=\"postgres\"} > 10485760"),
        ("max by (host) (pg_settings_max_connections{job=\"postgres\"}) > 80", "max by (host) (pg_settings_max_connections{job=\"postgres\"}) > 95"),
        ("changes(scalectl_database_is_replica{job=\"postgres\"}[10m]) > 0", "changes(scalectl_database_is_replica{job=\"postgres\"}[10m]) > 1"),
    ] {
        assert!(rules.contains(from), "{from} not in\n{rules}");
        let out = promtool_test_rules_of("database_rules_test.yml", &rules.replacen(from, to, 1));
        assert!(!out.status.success(), "promtool passed a broken database rule ({from} -> {to})");
    }
}

#[test]
fn every_alert_rule_fires_when_it_should_and_not_before() {
    // The lab's thresholds with the default `alerts.down_for` (1m): the windows the rule tests are
    // written in (lab.yaml shortens it to 20 s, below their one-minute resolution).
    let mut t = crate::load_example("lab");
    t.observability.alerts.down_for_ms = 60_000;
    let files = render::render(&t, &Facts::with_default_cores(2), &Templates::embedded()).unwrap();
    let rules = files.into_iter().find(|f| f.path == "/etc/prometheus/scalectl/rules.yml").unwrap().content;
    let out = promtool_test_rules(&rules);
    assert!(out.status.success(), "{}", text(&out));
    // Negative controls: a rule with a wrong threshold or window must fail its unit test.
    for (from, to) in [("> 80.0", "> 95.0"), ("redis_up == 0 or up{job=\"redis\"} == 0\n        for: 1m", "redis_up == 0 or up{job=\"redis\"} == 0\n        for: 5m")] {
        assert!(rules.contains(from), "{from}");
        let out = promtool_test_rules(&rules.replacen(from, to, 1));
        assert!(!out.status.success(), "promtool passed a broken rule ({from} -> {to})");
    }
}

/// The module's cloud-init user data with Terraform's interpolations and directives done the way
/// Terraform does them for a rendered topology: the module's variables as its main.tf sets them.
fn user_data(files: &[scalectl::render::RenderedFile], app: &str, program: bool, packages: &[&str]) -> String {
    use base64::Engine;
    let main = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/terraform/modules/asg/main.tf")).unwrap();
    let root = &files.iter().find(|f| f.host == "terraform" && f.path == "main.tf").unwrap().content;
    assert_eq!(root.contains("program   = true"), program, "{root}");
    let body = main.split("<<-CLOUDINIT\n").nth(1).unwrap().split("\n  CLOUDINIT").next().unwrap();
    // `<<-` strips the smallest indentation of the heredoc's lines.
    let indent = body.lines().filter(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).min().unwrap();
    let mut text: String = body.lines().map(|l| l.get(indent..).unwrap_or("").to_string() + "\n").collect();
    // `%{~ if [!]var.program } ... %{~ endif }`: `~` strips the whitespace before each directive.
    for (open, when) in [("%{~ if !var.program }", !program), ("%{~ if var.program }", program)] {
        let close = "%{~ endif }";
        while let Some(i) = text.find(open) {
            let after = text[i + open.len()..].to_string();
            let j = after.find(close).expect("an endif");
            let kept = if when { after[..j].trim_end() } else { "" };
            text = format!("{}{kept}{}", text[..i].trim_end(), &after[j + close.len()..]);
        }
    }
    // `${var.program ? "A" : "B"}`
    while let Some(i) = text.find("${var.program ? \"") {
        let rest = &text[i + "${var.program ? \"".len()..];
        let (a, rest) = rest.split_once("\" : \"").unwrap();
        let (b, rest) = rest.split_once("\"}").unwrap();
        text = format!("{}{}{}", &text[..i], if program { a } else { b }, rest);
    }
    let b64 = |name: &str| {
        let f = files.iter().find(|f| f.host == "terraform" && f.path == format!("files/{name}")).unwrap_or_else(|| panic!("files/{name}"));
        base64::engine::general_purpose::STANDARD.encode(&f.content)
    };
    let mut vars = vec![("unit_file", format!("{app}@.service")), ("env_file", format!("{app}.env")), ("log_ship_file", "60-scalectl-ship.conf".into())];
    if !program {
        vars.push(("socket_file", "scale-api@.socket".into()));
    } else {
        vars.push(("unpack_script", "unpack-release.sh".into()));
    }
    for (var, file) in vars {
        text = text.replace(&format!("${{base64encode(var.{var})}}"), &b64(&file));
    }
    let all: Vec<&str> = ["prometheus-node-exporter", "rsyslog", "rsyslog-relp", "curl"].into_iter().chain(packages.iter().copied()).collect();
    let units = if program { format!("{app}@$p.service") } else { format!("{app}@$p.socket {app}@$p.service") };
    text.replace(r#"${jsonencode(concat(["prometheus-node-exporter", "rsyslog", "rsyslog-relp", "curl"], var.packages))}"#, &serde_json::to_string(&all).unwrap())
        .replace("${base64encode(local.secrets_env)}", &base64::engine::general_purpose::STANDARD.encode("REDIS_PASSWORD=\"pw\"\n"))
        .replace("${var.app_name}", app)
        .replace("${local.units}", &units)
        .replace("${base64encode(var.release_url)}", &base64::engine::general_purpose::STANDARD.encode("https://releases.example/r"))
        .replace("${var.release_sha256}", &"ab".repeat(32))
        .replace("${local.instance_count}", "1")
        .replace("${var.app_port}", "3000")
}

/// cloud-init's files by path, decoded; and the user data as YAML.
fn cloud_init(text: &str) -> (serde_json::Value, std::collections::BTreeMap<String, String>) {
    use base64::Engine;
    assert!(text.starts_with("#cloud-config\n"), "{text}");
    assert!(!text.contains("${") && !text.contains("%{"), "an interpolation or directive is left: {text}");
    let doc: serde_json::Value = serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("user data is not YAML: {e}\n{text}"));
    let written = doc["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let content = w["content"].as_str().unwrap();
            let text = match w["encoding"].as_str() {
                Some("b64") => String::from_utf8(base64::engine::general_purpose::STANDARD.decode(content).unwrap()).unwrap(),
                None => content.to_string(),
                Some(other) => panic!("an encoding this test does not read: {other}"),
            };
            (w["path"].as_str().unwrap().to_string(), text)
        })
        .collect();
    (doc, written)
}

/// The runcmd line that installs the release: downloaded, checked, installed, or nothing.
fn install_line(doc: &serde_json::Value) -> String {
    let line = doc["runcmd"].as_array().unwrap().iter().find(|c| c.to_string().contains("sha256sum -c")).unwrap_or_else(|| panic!("no checksum: {doc:#}"));
    let script = line[2].as_str().unwrap().to_string();
    // The URL is read from its file, never part of the command line a root shell parses.
    assert!(script.contains("curl -fsSL --url \"$(cat /etc/scalectl/release-url)\"") && !script.contains("releases.example"), "{script}");
    let (check, install) = (script.find("sha256sum -c").unwrap(), script.find("ln -sfn").unwrap());
    assert!(check < install, "installed before it is checked: {script}");
    script
}

#[test]
fn cloud_init_writes_the_same_units_as_the_hosts_target() {
    let files = render_example("aws-asg");
    let (doc, written) = cloud_init(&user_data(&files, "scale-api", false, &[]));
    // The app host of the same topology gets the same files at the same paths (its unit names the
    // instance by host name where the group's uses %H, the instance's own hostname).
    let host: Vec<_> = files.iter().filter(|f| f.host == "seed-1").collect();
    for path in ["/etc/systemd/system/scale-api@.service", "/etc/systemd/system/scale-api@.socket", "/etc/scale-api/scale-api.env"] {
        let on_host = &host.iter().find(|f| f.path == path).unwrap_or_else(|| panic!("seed-1 has no {path}")).content;
        let in_asg = written.get(path).unwrap_or_else(|| panic!("cloud-init does not write {path}"));
        assert_eq!(in_asg.replace("INSTANCE=%H-%i", "INSTANCE=seed-1-%i"), *on_host, "{path}");
    }
    // The collector takes only the fleet's hosts, over TLS with their own certificates: an
    // instance of the group (none) keeps its lines in its journal rather than queueing them for
    // a collector that refuses it.
    // Its node exporter, which nothing outside it scrapes, listens on loopback only.
    assert_eq!(written["/etc/default/prometheus-node-exporter"], "ARGS=\"--web.listen-address=127.0.0.1:9100\"\n");
    assert!(doc["runcmd"].to_string().contains("systemctl restart rsyslog prometheus-node-exporter"), "{doc:#}");
    let ship = &written["/etc/rsyslog.d/60-scalectl-ship.conf"];
    assert!(!ship.contains("omrelp") && ship.contains("stay in its journal"), "{ship}");
    assert!(host.iter().any(|f| f.path == "/etc/rsyslog.d/60-scalectl-ship.conf" && f.content.contains("tls=\"on\"")));
    let packages: Vec<&str> = doc["packages"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    for p in ["prometheus-node-exporter", "rsyslog", "rsyslog-relp"] {
        assert!(packages.contains(&p), "{p} is not installed by cloud-init: {packages:?}");
    }
    let install = install_line(&doc);
    assert!(install.contains("install -m 0755 $r $d/scale-api") && !install.contains("tar -x"), "{install}");
    assert_eq!(written["/etc/scalectl/release-url"], "https://releases.example/r");
    // The Redis password reaches the instances from a sensitive variable, as the hosts' secrets file.
    let secrets = doc["write_files"].as_array().unwrap().iter().find(|w| w["path"] == "/etc/scale-api/secrets.env").expect("secrets.env");
    assert_eq!(secrets["permissions"], "0600");
    assert_eq!(written["/etc/scale-api/secrets.env"], "REDIS_PASSWORD=\"pw\"\n");
    let main = &files.iter().find(|f| f.host == "terraform" && f.path == "main.tf").unwrap().content;
    assert!(main.contains("release_sha256 = var.release_sha256") && main.contains("redis_password = var.redis_password"), "{main}");
    assert!(main.contains("sensitive   = true"), "the password variable is sensitive: {main}");
}

/// The user's program on the autoscaling group: its unit (no socket), its packages, its release a
/// tar unpacked after its checksum, the same files as on an app host.
#[test]
fn cloud_init_deploys_the_users_program_as_app_hosts_run_it() {
    let src = std::fs::read_to_string(crate::example_path("aws-asg")).unwrap().replacen(
        "app:\n  port: 3000\n",
        "app:\n  port: 3000\n  program: {name: shop, release: ./node-app, command: [node, server.js], packages: [nodejs], metrics: /metrics}\n",
        1,
    );
    let t = scalectl::topology::parse("asg-node.yaml", &src).unwrap_or_else(|p| panic!("{p}"));
    let mut files = render::render(&t, &Facts::with_default_cores(2), &Templates::embedded()).unwrap();
    files.extend(scalectl::cli::render::bundle_scripts(&t));
    assert!(!files.iter().any(|f| f.host == "terraform" && f.path.ends_with(".socket")), "a program has no socket unit");
    let (doc, written) = cloud_init(&user_data(&files, "shop", true, &["nodejs"]));
    let host: Vec<_> = files.iter().filter(|f| f.host == "seed-1").collect();
    for path in ["/etc/systemd/system/shop@.service", "/etc/shop/shop.env"] {
        let on_host = &host.iter().find(|f| f.path == path).unwrap_or_else(|| panic!("seed-1 has no {path}")).content;
        let in_asg = written.get(path).unwrap_or_else(|| panic!("cloud-init does not write {path}"));
        assert_eq!(in_asg.replace("INSTANCE=%H-%i", "INSTANCE=seed-1-%i"), *on_host, "{path}");
    }
    assert!(!written.keys().any(|p| p.ends_with(".socket")), "{:?}", written.keys());
    assert!(written["/etc/systemd/system/shop@.service"].contains("WorkingDirectory=/opt/shop/current"), "{}", written["/etc/systemd/system/shop@.service"]);
    let packages: Vec<&str> = doc["packages"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(packages.contains(&"nodejs"), "{packages:?}");
    let install = install_line(&doc);
    assert!(install.contains("sh /usr/local/lib/scalectl/unpack-release.sh $r $d") && install.contains("/opt/shop/current"), "{install}");
    // The same script apply runs: as nobody, and only what stays inside the release.
    let unpack = &written["/usr/local/lib/scalectl/unpack-release.sh"];
    assert!(unpack.contains(&scalectl::exec::commands::unpack_release("\"$1\"", "\"$2\"")), "{unpack}");
    let start = doc["runcmd"].as_array().unwrap().last().unwrap()[2].as_str().unwrap().to_string();
    assert!(start.contains("systemctl enable --now shop@$p.service;") && !start.contains(".socket"), "{start}");
}

#[test]
fn checkov_finds_nothing_unjustified_in_the_terraform() {
    // The rendered root module and the module it calls, as `scalectl render` writes them.
    let dir = tempfile::tempdir().unwrap();
    for f in render_example("aws-asg").into_iter().filter(|f| f.host == "terraform") {
        let p = dir.path().join(&f.path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, f.content).unwrap();
    }
    let out = run(Command::new(require("checkov")).args(["--compact", "--quiet", "--skip-download", "-o", "json", "-d"]).arg(dir.path()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("checkov output: {e}\n{}", text(&out)));
    let reports = if report.is_array() { report.as_array().unwrap().clone() } else { vec![report] };
    let mut passed = 0;
    for r in &reports {
        let s = &r["summary"];
        assert_eq!(s["failed"], 0, "checkov failures (fix them, or justify with a checkov:skip comment):\n{}", serde_json::to_string_pretty(&r["results"]["failed_checks"]).unwrap());
        assert_eq!(s["parsing_errors"], 0);
        passed += s["passed"].as_u64().unwrap();
    }
    assert!(passed >= 20, "checkov checked almost nothing ({passed} passed): did it find the module?");
}

#[test]
fn amtool_accepts_the_alertmanager_config_with_and_without_a_webhook() {
    let amtool = require("amtool");
    let t = crate::load_example("lab");
    assert!(t.observability.alertmanager.is_some(), "examples/lab.yaml configures Alertmanager");
    let templates = scalectl::render::Templates::embedded();
    let dir = tempfile::tempdir().unwrap();
    for webhook in [None, Some("https://hooks.example.com/services/T000/B000/test-only-token")] {
        let values = scalectl::render::SecretValues { alertmanager_webhook: webhook.map(String::from), ..Default::default() };
        let files = scalectl::render::render_secrets(&t, &values, &templates).unwrap();
        let f = files.iter().find(|f| f.path == "/etc/prometheus/alertmanager.yml").expect("alertmanager.yml on the monitor host");
        assert_eq!(f.host, "mon-1");
        let p = dir.path().join("alertmanager.yml");
        std::fs::write(&p, &f.content).unwrap();
        let out = run(Command::new(&amtool).args(["check-config"]).arg(&p));
        assert!(out.status.success(), "amtool check-config ({webhook:?}):\n{}\n{}", text(&out), f.content);
        let receiver = if webhook.is_some() { "webhook" } else { "keep" };
        assert!(text(&out).contains(" - 1 receivers") && text(&out).contains(" - 1 inhibit rules"), "{}", text(&out));
        assert!(f.content.contains(&format!("receiver: {receiver}\n")), "{}", f.content);
        if let Some(w) = webhook {
            assert!(f.content.contains(w));
        }
    }
    // A config amtool rejects is caught (the check is not vacuous).
    std::fs::write(dir.path().join("bad.yml"), "route:\n  receiver: nowhere\nreceivers: []\n").unwrap();
    assert!(!run(Command::new(&amtool).args(["check-config"]).arg(dir.path().join("bad.yml"))).status.success());
}

#[test]
fn mtail_counts_requests_and_gateway_errors_from_real_nginx_log_lines() {
    let mtail = require("mtail");
    let files = render_example("lab");
    let prog = files.iter().find(|f| f.host == "lb-1" && f.path == "/etc/mtail/scalectl-nginx.mtail").unwrap();
    let site = files.iter().find(|f| f.host == "lb-1" && f.path == "/etc/nginx/conf.d/lab.conf").unwrap();
    assert!(site.content.contains(r#""status":$status,"#), "the access log format mtail reads changed");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("progs")).unwrap();
    // What mtail's program `prog` counts from the log `lines`, in Prometheus' text format.
    let one_shot = |prog: &str, lines: &[String]| -> String {
        std::fs::write(dir.path().join("progs/scalectl-nginx.mtail"), prog).unwrap();
        std::fs::write(dir.path().join("access.log"), lines.join("\n") + "\n").unwrap();
        let out = run(Command::new(&mtail)
            .args(["--one_shot", "--one_shot_format", "prometheus", "--logtostderr", "--progs"])
            .arg(dir.path().join("progs"))
            .arg("--logs")
            .arg(dir.path().join("access.log")));
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let metric = |metrics: &str, name: &str| metrics.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).unwrap_or_else(|| panic!("no {name} in {metrics}")).to_string();
    // Lines as the rendered log_format writes them, `upstream` the instance the balancer names in
    // its header (empty when nobody but nginx or the balancer answered): 2 served, a 502 from nginx
    // (the balancer unreachable), a 503 from the balancer (no instance up), a 504 and a 503 from
    // instances themselves.
    let line = |status: u32, upstream: &str, seconds: &str| {
        format!(
            r#"{{"time":"2026-11-23T02:00:00+00:00","remote":"127.0.0.1","request_id":"r","method":"GET","uri":"/","status":{status},"bytes":2,"duration":0.001,"upstream":"{upstream}","upstream_status":"{status}","upstream_time":"{seconds}"}}"#
        )
    };
    let log = [
        line(200, "10.0.0.2:3000", "0.001"),
        line(200, "10.0.0.3:3000", "0.001"),
        line(502, "", "0.000"),
        line(503, "", "0.000"),
        line(504, "10.0.0.2:3000", "0.001"),
        line(503, "10.0.0.3:3000", "0.001"),
        // Answered after 0.3 s (the balancer may have tried another instance first: its own
        // exporter counts that, as haproxy_server_retry_attempts_total).
        line(200, "10.0.0.2:3000", "0.300"),
    ];
    let metrics = one_shot(&prog.content, &log);
    let value = |name: &str| metric(&metrics, name);
    assert_eq!(value("scalectl_nginx_requests_total"), "7");
    assert_eq!(value("scalectl_nginx_gateway_errors_total"), "2", "the 502 from nginx and the 503 from the balancer; an instance's own 503 or 504 is ErrorRateHigh's");
    // Per instance, as the balancer named it.
    let responses = |upstream: &str, code: u32| value(&format!(r#"scalectl_nginx_upstream_responses_total{{code="{code}",prog="scalectl-nginx.mtail",upstream="{upstream}"}}"#));
    assert_eq!(responses("10.0.0.2:3000", 200), "2");
    assert_eq!(responses("10.0.0.2:3000", 504), "1");
    assert_eq!(responses("10.0.0.3:3000", 200), "1");
    assert_eq!(responses("10.0.0.3:3000", 503), "1");
    assert!(!metrics.contains(r#"upstream="""#), "an answer from nginx or the balancer names no instance:\n{metrics}");
    // The response time of the instance: 0.3 s, in the 0.5 s bucket.
    let bucket = |le: &str| value(&format!(r#"scalectl_nginx_upstream_response_seconds_bucket{{prog="scalectl-nginx.mtail",upstream="10.0.0.2:3000",le="{le}"}}"#));
    assert_eq!((bucket("0.25"), bucket("0.5")), ("2".into(), "3".into()));
    assert!(!metrics.contains("scalectl_nginx_cache_responses_total{"), "no cache, no cache answers:\n{metrics}");

    // With the cache (examples/three-hosts.yaml): its answers by status, a HIT naming no instance.
    let files = render_example("three-hosts");
    let site = files.iter().find(|f| f.path.starts_with("/etc/nginx/conf.d/")).unwrap();
    assert!(site.content.contains(r#","cache":"$upstream_cache_status"}"#), "the access log format mtail reads changed");
    let prog = files.iter().find(|f| f.path == "/etc/mtail/scalectl-nginx.mtail").unwrap();
    let cached = |status: &str, upstream: &str| line(200, upstream, "0.001").replace(r#""}"#, &format!(r#"","cache":"{status}"}}"#));
    let log = [cached("MISS", "10.0.0.2:3000"), cached("HIT", ""), cached("HIT", ""), cached("BYPASS", "10.0.0.3:3000"), cached("", "10.0.0.2:3000")];
    let metrics = one_shot(&prog.content, &log);
    let value = |name: &str| metric(&metrics, name);
    let cache = |status: &str| value(&format!(r#"scalectl_nginx_cache_responses_total{{prog="scalectl-nginx.mtail",status="{status}"}}"#));
    assert_eq!((cache("HIT"), cache("MISS"), cache("BYPASS")), ("2".into(), "1".into(), "1".into()));
    assert_eq!(value("scalectl_nginx_requests_total"), "5");
    assert!(!metrics.contains(r#"status="""#), "a path not cached has no cache status:\n{metrics}");
}

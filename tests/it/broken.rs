//! Broken topologies: each one yields exactly one problem, with this message, line and column.

use scalectl::topology;

/// A valid topology the cases start from: one app host that also runs Redis.
const BASE: &str = "name: t\napp: {instances: 1}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n";

fn with(extra: &str) -> String {
    format!("{BASE}{extra}")
}

struct Case {
    what: &'static str,
    yaml: String,
    line: u64,
    column: u64,
    message: &'static str,
}

fn case(what: &'static str, yaml: impl Into<String>, line: u64, column: u64, message: &'static str) -> Case {
    Case { what, yaml: yaml.into(), line, column, message }
}

fn cases() -> Vec<Case> {
    vec![
        case("unknown top-level key", with("laod_balancer: {}\n"), 5, 1, "unknown key `laod_balancer`"),
        case("unknown host key", "name: t\napp: {instances: 1}\nhosts:\n  a: {adress: 10.0.0.1, roles: [app, redis]}\n", 4, 7, "unknown key `adress`"),
        case("duplicate key", "name: t\nname: u\napp: {instances: 1}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 2, 1, "duplicate key `name`"),
        case("duplicate host", with("  a: {address: 10.0.0.2, roles: [app]}\n"), 5, 3, "duplicate key `a`"),
        case("unknown role", "name: t\napp: {instances: 1}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, rediss]}\n", 4, 39, "unknown value `rediss`"),
        case("unknown strategy", with("load_balancer: {strategy: least_connections}\n"), 5, 27, "unknown value `least_connections`"),
        case("bad name", "name: My_App\napp: {instances: 1}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 1, 7, "name must not contain `M` (a DNS label: lower-case letters, digits and '-')"),
        case("bad host name", "name: t\napp: {instances: 1}\nhosts:\n  app_1: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 3, "host name must not contain `_` (a DNS label: lower-case letters, digits and '-')"),
        case("host name with a dash at the end", "name: t\napp: {instances: 1}\nhosts:\n  app-: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 3, "host name `app-` must not start or end with '-' (a DNS label)"),
        case("zero instances", "name: t\napp: {instances: 0}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 2, 18, "instances must be at least 1, found 0"),
        case("instances word", "name: t\napp: {instances: many}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 2, 18, "expected a number of instances or `max`, found `many`"),
        case("no app host", "name: t\napp: {instances: 1}\nhosts:\n  a: {address: 10.0.0.1, roles: [redis]}\n", 1, 7, "no host has the app role: at least one host must run scale-api"),
        case("no redis host", "name: t\napp: {instances: 1}\nhosts:\n  a: {address: 10.0.0.1, roles: [app]}\n", 1, 7, "no host has the redis role: scale-api keeps sessions, counters and cache in Redis"),
        case("no lb with two instances", "name: t\napp: {instances: 2}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 1, 7, "more than one app instance but no host has the lb role: nothing spreads requests across them"),
        case("no hosts", "name: t\napp: {instances: 1}\n", 1, 7, "no hosts: `target: hosts` needs a hosts section with at least one app host"),
        case("hosts with docker target", "name: t\ntarget: docker\napp: {instances: 1}\nhosts:\n  a: {address: 10.0.0.1, roles: [app]}\n", 5, 3, "hosts are not used with `target: docker`"),
        case("role listed twice", "name: t\napp: {instances: 1}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis, app]}\n", 4, 46, "role `app` is listed twice"),
        case("no roles", with("  b: {address: 10.0.0.2, roles: []}\n"), 5, 33, "host `b` has no roles: give it at least one of app, worker, lb, redis, monitor, database, etcd"),
        case("database role without a database section", with("  d: {address: 10.0.0.2, roles: [database]}\n"), 5, 34, "host `d` has the database role, but the topology has no database section"),
        case("database section without a database host", with("database: {password: {env: P}, replication_password: {env: R}, rest_password: {env: S}}\n"), 5, 22, "the database section configures a database that no host runs"),
        case("database without etcd", with("  d: {address: 10.0.0.2, roles: [database]}\ndatabase: {password: {env: P}, replication_password: {env: R}, rest_password: {env: S}}\n"), 6, 22, "no host has the etcd role: Patroni keeps the database's leader lock in etcd, and without it no member may lead"),
        case("two etcd members", with("  d: {address: 10.0.0.2, roles: [database, etcd]}\n  e: {address: 10.0.0.3, roles: [database, etcd]}\ndatabase: {password: {env: P}, replication_password: {env: R}, rest_password: {env: S}}\n"), 6, 44, "2 etcd hosts: etcd needs a majority of its members, and an even number tolerates no more failures than one fewer (2 members stop when either fails, as 1 does)"),
        case("database pools above max_connections", with("  d: {address: 10.0.0.2, roles: [database, etcd]}\ndatabase: {password: {env: P}, replication_password: {env: R}, rest_password: {env: S}, max_connections: 20, pool: 10}\n"), 6, 116, "1 app instances and workers with a pool of 10 each, to the writer and to the reader, may open 20 connections to the primary, more than the 15 its max_connections of 20 leaves them (5 are kept for Patroni and an administrator)"),
        case("database name with a quote", with("  d: {address: 10.0.0.2, roles: [database, etcd]}\ndatabase: {name: \"app'; DROP\", password: {env: P}, replication_password: {env: R}, rest_password: {env: S}}\n"), 6, 18, "database.name `app\\'; DROP` must be 1 to 63 lower-case letters, digits and '_', not starting with a digit"),
        case("database user that scalectl uses", with("  d: {address: 10.0.0.2, roles: [database, etcd]}\ndatabase: {user: replicator, password: {env: P}, replication_password: {env: R}, rest_password: {env: S}}\n"), 6, 18, "database.user `replicator` is a role scalectl's database tier uses itself; name the app's own"),
        case("database user that pg_hba reads as every role", with("  d: {address: 10.0.0.2, roles: [database, etcd]}\ndatabase: {user: all, password: {env: P}, replication_password: {env: R}, rest_password: {env: S}}\n"), 6, 18, "database.user `all` is a word PostgreSQL or pg_hba.conf reads as something else (`all`, `replication`, `public`, an SQL keyword...): choose another"),
        case("database named after a topology that starts with a digit", "name: 2024-shop\napp: {instances: 1}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n  d: {address: 10.0.0.2, roles: [database, etcd]}\ndatabase: {password: {env: P}, replication_password: {env: R}, rest_password: {env: S}}\n", 6, 22, "the database's name (the topology's name with `-` as `_`) `2024_shop` must be 1 to 63 lower-case letters, digits and '_', not starting with a digit"),
        case("database members on hosts", "name: t\napp: {instances: 1}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis, database, etcd]}\ndatabase: {password: {env: P}, replication_password: {env: R}, rest_password: {env: S}, members: 3}\n", 5, 98, "database.members counts the containers of `target: docker`; on hosts, the hosts with the database role are the members"),
        case("release command per instance", "name: t\napp: {instances: 1, release_command: [scale-api, migrate, \"--at=$(PORT)\"]}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 2, 59, "the release command runs once, not per instance: `$(PORT)` and `$(INSTANCE)` mean nothing in it"),
        case("release command of another program", "name: t\napp: {instances: 1, release_command: [node, migrate.js]}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 2, 39, "without app.program the release is scale-api's: its release command is `[scale-api, migrate]`"),
        case("second redis host", with("  b: {address: 10.0.0.2, roles: [redis]}\n"), 5, 34, "host `b` is a second redis host; one redis host is supported"),
        case("port collision", "name: t\napp: {port: 6379, instances: 1}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 39, "port 6379 on host `a` is used by both scale-api instance 6379 and redis"),
        case("privileged app port", "name: t\napp: {port: 80, instances: 1}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 2, 13, "app.port must be 1024 or above (scale-api runs unprivileged), found 80"),
        case("server_name injection", with("load_balancer: {server_name: \"api.example.com; include /etc/passwd\"}\n"), 5, 30, "server_name must not contain `;`"),
        case("server_name newline", with("load_balancer: {server_name: \"api.example.com\\n    return 200\"}\n"), 5, 30, "server_name must not contain a newline"),
        case("server_name brace", with("load_balancer: {server_name: \"a}b\"}\n"), 5, 30, "server_name must not contain `}`"),
        case("tls key with a quote", with("load_balancer: {tls: {certificate: /etc/ssl/c.pem, key: \"/etc/ssl/k\\\".pem\"}}\n"), 5, 57, "tls.key must not contain `\"`"),
        case("relative certificate", with("load_balancer: {tls: {certificate: certs/c.pem, key: /etc/ssl/k.pem}}\n"), 5, 36, "tls.certificate `certs/c.pem` must be an absolute path"),
        case("static root with $", with("load_balancer:\n  static: [{path: /static/, root: /var/www/$host}]\n"), 6, 35, "static root must not contain `$`"),
        case("static path without slash", with("load_balancer:\n  static: [{path: static, root: /var/www}]\n"), 6, 19, "static path `static` must start with `/`"),
        case("cache without paths", with("load_balancer:\n  cache: {paths: []}\n"), 6, 18, "load_balancer.cache has no paths"),
        case("cache path with a brace", with("load_balancer:\n  cache: {paths: [{path: \"/users/{\", ttl: 30s}]}\n"), 6, 26, "cache path must not contain `{`"),
        case("cache path twice", with("load_balancer:\n  cache: {paths: [{path: /u/, ttl: 30s}, {path: /u/, ttl: 1m}]}\n"), 6, 49, "cache path `/u/` is listed twice"),
        case("cache path that is static", with("load_balancer:\n  static: [{path: /s/, root: /var/www}]\n  cache: {paths: [{path: /s/, ttl: 30s}]}\n"), 7, 26, "cache path `/s/` is also a static path: nginx serves those files itself, with their own lifetime"),
        case("cache ttl not whole seconds", with("load_balancer:\n  cache: {paths: [{path: /u/, ttl: 1500ms}]}\n"), 6, 36, "cache ttl `1500ms` is not a whole number of seconds"),
        case("cache path /", with("load_balancer:\n  cache: {paths: [{path: /, ttl: 30s}]}\n"), 6, 26, "cache path `/` would cache every answer of the app"),
        case("cache size too large", with("load_balancer:\n  cache: {size: 1TiB, paths: [{path: /u/, ttl: 1s}]}\n"), 6, 17, "cache.size `1TiB` is above the maximum of 64.0 GiB"),
        case("cache ttl too long", with("load_balancer:\n  cache: {paths: [{path: /u/, ttl: 60d}]}\n"), 6, 36, "cache ttl `60d` is longer than the maximum of 30days"),
        case("cache size too small", with("load_balancer:\n  cache: {size: 1KiB, paths: [{path: /u/, ttl: 1s}]}\n"), 6, 17, "cache.size `1KiB` is below the minimum of 1048576 bytes"),
        case("bad duration", with("load_balancer: {fail_timeout: soon}\n"), 5, 31, "fail_timeout `soon` is not a duration such as `500ms`, `10s` or `5m` (expected number at 0)"),
        case("bad size", "name: t\napp: {instances: 1, limits: {memory_max: lots}}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 2, 42, "app.limits.memory_max `lots` is not a size such as `512MiB` or `1GiB`"),
        case("nofile too low", "name: t\napp: {instances: 1, limits: {nofile: 100}}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 2, 38, "app.limits.nofile must be between 1024 and 1048576, found 100"),
        case("inline secret", "name: t\napp:\n  instances: 1\n  secrets: {SESSION_KEY: hunter2}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 26, "secrets are referenced, never written inline: use `{env: VAR_NAME}` or `{file: /absolute/path}`"),
        case("secret-looking env", "name: t\napp:\n  instances: 1\n  env: {DB_PASSWORD: x}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 9, "`DB_PASSWORD` looks like a secret but is written inline in app.env"),
        case("env value with a quote", "name: t\napp:\n  instances: 1\n  env: {MODE: \"a\\\"b\"}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 15, "an environment value must not contain `\"`"),
        case("env value with a newline", "name: t\napp:\n  instances: 1\n  env: {MODE: \"a\\nb\"}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 15, "an environment value must not contain a newline"),
        case("reserved readiness variable", "name: t\napp:\n  instances: 1\n  env: {READINESS_PATH: /x}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 9, "`READINESS_PATH` is set by scalectl for every instance; remove it from app.env"),
        case("health path on an app route", "name: t\napp:\n  instances: 1\n  health: {readiness: /metrics}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 23, "the readiness path `/metrics` is one of scale-api's own routes; pick another, such as /healthz or /readyz"),
        case("program without a command", "name: t\napp:\n  instances: 1\n  program: {release: ./dist, command: []}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 39, "app.program.command is empty"),
        case("program outside its release", "name: t\napp:\n  instances: 1\n  program: {release: ./dist, command: [../x]}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 40, "the program must be inside its release directory or on the host (no `..`)"),
        case("program image on hosts", "name: t\napp:\n  instances: 1\n  program: {image: app:1, command: [node]}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 20, "app.program.image is for `target: docker`: hosts run a release that apply uploads"),
        case("program with nothing to deploy", "name: t\napp:\n  instances: 1\n  program: {command: [node]}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 22, "app.program names nothing to deploy"),
        case("program with a release and an image", "name: t\ntarget: docker\napp:\n  instances: 1\n  program: {release: ./dist, image: app:1, command: [node]}\n", 5, 37, "app.program names both a release and an image: the image would never be the one that runs"),
        case("program image reference", "name: t\ntarget: docker\napp:\n  instances: 1\n  program: {image: \"app 1\", command: [node]}\n", 5, 20, "an image reference must not contain a space"),
        case("program with a systemd prefix", "name: t\napp:\n  instances: 1\n  program: {release: ./dist, command: [\"+node\", server.js]}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 40, "the program `+node` starts with `+`, which systemd reads as an ExecStart= prefix (`+` and `!` would run it with full privileges)"),
        case("program with the ignore-failure prefix", "name: t\napp:\n  instances: 1\n  program: {release: ./dist, command: [\"-/usr/bin/node\"]}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 40, "the program `-/usr/bin/node` starts with `-`, which systemd reads as an ExecStart= prefix (`+` and `!` would run it with full privileges)"),
        case("program argument naming an unknown value", "name: t\napp:\n  instances: 1\n  program: {release: ./dist, command: [node, \"--home=$(HOME)\"]}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 46, "`$(HOME)` is not a value scalectl gives each instance: only `$(PORT)` and `$(INSTANCE)` are expanded (write `$$(` for a literal `$(`)"),
        case("program argument with an unclosed reference", "name: t\napp:\n  instances: 1\n  program: {release: ./dist, command: [node, \"$(PORT\"]}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 46, "`$(PORT` opens `$(` without closing it: write `$$(` for a literal `$(`"),
        case("program named by a value given per instance", "name: t\napp:\n  instances: 1\n  program: {release: ./dist, command: [\"$(INSTANCE)\"]}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 40, "the program `$(INSTANCE)` contains `$(`: only its arguments may name the values given per instance (`$(PORT)`, `$(INSTANCE)`)"),
        case("redis settings that no host runs", "name: t\napp:\n  instances: 1\n  program: {release: ./dist, command: [node]}\nhosts:\n  a: {address: 10.0.0.1, roles: [app]}\nredis: {maxmemory: 64MiB}\n", 7, 20, "the redis section configures a Redis that no host runs"),
        case("program run as redis", "name: t\napp:\n  instances: 1\n  program: {release: ./dist, command: [node], user: redis}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 53, "app.program.user `redis` is an account of the system or of a service scalectl runs: the app would hold that service's rights and files"),
        case("program run as root", "name: t\napp:\n  instances: 1\n  program: {release: ./dist, command: [node], user: root}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 53, "app.program.user `root` is an account of the system or of a service scalectl runs: the app would hold that service's rights and files"),
        case("program run as the ssh user", "name: t\nssh: {user: deploy}\napp:\n  instances: 1\n  program: {release: ./dist, command: [node], user: deploy}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 5, 53, "app.program.user `deploy` is the user scalectl logs in to host `a` as: it has passwordless sudo, so the app would be root there"),
        case("prometheus password on docker", "name: t\ntarget: docker\napp: {instances: 1}\nobservability:\n  prometheus: {password: {env: P}}\n", 5, 26, "observability.prometheus.password is for `target: hosts`: the docker target publishes Prometheus on 127.0.0.1 only"),
        case("package removed by apt", "name: t\napp:\n  instances: 1\n  program: {release: ./dist, command: [node], packages: [openssh-server-]}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 58, "`openssh-server-` ends in `-`, which apt-get reads as \"remove this package\""),
        case("program package", "name: t\napp:\n  instances: 1\n  program: {release: ./dist, command: [node], packages: [Node_JS]}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 58, "`Node_JS` is not a Debian package name"),
        case("reserved env", "name: t\napp:\n  instances: 1\n  env: {PORT: \"1\"}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 9, "`PORT` is set by scalectl for every instance; remove it from app.env"),
        case("bad env name", "name: t\napp:\n  instances: 1\n  env: {mode: x}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 4, 9, "`mode` is not an environment variable name (upper-case letters, digits, '_', not starting with a digit)"),
        case("address with a space", "name: t\napp: {instances: 1}\nhosts:\n  a: {address: \"10.0.0.1 backup\", roles: [app, redis]}\n", 4, 16, "address must not contain a space"),
        case("ssh user", "name: t\napp: {instances: 1}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis], ssh: {user: Root}}\n", 4, 59, "ssh user `Root` is not a unix user name"),
        case("weight out of range", "name: t\napp: {instances: 1}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis], weight: 0}\n", 4, 55, "weight must be between 1 and 100, found 0"),
        case("port out of range", "name: t\napp: {port: 70000, instances: 1}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 2, 13, "expected a port: a whole number from 1 to 65535"),
        case("wrong type", "name: t\napp: {instances: 1}\nhosts:\n  a: {address: 10.0.0.1, roles: app}\n", 4, 33, "expected a list such as [a, b]"),
        case("autoscaling min above max", with("autoscaling: {provider: aws, region: eu-west-1, instance_type: t3.small, ami: ami-0123456789abcdef0, vpc_id: vpc-0123456789abcdef0, subnets: [subnet-01234567, subnet-89abcdef], min: 5, max: 2}\nredis: {password: {env: P}}\n"), 5, 183, "autoscaling.min (5) is above autoscaling.max (2)"),
        case("autoscaling bad ami", with("autoscaling: {provider: aws, region: eu-west-1, instance_type: t3.small, ami: ubuntu, vpc_id: vpc-0123456789abcdef0, subnets: [subnet-01234567, subnet-89abcdef], min: 1, max: 2}\nredis: {password: {env: P}}\n"), 5, 79, "ami `ubuntu` must look like `ami-` followed by 8 to 17 lower-case hex digits"),
        case("autoscaling thresholds inverted", with("autoscaling: {provider: aws, region: eu-west-1, instance_type: t3.small, ami: ami-0123456789abcdef0, vpc_id: vpc-0123456789abcdef0, subnets: [subnet-01234567, subnet-89abcdef], min: 1, max: 2, cpu: {scale_out: 50, scale_in: 60}}\nredis: {password: {env: P}}\n"), 5, 225, "autoscaling.cpu.scale_in (60) must be below scale_out (50)"),
        case("published twice", with("  b: {address: 10.0.0.2, roles: [lb]}\nlab: {publish: {load_balancer: 8080, redis: 8080}}\n"), 6, 45, "127.0.0.1:8080 is already published for load_balancer"),
        case("published without a host", with("lab: {publish: {prometheus: 9090}}\n"), 5, 17, "prometheus is published but no host has the monitor role"),
        case("loki without url", with("observability: {logs: {destination: loki}}\n"), 5, 37, "logs.destination is loki but logs.loki_url is not set"),
        case("percentage out of range", with("observability: {alerts: {cpu: 120}}\n"), 5, 31, "alerts.cpu must be a percentage above 0 and at most 100, found 120"),
        case("alertmanager on docker", "name: t\ntarget: docker\napp: {instances: 1}\nobservability:\n  alertmanager: {webhook: {env: HOOK}}\n", 5, 27, "observability.alertmanager is deployed on the monitor host of `target: hosts`; the docker target has no Alertmanager yet"),
        case("loki on docker", "name: t\ntarget: docker\napp: {instances: 1}\nobservability:\n  logs: {destination: loki, loki_url: \"http://loki:3100/loki/api/v1/push\"}\n", 5, 23, "logs.destination loki renders a Promtail config per host of `target: hosts`; the docker target ships to its own collector container"),
        case("down alerts waiting hours", with("observability: {alerts: {down_for: 2h}}\n"), 5, 36, "alerts.down_for `2h` is longer than the maximum of 1h"),
        case("alertmanager webhook inline", with("observability:\n  alertmanager: {webhook: https://hooks.example.com/x}\n"), 6, 27, "secrets are referenced, never written inline: use `{env: VAR_NAME}` or `{file: /absolute/path}`"),
        case("docker engine over plain TCP", "name: t\ntarget: docker\napp: {instances: 1}\ndocker: {endpoint: \"tcp://10.0.0.5:2375\"}\n", 4, 20, "docker endpoint `tcp://10.0.0.5:2375` is plain TCP to another machine: the engine's API is root there, and this would send it unencrypted and unauthenticated; forward the remote engine's socket over SSH (`ssh -nNT -L /run/scalectl-docker.sock:/var/run/docker.sock HOST`) and use unix:///run/scalectl-docker.sock"),
        case("docker engine over https", "name: t\ntarget: docker\napp: {instances: 1}\ndocker: {endpoint: \"https://engine:2376\"}\n", 4, 20, "docker endpoint `https://engine:2376`: scalectl speaks to engines over a unix socket or local TCP only; forward the remote engine's socket over SSH (`ssh -nNT -L /run/scalectl-docker.sock:/var/run/docker.sock HOST`) and use unix:///run/scalectl-docker.sock"),
        case("image with a space", "name: t\ntarget: docker\napp: {instances: 1}\ndocker: {images: {nginx: \"nginx latest\"}}\n", 4, 26, "an image reference must not contain a space"),
        case("not yaml", "name: t\napp: {instances: 1\n", 2, 6, "unclosed bracket '{'"),
        case("one machine listed twice", "name: t\napp: {instances: 1}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis, lb]}\n  b: {address: 10.0.0.1, roles: [lb]}\n", 5, 16, "host `b` has the address and SSH port of host `a` (10.0.0.1:22): one machine, listed twice"),
        case("app port is the ssh port", "name: t\napp: {instances: 1, port: 3000}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis], ssh: {port: 3000}}\n", 4, 34, "port 3000 on host `a` is used by both scale-api instance 3000 and sshd (the host's ssh.port)"),
        case("memory_max above 1 TiB", "name: t\napp: {instances: 1, limits: {memory_max: 100000TiB}}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 2, 42, "app.limits.memory_max `100000TiB` is above the maximum of 1.0 TiB"),
        case("duration past u64 milliseconds", "name: t\napp: {instances: 1, drain_timeout: 18446744073709556s616ms}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n", 2, 36, "app.drain_timeout `18446744073709556s616ms` is longer than the maximum of 10m"),
        case("static root is the filesystem", "name: t\napp: {instances: 1}\nload_balancer: {static: [{path: /s/, root: /}]}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis, lb]}\n", 3, 44, "static root `/` would publish the whole filesystem through the load balancer; give the directory of the files to serve, such as /srv/static"),
        case("static root under /etc", "name: t\napp: {instances: 1}\nload_balancer: {static: [{path: /s/, root: /etc/nginx}]}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis, lb]}\n", 3, 44, "static root `/etc/nginx` would publish a system directory through the load balancer; give the directory of the files to serve, such as /srv/static"),
        case("Redis reached from another host without a password", "name: t\napp: {instances: 1}\nhosts:\n  a: {address: 10.0.0.1, roles: [redis, lb]}\n  b: {address: 10.0.0.2, roles: [app]}\n", 4, 34, "Redis on host `a` is reached from other machines but has no password: anyone who reaches its port could read every session and change or erase any data"),
        // Workers: where they run, what they run, and the Redis their queue lives on.
        case("worker role without workers", workers("", "[app, redis, worker]", "").replace("  workers: {command: [node, worker.js], queue: {kind: bullmq, name: reports}}\n", ""), 6, 46, "host `a` has the worker role, but app.workers says nothing about what a worker runs"),
        case("workers without a worker host", workers("", "[app, redis]", ""), 5, 22, "app.workers is set but no host has the worker role: no worker would run"),
        case("a worker's port", workers("", "[app, redis, worker]", "").replace("[node, worker.js]", "[node, worker.js, \"--port=$(PORT)\"]"), 5, 40, "a worker has no port: `$(PORT)` means nothing in app.workers.command"),
        case("a queue on a Redis that evicts", workers("", "[app, redis, worker]", "redis: {eviction: allkeys-lru}\n"), 8, 19, "redis.eviction allkeys-lru would drop the jobs of queue `reports` when Redis is full: a job evicted is a job lost, silently"),
        case("a queue with no Redis", workers("", "[app, worker]", ""), 5, 69, "queue `reports` lives on Redis, but no host runs Redis"),
        case("a bad queue name", workers("", "[app, redis, worker]", "").replace("name: reports", "name: \"re ports\""), 5, 69, "the queue name must not contain a space"),
        case("workers of scale-api", "name: t\napp:\n  instances: 1\n  workers: {command: [x], queue: {kind: stream, name: jobs}}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis, worker]}\n", 4, 22, "without app.program the workers are scale-api's own: `command: [scale-api, worker]`"),
        case("scale-api's worker on BullMQ", "name: t\napp:\n  instances: 1\n  workers: {command: [scale-api, worker], queue: {kind: bullmq, name: jobs}}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis, worker]}\n", 4, 57, "scale-api's worker consumes a Redis stream, not a BullMQ queue"),
        case("scale-api's worker without its queue", "name: t\napp:\n  instances: 1\n  workers: {command: [scale-api, worker]}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis, worker]}\n", 4, 22, "scale-api's worker needs its queue named: it is the stream that POST /jobs adds to"),
    ]
}

/// A program with a worker kind on one host with `roles`; `top` and `tail` added before and after.
fn workers(top: &str, roles: &str, tail: &str) -> String {
    format!("name: t\n{top}app:\n  instances: 1\n  program: {{release: ./r, command: [node, server.js]}}\n  workers: {{command: [node, worker.js], queue: {{kind: bullmq, name: reports}}}}\nhosts:\n  a: {{address: 10.0.0.1, roles: {roles}}}\n{tail}")
}

#[test]
fn a_queue_on_redis_evicts_nothing_by_default() {
    let t = topology::parse("t.yaml", &workers("", "[app, redis, worker]", "")).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(t.redis.unwrap().eviction, topology::Eviction::Noeviction);
    // Without a queue, the default stays a cache's.
    let t = topology::parse("t.yaml", &workers("", "[app, redis, worker]", "").replace(", queue: {kind: bullmq, name: reports}", "")).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(t.redis.unwrap().eviction, topology::Eviction::AllkeysLru);
}

#[test]
fn every_broken_topology_is_reported_where_it_is_broken() {
    let mut failures = Vec::new();
    let all = cases();
    for c in &all {
        match topology::parse("t.yaml", &c.yaml) {
            Ok(_) => failures.push(format!("{}: accepted", c.what)),
            Err(p) => {
                let got: Vec<(u64, u64, &str)> = p.problems.iter().map(|p| (p.line, p.column, p.message.as_str())).collect();
                if got != vec![(c.line, c.column, c.message)] {
                    failures.push(format!("{}:\n  expected {:?}\n  got      {:?}", c.what, (c.line, c.column, c.message), got));
                }
            }
        }
    }
    assert!(all.len() >= 30);
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), all.len(), failures.join("\n"));
}

#[test]
fn the_base_of_the_table_is_valid() {
    topology::parse("t.yaml", BASE).unwrap_or_else(|p| panic!("{p}"));
}

#[test]
fn an_inline_secret_is_never_echoed() {
    let yaml = "name: t\napp:\n  instances: 1\n  secrets: {SESSION_KEY: hunter2}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n";
    let p = topology::parse("t.yaml", yaml).unwrap_err();
    let shown = format!("{p}{:?}", p.problems);
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn a_misspelt_key_gets_a_suggestion() {
    let p = topology::parse("t.yaml", &with("laod_balancer: {}\n")).unwrap_err();
    assert_eq!(p.problems[0].help.as_deref().unwrap().split('?').next().unwrap(), "did you mean `load_balancer`");
}

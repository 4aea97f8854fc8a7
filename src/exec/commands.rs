//! Every script scalectl runs on a host, built from plan values (pure, tested as exact text):
//! observation, plan actions, the fleet lock, the audit line. Every interpolated value goes
//! through [`q`].

use std::time::Duration;

use base64::Engine;

use crate::plan::{Change, Credentials, CredentialsPhase, DesiredHost, FileChange, SCALE_API, current_link, instance_unit, ready_dir, released_dir, releases_dir};

pub const LOCK_DIR: &str = "/var/lib/scalectl";
pub const LOCK_FILE: &str = "/var/lib/scalectl/lock";

pub fn lock_status() -> String {
    format!("cat {LOCK_FILE} 2>/dev/null || true")
}

/// A value as one shell word (single-quoted when it needs to be); the one quoting helper of every
/// script scalectl sends.
pub fn q(s: &str) -> String {
    shlex::try_quote(s).map(|c| c.into_owned()).unwrap_or_else(|_| "''".into())
}

pub fn install_packages(packages: &[String]) -> String {
    let list: Vec<String> = packages.iter().map(|p| q(p)).collect();
    // A package whose installation reads a file scalectl writes: that file first.
    let (package, path, content) = crate::topology::tiers::DATABASE_PREINSTALL;
    let before = if packages.iter().any(|p| p == package) {
        let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("/");
        format!("mkdir -p {} && printf '%s' {} > {}\n", q(dir), q(content), q(path))
    } else {
        String::new()
    };
    format!(
        "export DEBIAN_FRONTEND=noninteractive\n{before}apt-get update -q && apt-get install -y -q --no-install-recommends {}\n",
        list.join(" ")
    )
}

/// Patroni's view of the cluster, from its REST API on the database host at `address` (a read:
/// no password).
pub fn patroni_cluster(address: &str) -> String {
    let url = format!("http://{}/cluster", crate::render::hostport(address, crate::topology::ports::PATRONI));
    format!("curl -fsS --max-time 10 {}", q(&url))
}

/// A switchover through Patroni's REST API on the leader's host: its user and password from the
/// 0600 file its unit reads, handed to curl on stdin (`-K -`), never in an argument. `leader` and
/// `candidate` are host names (DNS labels).
pub fn patroni_switchover(address: &str, leader: &str, candidate: &str) -> String {
    let url = format!("http://{}/switchover", crate::render::hostport(address, crate::topology::ports::PATRONI));
    let body = format!("{{\"leader\": \"{leader}\", \"candidate\": \"{candidate}\"}}");
    format!(
        "set -e; set -a; . {env}; set +a\nprintf 'user = \"%s:%s\"\\n' \"$PATRONI_RESTAPI_USERNAME\" \"$PATRONI_RESTAPI_PASSWORD\" | curl -sS --fail-with-body --max-time 60 -K - -H 'Content-Type: application/json' -d {body} {url}\n",
        env = q(crate::topology::tiers::PATRONI_SECRETS),
        body = q(&body),
        url = q(&url),
    )
}

/// Receives the release on stdin: scale-api's binary, or (`archive`) a tar of the program's
/// directory. The release directory appears complete or not at all.
///
/// A tar is unpacked by `nobody`, not root: an unprivileged tar cannot make a device node (a block
/// device would read the raw disk) nor give a file an owner. Then only regular files, directories
/// and symbolic links that resolve inside the release are accepted, at most
/// [`MAX_RELEASE_BYTES`](crate::plan::MAX_RELEASE_BYTES); anything else is refused with its path and
/// nothing is kept. What is kept is owned by root and readable by the instances' users.
pub fn upload_release(app: &str, id: &str, archive: bool) -> String {
    let tmp = format!("{}/.tmp-{id}", releases_dir(app));
    let dir = format!("{}/{id}", releases_dir(app));
    let receive = if archive { unpack_release("-", "{t}") } else { format!("cat > {{t}}/{SCALE_API}; chmod 755 {{t}}/{SCALE_API}") };
    format!("set -e; rm -rf {{t}}; mkdir -p {{t}}; {receive}; rm -rf {{d}}; mv {{t}} {{d}}")
        .replace("{t}", &q(&tmp))
        .replace("{d}", &q(&dir))
}

/// The script that unpacks the release tar `file` (`-`: stdin) into the empty directory `dir`
/// (see [`upload_release`]); also what the Ansible role runs. Both are shell words, quoted by
/// the caller (`"$1"` in the Ansible role's script).
pub fn unpack_release(file: &str, dir: &str) -> String {
    format!(
        r#"into={dir}; tarball={file}
refuse() {{ rm -rf "$into"; printf 'the release is refused: %s\n' "$1" >&2; exit 1; }}
chown 65534:65534 "$into"; chmod 700 "$into"
setpriv --reuid=65534 --regid=65534 --clear-groups -- tar -x --no-same-owner --no-same-permissions -f "$tarball" -C "$into" || refuse "tar could not unpack it as an unprivileged user (a device node, or a name outside the release?)"
base=$(realpath "$into")
odd=$(find "$base" -mindepth 1 ! -type f ! -type d ! -type l -print -quit)
[ -z "$odd" ] || refuse "${{odd#"$base"/}} is neither a file, a directory nor a symbolic link"
out=$(find "$base" -type l -exec sh -c 'for l; do case "$(realpath -m -- "$l")" in "$0"|"$0"/*) ;; *) printf "%s -> %s" "${{l#"$0"/}}" "$(readlink -- "$l")"; exit 0;; esac; done' "$base" {{}} +)
[ -z "$out" ] || refuse "the symbolic link $out leads outside the release"
size=$(du -sb "$base" | cut -f1)
[ "$size" -le {max} ] || refuse "it holds $size bytes unpacked, more than {max}"
chown -R root:root "$into"; chmod -R u+rwX,go+rX,go-w "$into""#,
        max = crate::plan::MAX_RELEASE_BYTES,
    )
}

/// Each file to `PATH.scalectl-new`, then mode, owner, fsync and rename over PATH.
///
/// Some of these directories belong to a service's user (/etc/redis is redis'), who may put a
/// symlink at `PATH.scalectl-new`: root must never write through it. The content goes first to a
/// private temporary file (`mktemp`: created exclusively, 0600), then `install` puts it at
/// `PATH.scalectl-new`, unlinking what is there and creating the file anew with `O_EXCL` (a link
/// made again in between makes it fail, never followed). A change of mode or owner alone is the
/// same rewrite: `chmod` and `chown` on PATH would follow a link there.
pub fn write_files(files: &[&FileChange]) -> String {
    let mut s = String::from("set -e\numask 077\nt=$(mktemp)\ntrap 'rm -f \"$t\"' EXIT\n");
    for f in files {
        let tmp = format!("{}.scalectl-new", f.path);
        let dir = std::path::Path::new(&f.path).parent().map(|p| p.display().to_string()).unwrap_or_else(|| "/".into());
        // Created when missing; an existing directory keeps its mode.
        s.push_str(&format!("[ -d {d} ] || install -d -m 755 {d}\n", d = q(&dir)));
        let b64 = base64::engine::general_purpose::STANDARD.encode(f.content.as_bytes());
        s.push_str(&format!(
            "printf '%s' {b64} | base64 -d > \"$t\"\ninstall -m {:o} -o {} -g {} \"$t\" {n}\nsync {n}\nmv -f {n} {p}\n",
            f.mode,
            q(&f.owner),
            q(&f.group),
            b64 = q(&b64),
            n = q(&tmp),
            p = q(&f.path)
        ));
    }
    s
}

/// Put back what the host had before `write_files` (remove what was created).
pub fn restore_files(files: &[&FileChange]) -> String {
    let restored: Vec<FileChange> = files
        .iter()
        .filter_map(|f| f.previous.as_ref().map(|prev| FileChange { content: prev.clone(), change: Change::Update, ..(*f).clone() }))
        .collect();
    let refs: Vec<&FileChange> = restored.iter().collect();
    let mut s = write_files(&refs);
    for f in files.iter().filter(|f| f.change == Change::Create) {
        s.push_str(&format!("rm -f {}\n", q(&f.path)));
    }
    s
}

pub fn remove(path: &str) -> String {
    format!("rm -f {}", q(path))
}

pub fn switch_release(app: &str, id: &str) -> String {
    format!(
        "set -e; ln -sfn {} {c}.scalectl-new; mv -T {c}.scalectl-new {c}",
        q(&format!("{}/{id}", releases_dir(app))),
        c = q(&current_link(app))
    )
}

/// `reset-failed` first: a unit that crash-looped before its config arrived (an exporter started
/// by its package) has hit its start limit, and systemd would refuse to start it.
pub fn start(unit: &str) -> String {
    format!("systemctl reset-failed {u} 2>/dev/null; systemctl enable -q {u} && systemctl start {u}", u = q(unit))
}

pub fn restart(unit: &str) -> String {
    format!("systemctl reset-failed {u} 2>/dev/null; systemctl enable -q {u} && systemctl restart {u}", u = q(unit))
}

pub fn reload(unit: &str) -> String {
    if unit == crate::topology::tiers::BALANCER_SERVICE {
        // The old process answers what it holds (each idle connection from nginx once more) by
        // the configuration from before: waited for, so that no drain after this reaches a
        // process that will not hear of it.
        return format!("systemctl reload {}\n{}", q(unit), balancer_settled(BALANCER_SETTLE));
    }
    format!("systemctl reload {}", q(unit))
}

/// How long a balancer's old process may take after a reload: nginx closes its idle connections
/// to the balancer within `Balancer::nginx_idle_ms` (10 s), and requests in flight finish.
pub const BALANCER_SETTLE: Duration = Duration::from_secs(30);

/// Wait (at most `wait`) until one HAProxy worker runs beside its master: the processes of
/// earlier configurations have ended. Read from /proc (an image may have no pgrep).
pub fn balancer_settled(wait: Duration) -> String {
    format!(
        "end=$(( $(date +%s) + {secs} ))\nwhile [ \"$(date +%s)\" -lt \"$end\" ]; do\n  n=0\n  \
for p in /proc/[0-9]*; do [ \"$(cat \"$p/comm\" 2>/dev/null)\" = haproxy ] && n=$((n + 1)); done\n  \
[ \"$n\" -le 2 ] && break\n  sleep 0.2\ndone\n",
        secs = wait.as_secs().max(1)
    )
}

pub fn enable(unit: &str) -> String {
    format!("systemctl enable -q {}", q(unit))
}

pub fn stop(unit: &str) -> String {
    format!("systemctl disable -q --now {}", q(unit))
}

pub const PENDING: &str = "/var/lib/scalectl/pending";
pub const CLEAR_PENDING: &str = "rm -f /var/lib/scalectl/pending";

/// Owed service actions, merged with any already recorded, written atomically.
pub fn mark_pending(entries: &[String]) -> String {
    let lines: Vec<String> = entries.iter().map(|e| q(e)).collect();
    format!(
        "set -e; mkdir -p /var/lib/scalectl; {{ cat {p} 2>/dev/null || true; printf '%s\\n' {}; }} | sort -u > {p}.new; mv -f {p}.new {p}",
        lines.join(" "),
        p = PENDING
    )
}

/// scalectl's admin user of a tier's credentials, which changes its users live (see
/// [`ensure_redis_admin_in`]). Kept as it is when it exists.
pub fn ensure_admin(kind: Credentials) -> String {
    match kind {
        Credentials::Redis => ensure_redis_admin_in(REDIS_DIR),
    }
}

/// A tier's users changed live to its file's, through its admin user on 127.0.0.1:`port`
/// (see [`redis_users_of`]): `Add` the file's passwords beside those the users have, and leave
/// the marker that says a settle is owed; `Settle` each user to exactly the file's, and remove it.
pub fn credentials(kind: Credentials, phase: CredentialsPhase, port: u16) -> String {
    match kind {
        Credentials::Redis => redis_users_in(phase, port, REDIS_DIR, &credentials_marker(kind)),
    }
}

/// [`credentials`] in a tier's container on docker, its marker named: the user the script runs
/// as (the service's, whose alone the users file is), and the script.
pub fn container_credentials(kind: Credentials, phase: CredentialsPhase, port: u16, marker: &str) -> (&'static str, String) {
    match kind {
        Credentials::Redis => ("redis", redis_users_of(phase, port, crate::render::DOCKER_REDIS_USERS, crate::render::DOCKER_REDIS_ADMIN_PASS, marker)),
    }
}

/// Where `Credentials { add }` records users changed live and not yet settled.
pub fn credentials_marker(kind: Credentials) -> String {
    format!("/var/lib/scalectl/{}", kind.pending())
}

/// What `observe` prints of a tier's credentials: `pending KIND` while added and not settled,
/// `admin KIND` when scalectl's admin user exists.
fn observe_credentials(kind: Credentials) -> String {
    let marker = format!("[ -e {} ] && echo 'pending {}'\n", q(&credentials_marker(kind)), kind.pending());
    match kind {
        Credentials::Redis => {
            let (pass, conf) = redis_admin_files(REDIS_DIR);
            format!("{marker}[ -s {} ] && [ -s {} ] && echo 'admin {}'\n", q(&pass), q(&conf), kind.pending())
        }
    }
}

/// Where Redis' configuration, the ACL include and the admin user's files are on a host.
const REDIS_DIR: &str = "/etc/redis";

/// The admin user's password file and its include, in `dir`.
fn redis_admin_files(dir: &str) -> (String, String) {
    (format!("{dir}/scalectl-admin.pass"), format!("{dir}/scalectl-admin.conf"))
}

/// scalectl's Redis admin user, which changes the ACL users live: its password is random, made on
/// the Redis host (its files in `dir`) and kept in a root-only file there; Redis reads only its
/// sha256 (an include, 0640 root:redis). Kept as it is when both files exist.
pub fn ensure_redis_admin_in(dir: &str) -> String {
    let (pass, conf) = redis_admin_files(dir);
    format!(
        r#"set -e
p={pass}; c={conf}
if [ -s "$p" ] && [ -s "$c" ]; then exit 0; fi
umask 077
pw=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' 
')
printf '%s
' "$pw" > "$p.scalectl-new"; chmod 400 "$p.scalectl-new"; mv -f "$p.scalectl-new" "$p"
h=$(printf '%s' "$pw" | sha256sum | cut -d' ' -f1)
printf 'user scalectl-admin on #%s {rules}
' "$h" > "$c.scalectl-new"
chown root:redis "$c.scalectl-new"; chmod 640 "$c.scalectl-new"; mv -f "$c.scalectl-new" "$c"
"#,
        pass = q(&pass),
        conf = q(&conf),
        rules = crate::render::REDIS_ADMIN_RULES,
    )
}

/// Days a host's log certificate is valid, and the margin before its end at which apply issues
/// a new one.
const LOG_CERT_DAYS: u32 = 825;
const LOG_CERT_RENEW_DAYS: u32 = 30;
/// Days the fleet's log CA is valid.
const LOG_CA_DAYS: u32 = 3650;

/// Step 1 of `LogCertificate`, on the host: its key made once (Ed25519, 0400 root; it never
/// leaves the host), and a certificate request naming `name` on stdout.
pub fn log_tls_request_in(dir: &str, name: &str) -> String {
    let f = crate::render::LogTlsFiles::in_dir(dir);
    format!(
        r#"set -e
umask 022; mkdir -p {dir}; umask 077
k={key}
if [ ! -s "$k" ]; then openssl genpkey -algorithm ed25519 -out "$k.scalectl-new"; chmod 400 "$k.scalectl-new"; mv -f "$k.scalectl-new" "$k"; fi
openssl req -new -key "$k" -subj {subject}
"#,
        dir = q(dir),
        key = q(&f.key),
        subject = q(&format!("/CN={name}")),
    )
}

/// Step 2, on the CA's host: the fleet's log CA made if it is missing (under `flock`, so hosts
/// issued at once make one CA), then `csr` signed for `name`: the name is the plan's, set here as
/// both the subject (`-subj`) and the subjectAltName, whatever the request says (a host that asked
/// for the monitor's name in its subject would otherwise pass the shippers' check of the
/// collector's name, which reads the subject too). On stdout: the certificate, then the CA's.
pub fn log_tls_sign_in(dir: &str, ca_host: &str, name: &str, csr: &str) -> String {
    let (key, cert) = crate::render::LogTlsFiles::authority_in(dir);
    format!(
        r#"set -e
umask 022; mkdir -p {dir}; umask 077; mkdir -p {dir}/ca
exec 9>>{dir}/ca/.lock
flock -w 20 9
k={key}; c={cert}
if [ ! -s "$k" ] || [ ! -s "$c" ]; then
  openssl genpkey -algorithm ed25519 -out "$k.scalectl-new"
  openssl req -x509 -new -key "$k.scalectl-new" -subj {subject} -days {ca_days} -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' -out "$c.scalectl-new"
  chmod 400 "$k.scalectl-new"; chmod 644 "$c.scalectl-new"
  mv -f "$k.scalectl-new" "$k"; mv -f "$c.scalectl-new" "$c"
fi
ext=$(mktemp); trap 'rm -f "$ext"' EXIT
printf 'subjectAltName=DNS:%s
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
' {name} > "$ext"
openssl x509 -req -CA "$c" -CAkey "$k" -set_serial "0x$(openssl rand -hex 16)" -days {days} -subj {host_subject} -extfile "$ext" <<'SCALECTL_PEM'
{csr}
SCALECTL_PEM
cat "$c"
"#,
        dir = q(dir),
        key = q(&key),
        cert = q(&cert),
        subject = q(&format!("/CN=scalectl fleet log CA on {ca_host}")),
        ca_days = LOG_CA_DAYS,
        name = q(name),
        host_subject = q(&format!("/CN={name}")),
        days = LOG_CERT_DAYS,
        csr = csr.trim_end(),
    )
}

/// Step 3, on the host: the certificate and the CA's installed, once `openssl verify` says the
/// certificate is that CA's and it holds this host's key.
pub fn log_tls_install_in(dir: &str, cert: &str, ca: &str) -> String {
    let f = crate::render::LogTlsFiles::in_dir(dir);
    format!(
        r#"set -e
umask 022
c={cert_path}; a={ca_path}; k={key}
cat > "$c.scalectl-new" <<'SCALECTL_PEM'
{cert}
SCALECTL_PEM
cat > "$a.scalectl-new" <<'SCALECTL_PEM'
{ca}
SCALECTL_PEM
openssl verify -CAfile "$a.scalectl-new" "$c.scalectl-new" >/dev/null
[ "$(openssl x509 -in "$c.scalectl-new" -noout -pubkey)" = "$(openssl pkey -in "$k" -pubout)" ] || {{ echo "the certificate is not for this host's key" >&2; exit 1; }}
chmod 644 "$c.scalectl-new" "$a.scalectl-new"
mv -f "$a.scalectl-new" "$a"; mv -f "$c.scalectl-new" "$c"
"#,
        cert_path = q(&f.cert),
        ca_path = q(&f.ca),
        key = q(&f.key),
        cert = cert.trim_end(),
        ca = ca.trim_end(),
    )
}

/// The PEM blocks labelled `label` in `text`, each checked to be nothing but PEM (so that what a
/// host printed goes into another host's script as data, never as commands).
pub fn pem_blocks(text: &str, label: &str) -> Result<Vec<String>, String> {
    let (begin, end) = (format!("-----BEGIN {label}-----"), format!("-----END {label}-----"));
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines().map(str::trim_end) {
        match current.as_mut() {
            None if line == begin => current = Some(vec![line]),
            None => {}
            Some(b) if line == end => {
                b.push(line);
                blocks.push(b.join("\n") + "\n");
                current = None;
            }
            Some(b) => {
                if line.is_empty() || !line.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'=') {
                    return Err(format!("not a {label} in PEM: {:?}", line.chars().take(80).collect::<String>()));
                }
                b.push(line);
            }
        }
    }
    if current.is_some() {
        return Err(format!("a {label} in PEM is cut short"));
    }
    Ok(blocks)
}

/// Observation of the log TLS files: `logtls CA-SHA256 good|bad NAME` for the host's
/// certificate, and on the CA's host `logca SHA256`.
fn observe_log_tls(dir: &str, ca_host: bool) -> String {
    let f = crate::render::LogTlsFiles::in_dir(dir);
    let mut s = format!(
        r#"c={cert}; a={ca}; k={key}
if [ -s "$c" ] && [ -s "$a" ] && [ -s "$k" ]; then
  s=bad
  if openssl verify -CAfile "$a" "$c" >/dev/null 2>&1 && openssl x509 -in "$c" -noout -checkend {margin} >/dev/null 2>&1 && [ "$(openssl x509 -in "$c" -noout -pubkey 2>/dev/null)" = "$(openssl pkey -in "$k" -pubout 2>/dev/null)" ]; then s=good; fi
  echo "logtls $(sha256sum < "$a" | cut -d' ' -f1) $s $(openssl x509 -in "$c" -noout -ext subjectAltName 2>/dev/null | sed -n 's/^ *DNS://p' | head -n1)"
fi
"#,
        cert = q(&f.cert),
        ca = q(&f.ca),
        key = q(&f.key),
        margin = LOG_CERT_RENEW_DAYS * 86_400,
    );
    if ca_host {
        let (key, cert) = crate::render::LogTlsFiles::authority_in(dir);
        s.push_str(&format!("[ -s {k} ] && [ -s {c} ] && echo \"logca $(sha256sum < {c} | cut -d' ' -f1)\"\n", k = q(&key), c = q(&cert)));
    }
    s
}

/// Redis' ACL users changed live to the include's (`DIR/scalectl-auth.conf`), with the admin's
/// password file in `dir` too.
pub fn redis_users_in(phase: CredentialsPhase, port: u16, dir: &str, marker: &str) -> String {
    redis_users_of(phase, port, &format!("{dir}/scalectl-auth.conf"), &redis_admin_files(dir).0, marker)
}

/// Redis' ACL users changed live to the include's (`users`), through scalectl's admin user on
/// 127.0.0.1:`port` (its password in `admin_pass`). `Add`: each user gets the include's passwords
/// besides those it has (clients on the old password and on the new both authenticate), and
/// `marker` says a settle is owed. `Settle`: each user is reset to exactly the include's rules
/// (the old password gone), and the marker removed. The commands go to redis-cli on its stdin and
/// the admin password in its environment: no password or hash in any process' arguments, and
/// none in an error (hashes are masked). The docker target runs it in its Redis container.
pub fn redis_users_of(phase: CredentialsPhase, port: u16, users: &str, admin_pass: &str, marker: &str) -> String {
    let (commands, after) = match phase {
        CredentialsPhase::Add => (
            r#"line="ACL SETUSER $name on"; for w in $rules; do case "$w" in '#'*) line="$line $w" ;; esac; done; printf '%s
' "$line""#,
            format!(r#"mkdir -p "$(dirname {m})"; touch {m}"#, m = q(marker)),
        ),
        CredentialsPhase::Settle => (r#"printf 'ACL SETUSER %s reset %s
' "$name" "$rules""#, format!("rm -f {}", q(marker))),
    };
    format!(
        r#"set -e -f
f={users}
REDISCLI_AUTH=$(cat {pass}); export REDISCLI_AUTH
n=$(grep -c '^user ' "$f" || true)
out=$(grep '^user ' "$f" | while read -r _ name rules; do {commands}; done | redis-cli --no-auth-warning --user scalectl-admin -h 127.0.0.1 -p {port} 2>&1 || true)
ok=$(printf '%s
' "$out" | grep -c '^OK$' || true)
if [ "$n" = 0 ] || [ "$ok" != "$n" ]; then
  printf 'Redis did not take the users of %s (%s of %s changed): %s
' "$f" "$ok" "$n" "$(printf '%s
' "$out" | grep -v '^OK$' | sed -E 's/#[0-9a-fA-F]{{64}}/#*/g' | head -5)" >&2
  exit 1
fi
{after}
"#,
        users = q(users),
        pass = q(admin_pass),
    )
}

/// Tries (a second apart, each up to 3 s) a release command gives the database's writer.
const RELEASE_COMMAND_DB_WAIT_S: u32 = 120;

/// The release command's unit for one release, run to its end (`systemctl start` of a oneshot
/// unit waits for it); what it printed follows, and on success the release is recorded as
/// released. A failed instance of the unit is reset first, so a second attempt starts anew.
pub fn release_command(app: &str, id: &str, unit: &str, wait_writer: Option<u16>) -> String {
    // The database's writer on this host (HAProxy), waited for until the app's role logs in to
    // its database: a first deploy has just started the database, whose first member takes some
    // seconds to bootstrap and make them. As the app, from its secrets file (libpq's variables:
    // the password in no command line).
    let wait = match wait_writer {
        Some(port) => format!(
            "( set -a; . {secrets}; set +a; export PGHOST=127.0.0.1 PGPORT={port} PGCONNECT_TIMEOUT=3\n\
             i=0; until psql -XAtqc 'select 1' >/dev/null 2>&1; do i=$((i+1)); [ $i -lt {tries} ] || {{ echo \"the database's writer (127.0.0.1:{port}) did not let the app log in after {tries} tries:\"; psql -XAtqc 'select 1' 2>&1 | tail -n 3; exit 1; }}; sleep 1; done ) || exit 1\n",
            secrets = q(&crate::topology::tiers::secrets_file(app)),
            tries = RELEASE_COMMAND_DB_WAIT_S,
        ),
        None => String::new(),
    };
    format!(
        "{wait}u={u}; systemctl reset-failed \"$u\" 2>/dev/null; since=$(date +%s.%N)\n\
         if systemctl start \"$u\"; then rc=0; else rc=$?; fi\n\
         journalctl -u \"$u\" --since \"@$since\" -o cat --no-pager 2>/dev/null | tail -n 200\n\
         [ $rc -eq 0 ] || exit $rc\n\
         install -d -m 755 {d}; : > {d}/{id}\n",
        u = q(unit),
        d = q(&released_dir(app)),
        id = q(id),
    )
}

/// The marker `rollback` looks for: every instance became ready on this release. It lives in
/// /opt/APP/ready, which only root writes, never inside the release (whose files are the release's).
pub fn mark_ready(app: &str, id: &str) -> String {
    format!("set -e; install -d -m 755 {d}; : > {d}/{}", q(id), d = q(&ready_dir(app)))
}

pub fn prune(app: &str, ids: &[String]) -> String {
    let dirs: Vec<String> =
        ids.iter().flat_map(|i| [q(&format!("{}/{i}", releases_dir(app))), q(&format!("{}/{i}", ready_dir(app)))]).collect();
    format!("rm -rf {}", dirs.join(" "))
}

/// Poll the instance's readiness path until HTTP 200 or the deadline (at least `timeout`: the
/// clock is read in whole seconds, so the end is one second past); print the last answer.
/// The answer is kept in a variable, never in a file (a root-written temporary file is a target).
pub fn wait_ready(port: u16, path: &str, timeout: Duration) -> String {
    format!(
        "url={url}\nend=$(( $(date +%s) + {secs} + 1 ))\ncode=000\nbody=\n\
while [ \"$(date +%s)\" -lt \"$end\" ]; do\n  out=$(curl -s -m 2 -w '\\n%{{http_code}}' \"$url\" 2>/dev/null || true)\n  \
code=$(printf '%s' \"$out\" | tail -n 1)\n  body=$(printf '%s' \"$out\" | sed '$d' | head -c 300)\n  \
if [ \"$code\" = 200 ]; then exit 0; fi\n  sleep 0.2\ndone\n\
echo \"last answer from $url: HTTP $code $body\"\nexit 1\n",
        url = q(&format!("http://127.0.0.1:{port}{path}")),
        secs = timeout.as_secs().max(1)
    )
}

/// The balancer's runtime API as a shell function, `api COMMAND` (its answer on stdout), and its
/// socket, backend and server as `$sock`, `$be`, `$srv` (shell words). Nothing to do (exit 0) when
/// no balancer answers there: none installed yet (a first apply installs it) or none running (it
/// then sends nothing to any instance either).
fn balancer_preamble(socket: &str, backend: &str, server: &str) -> String {
    format!(
        "set -e\nsock={socket}; be={backend}; srv={server}\n\
api() {{ printf '%s\\n' \"$1\" | socat -t 10 stdio \"UNIX-CONNECT:$sock\"; }}\n\
[ -S \"$sock\" ] && api 'show info' >/dev/null 2>&1 || exit 0\n"
    )
}

/// `set server` through the runtime API: it answers nothing when done. A server or backend it
/// does not have is not an error: a new instance, or a balancer not yet given this topology,
/// which the lb host's reload later in the same apply lists it in.
fn set_server_state(state: &str, what: &str) -> String {
    format!(
        "out=$(api \"set server $be/$srv state {state}\")\ncase \"$out\" in\n  '') ;;\n  'No such server.'*|'No such backend.'*) exit 0 ;;\n  \
*) echo \"the balancer did not {what} $srv: $out\" >&2; exit 1 ;;\nesac\n"
    )
}

/// Poll (every 0.1 s, at most `wait`) until awk with `cond` (its arguments as shell words: the
/// program quoted), run on `show stat`'s CSV
/// line for the server (`$5` its requests in flight) or `show servers state`'s (`$6` its state),
/// prints `yes`.
fn balancer_wait(command: &str, cond: &str, wait: Duration) -> String {
    format!(
        "end=$(( $(date +%s) + {secs} ))\nwhile [ \"$(date +%s)\" -lt \"$end\" ]; do\n  \
[ \"$(api \"{command}\" | awk {cond} b=\"$be\" s=\"$srv\")\" = yes ] && exit 0\n  sleep 0.1\ndone\n",
        secs = wait.as_secs().max(1),
    )
}

/// A drained server made ready, then waited for (at most `wait`) until the balancer has it up
/// (`show servers state BACKEND`: $4 the server's name, $6 its state, 2 running); else an error.
fn back_up(wait: Duration) -> String {
    format!(
        "{}{}echo \"the balancer does not have $srv up yet\" >&2\nexit 1\n",
        set_server_state("ready", "put back"),
        balancer_wait("show servers state $be", "'$4 == s { print ($6 == 2 ? \"yes\" : \"no\") }'", wait)
    )
}

/// Take one instance out of this load balancer before it restarts: its server in the balancer
/// behind nginx (HAProxy) goes into maintenance through the runtime API, so no new request goes
/// to it, then scalectl waits (at most `wait`) until its requests in flight are answered. No
/// file changes and nothing reloads: no client's connection to nginx, and none of nginx's to the
/// balancer, is closed. Nothing is done for a server the balancer does not list (a new instance).
pub fn drain(socket: &str, backend: &str, server: &str, wait: Duration) -> String {
    drain_words(&q(socket), &q(backend), &q(server), wait)
}

/// [`drain`] with the socket, backend and server given as shell words (`"$1"`, `"$2"`, `"$3"`):
/// the script the Ansible playbook runs on each load balancer.
pub fn drain_words(socket: &str, backend: &str, server: &str, wait: Duration) -> String {
    format!(
        "{}{}{}",
        balancer_preamble(socket, backend, server),
        set_server_state("maint", "take out"),
        balancer_wait("show stat", "-F, '$1 == b && $2 == s { print ($5 == 0 ? \"yes\" : \"no\") }'", wait)
    )
}

/// Put a drained instance back into this load balancer once it is ready again: ready through the
/// runtime API, then waited for (at most `wait`) until the balancer has it up (its own health
/// check agrees), so the next instance does not leave while this one is not yet taking requests.
/// With `pause_checks`, its health check is paused first (see [`Checks`]).
pub fn undrain(socket: &str, backend: &str, server: &str, wait: Duration, pause_checks: bool) -> String {
    undrain_words(&q(socket), &q(backend), &q(server), wait, Checks::from(pause_checks))
}

/// How a server put back into the balancer is health-checked until the balancer next reloads.
///
/// The balancer checks every instance at one liveness path, from its file. When a run changes
/// that path (or any other check setting), its instances restart first and the balancer reloads
/// for the new file after them: an instance back on the new release answers the new path only,
/// so the old check would take it down, and with every instance rolled, the whole app. Such an
/// instance's check is paused (`disable health`: the balancer counts it up, unchecked; scalectl
/// just saw it ready) until that reload, whose new process checks every server afresh with the
/// new settings. Otherwise the check runs (`enable health`, which also ends a pause a run that
/// stopped before its reload left).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checks<'a> {
    Run,
    Pause,
    /// Paused when the balancer's file at `path` is not (yet) the one whose sha256 is the shell
    /// word `sha`, which the run installs after its instances (the Ansible playbook's lb play);
    /// an empty `sha` runs the check.
    PauseUnlessFile { path: &'a str, sha: &'a str },
}

impl From<bool> for Checks<'_> {
    fn from(pause: bool) -> Self {
        if pause { Checks::Pause } else { Checks::Run }
    }
}

/// The server's health check paused or run, as `checks` says; a server or backend the balancer
/// does not list is nothing to do (as [`set_server_state`]).
fn set_checks(checks: Checks<'_>) -> String {
    let pause = match checks {
        Checks::Run => "pause=no\n".to_string(),
        Checks::Pause => "pause=yes\n".to_string(),
        Checks::PauseUnlessFile { path, sha } => format!(
            "pause=no\nif [ -n {sha} ] && [ \"$(sha256sum < {path} 2>/dev/null | cut -d' ' -f1)\" != {sha} ]; then pause=yes; fi\n",
            path = q(path)
        ),
    };
    format!(
        "{pause}if [ \"$pause\" = yes ]; then h=disable; else h=enable; fi\nout=$(api \"$h health $be/$srv\")\ncase \"$out\" in\n  ''|*'not configured'*) ;;\n  \
'No such server.'*|'No such backend.'*) exit 0 ;;\n  *) echo \"the balancer did not $h $srv's health check: $out\" >&2; exit 1 ;;\nesac\n"
    )
}

/// [`undrain`] with the socket, backend and server given as shell words, as [`drain_words`].
pub fn undrain_words(socket: &str, backend: &str, server: &str, wait: Duration, checks: Checks<'_>) -> String {
    format!("{}{}{}", balancer_preamble(socket, backend, server), set_checks(checks), back_up(wait))
}

/// On docker: point a drained server at another replica container and put it back. The
/// balancer follows the container by name (`fqdn`, through the engine's DNS) from then on, and
/// is given its address now (`addr`, as the container itself resolves it), so no request goes to
/// the replica before; then as [`undrain`].
pub fn serve(socket: &str, backend: &str, server: &str, replica: &str, port: u16, wait: Duration, pause_checks: bool) -> String {
    format!(
        "{pre}name={name}\nip=$(getent hosts \"$name\" | awk '{{ print $1; exit }}')\n\
[ -n \"$ip\" ] || {{ echo \"$name does not resolve\" >&2; exit 1; }}\n\
for c in \"set server $be/$srv fqdn $name\" \"set server $be/$srv addr $ip port {port}\"; do\n  \
out=$(api \"$c\")\n  case \"$out\" in ''|*' changed '*|*'no need to change'*) ;; *) echo \"the balancer refused '$c': $out\" >&2; exit 1 ;; esac\ndone\n\
{checks}{back}",
        pre = balancer_preamble(&q(socket), &q(backend), &q(server)),
        name = q(replica),
        checks = set_checks(Checks::from(pause_checks)),
        back = back_up(wait)
    )
}

/// On docker: reload the balancer (its master is the container's first process) for a file just
/// written and checked, then wait until the new worker answers on the runtime API (at most
/// `wait`) and the old one has ended, so that what follows reaches the only one.
pub fn reload_balancer_in_container(socket: &str, wait: Duration) -> String {
    format!(
        "sock={sock}\npid() {{ printf 'show info\\n' | socat -t 5 stdio \"UNIX-CONNECT:$sock\" 2>/dev/null | sed -n 's/^Pid: //p'; }}\n\
old=$(pid)\nkill -USR2 1\nend=$(( $(date +%s) + {secs} ))\nwhile [ \"$(date +%s)\" -lt \"$end\" ]; do\n  \
new=$(pid)\n  [ -n \"$new\" ] && [ \"$new\" != \"$old\" ] && break\n  sleep 0.1\ndone\n\
[ -n \"$new\" ] && [ \"$new\" != \"$old\" ] || {{ echo \"the balancer did not reload within {secs} s\" >&2; exit 1; }}\n{settled}",
        sock = q(socket),
        secs = wait.as_secs().max(1),
        settled = balancer_settled(BALANCER_SETTLE)
    )
}

/// The servers a balancer has in maintenance that scalectl put there (a run that stopped between
/// a drain and its undrain): `drained SERVER` lines for the observation.
pub fn drained_servers(socket: &str, backend: &str) -> String {
    format!(
        "if [ -S {sock} ]; then printf 'show servers state %s\\n' {be} | socat -t 10 stdio UNIX-CONNECT:{sock} 2>/dev/null | \
awk '$2 == b && $7 % 2 == 1 {{ print \"drained \" $4 }}' b={be} || true; fi\n",
        sock = q(socket),
        be = q(backend)
    )
}

/// Wait until every process in `pids` (shell words: `"$@"`) has exited, at most `wait`: the
/// docker target waits so for nginx's old workers after a change to nginx's own site.
pub fn wait_for_exit(pids: &str, wait: Duration) -> String {
    format!(
        "end=$(( $(date +%s) + {} ))\nfor p in {pids}; do\n  while kill -0 \"$p\" 2>/dev/null && [ \"$(date +%s)\" -lt \"$end\" ]; do sleep 0.1; done\ndone\n",
        wait.as_secs().max(1)
    )
}

fn journal_of(app: &str) -> String {
    format!("journalctl -u {} -u {} -o json --no-pager --output-fields=MESSAGE,SYSLOG_IDENTIFIER", q(&format!("{app}@*.service")), q(&format!("{app}-worker@*.service")))
}

/// The app's journal on a host as JSON lines: the newest `lines` within `since`, newest first
/// (`-r`: with `--since`, `-n` alone would count from the oldest).
pub fn journal_history(app: &str, since: Duration, lines: usize) -> String {
    format!("{} --since=-{}s -n {lines} -r", journal_of(app), since.as_secs().max(1))
}

/// New lines as they come: after the cursor of the last line shown, or from now.
pub fn journal_follow(app: &str, after: Option<&str>) -> String {
    match after {
        Some(cursor) => format!("{} -f --after-cursor={}", journal_of(app), q(cursor)),
        None => format!("{} -f -n 0", journal_of(app)),
    }
}

/// The host's instances and workers measured at once (scalectl-instances, for the node exporter).
pub const MEASURE_NOW: &str = "systemctl start --no-block scalectl-instances.service 2>/dev/null || true";

/// Whether each unit still runs `settle_ms` after it (re)started, and was not restarted by
/// systemd meanwhile: a process that exits at once is `activating` again, its NRestarts grown.
/// Prints each unit that is not, with its state.
pub fn still_running(units: &[String], settle_ms: u64) -> String {
    let list = units.iter().map(|u| q(u)).collect::<Vec<_>>().join(" ");
    let secs = format!("{}.{:03}", settle_ms / 1000, settle_ms % 1000);
    format!(
        r#"before=''
for u in {list}; do before="$before $(systemctl show -p NRestarts --value "$u")"; done
sleep {secs}
bad=0
set -- $before
for u in {list}; do
  st=$(systemctl is-active "$u"); n=$(systemctl show -p NRestarts --value "$u")
  if [ "$st" != active ] || [ "$n" != "$1" ]; then echo "$u is $st (restarted $((n - $1)) times by systemd)"; bad=1; fi
  shift
done
exit $bad
"#
    )
}

pub fn logs(unit: &str) -> String {
    format!("journalctl -u {} -n 20 --no-pager -o short-iso 2>&1 || true", q(unit))
}

pub fn audit(json_line: &str) -> String {
    format!(
        "mkdir -p /var/log/scalectl && printf '%s %s\\n' \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" {} >> /var/log/scalectl/audit.log",
        q(json_line)
    )
}

/// The observation script for one host.
pub fn observe(d: &DesiredHost) -> String {
    let mut s = String::from("LC_ALL=C; export LC_ALL\n");
    s.push_str("echo \"cores $(nproc)\"\n");
    s.push_str("echo \"virt $(systemd-detect-virt --container 2>/dev/null || echo none)\"\n");
    for name in &d.resolve {
        s.push_str(&format!("echo \"addr {n} $(getent ahosts {n} | awk 'NR==1{{print $1}}')\"\n", n = q(name)));
    }
    let mut plain: Vec<&str> = d.files.iter().filter(|f| !f.sensitive).map(|f| f.path.as_str()).collect();
    plain.extend(d.absent.iter().map(|(p, _)| p.as_str()));
    let secret: Vec<&str> = d.files.iter().filter(|f| f.sensitive).map(|f| f.path.as_str()).collect();
    if !plain.is_empty() {
        s.push_str(&format!(
            "for f in {}; do if [ -f \"$f\" ]; then echo \"file $f $(stat -c '%a %U %G' \"$f\") $(base64 -w0 < \"$f\")\"; else echo \"nofile $f\"; fi; done\n",
            join(&plain)
        ));
    }
    if !secret.is_empty() {
        s.push_str(&format!(
            "for f in {}; do if [ -f \"$f\" ]; then echo \"secret $f $(stat -c '%a %U %G' \"$f\") $(sha256sum < \"$f\" | cut -d' ' -f1)\"; else echo \"nofile $f\"; fi; done\n",
            join(&secret)
        ));
    }
    if let Some(backend) = &d.balancer {
        s.push_str(&drained_servers(crate::topology::tiers::BALANCER_SOCKET, backend));
    }
    let mut units: Vec<String> = d.services.clone();
    units.extend(d.enabled.iter().cloned());
    units.extend(d.instances.iter().map(|p| instance_unit(&d.app_name, *p)));
    units.extend(d.workers.iter().map(|i| crate::plan::worker_unit(&d.app_name, *i)));
    if !units.is_empty() {
        let refs: Vec<&str> = units.iter().map(String::as_str).collect();
        s.push_str(&format!(
            "for u in {}; do echo \"unit $u $(systemctl is-active \"$u\" 2>/dev/null) $(systemctl is-enabled \"$u\" 2>/dev/null)\"; done\n",
            join(&refs)
        ));
    }
    // Instances that exist but are no longer desired (of this app, or of scale-api it replaced).
    let mut apps = vec![d.app_name.as_str()];
    if d.app_name != SCALE_API {
        apps.push(SCALE_API);
    }
    for app in apps {
        s.push_str(&format!(
            "for u in $(systemctl list-units --all --plain --no-legend {pattern} {workers} 2>/dev/null | cut -d' ' -f1) $(cd {wants} 2>/dev/null && ls); do echo \"unit $u $(systemctl is-active \"$u\" 2>/dev/null) $(systemctl is-enabled \"$u\" 2>/dev/null)\"; done\n",
            pattern = q(&format!("{app}@*")),
            workers = q(&format!("{app}-worker@*")),
            wants = q(&format!("/etc/systemd/system/{app}.target.wants"))
        ));
    }
    if !d.packages.is_empty() {
        let refs: Vec<&str> = d.packages.iter().map(String::as_str).collect();
        s.push_str(&format!(
            "for p in {}; do echo \"pkg $p $(dpkg-query -W -f='${{db:Status-Status}}' \"$p\" 2>/dev/null)\"; done\n",
            join(&refs)
        ));
    }
    s.push_str("sed 's/^/pending /' /var/lib/scalectl/pending 2>/dev/null || true\n");
    for c in &d.credentials {
        s.push_str(&observe_credentials(c.kind));
    }
    if let Some(l) = &d.log_tls {
        s.push_str(&observe_log_tls(crate::render::LOG_TLS_DIR, l.ca_host == d.host));
    }
    s.push_str(&format!("echo \"release $(basename \"$(readlink {} 2>/dev/null)\" 2>/dev/null)\"\n", q(&current_link(&d.app_name))));
    // Releases oldest first, each followed by `ready` when it once served.
    s.push_str(&format!(
        "for r in $(ls -1tr {dir} 2>/dev/null); do echo \"have $r\"; [ -f {ready}/\"$r\" ] && echo \"ready $r\"; done; true\n",
        dir = q(&releases_dir(&d.app_name)),
        ready = q(&ready_dir(&d.app_name))
    ));
    // Releases whose release command ran here.
    if d.release_command {
        s.push_str(&format!("for r in $(ls -1 {} 2>/dev/null); do echo \"released $r\"; done; true\n", q(&released_dir(&d.app_name))));
    }
    s
}

fn join(items: &[&str]) -> String {
    items.iter().map(|i| q(i)).collect::<Vec<_>>().join(" ")
}

/// The fleet lock's scripts. Every one runs its check and its change while holding `flock` on a
/// guard file beside the lock, so two runs never both see the same lock and both act on it (two
/// runs that found it expired cannot both take it over). The lock file itself is replaced by a
/// rename, so a reader sees the old or the new lock, never half of one. Exit 3: held by another
/// (its lock file on stdout).
fn lock_script(dir: &str, body: &str) -> String {
    format!(
        "set -e\nD={d}\nmkdir -p \"$D\"\nL=\"$D/lock\"\nexec 9>>\"$D/lock.guard\"\n\
flock -w 20 9 || {{ echo \"another run holds $D/lock.guard\" >&2; exit 4; }}\nnow=$(date +%s)\n\
write() {{ printf 'owner=%s\\nid=%s\\nacquired=%s\\nexpires=%s\\n' \"$1\" \"$2\" \"$3\" \"$4\" > \"$L.new\"; mv -f \"$L.new\" \"$L\"; }}\n\
mine() {{ [ -e \"$L\" ] && grep -qx \"id=$1\" \"$L\"; }}\n{body}",
        d = q(dir)
    )
}

/// Take the lock, or return who holds it (exit 3). An expired lock is taken over, and printed
/// after `expired` so the caller can say whose it was.
pub fn lock_acquire(owner: &str, id: &str, ttl: Duration) -> String {
    lock_acquire_in(LOCK_DIR, owner, id, ttl)
}

fn lock_acquire_in(dir: &str, owner: &str, id: &str, ttl: Duration) -> String {
    lock_script(
        dir,
        &format!(
            "if [ -e \"$L\" ]; then\n  exp=$(sed -n 's/^expires=//p' \"$L\")\n  if [ -n \"$exp\" ] && [ \"$exp\" -lt \"$now\" ]; then echo expired; cat \"$L\"; else cat \"$L\"; exit 3; fi\nfi\n\
write {owner} {id} \"$now\" \"$((now + {ttl}))\"\n",
            owner = q(owner),
            id = q(id),
            ttl = ttl.as_secs()
        ),
    )
}

/// Push a held lock's expiry `ttl` from now; exit 3 when the lock is no longer this id's.
pub fn lock_renew(id: &str, ttl: Duration) -> String {
    lock_renew_in(LOCK_DIR, id, ttl)
}

fn lock_renew_in(dir: &str, id: &str, ttl: Duration) -> String {
    lock_script(
        dir,
        &format!(
            "if ! mine {id}; then cat \"$L\" 2>/dev/null || true; exit 3; fi\n\
write \"$(sed -n 's/^owner=//p' \"$L\")\" {id} \"$(sed -n 's/^acquired=//p' \"$L\")\" \"$((now + {ttl}))\"\n",
            id = q(id),
            ttl = ttl.as_secs()
        ),
    )
}

/// Remove the lock if it is still this id's (a lock taken over since stays).
pub fn lock_release(id: &str) -> String {
    lock_release_in(LOCK_DIR, id)
}

fn lock_release_in(dir: &str, id: &str) -> String {
    lock_script(dir, &format!("if mine {id}; then rm -f \"$L\"; fi\n", id = q(id)))
}

/// `lock release --force`: remove the lock with this id (the one `lock status` showed); exit 3,
/// leaving it, when the lock there now is another (its file on stdout). Nothing there: done.
pub fn lock_break(id: &str) -> String {
    lock_break_in(LOCK_DIR, id)
}

fn lock_break_in(dir: &str, id: &str) -> String {
    lock_script(dir, &format!("[ -e \"$L\" ] || exit 0\nif mine {id}; then rm -f \"$L\"; else cat \"$L\"; exit 3; fi\n", id = q(id)))
}


#[cfg(test)]
mod tests {
    use super::*;

    /// The lock's scripts, run by a real shell, flock and coreutils on a directory of their own.
    fn lock_run(script: &str) -> (i32, String) {
        let out = std::process::Command::new("sh").arg("-c").arg(script).output().unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn lock_file(dir: &std::path::Path) -> String {
        std::fs::read_to_string(dir.join("lock")).unwrap_or_default()
    }

    #[test]
    fn of_many_runs_racing_for_an_expired_lock_exactly_one_takes_it() {
        let ttl = Duration::from_secs(900);
        for round in 0..8 {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path().display().to_string();
            std::fs::write(dir.path().join("lock"), "owner=dead@m/pid1\nid=old\nacquired=1\nexpires=2\n").unwrap();
            let runs: Vec<_> = (0..12)
                .map(|i| {
                    std::process::Command::new("sh")
                        .arg("-c")
                        .arg(lock_acquire_in(&d, "me", &format!("run{i}"), ttl))
                        .stdout(std::process::Stdio::piped())
                        .spawn()
                        .unwrap()
                })
                .collect();
            let codes: Vec<i32> = runs.into_iter().map(|c| c.wait_with_output().unwrap().status.code().unwrap_or(-1)).collect();
            let winners: Vec<usize> = codes.iter().enumerate().filter(|(_, c)| **c == 0).map(|(i, _)| i).collect();
            assert_eq!(winners.len(), 1, "round {round}: exit codes {codes:?}");
            assert!(codes.iter().all(|c| *c == 0 || *c == 3), "{codes:?}");
            assert!(lock_file(dir.path()).contains(&format!("id=run{}\n", winners[0])), "the lock is the winner's: {}", lock_file(dir.path()));
        }
    }

    #[test]
    fn a_lock_is_renewed_released_and_broken_only_by_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let (code, out) = lock_run(&lock_acquire_in(&d, "a b", "one", Duration::from_secs(2)));
        assert_eq!((code, out.as_str()), (0, ""));
        let first = crate::exec::lock::LockInfo::parse(&lock_file(dir.path())).unwrap();
        assert_eq!(first.owner, "a b");
        // A live lock refuses another, and shows itself.
        let (code, out) = lock_run(&lock_acquire_in(&d, "c", "two", Duration::from_secs(900)));
        assert_eq!(code, 3);
        assert!(out.contains("id=one"), "{out}");
        // Renewal moves the expiry and keeps the rest; another id cannot renew it.
        assert_eq!(lock_run(&lock_renew_in(&d, "one", Duration::from_secs(600))).0, 0);
        let renewed = crate::exec::lock::LockInfo::parse(&lock_file(dir.path())).unwrap();
        assert!(renewed.expires >= first.expires + 590, "{renewed:?} after {first:?}");
        assert_eq!((renewed.owner.as_str(), renewed.acquired), ("a b", first.acquired));
        assert_eq!(lock_run(&lock_renew_in(&d, "two", Duration::from_secs(600))).0, 3);
        // Release and break leave another id's lock alone.
        assert_eq!(lock_run(&lock_release_in(&d, "two")).0, 0);
        assert!(lock_file(dir.path()).contains("id=one"));
        let (code, out) = lock_run(&lock_break_in(&d, "two"));
        assert_eq!(code, 3);
        assert!(out.contains("id=one"), "{out}");
        assert_eq!(lock_run(&lock_break_in(&d, "one")).0, 0);
        assert!(!dir.path().join("lock").exists());
        assert_eq!(lock_run(&lock_break_in(&d, "one")).0, 0, "nothing there: nothing to do");
        // An expired lock is taken over and said.
        std::fs::write(dir.path().join("lock"), "owner=x\nid=old\nacquired=1\nexpires=2\n").unwrap();
        let (code, out) = lock_run(&lock_acquire_in(&d, "me", "three", Duration::from_secs(900)));
        assert_eq!(code, 0);
        assert!(out.starts_with("expired\nowner=x\n"), "{out}");
        assert!(lock_run(&lock_release_in(&d, "three")).0 == 0 && !dir.path().join("lock").exists());
    }

    /// A server a test started, killed when the test ends.
    struct Killed(std::process::Child);

    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A real HAProxy (Debian's, as on the hosts) running `conf` in the foreground.
    fn haproxy(conf: &str) -> Killed {
        Killed(std::process::Command::new("haproxy").args(["-db", "-f", conf]).spawn().expect("haproxy (scripts/setup.sh installs it)"))
    }

    /// The balancer's scripts, run by a real shell and socat against a real HAProxy (Debian's,
    /// as on the hosts): a drain puts the server in maintenance and waits for the request it has
    /// in flight, the observation's script sees it drained, a server or backend the balancer does
    /// not list is nothing to do, and an undrain brings it back; no reload at any point (the
    /// same process answers throughout).
    #[test]
    fn drains_go_through_a_real_haproxys_runtime_api_and_wait_for_requests_in_flight() {
        use std::io::{Read, Write};
        use std::sync::mpsc;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        let sock = format!("{d}/admin.sock");
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // An instance that holds its one request until told to answer.
        let app = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let app_port = app.local_addr().unwrap().port();
        let (answer, answered) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Ok((mut c, _)) = app.accept() {
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                let _ = answered.recv();
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            }
        });
        let front = free();
        std::fs::write(
            format!("{d}/haproxy.cfg"),
            format!(
                "global\n    stats socket {sock} mode 600 level admin\ndefaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
frontend t\n    bind 127.0.0.1:{front}\n    default_backend t_app\nbackend t_app\n    server h1:3000 127.0.0.1:{app_port}\n    server h1:3001 127.0.0.1:{}\n",
                free()
            ),
        )
        .unwrap();
        let _haproxy = haproxy(&format!("{d}/haproxy.cfg"));
        let sh = |script: &str| std::process::Command::new("sh").arg("-c").arg(script).output().unwrap();
        let pid = || String::from_utf8_lossy(&sh(&format!("printf 'show info\\n' | socat stdio UNIX-CONNECT:{sock} | sed -n 's/^Pid: //p'")).stdout).trim().to_string();
        for _ in 0..100 {
            if std::path::Path::new(&sock).exists() && !pid().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let before = pid();
        assert!(!before.is_empty(), "haproxy did not start");
        // A request in flight to h1:3000 (leastconn is not set: the first server gets the first).
        let client = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", front)).unwrap();
            c.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
            let mut out = String::new();
            let _ = c.read_to_string(&mut out);
            out
        });
        let drained = || String::from_utf8_lossy(&sh(&drained_servers(&sock, "t_app")).stdout).into_owned();
        for _ in 0..100 {
            if sh(&format!("printf 'show stat t_app 4 -1\\n' | socat stdio UNIX-CONNECT:{sock}")).stdout.windows(10).any(|w| w == b"h1:3000,0,") {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let draining = {
            let script = drain(&sock, "t_app", "h1:3000", Duration::from_secs(30));
            std::thread::spawn(move || std::process::Command::new("sh").arg("-c").arg(script).output().unwrap())
        };
        // Taken out at once, and still waiting for the request it holds.
        for _ in 0..100 {
            if drained() == "drained h1:3000\n" {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(drained(), "drained h1:3000\n");
        std::thread::sleep(Duration::from_millis(300));
        assert!(!draining.is_finished(), "the drain did not wait for the request in flight");
        answer.send(()).unwrap();
        let out = draining.join().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(client.join().unwrap().ends_with("ok"), "the request in flight was answered");
        // Nothing to do for what the balancer does not list.
        for (backend, server) in [("t_app", "h9:3000"), ("other_app", "h1:3000")] {
            let out = sh(&drain(&sock, backend, server, Duration::from_secs(1)));
            assert!(out.status.success(), "{backend}/{server}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let out = sh(&undrain(&sock, "t_app", "h1:3000", Duration::from_secs(5), false));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(drained(), "", "back in");
        assert_eq!(pid(), before, "the same process throughout: nothing reloaded");
        // No balancer at all (a first apply), or its socket left by one that stopped: nothing to do.
        assert!(sh(&drain(&format!("{d}/none.sock"), "t_app", "h1:3000", Duration::from_secs(1))).status.success());
        let stale = format!("{d}/stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let out = sh(&drain(&stale, "t_app", "h1:3000", Duration::from_secs(1)));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// A new liveness path, on a real HAProxy: the running balancer checks `/old`, the instance
    /// rolled onto the new release answers `/new` only. Put back with its check paused, it stays
    /// up and serves (the balancer reloads for `/new` later); put back checked, the old check
    /// keeps it down, which is what took every rolled instance out before. The playbook's
    /// variant pauses while the balancer's file is not the one it installs last.
    #[test]
    fn an_instance_on_a_new_liveness_path_is_put_back_unchecked_until_the_balancer_reloads() {
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        let sock = format!("{d}/admin.sock");
        let app = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let app_port = app.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut c in app.incoming().flatten() {
                let mut buf = [0u8; 1024];
                let n = c.read(&mut buf).unwrap_or(0);
                let status = if buf[..n].starts_with(b"GET /new ") { "200 OK" } else { "404 Not Found" };
                let _ = c.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").as_bytes());
            }
        });
        let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = format!("{d}/haproxy.cfg");
        std::fs::write(
            &conf,
            format!(
                "global\n    stats socket {sock} mode 600 level admin\ndefaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
frontend t\n    bind 127.0.0.1:{front}\n    default_backend t_app\nbackend t_app\n    option httpchk GET /old\n    http-check expect status 200\n\
    default-server check inter 100ms rise 1 fall 2\n    server h1:3000 127.0.0.1:{app_port}\n"
            ),
        )
        .unwrap();
        let _haproxy = haproxy(&conf);
        let sh = |script: &str, args: &[&str]| std::process::Command::new("sh").arg("-c").arg(script).arg("sh").args(args).output().unwrap();
        let state = || {
            let out = sh(&format!("printf 'show servers state t_app\\n' | socat stdio UNIX-CONNECT:{sock}"), &[]);
            String::from_utf8_lossy(&out.stdout).lines().find(|l| l.contains(" h1:3000 ")).and_then(|l| l.split_whitespace().nth(5)).unwrap_or("").to_string()
        };
        // Within 10 s: the machine may be busy with other tests.
        let wait_for = |want: &str| {
            for _ in 0..200 {
                if state() == want {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("h1:3000 never reached state {want} (now {:?})", state());
        };
        let through = || {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", front)).unwrap();
            c.write_all(b"GET /new HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").unwrap();
            let mut out = String::new();
            let _ = c.read_to_string(&mut out);
            out
        };
        // The running balancer's check (/old) takes the new instance down: 0 is stopped, 2 running.
        wait_for("0");
        let wait = Duration::from_secs(2);
        let put_back = |script: String, args: &[&str]| {
            assert!(sh(&drain(&sock, "t_app", "h1:3000", wait), &[]).status.success());
            sh(&script, args)
        };
        let out = put_back(undrain(&sock, "t_app", "h1:3000", wait, true), &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // Ten check intervals later it is still up, and serves.
        let stays_up = |what: &str| {
            std::thread::sleep(Duration::from_millis(1000));
            assert_eq!(state(), "2", "{what}: taken down");
        };
        stays_up("paused");
        assert!(through().starts_with("HTTP/1.1 200"), "the paused server does not serve");
        // Checked, the old path takes it down again: the put-back sees it up before the check
        // fails twice, or (on a busy machine, the checks every 100 ms) never sees it up and
        // fails; either way it ends down, which is what took every rolled instance out before.
        let out = put_back(undrain(&sock, "t_app", "h1:3000", wait, false), &[]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() || said.contains("does not have h1:3000 up yet"), "{said}");
        wait_for("0");
        // The playbook's script: paused while the balancer's file is not the one it installs.
        let checks = |sha| Checks::PauseUnlessFile { path: &conf, sha };
        let playbook = undrain_words("\"$1\"", "\"$2\"", "\"$3\"", wait, checks("\"${4:-}\""));
        let installed = crate::plan::sha256_hex(&std::fs::read(&conf).unwrap());
        let other = "0".repeat(64);
        for (args, paused) in [(vec![other.as_str()], true), (vec![installed.as_str()], false), (vec![], false)] {
            let args: Vec<&str> = [sock.as_str(), "t_app", "h1:3000"].into_iter().chain(args).collect();
            let out = put_back(playbook.clone(), &args);
            if paused {
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                stays_up("the balancer runs another file");
            } else {
                // Checked: down again, or never seen up by the put-back (which then fails).
                wait_for("0");
            }
        }
    }

    /// A rotation on a real Redis, driven by the scripts apply runs: the admin user is made once
    /// (and kept), `add` makes the old and the new password both work without a restart, `settle`
    /// leaves only the new one with the users' rules intact; nothing but the include changed.
    #[test]
    fn redis_users_rotate_live_on_a_real_redis() {
        use crate::plan::CredentialsPhase::{Add, Settle};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        let marker = format!("{d}/state/redis-users");
        let users = |pw: &str| {
            let h = crate::plan::sha256_hex(pw.as_bytes());
            std::fs::write(
                format!("{d}/scalectl-auth.conf"),
                format!("# comment\nuser default on #{h} ~* &* +@all -@dangerous +info\nuser scalectl-exporter on #{h} -@all +@connection +ping +info\n"),
            )
            .unwrap();
        };
        let sh = |script: &str| std::process::Command::new("sh").arg("-c").arg(script).output().unwrap();
        users("old-pass");
        let made = sh(&ensure_redis_admin_in(&d));
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        let admin_pw = std::fs::read_to_string(format!("{d}/scalectl-admin.pass")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(format!("{d}/scalectl-admin.pass")).unwrap().permissions().mode() & 0o777, 0o400);
        assert_eq!(std::fs::metadata(format!("{d}/scalectl-admin.conf")).unwrap().permissions().mode() & 0o777, 0o640);
        assert!(sh(&ensure_redis_admin_in(&d)).status.success());
        assert_eq!(std::fs::read_to_string(format!("{d}/scalectl-admin.pass")).unwrap(), admin_pw, "made once, then kept");

        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = format!("{d}/redis.conf");
        std::fs::write(&conf, format!("port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ninclude {d}/scalectl-auth.conf\ninclude {d}/scalectl-admin.conf\n")).unwrap();
        let _redis = Killed(std::process::Command::new("redis-server").arg(&conf).stdout(std::process::Stdio::null()).spawn().expect("redis-server"));
        let cli = |user: &str, pw: &str, cmd: &str| {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &port.to_string(), "--no-auth-warning", "--user", user, "--pass", pw])
                .args(cmd.split(' '))
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string() + String::from_utf8_lossy(&out.stderr).trim()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while cli("default", "old-pass", "PING") != "PONG" {
            assert!(std::time::Instant::now() < deadline, "Redis did not start: {}", cli("default", "old-pass", "PING"));
            std::thread::sleep(Duration::from_millis(50));
        }
        let run_id = cli("scalectl-exporter", "old-pass", "INFO server");
        let run_id = run_id.lines().find(|l| l.starts_with("run_id:")).unwrap().to_string();

        users("new-pass");
        let add = sh(&redis_users_in(Add, port, &d, &marker));
        assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
        assert!(std::path::Path::new(&marker).exists(), "add leaves the marker");
        for (user, pw) in [("default", "old-pass"), ("default", "new-pass"), ("scalectl-exporter", "old-pass"), ("scalectl-exporter", "new-pass")] {
            assert_eq!(cli(user, pw, "PING"), "PONG", "{user} with {pw} after add");
        }
        let settle = sh(&redis_users_in(Settle, port, &d, &marker));
        assert!(settle.status.success(), "{}", String::from_utf8_lossy(&settle.stderr));
        assert!(!std::path::Path::new(&marker).exists(), "settle removes the marker");
        for user in ["default", "scalectl-exporter"] {
            assert_eq!(cli(user, "new-pass", "PING"), "PONG");
            assert!(cli(user, "old-pass", "PING").contains("WRONGPASS"), "{user}: the old password is gone");
        }
        assert!(cli("default", "new-pass", "FLUSHALL").contains("NOPERM"), "the apps' rules are intact");
        assert!(cli("scalectl-exporter", "new-pass", "SET k v").contains("NOPERM"), "the exporter's too");
        assert!(cli("default", "new-pass", "ACL SETUSER default nopass").contains("NOPERM"));
        let after = cli("scalectl-exporter", "new-pass", "INFO server");
        assert!(after.lines().any(|l| l == run_id), "Redis was not restarted");

        // A failure names what Redis said, never a hash.
        std::fs::write(format!("{d}/scalectl-auth.conf"), format!("user default on #{} +nosuchcommand\n", crate::plan::sha256_hex(b"x"))).unwrap();
        let bad = sh(&redis_users_in(Settle, port, &d, &marker));
        let err = String::from_utf8_lossy(&bad.stderr).to_string();
        assert!(!bad.status.success() && err.contains("Redis did not take the users") && !err.contains(&crate::plan::sha256_hex(b"x")), "{err}");
    }

    /// Certificates for RELP over TLS, issued by the scripts apply runs, with a real openssl: each
    /// host's key stays in its directory (0400), the CA is made once and kept, the certificate
    /// names the plan's host and holds the host's key, the observation reads all that back, and
    /// what one host prints cannot become commands in another host's script.
    #[test]
    fn log_certificates_are_issued_by_one_ca_and_keys_stay_on_their_hosts() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = |h: &str| root.path().join(h).display().to_string();
        let sh = |script: &str| {
            let out = std::process::Command::new("sh").arg("-c").arg(script).output().unwrap();
            assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        };
        let issue = |host: &str| {
            let csr = pem_blocks(&sh(&log_tls_request_in(&dir(host), host)), "CERTIFICATE REQUEST").unwrap();
            assert_eq!(csr.len(), 1);
            let certs = pem_blocks(&sh(&log_tls_sign_in(&dir("mon-1"), "mon-1", host, &csr[0])), "CERTIFICATE").unwrap();
            assert_eq!(certs.len(), 2, "the host's certificate, then the CA's");
            sh(&log_tls_install_in(&dir(host), &certs[0], &certs[1]));
            certs
        };
        let first = issue("app-1");
        let ca_pem = std::fs::read_to_string(format!("{}/ca/log-ca.pem", dir("mon-1"))).unwrap();
        assert_eq!(first[1], ca_pem);
        issue("mon-1");
        assert_eq!(std::fs::read_to_string(format!("{}/ca/log-ca.pem", dir("mon-1"))).unwrap(), ca_pem, "one CA, kept");
        let f = crate::render::LogTlsFiles::in_dir(&dir("app-1"));
        assert_eq!(std::fs::metadata(&f.key).unwrap().permissions().mode() & 0o777, 0o400);
        assert_eq!(std::fs::metadata(format!("{}/ca/log-ca.key", dir("mon-1"))).unwrap().permissions().mode() & 0o777, 0o400);
        assert!(!std::path::Path::new(&format!("{}/ca", dir("app-1"))).exists(), "the CA is on its host only");
        let key = std::fs::read_to_string(&f.key).unwrap();
        issue("app-1");
        assert_eq!(std::fs::read_to_string(&f.key).unwrap(), key, "a new certificate keeps the host's key");
        let san = sh(&format!("openssl x509 -in {} -noout -ext subjectAltName", f.cert));
        assert!(san.contains("DNS:app-1"), "{san}");
        // A host that asks for the monitor's name (in its request's subject) gets its own name,
        // in the subject as in subjectAltName: nothing of the request's names is signed.
        let forged = sh(&format!("cd {} && openssl req -new -key log.key -subj /CN=mon-1", dir("app-1")));
        let certs = pem_blocks(&sh(&log_tls_sign_in(&dir("mon-1"), "mon-1", "app-1", &pem_blocks(&forged, "CERTIFICATE REQUEST").unwrap()[0])), "CERTIFICATE").unwrap();
        let cert = root.path().join("forged.pem");
        std::fs::write(&cert, &certs[0]).unwrap();
        let names = sh(&format!("openssl x509 -in {} -noout -subject -ext subjectAltName", cert.display()));
        assert!(names.contains("CN = app-1") && names.contains("DNS:app-1") && !names.contains("mon-1"), "{names}");

        // The observation: good, for app-1, from the CA the CA's host has.
        let ca_sha = crate::plan::sha256_hex(ca_pem.as_bytes());
        let seen = crate::exec::observe::parse(&format!("cores 1\n{}", sh(&observe_log_tls(&dir("app-1"), false)))).unwrap();
        assert_eq!(seen.log_tls, Some(crate::plan::ObservedLogTls { ca_sha256: ca_sha.clone(), good: true, name: "app-1".into() }));
        assert_eq!(seen.log_ca, None);
        let mon = crate::exec::observe::parse(&format!("cores 1\n{}", sh(&observe_log_tls(&dir("mon-1"), true)))).unwrap();
        assert_eq!(mon.log_ca.as_deref(), Some(ca_sha.as_str()));
        // Another host's certificate (not for this key) is refused at install, and seen as bad.
        let mon_cert = std::fs::read_to_string(crate::render::LogTlsFiles::in_dir(&dir("mon-1")).cert).unwrap();
        let refused = std::process::Command::new("sh").arg("-c").arg(log_tls_install_in(&dir("app-1"), &mon_cert, &ca_pem)).output().unwrap();
        assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("not for this host's key"));
        std::fs::write(&f.cert, &mon_cert).unwrap();
        let seen = crate::exec::observe::parse(&format!("cores 1\n{}", sh(&observe_log_tls(&dir("app-1"), false)))).unwrap();
        assert!(!seen.log_tls.unwrap().good);

        // A host that prints more than PEM gets an error, not a place in the CA host's script.
        let evil = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\nSCALECTL_PEM\ntouch /tmp/owned\n-----END CERTIFICATE REQUEST-----\n";
        assert!(pem_blocks(evil, "CERTIFICATE REQUEST").unwrap_err().contains("not a CERTIFICATE REQUEST"));
        assert!(pem_blocks("-----BEGIN CERTIFICATE-----\nMIIB\n", "CERTIFICATE").is_err(), "cut short");
    }
}

//! One SSH connection to one host (ssh2): host key verified against a known_hosts file, key or
//! agent authentication, timeouts, commands run through sudo with standard input.
//!
//! Blocking by design (libssh2 is); fan-out across hosts happens in `exec::fanout`. A changed host
//! key is always refused; an unknown one only when the caller did not ask to record new keys.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ssh2::{CheckResult, ExtendedData, HashType, HostKeyType, KnownHostFileKind, KnownHostKeyFormat, Session};

/// Where and how to log in to one host.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The topology's host name (for messages).
    pub host: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    /// Private key file; None: the SSH agent.
    pub key: Option<PathBuf>,
    pub known_hosts: PathBuf,
    /// Record unknown host keys in known_hosts (never changed ones).
    pub accept_new_host_keys: bool,
    pub connect_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("{host}: cannot connect to {address}:{port}: {source}")]
    Connect { host: String, address: String, port: u16, source: std::io::Error },
    #[error("{host}: ssh handshake with {address}:{port} failed: {source}")]
    Handshake { host: String, address: String, port: u16, source: ssh2::Error },
    #[error(
        "{host}: host key of {address}:{port} is not in {known_hosts} ({fingerprint}); check it out of band, \
then add it there or rerun with --accept-new-host-keys"
    )]
    UnknownHostKey { host: String, address: String, port: u16, fingerprint: String, known_hosts: String },
    #[error(
        "{host}: HOST KEY CHANGED for {address}:{port} (now {fingerprint}); refusing to connect: this may be an \
attack. If the host was really reinstalled, remove its line from {known_hosts}"
    )]
    ChangedHostKey { host: String, address: String, port: u16, fingerprint: String, known_hosts: String },
    #[error("{host}: cannot log in as {user}: {detail}")]
    Auth { host: String, user: String, detail: String },
    #[error("{host}: known_hosts {path}: {detail}")]
    KnownHosts { host: String, path: String, detail: String },
    #[error("{host}: ssh: {source}")]
    Ssh { host: String, source: ssh2::Error },
    #[error("{host}: ssh i/o: {source}")]
    Io { host: String, source: std::io::Error },
}

/// The most a command's output (stdout and stderr each) may be: a host that prints without end
/// (a compromised one, or a runaway script) fills this machine's memory no further.
pub const MAX_OUTPUT: usize = 32 << 20;

/// Add `bytes` to `into`, or fail once it would hold more than `cap`.
fn push_capped(into: &mut Vec<u8>, bytes: &[u8], cap: usize) -> std::io::Result<()> {
    if into.len() + bytes.len() > cap {
        return Err(too_much_output(cap));
    }
    into.extend_from_slice(bytes);
    Ok(())
}

fn too_much_output(cap: usize) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::OutOfMemory, format!("the command printed more than {} MiB: stopped reading it", cap >> 20))
}

/// Drain a non-blocking channel's stdout and stderr until both end; fails when neither gives a
/// byte for `timeout`, or when either passes [`MAX_OUTPUT`].
fn read_both(ch: &mut ssh2::Channel, stdout: &mut Vec<u8>, stderr: &mut Vec<u8>, timeout: Duration) -> std::io::Result<()> {
    let mut buf = [0u8; 32 * 1024];
    let mut last = std::time::Instant::now();
    loop {
        // Some(0): that stream ended; None: nothing yet.
        let take = |r: std::io::Result<usize>, into: &mut Vec<u8>, buf: &[u8]| -> std::io::Result<Option<usize>> {
            match r {
                Ok(n) => {
                    push_capped(into, &buf[..n], MAX_OUTPUT)?;
                    Ok(Some(n))
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
                Err(e) => Err(e),
            }
        };
        let out = ch.read(&mut buf);
        let out = take(out, stdout, &buf)?;
        let err = ch.stderr().read(&mut buf);
        let err = take(err, stderr, &buf)?;
        if out == Some(0) && err == Some(0) && ch.eof() {
            return Ok(());
        }
        if out.unwrap_or(0) > 0 || err.unwrap_or(0) > 0 {
            last = std::time::Instant::now();
        } else if last.elapsed() > timeout {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no output for {} s", timeout.as_secs())));
        } else {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// What a remote command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.status == 0
    }
}

/// A logged-in session.
pub struct Conn {
    pub endpoint: Endpoint,
    session: Session,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("host", &self.endpoint.host).finish()
    }
}

impl Conn {
    pub fn connect(ep: &Endpoint) -> Result<Conn, SshError> {
        let host = ep.host.clone();
        let connect_err = |source| SshError::Connect { host: host.clone(), address: ep.address.clone(), port: ep.port, source };
        let addr = (ep.address.as_str(), ep.port)
            .to_socket_addrs()
            .map_err(connect_err)?
            .next()
            .ok_or_else(|| connect_err(std::io::Error::other("the address resolves to nothing")))?;
        let handshake = |algorithms: &str| -> Result<Session, SshError> {
            let tcp = TcpStream::connect_timeout(&addr, ep.connect_timeout).map_err(connect_err)?;
            let mut session = Session::new().map_err(|source| SshError::Ssh { host: host.clone(), source })?;
            session.set_tcp_stream(tcp);
            session.set_timeout(ep.connect_timeout.as_millis() as u32);
            let _ = session.method_pref(ssh2::MethodType::HostKey, algorithms);
            session.handshake().map_err(|source| SshError::Handshake { host: host.clone(), address: ep.address.clone(), port: ep.port, source })?;
            Ok(session)
        };
        // Prefer the key types a known_hosts file is most likely to hold; when it holds other
        // types for this host (only its RSA key, say), ask for those, as OpenSSH does.
        let mut session = handshake(DEFAULT_HOST_KEY_ALGORITHMS)?;
        if let Verified::KnownAs(algorithms) = verify_host_key(&session, ep, true)? {
            session = handshake(&algorithms)?;
            verify_host_key(&session, ep, false)?;
        }
        match &ep.key {
            Some(key) => session.userauth_pubkey_file(&ep.user, None, key, None).map_err(|e| SshError::Auth {
                host: host.clone(),
                user: ep.user.clone(),
                detail: format!("key {}: {}", key.display(), e.message()),
            })?,
            None => session.userauth_agent(&ep.user).map_err(|e| SshError::Auth {
                host: host.clone(),
                user: ep.user.clone(),
                detail: format!("ssh agent: {} (set ssh.key in the topology, or start ssh-agent)", e.message()),
            })?,
        }
        if !session.authenticated() {
            return Err(SshError::Auth { host, user: ep.user.clone(), detail: "the server refused every key".into() });
        }
        // No libssh2 keepalive: with it set, a blocking read gives up after the keepalive interval
        // ("Timed out waiting on socket") however long the session timeout is.
        Ok(Conn { endpoint: ep.clone(), session })
    }

    /// Run `command` (a shell command line) with `stdin`, waiting at most `timeout` between reads.
    pub fn run(&self, command: &str, stdin: &[u8], timeout: Duration) -> Result<Output, SshError> {
        let host = &self.endpoint.host;
        let ssh = |source| SshError::Ssh { host: host.clone(), source };
        let io = |source| SshError::Io { host: host.clone(), source };
        self.session.set_timeout(timeout.as_millis().min(u32::MAX as u128) as u32);
        let mut ch = self.session.channel_session().map_err(ssh)?;
        ch.exec(command).map_err(ssh)?;
        if !stdin.is_empty() {
            ch.write_all(stdin).map_err(io)?;
        }
        ch.send_eof().map_err(ssh)?;
        // Read whichever stream has data, without blocking on either: a blocking read of stdout
        // while the command fills stderr's window (and so waits) would wait forever.
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        self.session.set_blocking(false);
        let read = read_both(&mut ch, &mut stdout, &mut stderr, timeout);
        self.session.set_blocking(true);
        read.map_err(io)?;
        ch.wait_close().map_err(ssh)?;
        let status = ch.exit_status().map_err(ssh)?;
        Ok(Output {
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    /// Run a shell script as root, sent on standard input (no length limit, nothing in `ps`).
    pub fn script(&self, script: &str, timeout: Duration) -> Result<Output, SshError> {
        let cmd = if self.endpoint.user == "root" { "sh -s" } else { "sudo -n sh -s" };
        self.run(cmd, script.as_bytes(), timeout)
    }

    /// `script`, which must succeed; its stderr (or stdout) becomes the error.
    pub fn sudo_script(&self, what: &str, script: &str, timeout: Duration) -> anyhow::Result<Output> {
        let out = self.script(script, timeout)?;
        if !out.ok() {
            let detail = if out.stderr.trim().is_empty() { out.stdout.trim() } else { out.stderr.trim() };
            anyhow::bail!("{}: {what} failed (exit {}): {}", self.endpoint.host, out.status, last_lines(detail, 15));
        }
        Ok(out)
    }

    /// Merge stderr into stdout for long, chatty commands (package installs).
    pub fn run_merged(&self, command: &str, timeout: Duration) -> Result<Output, SshError> {
        let host = &self.endpoint.host;
        let ssh = |source| SshError::Ssh { host: host.clone(), source };
        self.session.set_timeout(timeout.as_millis().min(u32::MAX as u128) as u32);
        let mut ch = self.session.channel_session().map_err(ssh)?;
        ch.handle_extended_data(ExtendedData::Merge).map_err(ssh)?;
        ch.exec(command).map_err(ssh)?;
        ch.send_eof().map_err(ssh)?;
        let mut stdout = Vec::new();
        let io = |source| SshError::Io { host: host.clone(), source };
        (&mut ch).take(MAX_OUTPUT as u64 + 1).read_to_end(&mut stdout).map_err(io)?;
        if stdout.len() > MAX_OUTPUT {
            return Err(io(too_much_output(MAX_OUTPUT)));
        }
        ch.wait_close().map_err(ssh)?;
        let status = ch.exit_status().map_err(ssh)?;
        Ok(Output { status, stdout: String::from_utf8_lossy(&stdout).into_owned(), stderr: String::new() })
    }
}

impl Conn {
    /// Run `command` and hand each line of its output (stderr merged) to `line` as it arrives,
    /// with no time limit, until the command ends or `line` returns false. Returns the exit status
    /// (None when stopped early).
    pub fn stream(&self, command: &str, line: &mut dyn FnMut(&str) -> bool) -> Result<Option<i32>, SshError> {
        let host = &self.endpoint.host;
        let ssh = |source| SshError::Ssh { host: host.clone(), source };
        self.session.set_timeout(0);
        let mut ch = self.session.channel_session().map_err(ssh)?;
        ch.handle_extended_data(ExtendedData::Merge).map_err(ssh)?;
        ch.exec(command).map_err(ssh)?;
        ch.send_eof().map_err(ssh)?;
        let mut reader = std::io::BufReader::new(&mut ch);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            // A line is at most MAX_LINE bytes: a longer one is handed on in pieces.
            let n = std::io::BufRead::read_until(&mut (&mut reader).take(MAX_LINE as u64), b'\n', &mut buf).map_err(|source| SshError::Io { host: host.clone(), source })?;
            if n == 0 {
                break;
            }
            if !line(String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r'])) {
                return Ok(None);
            }
        }
        drop(reader);
        ch.wait_close().map_err(ssh)?;
        Ok(Some(ch.exit_status().map_err(ssh)?))
    }
}

/// The longest line [`Conn::stream`] hands on whole (`scalectl logs` of a program that never
/// prints a newline gets it in pieces of this size).
pub const MAX_LINE: usize = 1 << 20;

/// `sh -c SCRIPT`, through `sudo -n` for a user other than root.
pub fn sudo_command(user: &str, script: &str) -> String {
    let quoted = shlex::try_quote(script).map(|s| s.into_owned()).unwrap_or_else(|_| "false".into());
    if user == "root" { format!("sh -c {quoted}") } else { format!("sudo -n sh -c {quoted}") }
}

pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

const DEFAULT_HOST_KEY_ALGORITHMS: &str = "ssh-ed25519,ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256,ssh-rsa";

enum Verified {
    Yes,
    /// known_hosts holds only other key types for this host: the host key algorithms to ask for.
    KnownAs(String),
}

/// The host key algorithms that give a key of known_hosts' `key_type`.
fn algorithms_of(key_type: &str) -> Option<&'static str> {
    Some(match key_type {
        "ssh-ed25519" => "ssh-ed25519",
        "ssh-rsa" => "rsa-sha2-512,rsa-sha2-256,ssh-rsa",
        "ecdsa-sha2-nistp256" => "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384" => "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521" => "ecdsa-sha2-nistp521",
        _ => return None,
    })
}

fn key_type_name(t: HostKeyType) -> &'static str {
    match t {
        HostKeyType::Rsa => "ssh-rsa",
        HostKeyType::Dss => "ssh-dss",
        HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        HostKeyType::Ed25519 => "ssh-ed25519",
        HostKeyType::Unknown => "unknown",
    }
}

/// The key types known_hosts (`text`) holds for the host: each type's lines are checked alone
/// (libssh2 compares a key with every entry of a matching name, whatever its type, and matches
/// hashed names itself).
fn known_key_types(session: &Session, text: &str, address: &str, port: u16, key: &[u8]) -> Vec<String> {
    let mut by_type: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('@')) {
        if let Some(key_type) = line.split_whitespace().nth(1) {
            by_type.entry(key_type).or_default().push(line);
        }
    }
    by_type
        .into_iter()
        .filter(|(_, lines)| {
            let Ok(mut known) = session.known_hosts() else { return false };
            lines.iter().all(|l| known.read_str(l, KnownHostFileKind::OpenSSH).is_ok()) && !matches!(known.check_port(address, port, key), CheckResult::NotFound)
        })
        .map(|(t, _)| t.to_string())
        .collect()
}

/// `other_types`: when known_hosts has this host only under other key types, say which to ask
/// for instead of calling its key changed.
fn verify_host_key(session: &Session, ep: &Endpoint, other_types: bool) -> Result<Verified, SshError> {
    let host = ep.host.clone();
    let kh_err = |detail: String| SshError::KnownHosts { host: host.clone(), path: ep.known_hosts.display().to_string(), detail };
    let (key, key_type) = session.host_key().ok_or_else(|| kh_err("the server sent no host key".into()))?;
    let fingerprint = session
        .host_key_hash(HashType::Sha256)
        .map(|h| format!("SHA256:{}", base64_nopad(h)))
        .unwrap_or_else(|| "unknown fingerprint".into());
    let mut known = session.known_hosts().map_err(|e| kh_err(e.message().to_string()))?;
    if ep.known_hosts.exists() {
        known.read_file(&ep.known_hosts, KnownHostFileKind::OpenSSH).map_err(|e| kh_err(e.message().to_string()))?;
    }
    match known.check_port(&ep.address, ep.port, key) {
        CheckResult::Match => Ok(Verified::Yes),
        CheckResult::Mismatch => {
            if other_types {
                let text = std::fs::read_to_string(&ep.known_hosts).map_err(|e| kh_err(e.to_string()))?;
                let types = known_key_types(session, &text, &ep.address, ep.port, key);
                let algorithms: Vec<&str> = types.iter().filter_map(|t| algorithms_of(t)).collect();
                if !types.iter().any(|t| t == key_type_name(key_type)) && !algorithms.is_empty() {
                    return Ok(Verified::KnownAs(algorithms.join(",")));
                }
            }
            Err(SshError::ChangedHostKey { host, address: ep.address.clone(), port: ep.port, fingerprint, known_hosts: ep.known_hosts.display().to_string() })
        }
        CheckResult::NotFound if ep.accept_new_host_keys => {
            let entry = if ep.port == 22 { ep.address.clone() } else { format!("[{}]:{}", ep.address, ep.port) };
            let format = match key_type {
                HostKeyType::Rsa => KnownHostKeyFormat::SshRsa,
                HostKeyType::Dss => KnownHostKeyFormat::SshDss,
                HostKeyType::Ecdsa256 => KnownHostKeyFormat::Ecdsa256,
                HostKeyType::Ecdsa384 => KnownHostKeyFormat::Ecdsa384,
                HostKeyType::Ecdsa521 => KnownHostKeyFormat::Ecdsa521,
                HostKeyType::Ed25519 => KnownHostKeyFormat::Ed25519,
                HostKeyType::Unknown => return Err(kh_err("unknown host key type".into())),
            };
            known.add(&entry, key, &ep.host, format).map_err(|e| kh_err(e.message().to_string()))?;
            write_known_hosts(&known, &ep.known_hosts).map_err(kh_err)?;
            tracing::info!(host = %ep.host, %fingerprint, "recorded new host key");
            Ok(Verified::Yes)
        }
        CheckResult::NotFound => Err(SshError::UnknownHostKey {
            host,
            address: ep.address.clone(),
            port: ep.port,
            fingerprint,
            known_hosts: ep.known_hosts.display().to_string(),
        }),
        CheckResult::Failure => Err(kh_err("the host key check failed".into())),
    }
}

/// Rewrite known_hosts through a temporary file and a rename, so a crash never truncates it.
fn write_known_hosts(known: &ssh2::KnownHosts, path: &Path) -> Result<(), String> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| e.to_string())?;
    known.write_file(tmp.path(), KnownHostFileKind::OpenSSH).map_err(|e| e.message().to_string())?;
    tmp.persist(path).map_err(|e| e.to_string())?;
    Ok(())
}

fn base64_nopad(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_past_the_cap_is_an_error_not_memory() {
        let mut into = Vec::new();
        push_capped(&mut into, &[0u8; 1000], 1500).unwrap();
        let e = push_capped(&mut into, &[0u8; 1000], 1500).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::OutOfMemory);
        assert_eq!(into.len(), 1000, "nothing past the cap was kept");
    }

    #[test]
    fn sudo_wraps_and_quotes_the_script() {
        assert_eq!(sudo_command("deploy", "echo 'a b'"), r#"sudo -n sh -c "echo 'a b'""#);
        assert_eq!(sudo_command("root", "true"), "sh -c true");
    }
}

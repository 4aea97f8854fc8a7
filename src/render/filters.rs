//! Template filters: format validated values for each target syntax.
//!
//! `validate` already refuses any value that could be read as structure; the quoting filters here
//! are the second line of defence, and fail the render rather than emit a doubtful token.

use minijinja::{Environment, Error, ErrorKind, Value};

pub fn register(env: &mut Environment<'_>) {
    env.add_filter("duration", duration);
    env.add_filter("seconds", seconds);
    env.add_filter("nginx", nginx);
    env.add_filter("hcl", hcl);
    env.add_filter("yaml", yaml);
    env.add_filter("conf", conf);
    env.add_filter("haproxy", haproxy);
    env.add_filter("hostport", hostport);
    env.add_filter("secret", secret);
    env.add_filter("systemd_arg", systemd_arg);
    env.add_filter("systemd_command_arg", systemd_command_arg);
    env.add_filter("systemd_program", systemd_program);
    env.add_filter("path_regex", path_regex);
}

/// A validated URL path as a regular expression (PCRE, for nginx's `location ~*`, where `$` is
/// the end of the path and no variable) for it and its spellings with trailing slashes:
/// `/metrics` -> `^/metrics/*$`. Anything but a URL path's characters is refused.
fn path_regex(v: &str) -> Result<String, Error> {
    if !v.starts_with('/') || !v.chars().all(|c| c.is_ascii_alphanumeric() || "/._-~".contains(c)) {
        return Err(Error::new(ErrorKind::InvalidOperation, format!("`{}` is not a URL path", v.escape_debug())));
    }
    let escaped: String = v.trim_end_matches('/').chars().flat_map(|c| if c == '.' { vec!['\\', c] } else { vec![c] }).collect();
    Ok(format!("^{escaped}/*$"))
}

/// The first word of an `ExecStart=` line: as [`systemd_arg`], and refused when it starts with a
/// character systemd reads as a prefix even inside quotes (`+` runs the program as root).
fn systemd_program(v: &str) -> Result<String, Error> {
    if v.starts_with(crate::topology::syntax::EXEC_PREFIXES) {
        return Err(Error::new(ErrorKind::InvalidOperation, format!("`{}` would be read as an ExecStart= prefix", v.escape_debug())));
    }
    systemd_arg(v)
}

/// One argument of an `ExecStart=` line, exactly as given: double-quoted, with the characters
/// systemd would read as an escape, a variable or a specifier escaped. Control characters are
/// refused (validation already did).
fn systemd_arg(v: &str) -> Result<String, Error> {
    if v.is_empty() || v.chars().any(char::is_control) {
        return Err(Error::new(ErrorKind::InvalidOperation, format!("`{}` cannot be a command argument", v.escape_debug())));
    }
    let mut out = String::from("\"");
    systemd_escape_into(&mut out, v);
    out.push('"');
    Ok(out)
}

fn systemd_escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("$$"),
            '%' => out.push_str("%%"),
            c => out.push(c),
        }
    }
}

/// One argument of the program's `ExecStart=` as [`systemd_arg`], where `$(PORT)` and
/// `$(INSTANCE)` become `${PORT}` and `${INSTANCE}`: systemd puts the unit's own `Environment=`
/// values there, inside the one argument, with no shell (and nothing else is expanded).
fn systemd_command_arg(v: &str) -> Result<String, Error> {
    use crate::topology::syntax::{ArgumentPart, argument_parts};
    systemd_arg(v)?;
    let parts = argument_parts(v).map_err(|e| Error::new(ErrorKind::InvalidOperation, e))?;
    let mut out = String::from("\"");
    for p in parts {
        match p {
            ArgumentPart::Text(t) => systemd_escape_into(&mut out, &t),
            ArgumentPart::Value(value) => {
                out.push_str("${");
                out.push_str(value.variable());
                out.push('}');
            }
        }
    }
    out.push('"');
    Ok(out)
}

/// Characters a secret may hold: it is written inside double quotes in systemd environment
/// files and redis.conf, where these have no special meaning.
pub fn secret_is_safe(v: &str) -> bool {
    !v.is_empty() && v.chars().all(|c| (c == ' ' || c.is_ascii_graphic()) && !"\"\\$`'%".contains(c))
}

/// Lower-case hex of the sha256 of `bytes`: release ids, file digests, Redis ACL passwords.
/// The Redis exporter's own password, derived from the fleet's Redis password: the sha256 (hex) of
/// `scalectl-exporter:` and that password. A password of its own, which tells nothing of the apps'
/// should the exporter give it away, and which changes when the fleet's password is rotated; the
/// Ansible role (`hash('sha256')`) and the compose bundle's Redis (`sha256sum`) derive it alike.
pub fn redis_exporter_password(redis_password: &str) -> String {
    sha256_hex(format!("scalectl-exporter:{redis_password}").as_bytes())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A secret value inside double quotes; one that could break out is refused (without echoing it).
fn secret(v: &str) -> Result<String, Error> {
    if secret_is_safe(v) {
        Ok(format!("\"{v}\""))
    } else {
        Err(Error::new(ErrorKind::InvalidOperation, "a secret value holds a character that cannot be written safely"))
    }
}

/// `address:port`, with IPv6 addresses in brackets.
/// `address:port`, IPv6 addresses in brackets: how the site file names an upstream server.
pub fn hostport(address: &str, port: u16) -> String {
    if address.contains(':') { format!("[{address}]:{port}") } else { format!("{address}:{port}") }
}

/// Milliseconds as the largest exact unit (`500ms`, `10s`, `5m`, `2h`, `365d`), a form Nginx,
/// systemd and Prometheus all read the same way.
pub fn duration(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")];
    for (size, unit) in UNITS {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Milliseconds as whole seconds, rounded up.
pub fn seconds(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// A token inside an Nginx directive: anything Nginx could read as structure is refused.
fn nginx(value: &str) -> Result<String, Error> {
    refuse(value, "nginx", |c| c.is_whitespace() || c.is_control() || ";{}\"'$\\#".contains(c))
}

/// A word in an HAProxy configuration line: nothing HAProxy reads as a separator, a quote, an
/// escape, a comment or a variable (`%[`, `${`).
fn haproxy(value: &str) -> Result<String, Error> {
    refuse(value, "haproxy", |c| c.is_whitespace() || c.is_control() || "\"'\\#$%{}".contains(c))
}

/// A bare value in a `key value` config line (redis.conf, /etc/default files, rsyslog parameters).
fn conf(value: &str) -> Result<String, Error> {
    refuse(value, "config", |c| c.is_whitespace() || c.is_control() || "\"'$\\`#;{}".contains(c))
}

fn refuse(value: &str, syntax: &str, bad: impl Fn(char) -> bool) -> Result<String, Error> {
    match value.chars().find(|&c| bad(c)) {
        Some(c) => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("refusing to render {c:?} into {syntax} syntax (value {value:?})"),
        )),
        None => Ok(value.to_string()),
    }
}

/// A quoted HCL string: JSON escapes plus HCL's own template sequences (`${`, `%{`) doubled.
fn hcl(value: &str) -> String {
    let json = serde_json::to_string(value).unwrap_or_else(|_| "\"\"".into());
    json.replace("${", "$${").replace("%{", "%%{")
}

/// Any value as a YAML flow scalar or collection: JSON is valid YAML, and quoting is exact.
fn yaml(value: Value) -> Result<String, Error> {
    serde_json::to_string(&value).map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("cannot write as YAML: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_use_the_largest_exact_unit() {
        assert_eq!(duration(500), "500ms");
        assert_eq!(duration(1500), "1500ms");
        assert_eq!(duration(10_000), "10s");
        assert_eq!(duration(90_000), "90s");
        assert_eq!(duration(120_000), "2m");
        assert_eq!(duration(365 * 86_400_000), "365d");
        assert_eq!(seconds(1), 1);
        assert_eq!(seconds(10_000), 10);
    }

    #[test]
    fn a_program_cannot_carry_an_exec_prefix() {
        for p in ["+node", "!node", "!!node", "@node", "-node", ":node"] {
            assert!(systemd_program(p).is_err(), "{p}");
        }
        assert_eq!(systemd_program("node").unwrap(), "\"node\"");
        assert_eq!(systemd_arg("+x").unwrap(), "\"+x\"");
    }

    #[test]
    fn command_arguments_name_the_instance_values_for_systemd_and_nothing_else() {
        assert_eq!(systemd_command_arg("$(PORT)").unwrap(), "\"${PORT}\"");
        assert_eq!(systemd_command_arg("--bind=0.0.0.0:$(PORT)").unwrap(), "\"--bind=0.0.0.0:${PORT}\"");
        assert_eq!(systemd_command_arg("$(INSTANCE).log").unwrap(), "\"${INSTANCE}.log\"");
        // Anything else stays literal: a `$` systemd would expand is doubled, `$$(` is a literal `$(`.
        assert_eq!(systemd_command_arg("${PORT}").unwrap(), "\"$${PORT}\"");
        assert_eq!(systemd_command_arg("$$(PORT)").unwrap(), "\"$$(PORT)\"");
        assert_eq!(systemd_command_arg("100%").unwrap(), "\"100%%\"");
        assert!(systemd_command_arg("$(HOME)").is_err());
    }

    #[test]
    fn quoting_filters_refuse_structure() {
        assert!(nginx("api.example.com").is_ok());
        assert!(nginx("api.example.com; include /etc/passwd").is_err());
        assert!(nginx("a}b").is_err());
        assert!(conf("allkeys-lru").is_ok());
        assert!(conf("x\nrequirepass y").is_err());
        assert_eq!(hcl("a\"${b}"), r#""a\"$${b}""#);
    }
}

//! What a value may look like before it is allowed into a rendered config.
//!
//! Every string from the topology ends up inside some other syntax (Nginx, systemd, redis.conf,
//! YAML, HCL, shell). Rather than escape per target, values are checked against the narrowest
//! character set their meaning allows, so `;`, `{`, `}`, quotes, `$`, whitespace and newlines can
//! never reach a template where they would be read as structure. Each check returns the reason.

use std::time::Duration;

pub type Check = Result<(), String>;

fn describe(c: char) -> String {
    match c {
        '\n' => "a newline".into(),
        '\r' => "a carriage return".into(),
        '\t' => "a tab".into(),
        ' ' => "a space".into(),
        c if c.is_control() => format!("the control character U+{:04X}", c as u32),
        c => format!("`{c}`"),
    }
}

fn only(value: &str, what: &str, allowed: impl Fn(char) -> bool) -> Check {
    match value.chars().find(|&c| !allowed(c)) {
        Some(c) => Err(format!("{what} must not contain {}", describe(c))),
        None => Ok(()),
    }
}

/// A DNS label: also usable as a systemd instance name, a container name part and a file name.
pub fn dns_label(value: &str, what: &str) -> Check {
    if value.is_empty() || value.len() > 63 {
        return Err(format!("{what} `{}` must be 1 to 63 characters", value.escape_debug()));
    }
    only(value, what, |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        .map_err(|e| format!("{e} (a DNS label: lower-case letters, digits and '-')"))?;
    if value.starts_with('-') || value.ends_with('-') {
        return Err(format!("{what} `{value}` must not start or end with '-' (a DNS label)"));
    }
    Ok(())
}

/// A host name (dot-separated DNS labels, any case) or an IP address.
pub fn address(value: &str) -> Check {
    if value.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    hostname(value, "address", false)
}

/// A DNS host name; `wildcard` allows a leading `*.` (Nginx server names).
pub fn hostname(value: &str, what: &str, wildcard: bool) -> Check {
    let name = match value.strip_prefix("*.") {
        Some(rest) if wildcard => rest,
        _ => value,
    };
    if name.is_empty() || name.len() > 253 {
        return Err(format!("{what} `{}` is not a host name", value.escape_debug()));
    }
    only(name, what, |c| c.is_ascii_alphanumeric() || c == '-' || c == '.')?;
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 || label.starts_with('-') || label.ends_with('-') {
            return Err(format!("{what} `{value}` is not a host name (bad label `{label}`)"));
        }
    }
    Ok(())
}

/// An absolute file system path with no characters that any config syntax treats specially.
pub fn abs_path(value: &str, what: &str) -> Check {
    if !value.starts_with('/') {
        return Err(format!("{what} `{}` must be an absolute path", value.escape_debug()));
    }
    only(value, what, |c| c.is_ascii_alphanumeric() || "/._-+@=,".contains(c))?;
    if value.split('/').any(|seg| seg == "..") {
        return Err(format!("{what} `{value}` must not contain `..`"));
    }
    Ok(())
}

/// A path the SSH key may live at: absolute, or starting with `~/`.
pub fn key_path(value: &str) -> Check {
    match value.strip_prefix("~/") {
        Some(rest) => abs_path(&format!("/{rest}"), "ssh key"),
        None => abs_path(value, "ssh key"),
    }
}

/// A URL path such as `/healthz` or `/static/`.
pub fn url_path(value: &str, what: &str) -> Check {
    if !value.starts_with('/') {
        return Err(format!("{what} `{}` must start with `/`", value.escape_debug()));
    }
    only(value, what, |c| c.is_ascii_alphanumeric() || "/._-~".contains(c))
}

/// An environment variable name.
pub fn env_name(value: &str) -> Check {
    let mut chars = value.chars();
    let ok_first = chars.next().is_some_and(|c| c.is_ascii_uppercase() || c == '_');
    if !ok_first || !chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
        return Err(format!(
            "`{}` is not an environment variable name (upper-case letters, digits, '_', not starting with a digit)",
            value.escape_debug()
        ));
    }
    Ok(())
}

/// A plain environment value: written into a systemd EnvironmentFile and a compose file, so no
/// quotes, backslashes, `$` or control characters.
pub fn env_value(value: &str) -> Check {
    only(value, "an environment value", |c| !c.is_control() && !"\"'\\$`".contains(c))
}

/// A unix user name.
pub fn unix_user(value: &str, what: &str) -> Check {
    let mut chars = value.chars();
    let ok_first = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !ok_first || value.len() > 32 || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-') {
        return Err(format!("{what} `{}` is not a unix user name", value.escape_debug()));
    }
    Ok(())
}

/// A PostgreSQL identifier scalectl writes unquoted (a database or role name): lower-case letters,
/// digits and `_`, not starting with a digit, at most 63 bytes (PostgreSQL's NAMEDATALEN), and not
/// `pg_`-prefixed (reserved for the system's roles).
pub fn pg_identifier(value: &str, what: &str) -> Check {
    let mut chars = value.chars();
    let ok_first = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !ok_first || value.len() > 63 || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(format!("{what} `{}` must be 1 to 63 lower-case letters, digits and '_', not starting with a digit", value.escape_debug()));
    }
    if value.starts_with("pg_") {
        return Err(format!("{what} `{value}` starts with `pg_`, which PostgreSQL keeps for its own roles"));
    }
    if PG_RESERVED.contains(&value) {
        return Err(format!("{what} `{value}` is a word PostgreSQL or pg_hba.conf reads as something else (`all`, `replication`, `public`, an SQL keyword...): choose another"));
    }
    Ok(())
}

/// Names scalectl would write unquoted where PostgreSQL reads them as keywords: pg_hba.conf's
/// (`all`, `replication`, `same*`), the databases every cluster has, and the SQL keywords a
/// database or role name cannot be without quotes.
const PG_RESERVED: &[&str] = &[
    "all", "replication", "sameuser", "samerole", "samegroup", "public", "postgres", "template0", "template1",
    "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric", "both", "case", "cast", "check", "collate", "column",
    "constraint", "create", "current_catalog", "current_date", "current_role", "current_time", "current_timestamp", "current_user",
    "default", "deferrable", "desc", "distinct", "do", "else", "end", "except", "false", "fetch", "for", "foreign", "from", "grant",
    "group", "having", "in", "initially", "intersect", "into", "lateral", "leading", "limit", "localtime", "localtimestamp", "none",
    "not", "null", "offset", "on", "only", "or", "order", "placing", "primary", "references", "returning", "select", "session_user",
    "some", "symmetric", "system_user", "table", "then", "to", "trailing", "true", "union", "unique", "user", "using", "variadic",
    "when", "where", "window", "with",
];

/// Accounts of the services scalectl itself runs, and of the system: an app running as one of
/// them could read or change what that service holds (Redis' data, Prometheus' TSDB, the log CA).
pub const RESERVED_USERS: &[&str] =
    &["root", "daemon", "bin", "sys", "sync", "nobody", "redis", "prometheus", "www-data", "mtail", "grafana", "syslog", "sshd", "messagebus", "_apt"];

/// The user an app runs as: not an account scalectl's own services or the system run as.
pub fn app_user(value: &str) -> Check {
    if RESERVED_USERS.contains(&value) || value.starts_with("systemd-") {
        return Err(format!(
            "app.program.user `{value}` is an account of the system or of a service scalectl runs: the app would hold that service's rights and files"
        ));
    }
    Ok(())
}

/// What systemd reads as a prefix of an ExecStart= program, even inside quotes (`+` and `!` run it
/// as root with every capability, past `User=`).
pub const EXEC_PREFIXES: [char; 5] = ['@', '-', ':', '+', '!'];

/// The program an ExecStart= line starts: none of [`EXEC_PREFIXES`] first.
pub fn program(value: &str) -> Check {
    match value.chars().next() {
        Some(c) if EXEC_PREFIXES.contains(&c) => Err(format!(
            "the program `{}` starts with `{c}`, which systemd reads as an ExecStart= prefix (`+` and `!` would run it with full privileges)",
            value.escape_debug()
        )),
        _ if value.contains("$(") => Err(format!(
            "the program `{}` contains `$(`: only its arguments may name the values given per instance (`$(PORT)`, `$(INSTANCE)`)",
            value.escape_debug()
        )),
        _ => Ok(()),
    }
}

/// A path on the machine that runs scalectl (relative to the topology file, or absolute).
pub fn local_path(value: &str, what: &str) -> Check {
    if value.is_empty() {
        return Err(format!("{what} is empty"));
    }
    only(value, what, |c| !c.is_control())
}

/// One argument of a command line, passed as it is (no shell): any printable text, in which
/// `$(PORT)` and `$(INSTANCE)` stand for the values scalectl gives each instance ([`argument_parts`]).
pub fn argument(value: &str) -> Check {
    if value.is_empty() {
        return Err("an argument of app.program.command is empty".into());
    }
    only(value, "an argument of app.program.command", |c| !c.is_control())?;
    argument_parts(value).map(|_| ())
}

/// A value scalectl gives each instance, which an argument of `app.program.command` may name as
/// `$(PORT)` or `$(INSTANCE)` (Kubernetes' syntax for a container's args).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceValue {
    /// The port the instance listens on.
    Port,
    /// The instance's name (`HOST-PORT` on hosts, the replica's slot on docker).
    Instance,
}

impl InstanceValue {
    /// The environment variable every instance also gets with this value.
    pub fn variable(self) -> &'static str {
        match self {
            InstanceValue::Port => "PORT",
            InstanceValue::Instance => "INSTANCE",
        }
    }
}

/// A piece of a command argument: text passed as it is, or a value given per instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgumentPart {
    Text(String),
    Value(InstanceValue),
}

/// An argument split into its text and its `$(PORT)` / `$(INSTANCE)` references; `$$(` is a
/// literal `$(`. Any other `$(NAME)` is refused: nothing else is expanded, and no shell runs.
pub fn argument_parts(value: &str) -> Result<Vec<ArgumentPart>, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = value;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("$$(") {
            text.push_str("$(");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("$(") {
            let Some(end) = after.find(')') else {
                return Err(format!("`{}` opens `$(` without closing it: write `$$(` for a literal `$(`", value.escape_debug()));
            };
            let value_of = match &after[..end] {
                "PORT" => InstanceValue::Port,
                "INSTANCE" => InstanceValue::Instance,
                other => {
                    return Err(format!(
                        "`$({})` is not a value scalectl gives each instance: only `$(PORT)` and `$(INSTANCE)` are expanded (write `$$(` for a literal `$(`)",
                        other.escape_debug()
                    ));
                }
            };
            if !text.is_empty() {
                parts.push(ArgumentPart::Text(std::mem::take(&mut text)));
            }
            parts.push(ArgumentPart::Value(value_of));
            rest = &after[end + 1..];
        } else {
            let c = rest.chars().next().unwrap_or_default();
            text.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !text.is_empty() || parts.is_empty() {
        parts.push(ArgumentPart::Text(text));
    }
    Ok(parts)
}

/// A Debian package name (Debian Policy 5.6.1).
pub fn debian_package(value: &str) -> Check {
    let ok = value.len() >= 2
        && value.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if !ok {
        return Err(format!("`{}` is not a Debian package name", value.escape_debug()));
    }
    // apt-get reads a trailing `-` as "remove this package" (and `+` as "install"): `openssh-server-`
    // in an install list would remove sshd. No Debian package name ends in `-`.
    if value.ends_with('-') {
        return Err(format!("`{value}` ends in `-`, which apt-get reads as \"remove this package\""));
    }
    Ok(())
}

/// A container image reference such as `nginx:1.27` or `registry.example.com/team/api@sha256:...`.
pub fn image(value: &str) -> Check {
    if value.is_empty() {
        return Err("an image reference must not be empty".into());
    }
    only(value, "an image reference", |c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
}

/// A URL with a safe character set (for Loki's push address).
pub fn url(value: &str, what: &str) -> Check {
    if !(value.starts_with("http://") || value.starts_with("https://")) {
        return Err(format!("{what} `{}` must start with http:// or https://", value.escape_debug()));
    }
    only(value, what, |c| c.is_ascii_alphanumeric() || "/._-~:%?&=+@[]".contains(c))
}

/// A Docker engine endpoint.
/// The engine's API is root on its machine: a local socket, or plain TCP to this machine only.
/// A remote engine is reached through a socket SSH forwards (scalectl speaks no TLS to engines).
pub fn docker_endpoint(value: &str) -> Check {
    const REMOTE: &str = "forward the remote engine's socket over SSH (`ssh -nNT -L /run/scalectl-docker.sock:/var/run/docker.sock HOST`) and use unix:///run/scalectl-docker.sock";
    if let Some(path) = value.strip_prefix("unix://") {
        return abs_path(path, "docker endpoint socket");
    }
    if let Some(rest) = value.strip_prefix("tcp://") {
        only(rest, "docker endpoint", |c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))?;
        let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h).trim_matches(['[', ']']);
        if !matches!(host, "127.0.0.1" | "localhost" | "::1") {
            return Err(format!(
                "docker endpoint `{}` is plain TCP to another machine: the engine's API is root there, and this would send it unencrypted and unauthenticated; {REMOTE}",
                value.escape_debug()
            ));
        }
        return Ok(());
    }
    if value.starts_with("https://") || value.starts_with("ssh://") {
        return Err(format!("docker endpoint `{}`: scalectl speaks to engines over a unix socket or local TCP only; {REMOTE}", value.escape_debug()));
    }
    Err(format!("docker endpoint `{}` must start with unix:// (or tcp:// to 127.0.0.1)", value.escape_debug()))
}

/// AWS identifiers: a prefix and lower-case hex digits.
pub fn aws_id(value: &str, prefix: &str, what: &str) -> Check {
    match value.strip_prefix(prefix) {
        Some(hex) if (8..=17).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) => Ok(()),
        _ => Err(format!("{what} `{}` must look like `{prefix}` followed by 8 to 17 lower-case hex digits", value.escape_debug())),
    }
}

/// An AWS region such as `eu-west-1`.
pub fn aws_region(value: &str) -> Check {
    let parts: Vec<&str> = value.split('-').collect();
    let ok = parts.len() >= 3
        && parts[..parts.len() - 1].iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty();
    if ok { Ok(()) } else { Err(format!("region `{}` is not an AWS region such as eu-west-1", value.escape_debug())) }
}

/// An EC2 instance type such as `t3.small`.
pub fn instance_type(value: &str) -> Check {
    let ok = value.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty() && !b.is_empty() && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
    });
    if ok { Ok(()) } else { Err(format!("instance_type `{}` is not an EC2 instance type such as t3.small", value.escape_debug())) }
}

/// A duration such as `500ms`, `10s`, `5m`, `365d`.
pub fn duration(value: &str, what: &str) -> Result<Duration, String> {
    // humantime accepts `1h 30m`; require the compact form so values render predictably.
    if value.chars().any(|c| c.is_whitespace()) {
        return Err(format!("{what} `{}` must be written without spaces, e.g. `90s`", value.escape_debug()));
    }
    humantime::parse_duration(value)
        .map_err(|e| format!("{what} `{}` is not a duration such as `500ms`, `10s` or `5m` ({e})", value.escape_debug()))
}

/// A size such as `512MiB`, `1GiB` or `256mb`, in bytes.
pub fn size(value: &str, what: &str) -> Result<u64, String> {
    value
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| format!("{what} `{}` is not a size such as `512MiB` or `1GiB`", value.escape_debug()))
}

/// A queue's name: BullMQ's queue name or a stream's key, as people write them (`reports`,
/// `jobs:email`): letters, digits and `-_.:`, at most 100 characters.
pub fn queue_name(value: &str) -> Check {
    if value.is_empty() || value.len() > 100 {
        return Err(format!("the queue name `{}` must be 1 to 100 characters", value.escape_debug()));
    }
    only(value, "the queue name", |c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_split_into_text_and_the_values_given_per_instance() {
        use ArgumentPart::{Text, Value};
        let text = |t: &str| Text(t.to_string());
        assert_eq!(argument_parts("$(PORT)").unwrap(), vec![Value(InstanceValue::Port)]);
        assert_eq!(argument_parts("0.0.0.0:$(PORT)").unwrap(), vec![text("0.0.0.0:"), Value(InstanceValue::Port)]);
        assert_eq!(argument_parts("$(INSTANCE)-$(PORT)x").unwrap(), vec![Value(InstanceValue::Instance), text("-"), Value(InstanceValue::Port), text("x")]);
        assert_eq!(argument_parts("$$(PORT)").unwrap(), vec![text("$(PORT)")]);
        assert_eq!(argument_parts("${PORT} $PORT é").unwrap(), vec![text("${PORT} $PORT é")]);
        assert!(argument_parts("$(port)").is_err());
        assert!(argument_parts("$(PORT").is_err());
        assert!(argument("$(HOME)").is_err());
        assert!(program("$(INSTANCE)").is_err() && program("/bin/$$(x)").is_err());
    }

    #[test]
    fn queue_names_as_people_write_them() {
        assert!(queue_name("reports").is_ok() && queue_name("jobs:email.v2").is_ok());
        assert!(queue_name("").is_err() && queue_name(&"q".repeat(101)).is_err());
        assert!(queue_name("a b").is_err() && queue_name("a\nb").is_err() && queue_name("a{b}").is_err());
    }

    #[test]
    fn dns_labels() {
        assert!(dns_label("app-1", "host name").is_ok());
        assert_eq!(
            dns_label("App_1", "host name").unwrap_err(),
            "host name must not contain `A` (a DNS label: lower-case letters, digits and '-')"
        );
        assert!(dns_label("-a", "x").is_err());
        assert!(dns_label(&"a".repeat(64), "x").is_err());
    }

    #[test]
    fn paths_refuse_structure() {
        assert!(abs_path("/etc/ssl/fullchain.pem", "certificate").is_ok());
        for bad in ["/etc/x;", "/etc/{x}", "/etc/\"x", "/etc/$x", "/etc/x\ninclude", "relative", "/a/../b", "/a b"] {
            assert!(abs_path(bad, "p").is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn server_names() {
        assert!(hostname("api.example.com", "server_name", true).is_ok());
        assert!(hostname("*.example.com", "server_name", true).is_ok());
        assert!(hostname("*.example.com", "server_name", false).is_err());
        assert!(hostname("api.example.com;", "server_name", true).is_err());
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(duration("10s", "t").unwrap(), Duration::from_secs(10));
        assert_eq!(duration("500ms", "t").unwrap(), Duration::from_millis(500));
        assert!(duration("1h 30m", "t").is_err());
        assert!(duration("soon", "t").is_err());
        assert_eq!(size("512MiB", "s").unwrap(), 512 * 1024 * 1024);
        assert!(size("lots", "s").is_err());
    }

    #[test]
    fn env_values() {
        assert!(env_value("production").is_ok());
        assert!(env_value("a b=c;d{e}").is_ok());
        for bad in ["a\nb", "a\"b", "a'b", "$HOME", "a\\b", "`id`"] {
            assert!(env_value(bad).is_err(), "{bad:?} accepted");
        }
    }
}

//! The topology file: parse (with locations), validate, and the typed model everything else reads.
//!
//! Pure: takes the file's text, returns a [`Topology`] or every [`Problem`] found. Reading the file
//! and printing problems happen in `cli/`.

pub mod model;
pub mod problem;
pub mod raw;
pub mod syntax;
pub mod tiers;
pub mod validate;

pub use model::*;
pub use problem::{Problem, Problems};

use raw::{Loc, RawTopology};

/// Parse and validate a topology. `file` names the source in problems.
pub fn parse(file: &str, source: &str) -> Result<Topology, Problems> {
    let problems = |problems| Problems { file: file.to_string(), source: source.to_string(), problems };
    let raw: RawTopology = serde_saphyr::from_str(source).map_err(|e| problems(vec![from_yaml_error(&e)]))?;
    validate::validate(&raw).map_err(problems)
}

/// The JSON Schema (draft-07) of the topology file.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::generate::SchemaSettings::draft07().into_generator().into_root_schema_for::<RawTopology>();
    serde_json::to_value(schema).unwrap_or_default()
}

/// A parse error as a problem, with a "did you mean" for misspelt keys and values.
fn from_yaml_error(e: &serde_saphyr::Error) -> Problem {
    use serde_saphyr::{Error, MessageFormatter, UserMessageFormatter};
    let inner = e.without_snippet();
    let loc = e.location().map(|l| Loc::from(&l)).unwrap_or(Loc { line: 1, column: 1, offset: 0, len: 0 });
    let message = UserMessageFormatter.format_message(inner).into_owned();
    match inner {
        Error::SerdeUnknownField { field, expected, .. } => {
            let p = Problem::at(loc, format!("unknown key `{}`", field.escape_debug()));
            suggest(p, field, expected)
        }
        Error::SerdeUnknownVariant { variant, expected, .. } => {
            let p = Problem::at(loc, format!("unknown value `{}`", variant.escape_debug()));
            suggest(p, variant, expected)
        }
        Error::DuplicateMappingKey { key, .. } => {
            Problem::at(loc, format!("duplicate key `{}`", key.as_deref().unwrap_or("?").escape_debug()))
                .help("each key may appear once in a mapping; remove or merge the repeated one")
        }
        // The value itself is the secret: its snippet shows `*`.
        _ if message == raw::INLINE_SECRET => Problem::at(loc, message.clone()).concealing(loc),
        _ => Problem::at(loc, plain(&message)),
    }
}

/// The parser's terse messages, said the way a topology author thinks about the value.
fn plain(message: &str) -> String {
    match message {
        "invalid u16" => "expected a port: a whole number from 1 to 65535".into(),
        "invalid i64" | "invalid u32" | "invalid u64" => "expected a whole number".into(),
        "invalid f64" => "expected a number".into(),
        "invalid boolean" => "expected true or false".into(),
        "expected sequence start" => "expected a list such as [a, b]".into(),
        "expected mapping start" => "expected a mapping such as {key: value}".into(),
        "expected string scalar" => "expected a string".into(),
        other => other.to_string(),
    }
}

fn suggest(p: Problem, written: &str, expected: &[&str]) -> Problem {
    match closest(written, expected) {
        Some(s) => p.help(format!("did you mean `{s}`? expected one of: {}", expected.join(", "))),
        None => p.help(format!("expected one of: {}", expected.join(", "))),
    }
}

/// The expected name closest to what was written, when it is close enough to be a typo.
fn closest<'a>(written: &str, expected: &[&'a str]) -> Option<&'a str> {
    expected
        .iter()
        .map(|e| (strsim::damerau_levenshtein(written, e), *e))
        .filter(|(d, e)| *d <= 2.max(e.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e)
}

#[cfg(test)]
mod tests {
    use super::{closest, parse};

    fn report(source: &str) -> String {
        parse("t.yaml", source).unwrap_err().report(false)
    }

    #[test]
    fn no_snippet_shows_a_secret_written_inline() {
        let hosts = "name: t\nhosts:\n  a: {address: 10.0.0.1, roles: [lb, app, redis]}\n";
        // A secret where a reference belongs: the problem points at it, the snippet hides it.
        let r = report(&format!("{hosts}redis:\n  password: hunter2-inline\n"));
        assert!(r.contains("t.yaml:5:13: secrets are referenced") && r.contains("password: **************"), "{r}");
        assert!(!r.contains("hunter2"), "{r}");
        // A secret-looking app.env entry: its value is hidden, the key shown.
        let r = report(&format!("{hosts}app:\n  env:\n    API_TOKEN: \"tok-3x4mple-value\"\n"));
        assert!(r.contains("`API_TOKEN` looks like a secret") && r.contains("API_TOKEN: "), "{r}");
        assert!(!r.contains("3x4mple"), "{r}");
        // A parse error stops before the secret is reached; the context line still hides it.
        let r = report(&format!("{hosts}redis:\n  maxmemory: [lots]\n  password: hunter2-inline\n"));
        assert!(r.contains("t.yaml:5:"), "{r}");
        assert!(r.contains("password: ") && !r.contains("hunter2"), "{r}");
        // References and other values are shown as written.
        let r = report(&format!("{hosts}redis:\n  password: {{env: REDIS_PW}}\n  persistence: sometimes\n"));
        assert!(r.contains("password: {env: REDIS_PW}") && r.contains("persistence: sometimes"), "{r}");
    }

    #[test]
    fn ports_are_checked_again_with_the_cores_a_host_has() {
        let t = parse("t.yaml", "name: t\napp: {port: 9080, instances: max}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, lb, redis, monitor]}\n").unwrap();
        let h = &t.hosts[0];
        assert_eq!(t.port_conflict(h, 4), None, "9080-9083 are free");
        // With 16 cores, instance 9090 meets Prometheus.
        assert_eq!(t.port_conflict(h, 16).as_deref(), Some("port 9090 on host `a` is used by both scale-api instance 9090 and prometheus"));
        let t = parse("t.yaml", "name: t\napp: {port: 65530, instances: max}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, lb, redis]}\n").unwrap();
        assert_eq!(t.port_conflict(&t.hosts[0], 16).as_deref(), Some("app.port 65530 plus 16 instances runs past port 65535"));
    }

    #[test]
    fn the_lock_host_does_not_depend_on_the_order_of_the_hosts() {
        let one = "name: t\napp: {instances: 1}\nhosts:\n  b: {address: 10.0.0.2, roles: [lb]}\n  a: {address: 10.0.0.1, roles: [app, redis]}\n";
        let other = "name: t\napp: {instances: 1}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, redis]}\n  b: {address: 10.0.0.2, roles: [lb]}\n";
        for src in [one, other] {
            assert_eq!(parse("t.yaml", src).unwrap().lock_host().unwrap().name, "a", "{src}");
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(closest("adress", &["address", "roles"]), Some("address"));
        assert_eq!(closest("laod_balancer", &["load_balancer", "app"]), Some("load_balancer"));
        assert_eq!(closest("zzz", &["address", "roles"]), None);
    }
}

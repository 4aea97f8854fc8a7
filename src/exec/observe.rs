//! Read a host's state in one round trip: core count, whether it is a container, every managed
//! file (content, or only a hash for secrets), unit states, packages and releases.
//!
//! The script is built from the desired state's lists (quoted); its line-oriented output is
//! parsed by `parse`, which is pure and unit-tested.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;

use super::commands;
use super::ssh::Conn;
use crate::plan::{DesiredHost, Observed, ObservedFile, UnitState};



/// Parse the script's output.
pub fn parse(out: &str) -> Result<Observed, String> {
    let mut o = Observed::default();
    for line in out.lines() {
        let mut w = line.split(' ');
        let kind = w.next().unwrap_or("");
        let rest: Vec<&str> = w.collect();
        match (kind, rest.as_slice()) {
            ("cores", [n]) => {
                o.cores = n.parse().ok().filter(|c| (1..=MAX_CORES).contains(c)).ok_or_else(|| format!("the host reported {n} cores (1 to {MAX_CORES} expected)"))?
            }
            ("virt", [v]) => o.container = *v != "none" && !v.is_empty(),
            // Unresolvable here: left out (Prometheus then labels the instance with its name).
            ("addr", [name, ip]) => {
                if let Ok(ip) = ip.parse() {
                    o.resolved.insert(name.to_string(), ip);
                }
            }
            ("file", [path, mode, owner, group, data @ ..]) => {
                let data = data.first().copied().unwrap_or("");
                let bytes = base64::engine::general_purpose::STANDARD.decode(data).map_err(|e| format!("{path}: {e}"))?;
                let content = String::from_utf8_lossy(&bytes).into_owned();
                o.files.insert(path.to_string(), Some(observed_file(path, mode, owner, group, crate::plan::sha256_hex(&bytes), Some(content))?));
            }
            ("secret", [path, mode, owner, group, sha]) => {
                o.files.insert(path.to_string(), Some(observed_file(path, mode, owner, group, sha.to_string(), None)?));
            }
            ("nofile", [path]) => {
                o.files.insert(path.to_string(), None);
            }
            ("unit", [name, rest @ ..]) => {
                let active = rest.first().copied().unwrap_or("").to_string();
                let enabled = rest.get(1).copied().unwrap_or("").to_string();
                o.units.insert(name.to_string(), UnitState { active, enabled });
            }
            ("pkg", [name, status @ ..]) => {
                o.packages.insert(name.to_string(), status.first() == Some(&"installed"));
            }
            ("release", [id]) => o.release = (!id.is_empty()).then(|| id.to_string()),
            ("pending", [entry]) => o.pending.push(entry.to_string()),
            ("admin", [kind]) => o.admins.extend(crate::plan::Credentials::ALL.into_iter().filter(|c| c.pending() == *kind)),
            ("logtls", [ca, state, name @ ..]) => {
                o.log_tls = Some(crate::plan::ObservedLogTls { ca_sha256: ca.to_string(), good: *state == "good", name: name.first().copied().unwrap_or("").to_string() })
            }
            ("logca", [sha]) => o.log_ca = Some(sha.to_string()),
            ("drained", [server]) => o.drained.push(server.to_string()),
            ("have", [id]) if !id.starts_with('.') => o.releases.push(id.to_string()),
            ("ready", [id]) => o.ready_releases.push(id.to_string()),
            ("released", [id]) => o.released.push(id.to_string()),
            _ => {}
        }
    }
    if o.cores == 0 {
        return Err("the host did not report its core count".into());
    }
    Ok(o)
}


/// More cores than any machine scalectl deploys to has: a higher count is a broken or hostile host.
const MAX_CORES: u32 = 4096;
fn observed_file(path: &str, mode: &str, owner: &str, group: &str, sha256: String, content: Option<String>) -> Result<ObservedFile, String> {
    Ok(ObservedFile {
        mode: u32::from_str_radix(mode, 8).map_err(|_| format!("{path}: bad mode {mode}"))?,
        owner: owner.to_string(),
        group: group.to_string(),
        sha256,
        content,
    })
}

pub fn observe(conn: &Conn, d: &DesiredHost) -> anyhow::Result<Observed> {
    let out = conn.sudo_script("observing", &commands::observe(d), Duration::from_secs(60))?;
    parse(&out.stdout).map_err(|e| anyhow::anyhow!("{}: cannot read the observation: {e}", conn.endpoint.host))
}

/// Observe hosts in parallel; every host's failure is reported.
pub fn observe_all(conns: &[Conn], desired: &[DesiredHost], parallel: usize) -> anyhow::Result<BTreeMap<String, Observed>> {
    let results = super::fanout(desired, parallel, |d| {
        let conn = super::conn(conns, &d.host)?;
        observe(conn, d).map(|o| (d.host.clone(), o))
    });
    super::collect(results).map(|v| v.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_of_line() {
        let out = "cores 2\nvirt docker\nfile /etc/a 644 root root aGkK\nnofile /etc/b\nsecret /etc/s 600 root root abc\n\
unit nginx.service active enabled\nunit scale-api@3000.service inactive \npkg nginx installed\npkg redis-server \n\
release 0123456789ab\nhave 0123456789ab\nhave .tmp-x\naddr app-1 10.0.0.7\naddr app-2 \naddr app-3 not-an-ip\ndrained app-1:3000\n";
        let o = parse(out).unwrap();
        assert_eq!(o.cores, 2);
        assert!(o.container);
        let a = o.files["/etc/a"].as_ref().unwrap();
        assert_eq!((a.mode, a.content.as_deref()), (0o644, Some("hi\n")));
        assert_eq!(o.files["/etc/b"], None);
        assert_eq!(o.files["/etc/s"].as_ref().unwrap().content, None);
        assert!(o.units["nginx.service"].is_active());
        assert!(!o.units["scale-api@3000.service"].is_active());
        assert_eq!(o.packages["nginx"], true);
        assert_eq!(o.packages["redis-server"], false);
        assert_eq!(o.release.as_deref(), Some("0123456789ab"));
        assert_eq!(o.drained, ["app-1:3000"]);
        assert_eq!(o.releases, vec!["0123456789ab".to_string()]);
        // Resolved names: an IP each, the unresolvable and the malformed left out.
        assert_eq!(o.resolved.iter().map(|(n, ip)| format!("{n}={ip}")).collect::<Vec<_>>(), ["app-1=10.0.0.7"]);
        assert!(parse("virt none\n").is_err());
        // A core count no machine has is refused, not turned into that many instances.
        assert_eq!(parse("cores 4000000000\n").unwrap_err(), "the host reported 4000000000 cores (1 to 4096 expected)");
        assert!(parse("cores 0\n").is_err());
    }
}

//! A plan saved by `scalectl plan --out FILE` and applied later by `scalectl apply FILE`: the plan
//! itself plus what it was made from (the topology's bytes, the release binary, each host's or the
//! engine's observation), so that apply can refuse it when any of them changed since. Secrets are
//! not in it.
//!
//! The file is never trusted to say what to do: apply makes the plan again from the same topology,
//! release and a fresh observation, and runs it only if it equals the saved one (Terraform's model).
//! An edited file can only be refused, never run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Observed, TargetPlan, sha256_hex};

pub const KIND: &str = "scalectl-plan";
/// Bumped when a saved plan of an older scalectl could be misread.
pub const SAVED_FORMAT_VERSION: u32 = 4;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SavedPlan {
    pub kind: String,
    pub format_version: u32,
    pub scalectl_version: String,
    /// The topology file as it was given, and the sha256 of its bytes.
    pub topology_file: String,
    pub topology_sha256: String,
    pub release_file: Option<String>,
    pub release_sha256: Option<String>,
    /// Host (or `engine`) -> sha256 of what was observed there when planning.
    pub observed: BTreeMap<String, String>,
    /// Redacted: secret files carry only their content's sha256.
    pub plan: TargetPlan,
}

/// The digest of one observation.
pub fn fingerprint(observed: &impl Serialize) -> String {
    sha256_hex(serde_json::to_string(observed).unwrap_or_default().as_bytes())
}

/// One digest per host of everything observed there (file hashes, units, packages, releases),
/// but for secret files' contents (observed by hash only): a saved plan carries nothing a
/// dictionary could be tried against. A secret file changed on a host since the plan still
/// shows, as a plan that differs.
pub fn fingerprints(observed: &BTreeMap<String, Observed>) -> BTreeMap<String, String> {
    observed
        .iter()
        .map(|(h, o)| {
            let mut o = o.clone();
            for f in o.files.values_mut().flatten().filter(|f| f.content.is_none()) {
                f.sha256.clear();
            }
            (h.clone(), fingerprint(&o))
        })
        .collect()
}

/// Hosts whose observation differs from the one the plan was made on.
pub fn changed_hosts(saved: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<String> {
    let mut hosts: Vec<String> = saved.keys().chain(now.keys()).filter(|h| saved.get(*h) != now.get(*h)).cloned().collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ObservedFile;

    #[test]
    fn a_secret_files_digest_is_not_in_the_fingerprint() {
        let file = |sha: &str, content: Option<&str>| Some(ObservedFile { mode: 0o600, owner: "root".into(), group: "root".into(), sha256: sha.into(), content: content.map(String::from) });
        let mut a = BTreeMap::new();
        let mut o = Observed { cores: 2, ..Default::default() };
        o.files.insert("/etc/app/secrets.env".into(), file("aaaa", None));
        o.files.insert("/etc/app/app.conf".into(), file("bbbb", Some("x")));
        a.insert("web".to_string(), o);
        let before = fingerprints(&a);
        a.get_mut("web").unwrap().files.insert("/etc/app/secrets.env".into(), file("cccc", None));
        assert_eq!(fingerprints(&a), before, "a secret's hash is not fingerprinted");
        a.get_mut("web").unwrap().files.insert("/etc/app/app.conf".into(), file("dddd", Some("y")));
        assert_ne!(fingerprints(&a), before);
    }

    #[test]
    fn a_host_that_changed_makes_the_plan_stale() {
        let mut a = BTreeMap::new();
        a.insert("web".to_string(), Observed { cores: 2, ..Default::default() });
        a.insert("db".to_string(), Observed { cores: 4, ..Default::default() });
        let before = fingerprints(&a);
        assert!(changed_hosts(&before, &fingerprints(&a)).is_empty());
        a.get_mut("db").unwrap().release = Some("r2".into());
        assert_eq!(changed_hosts(&before, &fingerprints(&a)), vec!["db".to_string()]);
        a.remove("web");
        assert_eq!(changed_hosts(&before, &fingerprints(&a)), vec!["db".to_string(), "web".to_string()]);
    }
}

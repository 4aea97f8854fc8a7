//! What every target's plan offers the commands: whether it changes anything, how many steps, a
//! copy without secrets, text for people and a versioned JSON document for pipelines.
//!
//! `TargetPlan` is the one plan type the commands hold, saved plans included: a hosts plan or a
//! docker plan, tagged by `target` in JSON. A new target adds a variant here and implements
//! [`PlanView`] for its plan.

use serde::{Deserialize, Serialize};

use super::Plan;
use super::docker::DockerPlan;

/// Version of every JSON document scalectl prints; bumped on incompatible changes.
pub const JSON_FORMAT_VERSION: u32 = 4;

pub trait PlanView {
    fn topology(&self) -> &str;
    fn has_changes(&self) -> bool;
    /// Actions (hosts) or steps (docker) the plan takes.
    fn change_count(&self) -> usize;
    /// The plan with every secret value removed: what is printed or saved.
    fn redacted(&self) -> Self;
    /// For people: one line per step, diffs of changed files.
    fn text(&self, color: bool) -> String;
    /// Where the steps run, for a closing line: `actions on 3 hosts`, `steps on the engine`.
    fn scope(&self) -> String;
    /// Where the steps run and how many run at each, in plan order: each host with something
    /// to do and its actions; `docker` and its steps.
    fn places(&self) -> Vec<(String, usize)>;
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "target", rename_all = "snake_case")]
pub enum TargetPlan {
    Hosts(Plan),
    Docker(DockerPlan),
}

impl TargetPlan {
    /// The target's name, as in the topology's `target:`.
    pub fn target(&self) -> &'static str {
        match self {
            TargetPlan::Hosts(_) => "hosts",
            TargetPlan::Docker(_) => "docker",
        }
    }

    /// `{"format_version", "target", "topology", "changes", "action_count", ...the plan's own fields}`,
    /// secrets removed.
    pub fn json(&self) -> serde_json::Value {
        let mut doc = serde_json::Map::new();
        doc.insert("format_version".into(), JSON_FORMAT_VERSION.into());
        let redacted = serde_json::to_value(self.redacted()).unwrap_or_default();
        if let serde_json::Value::Object(fields) = redacted {
            for (k, v) in fields {
                doc.insert(k, v);
            }
        }
        doc.insert("changes".into(), self.has_changes().into());
        doc.insert("action_count".into(), self.change_count().into());
        serde_json::Value::Object(doc)
    }
}

/// Each method is the variant's own.
macro_rules! each {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            TargetPlan::Hosts($p) => $e,
            TargetPlan::Docker($p) => $e,
        }
    };
}

impl PlanView for TargetPlan {
    fn topology(&self) -> &str {
        each!(self, p => p.topology())
    }
    fn has_changes(&self) -> bool {
        each!(self, p => PlanView::has_changes(p))
    }
    fn change_count(&self) -> usize {
        each!(self, p => PlanView::change_count(p))
    }
    fn redacted(&self) -> Self {
        match self {
            TargetPlan::Hosts(p) => TargetPlan::Hosts(p.redacted()),
            TargetPlan::Docker(p) => TargetPlan::Docker(p.redacted()),
        }
    }
    fn text(&self, color: bool) -> String {
        each!(self, p => p.text(color))
    }
    fn scope(&self) -> String {
        each!(self, p => p.scope())
    }
    fn places(&self) -> Vec<(String, usize)> {
        each!(self, p => p.places())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_carries_the_version_the_target_and_the_counts() {
        let p = TargetPlan::Docker(DockerPlan { topology: "t".into(), network: "n".into(), activate: vec![], cleanup: vec![] });
        let v = p.json();
        assert_eq!(v["format_version"], 4);
        assert_eq!(v["target"], "docker");
        assert_eq!(v["topology"], "t");
        assert_eq!(v["changes"], false);
        assert_eq!(v["action_count"], 0);
        let h = TargetPlan::Hosts(Plan { topology: "t".into(), hosts: vec![] });
        assert_eq!(h.json()["target"], "hosts");
        assert!(h.json()["hosts"].is_array());
    }

    #[test]
    fn an_empty_plan_reads_back_as_the_same_target() {
        let p = TargetPlan::Hosts(Plan { topology: "t".into(), hosts: vec![] });
        let back: TargetPlan = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}

//! `scalectl validate`: every problem of a topology file, with its location.

use serde_json::json;

use super::{Failure, Output, TopologyArg, JSON_FORMAT_VERSION};

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit codes: 0 valid, 1 problems found (each as FILE:LINE:COL: message).")]
pub struct Args {
    #[command(flatten)]
    pub topology: TopologyArg,
    /// Output format
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

pub fn run(a: Args, color: bool) -> Result<(), Failure> {
    let result = super::parse(&a.topology.file)?;
    match (a.output, result) {
        (Output::Text, Ok(t)) => {
            println!("{}: valid ({} host{}, target {})", a.topology.file.display(), t.hosts.len(), if t.hosts.len() == 1 { "" } else { "s" }, serde_json::to_value(t.target).unwrap_or_default().as_str().unwrap_or("?"));
            for n in notes(&t) {
                println!("note: {n}");
            }
            Ok(())
        }
        (Output::Text, Err(p)) => {
            eprint!("{}", p.report(color));
            Err(Failure::Reported)
        }
        (Output::Json, r) => {
            let file = a.topology.file.display().to_string();
            let (valid, problems, notes) = match &r {
                Ok(t) => (true, Vec::new(), notes(t)),
                Err(p) => (false, p.problems.iter().map(|p| json!({"file": file, "line": p.line, "column": p.column, "message": p.message, "help": p.help})).collect(), Vec::new()),
            };
            println!("{}", json!({"format_version": JSON_FORMAT_VERSION, "file": file, "valid": valid, "problems": problems, "notes": notes}));
            if valid { Ok(()) } else { Err(Failure::Reported) }
        }
    }
}

/// What a valid topology does that its author may not expect.
fn notes(t: &crate::topology::Topology) -> Vec<String> {
    let mut notes = Vec::new();
    if t.app.liveness == t.app.readiness {
        notes.push(format!(
            "`{}` answers both liveness and readiness: an instance is restarted when it stops answering there, and gets traffic once it answers (a separate readiness path lets it refuse traffic without being restarted)",
            t.app.readiness
        ));
    }
    notes
}

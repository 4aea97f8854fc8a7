//! The scalectl binary: parse arguments, run, map the outcome to an exit code (0 ok, 1 error).

use std::process::ExitCode;

use scalectl::cli::{self, Cli, Failure};

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Reported) => ExitCode::from(1),
        Err(Failure::Changes) => ExitCode::from(2),
        Err(Failure::Error(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

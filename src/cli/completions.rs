//! `scalectl completions SHELL` and `scalectl man`: generated from the clap definitions, so they
//! never drift from the real flags.

use clap::CommandFactory;

use super::{Cli, Failure};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  scalectl completions bash > /etc/bash_completion.d/scalectl\n  \
scalectl completions zsh > \"${fpath[1]}/_scalectl\"\n  scalectl completions fish > ~/.config/fish/completions/scalectl.fish")]
pub struct Args {
    /// The shell to complete in
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let mut cmd = Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "scalectl", &mut std::io::stdout());
    Ok(())
}

pub fn man() -> Result<(), Failure> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out).map_err(anyhow::Error::from)?;
    std::io::Write::write_all(&mut std::io::stdout(), &out).map_err(anyhow::Error::from)?;
    Ok(())
}

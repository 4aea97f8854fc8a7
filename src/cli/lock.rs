//! `scalectl lock status|release`: the fleet lock that keeps two applies apart, on any target.

use super::args::FleetArgs;
use super::session;
use super::Failure;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: LockCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum LockCommand {
    /// Who holds the lock, since when, until when
    Status(FleetArgs),
    /// Remove the lock (only with --force: make sure no apply is running)
    Release {
        #[command(flatten)]
        fleet: FleetArgs,
        /// Required: releasing someone else's lock lets two applies run at once
        #[arg(long)]
        force: bool,
    },
}

pub fn run(a: Args, color: bool) -> Result<(), Failure> {
    match a.command {
        LockCommand::Status(f) => {
            let target = session::open(&f, color)?;
            match target.lock_status()? {
                Some(info) => println!("locked: {info}"),
                None => println!("unlocked"),
            }
            Ok(())
        }
        LockCommand::Release { fleet: f, force } => {
            if !force {
                return Err(anyhow::anyhow!("refusing to release the lock without --force (see `scalectl lock status`)").into());
            }
            let target = session::open(&f, color)?;
            target.break_lock()?;
            println!("released");
            Ok(())
        }
    }
}

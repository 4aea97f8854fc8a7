//! `scalectl lock status|release`: the fleet lock that keeps two applies apart.

use super::fleet::{self, FleetArgs};
use super::Failure;
use crate::exec::lock;

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
            let fl = fleet::connect(&f, color)?;
            match lock::status(fleet::lock_host(&fl)?)? {
                Some(info) => println!("locked: {info}"),
                None => println!("unlocked"),
            }
            Ok(())
        }
        LockCommand::Release { fleet: f, force } => {
            if !force {
                return Err(anyhow::anyhow!("refusing to release the lock without --force (see `scalectl lock status`)").into());
            }
            let fl = fleet::connect(&f, color)?;
            lock::force_release(fleet::lock_host(&fl)?)?;
            println!("released");
            Ok(())
        }
    }
}

//! `scalectl lock status|release`: the fleet lock that keeps two applies apart, on any target.

use super::Failure;
use super::args::FleetArgs;
use super::session;

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
    ///
    /// With --id, only the lock `lock status` showed is removed: if another run took the lock
    /// since, it stays and is shown. Without it, the lock there now is shown and removed.
    Release {
        #[command(flatten)]
        fleet: FleetArgs,
        /// Required: releasing someone else's lock lets two applies run at once
        #[arg(long)]
        force: bool,
        /// The id of the lock to remove, as `scalectl lock status` shows it
        #[arg(long, value_name = "ID")]
        id: Option<String>,
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
        LockCommand::Release { fleet: f, force, id } => {
            if !force {
                return Err(anyhow::anyhow!("refusing to release the lock without --force (see `scalectl lock status`)").into());
            }
            let target = session::open(&f, color)?;
            let id = match id {
                Some(id) => id,
                None => match target.lock_status()? {
                    Some(info) => {
                        eprintln!("releasing the lock {info}");
                        info.id
                    }
                    None => {
                        println!("unlocked");
                        return Ok(());
                    }
                },
            };
            match target.break_lock(&id)? {
                Ok(()) => println!("released"),
                Err(other) => {
                    return Err(anyhow::anyhow!("the lock is now {other}, not {id}: nothing was released").into());
                }
            }
            Ok(())
        }
    }
}

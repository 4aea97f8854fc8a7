//! `scalectl schema`: the topology's JSON Schema, for editors (yaml-language-server modeline).

use super::Failure;

#[derive(Debug, clap::Args)]
#[command(after_help = "Use it from a topology file's first line:\n  # yaml-language-server: $schema=./scale.schema.json\nafter `scalectl schema > scale.schema.json`.")]
pub struct Args {}

pub fn run(_: Args) -> Result<(), Failure> {
    let schema = crate::topology::json_schema();
    let text = serde_json::to_string_pretty(&schema).map_err(anyhow::Error::from)?;
    println!("{text}");
    Ok(())
}

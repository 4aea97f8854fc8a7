#!/usr/bin/env bash
# Every test: installs what it needs, then runs unit, integration and tool-checked tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export INSTA_UPDATE=no
cargo build --locked --workspace --bins
# The lab tests deploy an optimized scale-api, as a real release would be.
cargo build --locked --release -p scale-api
cargo test --locked --workspace --all-targets

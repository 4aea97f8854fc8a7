#!/usr/bin/env bash
# Every test: installs what it needs, then runs unit, integration and tool-checked tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export INSTA_UPDATE=no
cargo build --locked --bins
cargo test --locked --all-targets

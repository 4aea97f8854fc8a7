#!/usr/bin/env bash
# Every test: installs what it needs, then runs unit, integration and tool-checked tests.
#
# The end-to-end tests wait a lot (alert windows, scrapes, load held for a minute): they run in two
# streams at once, each taking its tests one at a time: the lab of examples/lab.yaml in one; the
# docker deployments, the node lab and every other test in the other (about as long: 1,269 s and
# 1,171 s on a fresh 2-core machine, where one at a time they took 1,644 s). Each stream
# owns its deployments, so neither resets nor judges the other's; a test that judges with doctor
# takes the machine alone (tests/it/support.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export INSTA_UPDATE=no
cargo build --locked --workspace --bins
# The lab tests deploy an optimized scale-api, as a real release would be.
cargo build --locked --release -p scale-api
# Build every test target once; the integration binary's path, for the stream run without cargo
# (a cargo that runs tests holds the build directory's lock until they end).
it=$(cargo test --locked --workspace --all-targets --no-run --message-format=json |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "it" and m.get("executable"):
        print(m["executable"])')
[ -x "$it" ] || { echo "test: no integration test binary found" >&2; exit 1; }

# The lab's hosts, and with them the Debian base image every end-to-end test builds on: made here,
# once, so the two streams do not both build it.
LAB_REDIS_PASSWORD="$(cat target/lab-redis-password)" SCALECTL_HOME="$PWD/target/lab-home" \
  ./target/debug/scalectl lab up -f examples/lab.yaml

first=(lab::lab_)
(set -o pipefail; "$it" "${first[@]}" 2>&1 | sed -u 's/^/[lab] /') &
lab_stream=$!
rest=0
cargo test --locked --workspace --all-targets -- $(printf -- '--skip %s ' "${first[@]}") || rest=$?
lab=0
wait "$lab_stream" || lab=$?
echo "test: lab stream exit $lab, other tests exit $rest"
[ "$lab" -eq 0 ] && [ "$rest" -eq 0 ]

#!/usr/bin/env bash
# Every test: installs what it needs, then runs unit, integration and tool-checked tests.
#
# The end-to-end tests wait a lot (alert windows, scrapes, load held for a minute): they run in two
# streams at once, each taking its tests one at a time: the lab of examples/lab.yaml and the
# database lab in one; the docker deployments, the node lab and every other test in the other. With
# the database lab in the second they took 1,211 s and 2,484 s on a 2-core machine (a run of 51
# minutes), so it moved to the first: then 2,341 s and 2,460 s (a fresh clone's run of 49 minutes,
# its cold build included); with one build of the end-to-end binary, 2,030 s and 2,126 s (42 min). Each stream
# owns its deployments, so neither resets nor judges the other's; a test that judges with doctor
# takes the machine alone (tests/it/support.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export INSTA_UPDATE=no
cargo build --locked --workspace --bins
# The lab tests deploy an optimized scale-api, as a real release would be.
cargo build --locked --release -p scale-api
# Every test target built once, before the two streams start (cargo holds no lock while tests run).
# Both streams ask with `--workspace`: `--test it` alone resolves the dependencies' features for
# this package only, which is another build of the end-to-end binary (about 90 s of both cores).
cargo test --locked --workspace --all-targets --no-run

# The lab's hosts, and with them the Debian base image every end-to-end test builds on: made here,
# once, so the two streams do not both build it.
LAB_REDIS_PASSWORD="$(cat target/lab-redis-password)" SCALECTL_HOME="$PWD/target/lab-home" \
  ./target/debug/scalectl lab up -f examples/lab.yaml

# The database lab's tests (about 3 minutes) run first in the lab's stream (the other stream is the
# longer one), and the database lab goes down after them: nothing else uses it.
first=(lab::lab_ db::db_)
rm -f target/e2e-turns.log
# Each stream's output is kept too, so that a failing run ends with every failure's message (a
# CI log shows its tail; the failures section of one stream can be long).
lab_stream() {
  local db=0 lab=0
  cargo test --locked --workspace --test it -- db::db_ || db=$?
  SCALECTL_HOME="$PWD/target/lab-home" ./target/debug/scalectl lab down -f examples/database.yaml || true
  cargo test --locked --workspace --test it -- lab::lab_ || lab=$?
  [ "$db" -eq 0 ] && [ "$lab" -eq 0 ]
}
(set -o pipefail; lab_stream 2>&1 | sed -u 's/^/[lab] /' | tee target/test-lab.log) &
lab_stream=$!
rest=0
(set -o pipefail; cargo test --locked --workspace --all-targets -- $(printf -- '--skip %s ' "${first[@]}") 2>&1 | tee target/test-other.log) || rest=$?
lab=0
wait "$lab_stream" || lab=$?
echo "test: the end-to-end tests that held the machine longest (held, waited for their turn):"
sort -rn target/e2e-turns.log 2>/dev/null | head -n 10 || true
# A CI log keeps only the tail of the output: the failures come last, the first of each stream
# whole (a later failure is often its consequence), then every failure's first line, grouped.
if [ "$lab" -ne 0 ] || [ "$rest" -ne 0 ]; then
  echo "test: the first failure of each stream (in the order the tests ended):"
  for log in target/test-lab.log target/test-other.log; do
    name="$(grep -m1 -oP 'test \K\S+(?= \.\.\. FAILED)' "$log" || true)"
    [ -n "$name" ] && { grep -m1 -A14 -F "thread '$name' panicked at" "$log" | cut -c1-400 || true; }
  done
  echo "test: every failure's first line (count, message, first test with it):"
  awk '/ panicked at /{
         t = $0; sub(/.*thread \047/, "", t); sub(/\047.*/, "", t)
         getline m; sub(/^\[lab\] /, "", m); m = substr(m, 1, 200)
         if (!(m in n)) { order[++k] = m; first[m] = t }
         n[m]++
       }
       END { for (i = 1; i <= k; i++) printf "%4d  %s  (%s)\n", n[order[i]], order[i], first[order[i]] }' \
    target/test-lab.log target/test-other.log || true
fi
echo "test: lab stream exit $lab, other tests exit $rest"
[ "$lab" -eq 0 ] && [ "$rest" -eq 0 ]

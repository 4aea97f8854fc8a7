#!/usr/bin/env bash
# scale-api against this machine's limits and against a Node/Express app in cluster mode, in ONE run
# with the same wrk settings:
#   - `/` against nginx `return 200` with the same number of worker processes (1, and one per core);
#   - `/count` (one Redis INCR per request) against `redis-benchmark` INCR at the same connection
#     count, the ceiling any app that does one INCR per request can reach, and against Express;
#   - p99 of `/` while `/heavy` is kept saturated by a second load.
# Every row is measured ROUNDS times (3), the rows alternating within each round so that a drift of
# the machine reaches every row alike; each row prints its median and its spread (lowest-highest),
# each ratio its median and the range it took across the rounds.
# Installs what it lacks. Loopback only, every load bounded in time.
#
#   bash scripts/bench-api.sh                 # about 7 minutes on 2 cores
#   DUR=10s ROUNDS=5 CONN=64 bash scripts/bench-api.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
need=()
for p in wrk nginx-light redis-server redis-tools; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
command -v node >/dev/null || need+=(nodejs npm)
if ((${#need[@]})); then apt-get update -qq; apt-get install -y -qq "${need[@]}" >/dev/null; fi
cargo build --locked --release -p scale-api -q
DUR=${DUR:-8s}
[[ $DUR =~ ^[0-9]+s$ ]] || { echo "bench-api: DUR is whole seconds, such as 8s (got $DUR)" >&2; exit 1; }
CONN=${CONN:-64}
ROUNDS=${ROUNDS:-3}
cores=$(nproc)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$1${2:-/}" && return 0; sleep 0.1; done; echo "port $1 never answered" >&2; exit 1; }

redis-server --port 6390 --bind 127.0.0.1 --save "" --appendonly no --daemonize no >/dev/null & pids+=($!)
# nginx with one worker process, and with one per core: the same counts as scale-api's two rows.
for spec in "8089 1" "8090 $cores"; do
  read -r port n <<<"$spec"
  cat > "$work/nginx-$port.conf" <<NGX
worker_processes $n;
pid $work/nginx-$port.pid;
error_log $work/nginx-$port.err;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$port; location / { return 200 "Hello World\n"; } } }
NGX
  nginx -c "$work/nginx-$port.conf" -g 'daemon off;' & pids+=($!)
done

cp bench/node/app.js bench/node/package.json "$work/"
(cd "$work" && npm install --silent --no-audit --no-fund >/dev/null 2>&1)
PORT=8091 REDIS_URL=redis://127.0.0.1:6390 node "$work/app.js" & pids+=($!)
PORT=8092 CLUSTER=$cores REDIS_URL=redis://127.0.0.1:6390 node "$work/app.js" & pids+=($!)
api=target/release/scale-api
RUST_LOG=warn PORT=8093 BIND=127.0.0.1 REDIS_URL=redis://127.0.0.1:6390/ $api & pids+=($!)
RUST_LOG=warn PORT=8094 BIND=127.0.0.1 REDIS_URL=redis://127.0.0.1:6390/ $api --workers max & pids+=($!)
for p in 8089 8090 8091 8092 8093 8094; do wait_port $p; done

# wrk prints Requests/sec and, with --latency, the 99% line: "rps p99_ms failed" (socket errors
# and non-2xx answers).
wrk_row() {
  wrk -t1 -c"$CONN" -d"$DUR" --latency "$1" > "$work/wrk.out" 2>&1
  python3 - "$work/wrk.out" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", t)
p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
failed = (int(errs.group(1)) if errs else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
print(f"{rps:.0f} {p99:.3f} {failed}")
PY
}
# redis-benchmark INCR with as many connections (its own p99): sized from a one-second probe to
# last about as long as a wrk row.
redis_row() {
  secs=${DUR%s}
  redis-benchmark -p 6390 -c "$CONN" -n 100000 -t incr --csv > "$work/rb.out" 2>/dev/null
  per_s=$(python3 -c 'import csv,sys; print(int(float(next(csv.DictReader(open(sys.argv[1])))["rps"])))' "$work/rb.out")
  redis-benchmark -p 6390 -c "$CONN" -n $((secs * per_s)) -t incr --csv > "$work/rb.out" 2>/dev/null
  python3 - "$work/rb.out" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
r = rows[0]
print(f"{float(r['rps']):.0f} {float(r['p99_latency_ms']):.3f} 0")
PY
}
# p99 of / while /heavy is kept saturated by a second, bounded load, for all of the row.
heavy_row() {
  wrk -t1 -c8 -d$((${DUR%s} + 5))s "http://127.0.0.1:8093/heavy?ms=50" > "$work/heavy.out" 2>&1 & heavy=$!
  sleep 1
  wrk_row http://127.0.0.1:8093/
  kill -INT "$heavy" 2>/dev/null || true
  wait "$heavy" 2>/dev/null || true
}

rows=(
  "nginx return 200, 1 worker /|wrk_row http://127.0.0.1:8089/"
  "nginx return 200, $cores workers /|wrk_row http://127.0.0.1:8090/"
  "express 1 process /|wrk_row http://127.0.0.1:8091/"
  "express cluster x$cores /|wrk_row http://127.0.0.1:8092/"
  "scale-api 1 process /|wrk_row http://127.0.0.1:8093/"
  "scale-api --workers max /|wrk_row http://127.0.0.1:8094/"
  "redis-benchmark INCR|redis_row"
  "express 1 process /count|wrk_row http://127.0.0.1:8091/count"
  "express cluster x$cores /count|wrk_row http://127.0.0.1:8092/count"
  "scale-api 1 process /count|wrk_row http://127.0.0.1:8093/count"
  "scale-api --workers max /count|wrk_row http://127.0.0.1:8094/count"
  "scale-api / under /heavy load|heavy_row"
)
echo "wrk -t1 -c$CONN -d$DUR and redis-benchmark -c$CONN on 127.0.0.1, $cores cores, $ROUNDS rounds"
: > "$work/results.tsv"
for round in $(seq "$ROUNDS"); do
  for r in "${rows[@]}"; do
    name=${r%%|*}
    # A command substitution waits for everything the row started (the /heavy load included).
    out=$(${r#*|}) || { echo "bench-api: $name failed" >&2; exit 1; }
    read -r rps p99 failed <<<"$out"
    [ -n "${failed:-}" ] || { echo "bench-api: $name gave no figures" >&2; exit 1; }
    printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$rps" "$p99" "$failed" >> "$work/results.tsv"
    printf '  round %s  %-34s %8s /s  p99 %8s ms\n' "$round" "$name" "$rps" "$p99" >&2
  done
done

python3 - "$work/results.tsv" "$cores" <<'PY'
import statistics, sys
cores = sys.argv[2]
by = {}
for line in open(sys.argv[1]):
    rnd, name, rps, p99, bad = line.rstrip("\n").split("\t")
    by.setdefault(name, []).append((int(rnd), float(rps), float(p99), int(bad)))
med = lambda xs: statistics.median(xs)
print()
print(f"{'row':<34} {'req/s (median)':>15} {'spread':>19} {'p99 ms (median)':>16} {'failed':>8}")
for name, rs in by.items():
    rps = [r[1] for r in rs]; p99 = [r[2] for r in rs]
    print(f"{name:<34} {med(rps):>15,.0f} {min(rps):>9,.0f}-{max(rps):<9,.0f} {med(p99):>16.2f} {sum(r[3] for r in rs):>8}")

def ratio(a, b):
    # The ratio within each round (its rows ran minutes apart at most), then their median and range.
    ra = {r[0]: r[1] for r in by[a]}; rb = {r[0]: r[1] for r in by[b]}
    xs = [ra[k] / rb[k] for k in sorted(ra) if k in rb and rb[k] > 0]
    return f"{med(xs):.2f}x (rounds {min(xs):.2f}-{max(xs):.2f})"
print()
print(f"scale-api /, 1 process      vs nginx, 1 worker:        {ratio('scale-api 1 process /', 'nginx return 200, 1 worker /')}   (goal >= 0.9x)")
print(f"scale-api /, --workers max  vs nginx, {cores} workers:       {ratio('scale-api --workers max /', f'nginx return 200, {cores} workers /')}   (goal >= 0.9x)")
print(f"scale-api /count, max       vs redis-benchmark INCR:   {ratio('scale-api --workers max /count', 'redis-benchmark INCR')}   (goal >= 0.8x)")
print(f"scale-api /count, 1 process vs redis-benchmark INCR:   {ratio('scale-api 1 process /count', 'redis-benchmark INCR')}")
print(f"scale-api /count, max       vs express cluster x{cores}:   {ratio('scale-api --workers max /count', f'express cluster x{cores} /count')}")
print(f"scale-api /, max            vs express cluster x{cores}:   {ratio('scale-api --workers max /', f'express cluster x{cores} /')}")
h = [r[2] for r in by["scale-api / under /heavy load"]]
print(f"p99 of / while /heavy saturated:                     {med(h):.2f} ms (rounds {min(h):.2f}-{max(h):.2f}; goal < 10 ms)")
PY

#!/usr/bin/env bash
# scale-api against this machine's limits and against a Node/Express app in cluster mode, in ONE run
# with the same wrk settings:
#   - `/` against nginx `return 200` with the same number of worker processes (1, and one per core);
#   - `/count` (one Redis INCR per request) against `redis-benchmark` INCR at the same connection
#     count, the ceiling any app that does one INCR per request can reach, and against Express;
#   - p99 of `/` while `/heavy` is kept saturated by a second load.
# Every row is measured ROUNDS times (3), the rows alternating within each round so that a drift of
# the machine reaches every row alike; each row prints its median and its spread (lowest-highest),
# each ratio its median and the range it took across the rounds. Each row also counts the CPU time
# its server spent per request, and the machine's stolen time (a shared host's neighbours): on a
# virtual machine both move with them, throughput the most.
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

# The process serving each port (its children too: nginx's workers, a cluster's workers), whose
# CPU time each row divides by the requests it answered.
declare -A server
redis-server --port 6390 --bind 127.0.0.1 --save "" --appendonly no --daemonize no >/dev/null & pids+=($!); server[6390]=$!
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
  nginx -c "$work/nginx-$port.conf" -g 'daemon off;' & pids+=($!); server[$port]=$!
done

cp bench/node/app.js bench/node/package.json "$work/"
(cd "$work" && npm install --silent --no-audit --no-fund >/dev/null 2>&1)
PORT=8091 REDIS_URL=redis://127.0.0.1:6390 node "$work/app.js" & pids+=($!); server[8091]=$!
PORT=8092 CLUSTER=$cores REDIS_URL=redis://127.0.0.1:6390 node "$work/app.js" & pids+=($!); server[8092]=$!
api=target/release/scale-api
RUST_LOG=warn PORT=8093 BIND=127.0.0.1 REDIS_URL=redis://127.0.0.1:6390/ $api & pids+=($!); server[8093]=$!
RUST_LOG=warn PORT=8094 BIND=127.0.0.1 REDIS_URL=redis://127.0.0.1:6390/ $api --workers max & pids+=($!); server[8094]=$!
for p in 8089 8090 8091 8092 8093 8094; do wait_port $p; done

# CPU time (user and system, in clock ticks) of a process and its children, and the machine's
# stolen time (a virtual machine's neighbours): on a shared host throughput moves with the
# neighbours, CPU time per request less (caches are shared too), so each row reports both, and the
# share stolen while it ran.
cpu_ticks() { local t=0 p; for p in "$1" $(pgrep -P "$1"); do read -r -a f <"/proc/$p/stat" && t=$((t + f[13] + f[14])); done; echo "$t"; }
steal_ticks() { awk '/^cpu /{print $9}' /proc/stat; }
all_ticks() { awk '/^cpu /{s=0; for (i=2; i<=NF; i++) s+=$i; print s}' /proc/stat; }

# wrk prints Requests/sec, the request count and, with --latency, the 99% line: "rps p99_ms
# failed requests" (failed: socket errors and non-2xx answers).
wrk_row() {
  wrk -t1 -c"$CONN" -d"$DUR" --latency "$1" > "$work/wrk.out" 2>&1
  python3 - "$work/wrk.out" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
n = int(re.search(r"(\d+) requests in", t).group(1))
m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", t)
p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
failed = (int(errs.group(1)) if errs else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
print(f"{rps:.0f} {p99:.3f} {failed} {n}")
PY
}
# redis-benchmark INCR with as many connections (its own p99): sized from a one-second probe to
# last about as long as a wrk row.
redis_row() {
  secs=${DUR%s}
  redis-benchmark -p 6390 -c "$CONN" -n 100000 -t incr --csv > "$work/rb.out" 2>/dev/null
  per_s=$(python3 -c 'import csv,sys; print(int(float(next(csv.DictReader(open(sys.argv[1])))["rps"])))' "$work/rb.out")
  redis-benchmark -p 6390 -c "$CONN" -n $((secs * per_s)) -t incr --csv > "$work/rb.out" 2>/dev/null
  # Both runs count: the row's CPU time covers both.
  python3 - "$work/rb.out" $((secs * per_s)) <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
r = rows[0]
print(f"{float(r['rps']):.0f} {float(r['p99_latency_ms']):.3f} 0 {100000 + int(sys.argv[2])}")
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

# name | the port whose server's CPU time the row counts | the command
rows=(
  "nginx return 200, 1 worker /|8089|wrk_row http://127.0.0.1:8089/"
  "nginx return 200, $cores workers /|8090|wrk_row http://127.0.0.1:8090/"
  "express 1 process /|8091|wrk_row http://127.0.0.1:8091/"
  "express cluster x$cores /|8092|wrk_row http://127.0.0.1:8092/"
  "scale-api 1 process /|8093|wrk_row http://127.0.0.1:8093/"
  "scale-api --workers max /|8094|wrk_row http://127.0.0.1:8094/"
  "redis-benchmark INCR|6390|redis_row"
  "express 1 process /count|8091|wrk_row http://127.0.0.1:8091/count"
  "express cluster x$cores /count|8092|wrk_row http://127.0.0.1:8092/count"
  "scale-api 1 process /count|8093|wrk_row http://127.0.0.1:8093/count"
  "scale-api --workers max /count|8094|wrk_row http://127.0.0.1:8094/count"
  "scale-api / under /heavy load|8093|heavy_row"
)
echo "wrk -t1 -c$CONN -d$DUR and redis-benchmark -c$CONN on 127.0.0.1, $cores cores, $ROUNDS rounds"
: > "$work/results.tsv"
tck=$(getconf CLK_TCK)
for round in $(seq "$ROUNDS"); do
  for r in "${rows[@]}"; do
    IFS='|' read -r name port cmd <<<"$r"
    c0=$(cpu_ticks "${server[$port]}"); s0=$(steal_ticks); a0=$(all_ticks)
    # A command substitution waits for everything the row started (the /heavy load included).
    out=$($cmd) || { echo "bench-api: $name failed" >&2; exit 1; }
    c1=$(cpu_ticks "${server[$port]}"); s1=$(steal_ticks); a1=$(all_ticks)
    read -r rps p99 failed n <<<"$out"
    [ -n "${n:-}" ] || { echo "bench-api: $name gave no figures" >&2; exit 1; }
    us=$(awk -v c=$((c1 - c0)) -v t="$tck" -v n="$n" 'BEGIN { printf "%.2f", c / t * 1e6 / n }')
    steal=$(awk -v s=$((s1 - s0)) -v a=$((a1 - a0)) 'BEGIN { printf "%.0f", (a > 0 ? 100 * s / a : 0) }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$rps" "$p99" "$failed" "$us" "$steal" >> "$work/results.tsv"
    printf '  round %s  %-34s %8s /s  p99 %8s ms  %6s cpu-us/req  steal %s%%\n' "$round" "$name" "$rps" "$p99" "$us" "$steal" >&2
  done
done

python3 - "$work/results.tsv" "$cores" <<'PY'
import statistics, sys
cores = sys.argv[2]
by = {}
for line in open(sys.argv[1]):
    rnd, name, rps, p99, bad, us, steal = line.rstrip("\n").split("\t")
    by.setdefault(name, []).append((int(rnd), float(rps), float(p99), int(bad), float(us), float(steal)))
med = lambda xs: statistics.median(xs)
heavy = "scale-api / under /heavy load"
print()
print(f"{'row':<34} {'req/s (median)':>15} {'spread':>19} {'p99 ms':>8} {'failed':>7} {'cpu-us/req':>11} {'steal':>6}")
for name, rs in by.items():
    rps = [r[1] for r in rs]; p99 = [r[2] for r in rs]
    # The /heavy row's CPU time is mostly the heavy work's: per request of / it means nothing.
    cpu = "-" if name == heavy else f"{med([r[4] for r in rs]):.2f}"
    print(f"{name:<34} {med(rps):>15,.0f} {min(rps):>9,.0f}-{max(rps):<9,.0f} {med(p99):>8.2f} {sum(r[3] for r in rs):>7} {cpu:>11} {med([r[5] for r in rs]):>5.0f}%")

def ratio(a, b, field=1, inverse=False):
    # The ratio within each round (its rows ran minutes apart at most), then their median and range.
    # field 1: requests per second; field 4: CPU time per request, inverted (b's cost over a's), so
    # that above 1 means scale-api does more with the same CPU.
    ra = {r[0]: r[field] for r in by[a]}; rb = {r[0]: r[field] for r in by[b]}
    xs = [(rb[k] / ra[k] if inverse else ra[k] / rb[k]) for k in sorted(ra) if k in rb and rb[k] > 0 and ra[k] > 0]
    return f"{med(xs):.2f}x (rounds {min(xs):.2f}-{max(xs):.2f})"
def both(a, b):
    return f"{ratio(a, b)}; per CPU second {ratio(a, b, 4, True)}"
steal = [r[5] for rs in by.values() for r in rs]
print()
print(f"The machine's stolen time across the rows: median {med(steal):.0f}%, highest {max(steal):.0f}%.")
if max(steal) > 5:
    print("A virtual machine's neighbours took CPU time from these rows: their throughput, and less so their CPU time")
    print("per request, moved with it (a row and its ratio judge scale-api only on a quiet machine).")
print()
print(f"scale-api /, 1 process      vs nginx, 1 worker:        {both('scale-api 1 process /', 'nginx return 200, 1 worker /')}   (goal >= 0.9x)")
print(f"scale-api /, --workers max  vs nginx, {cores} workers:       {both('scale-api --workers max /', f'nginx return 200, {cores} workers /')}   (goal >= 0.9x)")
print(f"scale-api /count, max       vs redis-benchmark INCR:   {ratio('scale-api --workers max /count', 'redis-benchmark INCR')}   (goal >= 0.8x)")
print(f"scale-api /count, 1 process vs redis-benchmark INCR:   {ratio('scale-api 1 process /count', 'redis-benchmark INCR')}")
print(f"scale-api /count, max       vs express cluster x{cores}:   {both('scale-api --workers max /count', f'express cluster x{cores} /count')}")
print(f"scale-api /, max            vs express cluster x{cores}:   {both('scale-api --workers max /', f'express cluster x{cores} /')}")
h = [r[2] for r in by["scale-api / under /heavy load"]]
print(f"p99 of / while /heavy saturated:                     {med(h):.2f} ms (rounds {min(h):.2f}-{max(h):.2f}; goal < 10 ms)")
PY

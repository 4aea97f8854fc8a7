#!/usr/bin/env bash
# scale-api against this machine's limit (nginx `return 200`) and the seeds' Node/Express app, in ONE
# run with the same wrk settings. Installs what it lacks. Loopback only, every load bounded in time.
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
DUR=${DUR:-10s}
CONN=${CONN:-64}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$1${2:-/}" && return 0; sleep 0.1; done; echo "port $1 never answered" >&2; exit 1; }

redis-server --port 6390 --bind 127.0.0.1 --save "" --daemonize no >/dev/null & pids+=($!)
cat > "$work/nginx.conf" <<NGX
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:8090; location / { return 200 "Hello World\n"; } } }
NGX
nginx -c "$work/nginx.conf" -g 'daemon off;' & pids+=($!)

cp bench/node/app.js bench/node/package.json "$work/"
(cd "$work" && npm install --silent --no-audit --no-fund >/dev/null 2>&1)
cores=$(nproc)
PORT=8091 REDIS_URL=redis://127.0.0.1:6390 node "$work/app.js" & pids+=($!)
PORT=8092 CLUSTER=$cores REDIS_URL=redis://127.0.0.1:6390 node "$work/app.js" & pids+=($!)
api=target/release/scale-api
RUST_LOG=warn PORT=8093 BIND=127.0.0.1 REDIS_URL=redis://127.0.0.1:6390/ $api & pids+=($!)
RUST_LOG=warn PORT=8094 BIND=127.0.0.1 REDIS_URL=redis://127.0.0.1:6390/ $api --workers max & pids+=($!)
for p in 8090 8091 8092 8093 8094; do wait_port $p; done

# wrk prints Requests/sec and, with --latency, the 99% line.
measure() { # url -> "rps p99_ms"
  wrk -t1 -c"$CONN" -d"$DUR" --latency "$1" > "$work/wrk.out" 2>&1
  python3 - "$work/wrk.out" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
m = re.search(r"99%\s+([\d.]+)(us|ms|s)", t)
p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(f"{rps:.0f} {p99:.2f} {errs.group(1) if errs else 0}")
PY
}

declare -A R
row() { R[$1]=$(measure "$2"); printf '%-34s %10s req/s  p99 %8s ms  non-2xx %s\n' "$1" ${R[$1]}; }
echo "wrk -t1 -c$CONN -d$DUR on 127.0.0.1, $cores cores"
row "nginx return 200 /" http://127.0.0.1:8090/
row "express 1 process /" http://127.0.0.1:8091/
row "express cluster x$cores /" http://127.0.0.1:8092/
row "scale-api 1 process /" http://127.0.0.1:8093/
row "scale-api --workers max /" http://127.0.0.1:8094/
row "express 1 process /count" http://127.0.0.1:8091/count
row "express cluster x$cores /count" http://127.0.0.1:8092/count
row "scale-api 1 process /count" http://127.0.0.1:8093/count
row "scale-api --workers max /count" http://127.0.0.1:8094/count

# p99 of / while /heavy is kept saturated by a second, bounded load.
wrk -t1 -c8 -d"$DUR" "http://127.0.0.1:8093/heavy?ms=50" > "$work/heavy.out" 2>&1 & heavy=$!
sleep 1
row "scale-api / under /heavy load" http://127.0.0.1:8093/
wait $heavy || true
heavy_rps=$(grep -oP 'Requests/sec:\s+\K[\d.]+' "$work/heavy.out" || echo 0)
echo "  (meanwhile /heavy?ms=50: $heavy_rps req/s, 503s when the pool queue is full)"

python3 - <<PY
r = {k: v.split() for k, v in {$(for k in "${!R[@]}"; do printf '"%s": "%s", ' "$k" "${R[$k]}"; done)}.items()}
g = lambda k: float(r[k][0])
best_api = max(g("scale-api 1 process /"), g("scale-api --workers max /"))
best_cnt = max(g("scale-api 1 process /count"), g("scale-api --workers max /count"))
print()
print(f"scale-api /      vs nginx return 200:   {best_api / g('nginx return 200 /'):.2f}x   (target >= 0.8x)")
print(f"scale-api /count vs express cluster:    {best_cnt / g('express cluster x$cores /count'):.2f}x   (target >= 5x)")
print(f"scale-api /      vs express cluster:    {best_api / g('express cluster x$cores /'):.2f}x")
print(f"p99 of / while /heavy saturated:        {float(r['scale-api / under /heavy load'][1]):.2f} ms (target < 10 ms)")
PY

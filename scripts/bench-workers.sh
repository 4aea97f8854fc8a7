#!/usr/bin/env bash
# Workers against their queue, in ONE run: jobs per second with 1, 2 and 4 workers (and the scaling
# factor against one), for BullMQ (examples/node-app's worker.js, one job at a time) and for
# scale-api's Redis stream (`scale-api worker`), each job the same (a sum over ROWS rows and a wait
# of MS ms, as a slow dependency would take); and the enqueue latency seen through nginx (POST of
# each job, answered 202 once it is on the queue). Loopback only; every phase bounded in count.
# Installs what it lacks.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
need=()
for p in nginx-light redis-server redis-tools; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
command -v node >/dev/null || need+=(nodejs npm)
if ((${#need[@]})); then apt-get update -qq; apt-get install -y -qq "${need[@]}" >/dev/null; fi
cargo build --locked --release -p scale-api -q
[ -d examples/node-app/node_modules ] || (cd examples/node-app && npm ci --omit=dev --silent --no-audit --no-fund)
JOBS=${JOBS:-2000}
ROWS=${ROWS:-20000}
MS=${MS:-5}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$1${2:-/}" && return 0; sleep 0.1; done; echo "port $1 never answered" >&2; exit 1; }

R=6391
redis-server --port $R --bind 127.0.0.1 --save "" --maxmemory-policy noeviction --daemonize no >/dev/null & pids+=($!)
cat > "$work/nginx.conf" <<NGX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  upstream api { server 127.0.0.1:8096; keepalive 16; }
  upstream node { server 127.0.0.1:8097; keepalive 16; }
  server {
    listen 127.0.0.1:8095;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    location /jobs { proxy_pass http://api; }
    location /reports { proxy_pass http://node; }
  }
}
NGX
nginx -c "$work/nginx.conf" -g 'daemon off;' & pids+=($!)
api=target/release/scale-api
RUST_LOG=warn PORT=8096 BIND=127.0.0.1 REDIS_URL=redis://127.0.0.1:$R/ $api & pids+=($!)
(cd examples/node-app && PORT=8097 REDIS_URL=redis://127.0.0.1:$R exec node server.js >/dev/null) & pids+=($!)
wait_port 8096 /healthz
wait_port 8097 /healthz

# POST $JOBS jobs through nginx from 8 keep-alive clients: "posted p50_ms p99_ms jobs_per_s".
enqueue() { # path
  python3 - "$1" "$JOBS" "$ROWS" "$MS" <<'PY'
import http.client, json, sys, threading, time
path, n, rows, ms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
body = json.dumps({"rows": rows, "ms": ms})
lat, lock, left = [], threading.Lock(), [n]
def client():
    c = http.client.HTTPConnection("127.0.0.1", 8095, timeout=10)
    while True:
        with lock:
            if left[0] == 0:
                return
            left[0] -= 1
        t = time.perf_counter()
        c.request("POST", path, body, {"Content-Type": "application/json"})
        r = c.getresponse(); r.read()
        assert r.status == 202, r.status
        with lock:
            lat.append((time.perf_counter() - t) * 1000)
start = time.perf_counter()
ts = [threading.Thread(target=client) for _ in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
took = time.perf_counter() - start
lat.sort()
print(f"{len(lat)} {lat[len(lat) // 2]:.2f} {lat[int(len(lat) * 0.99)]:.2f} {len(lat) / took:.0f}")
PY
}

# Start N workers of a kind and wait until every posted job completed: "jobs seconds" from the
# first completion on (a worker's start, Node's especially, is not counted against its rate).
drain() { # kind n posted
  local kind=$1 n=$2 posted=$3 wp=()
  for i in $(seq "$n"); do
    if [ "$kind" = stream ]; then
      RUST_LOG=warn INSTANCE="w$i" REDIS_URL=redis://127.0.0.1:$R/ $api worker >/dev/null & wp+=($!)
    else
      (cd examples/node-app && INSTANCE="w$i" WORKER_CONCURRENCY=1 REDIS_URL=redis://127.0.0.1:$R exec node worker.js >/dev/null) & wp+=($!)
    fi
  done
  local done_=0 first="" first_count=0 deadline=$((SECONDS + 300))
  while [ "$done_" -lt "$posted" ]; do
    if [ "$kind" = stream ]; then done_=$(redis-cli -p $R GET jobs:completed); else done_=$(redis-cli -p $R ZCARD bull:reports:completed); fi
    done_=${done_:-0}
    if [ -z "$first" ] && [ "$done_" -gt 0 ]; then first=$(date +%s.%N); first_count=$done_; fi
    [ $SECONDS -lt $deadline ] || { echo "$kind with $n workers: $done_ of $posted done after 300 s" >&2; exit 1; }
    sleep 0.05
  done
  local end; end=$(date +%s.%N)
  kill "${wp[@]}" 2>/dev/null || true; wait "${wp[@]}" 2>/dev/null || true
  python3 -c "print($posted - $first_count, f'{$end - $first:.3f}')"
}

echo "$JOBS jobs of $ROWS rows and $MS ms each, per run; workers take one job at a time; $(nproc) cores"
printf '%-26s %8s %10s %9s   %s\n' "queue" "workers" "jobs/s" "vs 1" "enqueue through nginx: p50 / p99 ms, posts/s"
for kind in stream bullmq; do
  base=""
  for n in 1 2 4; do
    redis-cli -p $R FLUSHALL >/dev/null
    if [ "$kind" = stream ]; then path=/jobs; name="scale-api (Redis stream)"; else path=/reports; name="BullMQ (node worker.js)"; fi
    read -r posted p50 p99 rate <<< "$(enqueue $path)"
    read -r jobs secs <<< "$(drain $kind $n "$posted")"
    jps=$(python3 -c "print(f'{$jobs / $secs:.0f}')")
    [ -n "$base" ] || base=$jps
    printf '%-26s %8s %10s %8sx   %s / %s, %s\n' "$name" "$n" "$jps" "$(python3 -c "print(f'{$jps / $base:.2f}')")" "$p50" "$p99" "$rate"
  done
done

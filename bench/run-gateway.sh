#!/usr/bin/env bash
# Measures the API gateway in one run: four paths to the same trivial
# HTTP backend (nullhttp answering GET with 200 and 5 bytes), each at a
# fixed rate (open loop) and at maximum throughput (closed loop), with
# meshload (bench/cmd/meshload, the mesh benchmark's client, which sends
# the token as a request header) as the client on loopback:
#   direct  client -> backend
#   plain   client -> `junction serve` gateway, one url: route, no
#           middleware, access_log false -> backend
#   full    client -> `junction serve` gateway, the same route with JWT
#           (HS256, one token minted before the runs), a local rate limit
#           too high ever to refuse (the cost of the check), access log on
#           (info level, to a file) and the metrics (always on) -> backend
#   nginx   client -> nginx (Debian package, run in the foreground with its
#           own config: 2 workers, upstream keepalive 64, HTTP/1.1 to the
#           backend, access log off) -> backend
#   proxy   client -> a bare httputil.ReverseProxy (meshload proxy: pooled
#           copy buffers, nothing else) -> backend: the floor of any proxy
#           built on Go's net/http, for reference
# Each gateway is its own `junction serve` process (access_log is a
# setting of the whole gateway) with its own data dir and free ports.
# Results go to bench/results/gateway-<time>/ (one JSON file per run,
# summary.json, table.md, output.txt) and the tables are printed at the
# end. docs/PERFORMANCE.md ("API gateway") explains them. About 3.5
# minutes per round with the defaults, plus 40 s with PROFILE=1.
# Needs nginx on PATH (or NGINX=/path/to/nginx). Tunables (environment):
#   RATE (1000), RATE_DURATION (15s), RATE_WARMUP (3s)   fixed-rate runs
#   MAX_CONNS ("32 64"), MAX_DURATION (15s), MAX_WARMUP (2s)  max-throughput runs
#   ROUNDS (1)        repeat everything; the tables show medians
#   PATHS ("direct plain full nginx proxy")
#   NGINX_WORKERS (2)
#   PROFILE (0)       1: afterwards, profile the plain and the full
#                     gateway's code under max load (bench/cmd/busnode with
#                     the same configs; its logger discards, so the access
#                     log's lines are formatted but not written) and keep
#                     the CPU profiles and their top consumers
#   RESULTS (bench/results/gateway-<UTC time>)
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
RATE=${RATE:-1000}
RATE_DURATION=${RATE_DURATION:-15s}
RATE_WARMUP=${RATE_WARMUP:-3s}
MAX_CONNS=${MAX_CONNS:-32 64}
MAX_DURATION=${MAX_DURATION:-15s}
MAX_WARMUP=${MAX_WARMUP:-2s}
ROUNDS=${ROUNDS:-1}
PATHS=${PATHS:-direct plain full nginx proxy}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
NGINX_WORKERS=${NGINX_WORKERS:-2}
PROFILE=${PROFILE:-0}
RESULTS=${RESULTS:-bench/results/gateway-$(date -u +%Y%m%dT%H%M%SZ)}

if [[ ! -x "$NGINX" ]]; then
	echo "nginx not found (apt-get install -y nginx, or set NGINX)" >&2
	exit 1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/junction-gateway-bench.XXXXXX")
BIN=$WORK/bin
mkdir -p "$RESULTS" "$BIN"
RESULTS=$(cd "$RESULTS" && pwd)
RAW=$RESULTS/output.txt
: >"$RAW"
PIDS=()
trap cleanup EXIT
trap 'exit 130' INT TERM

# ready URL [STRING [HEADER]]: polls until URL answers 200 (holding STRING).
ready() {
	local h=()
	if [[ -n "${3:-}" ]]; then
		h=(-header "$3")
	fi
	if ! "$BIN/meshload" wait -url "$1" -contains "${2:-}" "${h[@]}" -timeout 60s; then
		for f in "$WORK"/*.log; do
			echo "--- $f" >&2
			tail -n 20 "$f" >&2
		done
		exit 1
	fi
}

section "machine"
log "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
log "go: $(go version)"
log "nginx: $("$NGINX" -v 2>&1)"
log_code
log "results: $RESULTS"

build_tools

read -r P_BACKEND P_NGINX P_PAPI P_PGW P_FAPI P_FGW P_PROF_API P_PROF_GW P_PROXY <<<"$("$BIN/meshload" ports 9)"
BACKEND=http://127.0.0.1:$P_BACKEND
NGINX_URL=http://127.0.0.1:$P_NGINX
PLAIN=http://127.0.0.1:$P_PGW
FULL=http://127.0.0.1:$P_FGW
PROXY=http://127.0.0.1:$P_PROXY

# The JWT secret and one token, minted before the runs (exp ten years on).
SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
TOKEN=$("$BIN/meshload" token -secret "$SECRET" -issuer bench -audience api)
AUTH="Authorization: Bearer $TOKEN"

# gwconf NAME LEVEL API_PORT GW_PORT ACCESS_LOG MIDDLEWARE: a node whose
# gateway has one route to the backend, with MIDDLEWARE (YAML lines of
# the route, or nothing).
gwconf() {
	cat >"$WORK/$1.yaml" <<EOF
log: { level: $2 }
api: { listen: 127.0.0.1:$3 }
nats: { prefix: gwbench_$1 }
gateway:
  listen: 127.0.0.1:$4
  access_log: $5
  routes:
    - path: /{rest...}
      url: [$BACKEND]
$6
EOF
}
FULL_MW="      auth: { jwt: { secret: \"$SECRET\", issuer: bench, audience: api } }
      rate_limit: { key: request.ip, rps: 1000000, burst: 1000000 }"
gwconf plain warn "$P_PAPI" "$P_PGW" false ""
# info: the access log's lines are info; the file is $WORK/full.log.
gwconf full info "$P_FAPI" "$P_FGW" true "$FULL_MW"

# nginx in the foreground (master and workers), everything under $WORK.
NG=$WORK/nginx
mkdir -p "$NG/logs" "$NG/tmp"
chmod 777 "$NG/tmp"
cat >"$NG/nginx.conf" <<EOF
daemon off;
worker_processes $NGINX_WORKERS;
pid $NG/nginx.pid;
error_log $NG/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $NG/tmp/body;
    proxy_temp_path $NG/tmp/proxy;
    fastcgi_temp_path $NG/tmp/fastcgi;
    uwsgi_temp_path $NG/tmp/uwsgi;
    scgi_temp_path $NG/tmp/scgi;
    upstream backend {
        server 127.0.0.1:$P_BACKEND;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$P_NGINX;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF

section "start"
start backend "$BIN/nullhttp" -listen "127.0.0.1:$P_BACKEND" -status 200 -body hello -max 2h
ready "$BACKEND/" hello
start nginx "$NGINX" -p "$NG" -e "$NG/logs/error.log" -c "$NG/nginx.conf"
ready "$NGINX_URL/" hello
start proxy "$BIN/meshload" proxy -listen "127.0.0.1:$P_PROXY" -target "$BACKEND" -max 2h
ready "$PROXY/" hello
start plain "$BIN/junction" serve -c "$WORK/plain.yaml" --data "$WORK/data-plain"
start full "$BIN/junction" serve -c "$WORK/full.yaml" --data "$WORK/data-full"
ready "http://127.0.0.1:$P_PAPI/readyz"
ready "http://127.0.0.1:$P_FAPI/readyz"
ready "$PLAIN/" hello
ready "$FULL/" hello "$AUTH"
# The full route refuses a request without the token.
code=$(curl -s -o /dev/null -w '%{http_code}' "$FULL/hello" || true)
log "full gateway without a token: HTTP $code (401 expected)"
if [[ "$code" != 401 ]]; then
	echo "the full gateway's JWT check is not in force" >&2
	exit 1
fi
NGINX_WORKER_PIDS=$(pgrep -P "$nginx_PID" | tr '\n' ' ')
log "backend pid $backend_PID on $BACKEND"
log "nginx master pid $nginx_PID, workers $NGINX_WORKER_PIDS on $NGINX_URL"
log "plain gateway pid $plain_PID on $PLAIN (api 127.0.0.1:$P_PAPI)"
log "reference proxy pid $proxy_PID on $PROXY"
log "full gateway pid $full_PID on $FULL (api 127.0.0.1:$P_FAPI, access log to $WORK/full.log)"

url_of() {
	case $1 in
	direct) echo "$BACKEND/hello" ;;
	plain) echo "$PLAIN/hello" ;;
	full) echo "$FULL/hello" ;;
	nginx) echo "$NGINX_URL/hello" ;;
	proxy) echo "$PROXY/hello" ;;
	*)
		echo "unknown path $1" >&2
		exit 2
		;;
	esac
}
pids_of() {
	case $1 in
	direct) echo "backend=$backend_PID" ;;
	plain) echo "gateway=$plain_PID,backend=$backend_PID" ;;
	full) echo "gateway=$full_PID,backend=$backend_PID" ;;
	proxy) echo "proxy=$proxy_PID,backend=$backend_PID" ;;
	nginx)
		local s="" i=1 w
		for w in $NGINX_WORKER_PIDS; do
			s+="nginx$i=$w,"
			i=$((i + 1))
		done
		echo "${s}backend=$backend_PID"
		;;
	esac
}
# Every path sends the same header, so the client's work is the same on
# every path (only the full gateway checks it).
hdr() { echo "$AUTH"; }

for round in $(seq "$ROUNDS"); do
	section "round $round: fixed rate, $RATE req/s for $RATE_DURATION after $RATE_WARMUP"
	for p in $PATHS; do
		run "$BIN/meshload" run -name "$p" -round "$round" -url "$(url_of "$p")" -header "$(hdr)" -rate "$RATE" \
			-duration "$RATE_DURATION" -warmup "$RATE_WARMUP" -pids "$(pids_of "$p")" \
			-out "$RESULTS/run-$round-rate-$p.json"
	done
	for conns in $MAX_CONNS; do
		section "round $round: maximum throughput, $conns connections for $MAX_DURATION after $MAX_WARMUP"
		for p in $PATHS; do
			run "$BIN/meshload" run -name "$p" -round "$round" -url "$(url_of "$p")" -header "$(hdr)" -conns "$conns" \
				-duration "$MAX_DURATION" -warmup "$MAX_WARMUP" -pids "$(pids_of "$p")" \
				-out "$RESULTS/run-$round-max$conns-$p.json"
		done
	done
done
section "access log"
log "full gateway log: $(wc -l <"$WORK/full.log") lines, $(du -h "$WORK/full.log" | cut -f1)"
log "one line: $(tail -n 1 "$WORK/full.log" | sed "s/$TOKEN/<token>/g")"

if [[ "$PROFILE" == 1 ]]; then
	for cfg in plain full; do
		section "profile: the $cfg gateway's code (busnode, the same config) under max load, 32 connections"
		sed -e "s/127.0.0.1:$P_PGW/127.0.0.1:$P_PROF_GW/; s/127.0.0.1:$P_FGW/127.0.0.1:$P_PROF_GW/; s/gwbench_$cfg/gwbench_prof_$cfg/" \
			"$WORK/$cfg.yaml" >"$WORK/prof-$cfg.yaml"
		start "prof_$cfg" "$BIN/busnode" -config "$WORK/prof-$cfg.yaml" -data "$WORK/data-prof-$cfg" \
			-listen "127.0.0.1:$P_PROF_API" -cpuprofile "$RESULTS/$cfg.pprof" -max 5m
		pid_var="prof_${cfg}_PID"
		ready "http://127.0.0.1:$P_PROF_GW/" hello "$AUTH"
		# Not written as run-*.json: a profiled run is not a figure.
		run "$BIN/meshload" run -name "$cfg-profiled" -url "http://127.0.0.1:$P_PROF_GW/hello" -header "$(hdr)" -conns 32 \
			-duration 15s -warmup 1s -pids "busnode=${!pid_var},backend=$backend_PID"
		kill -TERM "${!pid_var}"
		wait "${!pid_var}" || true
		go tool pprof -top -cum -nodecount 70 "$BIN/busnode" "$RESULTS/$cfg.pprof" >"$RESULTS/$cfg-top-cum.txt" 2>/dev/null || true
		go tool pprof -top -nodecount 40 "$BIN/busnode" "$RESULTS/$cfg.pprof" >"$RESULTS/$cfg-top-flat.txt" 2>/dev/null || true
		log "profile: $RESULTS/$cfg.pprof (top consumers in $cfg-top-cum.txt and $cfg-top-flat.txt)"
	done
fi

section "figures"
"$BIN/meshload" report -targets gateway -dir "$RESULTS" -json "$RESULTS/summary.json" | tee "$RESULTS/table.md" | tee -a "$RAW"

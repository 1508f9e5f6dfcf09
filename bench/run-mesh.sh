#!/usr/bin/env bash
# Measures the service mesh in one run: three paths to the same trivial
# HTTP backend (nullhttp answering GET with 200 and 5 bytes), each at a
# fixed rate (open loop) and at maximum throughput (closed loop), with
# meshload as the client on loopback, plus a reference:
#   direct   client -> backend
#   proxy    client -> bare httputil.ReverseProxy (meshload proxy) -> backend:
#            what any Go HTTP proxy costs here, for reference
#   invoke   client -> node A /v1/invoke/app/... -> backend (static instance)
#   sidecar  client -> node C /v1/invoke/app/... -> mTLS -> node S, the
#            sidecar of app -> backend; C and S share a registry through
#            S's embedded NATS (nats.listen on a free port)
# Every node is a `junction serve` process with its own data dir and free
# ports, logging at warn. Results go to bench/results/mesh-<time>/ (one
# JSON file per run, summary.json, table.md, output.txt) and the tables
# are printed at the end. docs/PERFORMANCE.md ("Service mesh") explains
# them. About 4 minutes with the defaults (ROUNDS=1), plus 20 s with
# PROFILE=1. Tunables (environment):
#   RATE (1000), RATE_DURATION (20s), RATE_WARMUP (3s)   fixed-rate runs
#   MAX_CONNS ("32 64"), MAX_DURATION (15s), MAX_WARMUP (2s)  max-throughput runs
#   ROUNDS (1)        repeat everything; the tables show medians
#   PATHS ("direct proxy invoke sidecar")
#   PROFILE (0)       1: afterwards, profile node A's code under max load
#                     (bench/cmd/busnode with node A's config) and keep the
#                     CPU profile and its top consumers with the results
#   RESULTS (bench/results/mesh-<UTC time>)
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
RATE=${RATE:-1000}
RATE_DURATION=${RATE_DURATION:-20s}
RATE_WARMUP=${RATE_WARMUP:-3s}
MAX_CONNS=${MAX_CONNS:-32 64}
MAX_DURATION=${MAX_DURATION:-15s}
MAX_WARMUP=${MAX_WARMUP:-2s}
ROUNDS=${ROUNDS:-1}
PATHS=${PATHS:-direct proxy invoke sidecar}
PROFILE=${PROFILE:-0}
RESULTS=${RESULTS:-bench/results/mesh-$(date -u +%Y%m%dT%H%M%SZ)}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/junction-mesh-bench.XXXXXX")
BIN=$WORK/bin
mkdir -p "$RESULTS" "$BIN"
RESULTS=$(cd "$RESULTS" && pwd)
RAW=$RESULTS/output.txt
: >"$RAW"
PIDS=()
trap cleanup EXIT
trap 'exit 130' INT TERM

# ready URL [STRING]: polls until URL answers 200 (holding STRING).
ready() {
	if ! "$BIN/meshload" wait -url "$1" -contains "${2:-}" -timeout 60s; then
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
log_code
log "results: $RESULTS"

build_tools

read -r P_BACKEND P_PROXY P_A P_S P_SNATS P_SMESH P_C P_PROF <<<"$("$BIN/meshload" ports 8)"
BACKEND=http://127.0.0.1:$P_BACKEND
PROXY=http://127.0.0.1:$P_PROXY
A=http://127.0.0.1:$P_A
S=http://127.0.0.1:$P_S
C=http://127.0.0.1:$P_C

"$BIN/junction" ca init --dir "$WORK/ca" >/dev/null

# Node A: embedded in-process NATS of its own, the backend as a static
# instance of service app.
cat >"$WORK/a.yaml" <<EOF
log: { level: warn }
api: { listen: 127.0.0.1:$P_A }
nats: { prefix: meshbench_a }
services:
  app:
    instances: [$BACKEND]
EOF
# Node S: the sidecar of app (flags below); its embedded NATS listens for
# node C, and holds the registry they share.
cat >"$WORK/s.yaml" <<EOF
log: { level: warn }
api: { listen: 127.0.0.1:$P_S }
nats: { listen: 127.0.0.1:$P_SNATS, prefix: meshbench }
mesh:
  tls: { ca: $WORK/ca/ca.crt, ca_key: $WORK/ca/ca.key }
EOF
# Node C: the caller's node, on S's NATS; it learns app from the registry.
cat >"$WORK/c.yaml" <<EOF
log: { level: warn }
api: { listen: 127.0.0.1:$P_C }
nats: { url: "nats://127.0.0.1:$P_SNATS", prefix: meshbench }
mesh:
  identity: client
  tls: { ca: $WORK/ca/ca.crt, ca_key: $WORK/ca/ca.key }
EOF

section "start"
start backend "$BIN/nullhttp" -listen "127.0.0.1:$P_BACKEND" -status 200 -body hello -max 1h
ready "$BACKEND/" hello
start proxy "$BIN/meshload" proxy -listen "127.0.0.1:$P_PROXY" -target "$BACKEND" -max 1h
ready "$PROXY/" hello
start nodeA "$BIN/junction" serve -c "$WORK/a.yaml" --data "$WORK/data-a"
start nodeS "$BIN/junction" serve -c "$WORK/s.yaml" --data "$WORK/data-s" \
	--sidecar-for app --app "$BACKEND" --mesh-listen "127.0.0.1:$P_SMESH"
ready "$A/readyz"
ready "$S/readyz"
start nodeC "$BIN/junction" serve -c "$WORK/c.yaml" --data "$WORK/data-c"
ready "$C/readyz"
# The registry: C sees S's registration of app, and a call goes through.
ready "$C/v1/services" '"mtls":true'
ready "$A/v1/invoke/app/" hello
ready "$C/v1/invoke/app/" hello
log "backend pid $backend_PID on $BACKEND"
log "reference proxy pid $proxy_PID on $PROXY"
log "node A pid $nodeA_PID on $A (service app -> backend)"
log "node S pid $nodeS_PID on $S (sidecar of app, mTLS on 127.0.0.1:$P_SMESH, NATS on 127.0.0.1:$P_SNATS)"
log "node C pid $nodeC_PID on $C (app from the registry, mTLS to S)"

url_of() {
	case $1 in
	direct) echo "$BACKEND/hello" ;;
	proxy) echo "$PROXY/hello" ;;
	invoke) echo "$A/v1/invoke/app/hello" ;;
	sidecar) echo "$C/v1/invoke/app/hello" ;;
	*)
		echo "unknown path $1" >&2
		exit 2
		;;
	esac
}
pids_of() {
	case $1 in
	direct) echo "backend=$backend_PID" ;;
	proxy) echo "proxy=$proxy_PID,backend=$backend_PID" ;;
	invoke) echo "nodeA=$nodeA_PID,backend=$backend_PID" ;;
	sidecar) echo "nodeC=$nodeC_PID,nodeS=$nodeS_PID,backend=$backend_PID" ;;
	esac
}

for round in $(seq "$ROUNDS"); do
	section "round $round: fixed rate, $RATE req/s for $RATE_DURATION after $RATE_WARMUP"
	for p in $PATHS; do
		run "$BIN/meshload" run -name "$p" -round "$round" -url "$(url_of "$p")" -rate "$RATE" \
			-duration "$RATE_DURATION" -warmup "$RATE_WARMUP" -pids "$(pids_of "$p")" \
			-out "$RESULTS/run-$round-rate-$p.json"
	done
	for conns in $MAX_CONNS; do
		section "round $round: maximum throughput, $conns connections for $MAX_DURATION after $MAX_WARMUP"
		for p in $PATHS; do
			run "$BIN/meshload" run -name "$p" -round "$round" -url "$(url_of "$p")" -conns "$conns" \
				-duration "$MAX_DURATION" -warmup "$MAX_WARMUP" -pids "$(pids_of "$p")" \
				-out "$RESULTS/run-$round-max$conns-$p.json"
		done
	done
done

if [[ "$PROFILE" == 1 ]]; then
	section "profile: node A's code (busnode, node A's config) under max load, 32 connections"
	start prof "$BIN/busnode" -config "$WORK/a.yaml" -data "$WORK/data-prof" -listen "127.0.0.1:$P_PROF" \
		-cpuprofile "$RESULTS/nodeA.pprof" -max 5m
	ready "http://127.0.0.1:$P_PROF/v1/invoke/app/" hello
	# Not written as run-*.json: a profiled run is not a figure.
	run "$BIN/meshload" run -name invoke-profiled -url "http://127.0.0.1:$P_PROF/v1/invoke/app/hello" -conns 32 \
		-duration 15s -warmup 1s -pids "busnode=$prof_PID,backend=$backend_PID"
	kill -TERM "$prof_PID"
	wait "$prof_PID" || true
	go tool pprof -top -cum -nodecount 60 "$BIN/busnode" "$RESULTS/nodeA.pprof" >"$RESULTS/nodeA-top-cum.txt" 2>/dev/null || true
	go tool pprof -top -nodecount 40 "$BIN/busnode" "$RESULTS/nodeA.pprof" >"$RESULTS/nodeA-top-flat.txt" 2>/dev/null || true
	log "profile: $RESULTS/nodeA.pprof (top consumers in nodeA-top-cum.txt and nodeA-top-flat.txt)"
fi

section "figures"
"$BIN/meshload" report -dir "$RESULTS" -json "$RESULTS/summary.json" | tee "$RESULTS/table.md" | tee -a "$RAW"

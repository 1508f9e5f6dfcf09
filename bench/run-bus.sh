#!/usr/bin/env bash
# Runs every bus benchmark and prints the figures table
# (docs/PERFORMANCE.md explains each one). Bounded: about four minutes in
# all, no single run longer than about 30 s. Tunables (environment):
#   BENCHTIME (2s) and COUNT (3)     go test -bench settings for the Go API benchmarks
#                                    (COUNT rounds of one go test each; the table shows medians)
#   DURATION (10s), WARMUP (2s)      each HTTP load run
#   SINGLE_CONNS (32), BATCH_CONNS (4)  HTTP connections
#   E2E_N (40000), E2E_LATENCY_FOR (5s) publish-to-push phases
#   OUT (unset)                      also keep the raw output in this file
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
BENCHTIME=${BENCHTIME:-2s}
COUNT=${COUNT:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
SINGLE_CONNS=${SINGLE_CONNS:-32}
BATCH_CONNS=${BATCH_CONNS:-4}
E2E_N=${E2E_N:-40000}
E2E_LATENCY_FOR=${E2E_LATENCY_FOR:-5s}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/junction-bench.XXXXXX")
BIN=$WORK/bin
RAW=$WORK/output.txt
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT

# wait_line FILE PATTERN: waits up to 30 s for PATTERN in FILE and prints the line.
wait_line() {
	for _ in $(seq 300); do
		if grep -m1 "$2" "$1" 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "timed out waiting for '$2' in $1" >&2
	cat "$1" >&2
	return 1
}

stop() { # stop PID: SIGTERM, then wait for it
	kill -TERM "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

section "machine"
log "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
log "go: $(go version)"
if commit=$(git rev-parse --short HEAD 2>/dev/null); then
	if [[ -n "$(git status --porcelain -- . ':!bench' ':!docs/PERFORMANCE.md' 2>/dev/null)" ]]; then
		commit="$commit with uncommitted changes"
	fi
else
	commit=${JUNCTION_COMMIT:-unknown}
fi
log "code: commit $commit"
log "nats-server: $(go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2) (embedded), nats.go: $(go list -m -f '{{.Version}}' github.com/nats-io/nats.go)"

mkdir -p "$BIN"
for c in busload nullhttp pushe2e benchreport; do
	go build -o "$BIN/$c" "./bench/cmd/$c"
done
go build -o "$BIN/junction" ./cmd/junction

section "1. publish through the Go API vs raw JetStream"
# One go test per round (about 25 s each) rather than one long -count run.
for _ in $(seq "$COUNT"); do
	run go test -run '^$' -bench '^BenchmarkPublish$' -benchtime "$BENCHTIME" -count 1 ./bench/bus/
done

section "1b. the same with spans recorded (diagnostic: what tracing costs)"
for _ in $(seq "$COUNT"); do
	JUNCTION_BENCH_TRACING=1 go test -run '^$' -bench '^BenchmarkPublish$/^(junction|raw)$/^(sync|batch100|async)$' \
		-benchtime "$BENCHTIME" -count 1 ./bench/bus/ 2>&1 | sed 's,^BenchmarkPublish/,BenchmarkPublishTraced/,' | tee -a "$RAW"
done

section "2. HTTP publish against junction serve (separate process)"
mkdir -p "$WORK/run"
# Started from an empty directory with no JUNCTION_CONFIG: built-in defaults.
(cd "$WORK/run" && JUNCTION_CONFIG= exec "$BIN/junction" serve --data "$WORK/data" --listen 127.0.0.1:0 2>"$WORK/serve.log") &
JPID=$!
PIDS+=("$JPID")
ADDR=$(wait_line "$WORK/serve.log" 'junction started' | sed -E 's/.* api=([^ ]+).*/\1/')
log "junction serve pid $JPID on $ADDR"
run "$BIN/busload" -name junction-single -mode binary -conns "$SINGLE_CONNS" -duration "$DURATION" -warmup "$WARMUP" \
	-pid "$JPID" -json -url "http://$ADDR/v1/topics/load.single/messages"
run "$BIN/busload" -name junction-batch -mode batch -batch 100 -conns "$BATCH_CONNS" -duration "$DURATION" -warmup "$WARMUP" \
	-pid "$JPID" -json -url "http://$ADDR/v1/topics/load.batch/messages"
stop "$JPID"

section "2b. the same load against a net/http server that answers 202 (baseline)"
"$BIN/nullhttp" -max 5m >"$WORK/null.out" 2>&1 &
NPID=$!
PIDS+=("$NPID")
ADDR=$(wait_line "$WORK/null.out" 'listening on' | awk '{print $3}')
log "nullhttp pid $NPID on $ADDR"
run "$BIN/busload" -name nullhttp-single -mode binary -conns "$SINGLE_CONNS" -duration "$DURATION" -warmup "$WARMUP" \
	-pid "$NPID" -json -url "http://$ADDR/v1/topics/load.single/messages"
run "$BIN/busload" -name nullhttp-batch -mode batch -batch 100 -conns "$BATCH_CONNS" -duration "$DURATION" -warmup "$WARMUP" \
	-pid "$NPID" -json -url "http://$ADDR/v1/topics/load.batch/messages"
stop "$NPID"

section "3. publish to push, end to end"
run "$BIN/pushe2e" -json -n "$E2E_N" -latency-for "$E2E_LATENCY_FOR"

section "3b. the same with spans recorded (diagnostic: what tracing costs)"
JUNCTION_BENCH_TRACING=1 "$BIN/pushe2e" -json -n "$E2E_N" -latency-for "$E2E_LATENCY_FOR" 2>&1 |
	sed 's/^RESULT e2e {"side":"/RESULT e2e {"side":"traced-/' | tee -a "$RAW"

section "figures"
"$BIN/benchreport" <"$RAW" | tee -a "$RAW"
if [[ -n "${OUT:-}" ]]; then
	cp "$RAW" "$OUT"
fi

#!/usr/bin/env bash
# Measures the workflow engine: runs of a three-step workflow (call a
# local HTTP service, publish its answer, set a value), started and
# awaited from Go on an embedded node, beside the same three operations
# made directly from Go, in the same process and run, at the same
# concurrency (bench/workflow; the service is bench/cmd/nullhttp in a
# process of its own). Each round is one process with a fresh node:
# ROUNDS rounds at CONCURRENCY, then one at HIGH. Results go to
# bench/results/workflow-<time>/ (output.txt, table.md) and the table is
# printed at the end. docs/PERFORMANCE.md ("Workflows") explains it.
# A round takes as long as RUNS runs at the engine's rate plus RUNS direct
# operations: with the defaults, about a minute for the three rounds at
# 1,300 runs/s, plus the builds. Tunables (environment):
#   RUNS (20000)        measured operations per phase
#   WARMUP (500)        unmeasured operations before each phase
#   CONCURRENCY (64)    workers per phase in the ROUNDS rounds
#   ROUNDS (2)
#   HIGH (256)          the concurrency of one more round; empty: none
#   IDLE (0)            diagnostic: idle connections per host that Go's
#                       default transport keeps, which the baseline and
#                       the engine's url calls share (0: Go's default, 2)
#   PROGRESS (10s)      print the rate and CPU per operation at this
#                       interval during each phase (0: never)
#   PROFILE (0)         1: afterwards, one more workflow phase at
#                       CONCURRENCY under the CPU profiler (the profile
#                       and its top entries are kept with the results)
#   RESULTS (bench/results/workflow-<UTC time>)
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
RUNS=${RUNS:-20000}
WARMUP=${WARMUP:-500}
CONCURRENCY=${CONCURRENCY:-64}
ROUNDS=${ROUNDS:-2}
HIGH=${HIGH-256}
IDLE=${IDLE:-0}
PROGRESS=${PROGRESS:-10s}
PROFILE=${PROFILE:-0}
RESULTS=${RESULTS:-bench/results/workflow-$(date -u +%Y%m%dT%H%M%SZ)}

prepare workflow
log "results: $RESULTS"

# nullhttp beside the driver: the driver starts it as the service.
go build -o "$BIN/workflow" ./bench/workflow
go build -o "$BIN/nullhttp" ./bench/cmd/nullhttp

# round LABEL CONCURRENCY [FLAGS...]: one run of the driver, in WORK so
# that nothing it leaves behind stays in the tree.
round() {
	local label=$1 c=$2
	shift 2
	section "$label: $RUNS runs and $RUNS direct operations, concurrency $c"
	(cd "$WORK" && "$BIN/workflow" -runs "$RUNS" -warmup "$WARMUP" -concurrency "$c" -idle "$IDLE" -progress "$PROGRESS" -json -label "$label" "$@") 2>&1 | tee -a "$RAW"
}

for r in $(seq "$ROUNDS"); do
	round "round $r" "$CONCURRENCY"
done
if [[ -n "$HIGH" ]]; then
	round "concurrency $HIGH" "$HIGH"
fi

if [[ "$PROFILE" == 1 ]]; then
	section "profile: workflow phase only, concurrency $CONCURRENCY"
	(cd "$WORK" && "$BIN/workflow" -runs "$RUNS" -warmup "$WARMUP" -concurrency "$CONCURRENCY" -idle "$IDLE" -progress "$PROGRESS" -only workflow \
		-cpuprofile "$RESULTS/workflow.pprof") 2>&1 | tee -a "$RAW"
	go tool pprof -top -nodecount 40 "$RESULTS/workflow.pprof" >"$RESULTS/profile-flat.txt" 2>/dev/null
	go tool pprof -top -cum -nodecount 80 "$RESULTS/workflow.pprof" >"$RESULTS/profile-cum.txt" 2>/dev/null
	log "profile: $RESULTS/workflow.pprof (top entries in profile-flat.txt and profile-cum.txt)"
fi

section "figures"
"$BIN/workflow" report <"$RAW" | tee "$RESULTS/table.md" | tee -a "$RAW"

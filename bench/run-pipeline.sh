#!/usr/bin/env bash
# Measures the pipeline engine: four phases, each a pipeline run beside a
# minimal hand-written Go program doing the same work with the same batch
# size, in the same process and run (bench/pipeline): a generated CSV
# through filter + map into SQLite, the same into PostgreSQL (COPY on
# both sides), a topic-to-topic streaming map on the embedded NATS, and
# a tumbling-window aggregation into a JSON lines file. Each side's
# result is checked against the other's. Results go to
# bench/results/pipeline-<time>/ (output.txt, table.md) and the table is
# printed at the end. docs/PERFORMANCE.md ("Pipelines") explains it.
# With the defaults a run takes about three minutes here, plus the build.
# Tunables (environment):
#   ROWS (1000000)      rows of the CSV file (csv and pg phases)
#   MESSAGES (200000)   messages of the stream phase
#   RECORDS (1000000)   records of the window phase (over KEYS keys)
#   KEYS (1000)
#   BATCH (1000)        records per batch, for both sides
#   ROUNDS (2)          rounds of every phase, in one process
#   PHASES              default: csv,stream,window, plus pg when DSN is set
#   DSN (postgres://postgres@127.0.0.1:5432/test?sslmode=disable)
#                       the pg phase's database; empty: no pg phase
#   PROFILE (0)         1: afterwards, one more round under the CPU
#                       profiler, one profile per phase of its pipeline
#                       side (kept with the results, with their top entries)
#   RESULTS (bench/results/pipeline-<UTC time>)
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
ROWS=${ROWS:-1000000}
MESSAGES=${MESSAGES:-200000}
RECORDS=${RECORDS:-1000000}
KEYS=${KEYS:-1000}
BATCH=${BATCH:-1000}
ROUNDS=${ROUNDS:-2}
PHASES=${PHASES:-}
DSN=${DSN-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
PROFILE=${PROFILE:-0}
RESULTS=${RESULTS:-bench/results/pipeline-$(date -u +%Y%m%dT%H%M%SZ)}

prepare pipeline
log "sqlite: $(go list -m -f '{{.Path}} {{.Version}}' modernc.org/sqlite 2>/dev/null || echo unknown)"
log "results: $RESULTS"

go build -o "$BIN/pipeline" ./bench/pipeline

FLAGS=(-rows "$ROWS" -messages "$MESSAGES" -records "$RECORDS" -keys "$KEYS" -batch "$BATCH")
[[ -n "$PHASES" ]] && FLAGS+=(-phases "$PHASES")
[[ -n "$DSN" ]] && FLAGS+=(-dsn "$DSN")

# The driver runs in WORK so that nothing it leaves behind stays in the
# tree (its data lives in a temporary directory of its own).
section "$ROUNDS round(s): $ROWS CSV rows, $MESSAGES messages, $RECORDS window records, batches of $BATCH"
(cd "$WORK" && "$BIN/pipeline" "${FLAGS[@]}" -rounds "$ROUNDS" -json -label main) 2>&1 | tee -a "$RAW"

if [[ "$PROFILE" == 1 ]]; then
	section "profile: one more round, the pipeline side of each phase under the CPU profiler"
	(cd "$WORK" && "$BIN/pipeline" "${FLAGS[@]}" -rounds 1 -json -label profile -cpuprofile "$RESULTS/PHASE.pprof") 2>&1 | tee -a "$RAW"
	for p in "$RESULTS"/*.pprof; do
		n=$(basename "$p" .pprof)
		go tool pprof -top -nodecount 40 "$BIN/pipeline" "$p" >"$RESULTS/$n-flat.txt" 2>/dev/null
		go tool pprof -top -cum -nodecount 80 "$BIN/pipeline" "$p" >"$RESULTS/$n-cum.txt" 2>/dev/null
	done
	log "profiles: $RESULTS/*.pprof (top entries in *-flat.txt and *-cum.txt)"
fi

section "figures"
"$BIN/pipeline" report <"$RAW" | tee "$RESULTS/table.md" | tee -a "$RAW"

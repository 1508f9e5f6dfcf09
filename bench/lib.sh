# Shared by the bench/run-*.sh scripts (sourced, not run). The caller
# sets RAW (the file every line of output is also appended to) and, to use
# start and cleanup, WORK (a scratch directory) and PIDS=().

log() { echo "$@" | tee -a "$RAW"; }
run() { "$@" 2>&1 | tee -a "$RAW"; }

# Each section notes how busy the machine was: the load average and, where
# the kernel has it, the share of the last 10 s in which some runnable task
# waited for a CPU (other work on the machine lowers every rate below).
busy() {
	local p=""
	if [[ -r /proc/pressure/cpu ]]; then
		p=", cpu pressure $(sed -nE 's/^some avg10=([0-9.]+).*/\1/p' /proc/pressure/cpu)%"
	fi
	echo "load average $(cut -d' ' -f1-3 /proc/loadavg)$p"
}
section() { log; log "== $1 ($(date -u +%H:%M:%S), $(busy))"; }

# start NAME CMD...: runs CMD in the background with its output in
# $WORK/NAME.log and records its pid in PIDS and in the variable NAME_PID.
start() {
	local name=$1
	shift
	"$@" >"$WORK/$name.log" 2>&1 &
	PIDS+=("$!")
	printf -v "${name}_PID" '%s' "$!"
}

# cleanup stops what start started, last started first (a client node
# before the node whose NATS it uses), and removes WORK.
cleanup() {
	local i
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		kill -TERM "${PIDS[i]}" 2>/dev/null || true
	done
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		wait "${PIDS[i]}" 2>/dev/null || true
	done
	rm -rf "$WORK"
}

# log_code logs the commit measured, flagging uncommitted changes outside
# bench/ and docs/ (JUNCTION_COMMIT names it outside a git checkout).
log_code() {
	local commit
	if commit=$(git rev-parse --short HEAD 2>/dev/null); then
		if [[ -n "$(git status --porcelain -- . ':!bench' ':!docs' 2>/dev/null)" ]]; then
			commit="$commit with uncommitted changes"
		fi
	else
		commit=${JUNCTION_COMMIT:-unknown}
	fi
	log "code: commit $commit"
}

# build_tools builds junction and the load tools of bench/cmd into $BIN.
build_tools() {
	local c
	for c in meshload nullhttp busnode; do
		go build -o "$BIN/$c" "./bench/cmd/$c"
	done
	go build -o "$BIN/junction" ./cmd/junction
}

# prepare NAME: the scratch directory ($WORK, with $BIN), the results
# directory ($RESULTS, made absolute; $RAW, its output.txt), PIDS, and the
# traps that clean up; then logs the machine's section (cpu, go, commit,
# embedded nats-server).
prepare() {
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/junction-$1-bench.XXXXXX")
	BIN=$WORK/bin
	mkdir -p "$RESULTS" "$BIN"
	RESULTS=$(cd "$RESULTS" && pwd)
	RAW=$RESULTS/output.txt
	: >"$RAW"
	PIDS=()
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	section "machine"
	log "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
	log "go: $(go version)"
	log_code
	log "nats-server: $(go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2) (embedded)"
}

#!/usr/bin/env bash
# bench/soak.sh: does the control plane's memory stay flat under steady load? Starts
# `tally control`, two `tally proxy` sidecars and bench/backend on loopback, sends a fixed
# rate of requests through the sidecars (bench/soakload) for SOAK_MINUTES, samples the
# control plane's RSS (VmRSS) and Go heap (go_memstats_heap_inuse_bytes on its /metrics)
# every SOAK_INTERVAL seconds, and prints the samples, first/median/last/max, and the
# least-squares slope over the second half of the run in MiB/min. See bench/README.md.
#
#   bash bench/soak.sh                              # 10 min at 1000 req/s
#   SOAK_MINUTES=2 SOAK_RATE=500 bash bench/soak.sh
#
# Environment:
#   SOAK_MINUTES     minutes of load (default 10)
#   SOAK_RATE        requests per second (default 1000)
#   SOAK_INTERVAL    seconds between samples (default 10)
#   SOAK_SIZE        response size: 1k or 64k (default 1k)
#   SOAK_MAX_SLOPE   MiB/min: a second-half RSS or heap slope above it is reported as
#                    GROWING (default 0.5)
#   SOAK_ENFORCE=1   exit 4 when a slope is above SOAK_MAX_SLOPE
#   SOAK_OUT         results folder (default bench/out)
#   SOAK_KEEP=1      keep the temp dir (data dir, logs) after the run
#   SOAK_TALLY_BIN   use this tally binary instead of building ./cmd/tally
#
# Exit: 0 done; 1 setup failed; 3 the load had failed or missed requests, or a process
# died; 4 memory grew (only with SOAK_ENFORCE=1).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MINUTES=${SOAK_MINUTES:-10}
RATE=${SOAK_RATE:-1000}
INTERVAL=${SOAK_INTERVAL:-10}
SIZE=${SOAK_SIZE:-1k}
MAX_SLOPE=${SOAK_MAX_SLOPE:-0.5}
ENFORCE=${SOAK_ENFORCE:-0}
OUT_ROOT=${SOAK_OUT:-$REPO/bench/out}
KEEP=${SOAK_KEEP:-0}
TALLY_BIN=${SOAK_TALLY_BIN:-}

log() { printf '[soak %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	log "FATAL: $*"
	exit 1
}

for v in MINUTES RATE INTERVAL; do
	[[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || die "SOAK_$v=${!v}: want a whole number >= 1"
done
[[ $SIZE == 1k || $SIZE == 64k ]] || die "SOAK_SIZE=$SIZE: want 1k or 64k"
[[ $MAX_SLOPE =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "SOAK_MAX_SLOPE=$MAX_SLOPE: want a number"
command -v go >/dev/null || die "go is not on PATH"
command -v curl >/dev/null || die "curl is missing"

# ---- state the EXIT trap cleans up ----------------------------------------------------------
TMP=""
RUN_OUT=""
STARTED=()          # PIDs this script started
declare -A PNAME=() # PID -> name

alive() { kill -0 "$1" 2>/dev/null; }

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	local live=() p i
	for p in "${STARTED[@]}"; do alive "$p" && live+=("$p"); done
	if ((${#live[@]})); then
		log "stopping ${#live[@]} processes this run started: ${live[*]}"
		kill -TERM "${live[@]}" 2>/dev/null
		for ((i = 0; i < 100; i++)); do
			local any=0
			for p in "${live[@]}"; do alive "$p" && any=1 && break; done
			((any)) || break
			sleep 0.1
		done
		for p in "${live[@]}"; do
			if alive "$p"; then
				log "process $p (${PNAME[$p]}) ignored SIGTERM for 10s: SIGKILL"
				kill -KILL "$p" 2>/dev/null
			fi
		done
		for p in "${live[@]}"; do wait "$p" 2>/dev/null; done
	fi
	if [[ -n $TMP && -d $TMP ]]; then
		if [[ -n $RUN_OUT && -d $RUN_OUT ]]; then
			mkdir -p "$RUN_OUT/logs"
			for f in "$TMP"/logs/*; do [[ -f $f ]] && tail -c 1000000 "$f" >"$RUN_OUT/logs/$(basename "$f")"; done
		fi
		if ((rc == 1)) || [[ $KEEP == 1 ]]; then
			log "kept $TMP (data directory, logs)"
		else
			rm -rf "$TMP"
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- builds ----------------------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tally-soak.XXXXXX")
mkdir -p "$TMP/bin" "$TMP/logs"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RUN_OUT=$OUT_ROOT/soak-$STAMP
mkdir -p "$RUN_OUT"
ln -sfn "soak-$STAMP" "$OUT_ROOT/soak-latest"

log "building bench/backend, bench/benchtool, bench/soakload"
(cd "$REPO" && GOWORK=off timeout 600 go build -o "$TMP/bin/" ./bench/backend ./bench/benchtool ./bench/soakload) \
	>"$TMP/logs/build.log" 2>&1 || {
	tail -n 30 "$TMP/logs/build.log" >&2
	die "building the bench helpers failed"
}
BT=$TMP/bin/benchtool
if [[ -n $TALLY_BIN ]]; then
	[[ -x $TALLY_BIN ]] || die "SOAK_TALLY_BIN=$TALLY_BIN is not an executable"
	cp "$TALLY_BIN" "$TMP/bin/tally"
else
	log "building tally"
	(cd "$REPO" && GOWORK=off timeout 900 go build -o "$TMP/bin/tally" ./cmd/tally) >"$TMP/logs/tally-build.log" 2>&1 || {
		tail -n 30 "$TMP/logs/tally-build.log" >&2
		die "building tally failed"
	}
fi
T=$TMP/bin/tally

# ---- processes -------------------------------------------------------------------------------
LASTPID=""
start() {
	local name=$1
	shift
	"$@" >"$TMP/logs/$name.log" 2>&1 &
	LASTPID=$!
	STARTED+=("$LASTPID")
	PNAME[$LASTPID]=$name
}
ready() {
	local name=$1
	shift
	if ! "$@"; then
		log "---- last lines of $name.log ----"
		tail -n 20 "$TMP/logs/$name.log" >&2 || true
		die "$name did not become ready"
	fi
}

mapfile -t PORTS < <("$BT" ports 7)
((${#PORTS[@]} == 7)) || die "could not reserve ports"
P_BACKEND=${PORTS[0]} P_CTL_GRPC=${PORTS[1]} P_CTL_HTTP=${PORTS[2]} P_IN=${PORTS[3]} P_OUT=${PORTS[4]}
P_ADMIN_B=${PORTS[5]} P_ADMIN_A=${PORTS[6]}
DATA=$TMP/ctl
CTL_URL=http://127.0.0.1:$P_CTL_HTTP

start backend "$TMP/bin/backend" -listen "127.0.0.1:$P_BACKEND"
BACKEND=$LASTPID
ready backend "$BT" wait-http -timeout 20s "http://127.0.0.1:$P_BACKEND/healthz"
start tally-control "$T" control --data "$DATA" --grpc-addr "127.0.0.1:$P_CTL_GRPC" --http-addr "127.0.0.1:$P_CTL_HTTP"
CTL=$LASTPID
ready tally-control "$BT" wait-file -timeout 60s "$DATA/join-token"
ready tally-control "$BT" wait-http -timeout 60s "$CTL_URL/readyz"
start tally-b "$T" proxy --join-token-file "$DATA/join-token" --service backend \
	--app "127.0.0.1:$P_BACKEND" --inbound "127.0.0.1:$P_IN" --admin-addr "127.0.0.1:$P_ADMIN_B"
SC_B=$LASTPID
ready tally-b "$BT" wait-http -timeout 60s "http://127.0.0.1:$P_ADMIN_B/readyz"
start tally-a "$T" proxy --join-token-file "$DATA/join-token" --service client \
	--outbound "127.0.0.1:$P_OUT" --admin-addr "127.0.0.1:$P_ADMIN_A"
SC_A=$LASTPID
ready tally-a "$BT" wait-http -timeout 60s "http://127.0.0.1:$P_ADMIN_A/readyz"
bytes=1024
[[ $SIZE == 64k ]] && bytes=65536
ready tally-a "$BT" probe -timeout 30s -host backend -size "$bytes" "http://127.0.0.1:$P_OUT/$SIZE"

# ---- sampling --------------------------------------------------------------------------------
# rss_mib PID: VmRSS in MiB, or "-" when the process is gone.
rss_mib() { awk '$1 == "VmRSS:" { printf "%.1f", $2 / 1024; f = 1 } END { if (!f) print "-" }' "/proc/$1/status" 2>/dev/null || echo -; }
# metric URL NAME [ABSENT]: the sum of the samples of NAME on a Prometheus text page;
# ABSENT (default "-") when the page has none (a counter vector nothing incremented);
# "-" when the page cannot be fetched.
metric() {
	local page
	page=$(curl -fsS --max-time 5 "$1/metrics" 2>/dev/null) || {
		echo -
		return
	}
	awk -v n="$2" -v absent="${3:--}" '$1 == n || index($1, n "{") == 1 { s += $NF; f = 1 }
		END { if (f) printf "%.0f", s; else print absent }' <<<"$page"
}
mib() { [[ $1 == - ]] && echo - || awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

SAMPLES=$RUN_OUT/samples.tsv
HEADER=$'t_s\tctl_rss_mib\tctl_heap_mib\tledger_size\tsidecar_a_rss_mib\tsidecar_b_rss_mib'
echo "$HEADER" >"$SAMPLES"

duration=$((MINUTES * 60))
log "steady load: $RATE req/s of GET /$SIZE through the sidecars for $MINUTES min; a sample every ${INTERVAL}s"
{
	echo "date: $STAMP"
	echo "commit: $(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$REPO" diff --quiet HEAD -- 2>/dev/null || echo ' (dirty tree)')"
	echo "machine: $(nproc) cores, $(uname -sr)"
	echo "go: $(go version | cut -d' ' -f3)"
	echo "load: $RATE req/s, GET /$SIZE, $MINUTES min; samples every ${INTERVAL}s"
} >"$RUN_OUT/meta.txt"

start soakload "$TMP/bin/soakload" -url "http://127.0.0.1:$P_OUT/$SIZE" -host backend -rate "$RATE" \
	-duration "${duration}s" -progress 1m
LOAD=$LASTPID
t0=$(date +%s.%N)
ROWFMT='%6s %12s %13s %12s %18s %18s\n'
# shellcheck disable=SC2086
printf "$ROWFMT" ${HEADER//$'\t'/ }
DIED=""
for ((i = 0; ; i++)); do
	due=$(awk -v a="$t0" -v k="$i" -v s="$INTERVAL" 'BEGIN { printf "%.3f", a + k * s }')
	wait_s=$(awk -v d="$due" -v now="$(date +%s.%N)" 'BEGIN { w = d - now; printf "%.3f", (w > 0 ? w : 0) }')
	sleep "$wait_s"
	t=$((i * INTERVAL))
	row="$t	$(rss_mib "$CTL")	$(mib "$(metric "$CTL_URL" go_memstats_heap_inuse_bytes)")	$(metric "$CTL_URL" tally_ledger_size)	$(rss_mib "$SC_A")	$(rss_mib "$SC_B")"
	echo "$row" >>"$SAMPLES"
	# shellcheck disable=SC2086
	printf "$ROWFMT" $row
	for p in "$CTL" "$SC_A" "$SC_B" "$BACKEND"; do
		alive "$p" || DIED+="${PNAME[$p]} ($p) "
	done
	[[ -n $DIED ]] && break
	((t >= duration)) && break
	alive "$LOAD" || break
done

load_rc=0
if alive "$LOAD" && [[ -z $DIED ]]; then
	# The last sample is due at the end of the load; soakload finishes its last requests.
	for ((i = 0; i < 300; i++)); do alive "$LOAD" || break; sleep 0.1; done
fi
if alive "$LOAD"; then
	kill -TERM "$LOAD" 2>/dev/null
fi
wait "$LOAD" 2>/dev/null || load_rc=$?
LOAD_SUMMARY=$(grep -h '^soakload: due=' "$TMP/logs/soakload.log" | tail -n 1)

# ---- report ----------------------------------------------------------------------------------
# stats COLUMN: first median last max of a samples.tsv column (numbers only).
stats() {
	local col=$1
	awk -F'\t' -v c="$col" 'NR > 1 && $c != "-" { print $c }' "$SAMPLES" >"$TMP/col"
	local first last median max
	first=$(head -n 1 "$TMP/col")
	last=$(tail -n 1 "$TMP/col")
	median=$(sort -g "$TMP/col" | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
	max=$(sort -g "$TMP/col" | tail -n 1)
	echo "${first:--} ${median:--} ${last:--} ${max:--}"
}
# slope COLUMN: least-squares slope in MiB/min over the samples of the second half of the run.
slope() {
	awk -F'\t' -v c="$1" 'NR > 1 && $c != "-" { t[++n] = $1; y[n] = $c }
	END {
		if (n < 3) { print "-"; exit }
		half = t[n] / 2
		for (i = 1; i <= n; i++) if (t[i] >= half) { x = t[i] / 60; k++; sx += x; sy += y[i]; sxx += x * x; sxy += x * y[i] }
		d = k * sxx - sx * sx
		if (k < 2 || d == 0) { print "-"; exit }
		printf "%+.3f", (k * sxy - sx * sy) / d
	}' "$SAMPLES"
}

read -r rf rmed rl rx <<<"$(stats 2)"
read -r hf hm hl hx <<<"$(stats 3)"
rs=$(slope 2)
hs=$(slope 3)
grow() { awk -v s="$1" -v m="$MAX_SLOPE" 'BEGIN { if (s == "-") print "?"; else if (s > m) print "GROWING"; else print "flat" }'; }
caller_sent=$(metric "http://127.0.0.1:$P_ADMIN_A" tally_messages_sent_total 0)
caller_conf=$(metric "http://127.0.0.1:$P_ADMIN_A" tally_messages_confirmed_total 0)
ctl_conf=$(metric "$CTL_URL" tally_messages_confirmed_total 0)
ctl_om=$(metric "$CTL_URL" tally_omissions_total 0)
ledger=$(metric "$CTL_URL" tally_ledger_size)
{
	echo
	printf '%-30s %8s %8s %8s %8s %18s\n' "control plane" first median last max "slope 2nd half"
	printf '%-30s %8s %8s %8s %8s %11s MiB/min  %s\n' "RSS (VmRSS), MiB" "$rf" "$rmed" "$rl" "$rx" "$rs" "$(grow "$rs")"
	printf '%-30s %8s %8s %8s %8s %11s MiB/min  %s\n' "Go heap (heap_inuse), MiB" "$hf" "$hm" "$hl" "$hx" "$hs" "$(grow "$hs")"
	echo
	echo "load: ${LOAD_SUMMARY:-soakload printed no summary (exit $load_rc)}"
	echo "caller sidecar: sent $caller_sent, confirmed $caller_conf; control plane: confirmed $ctl_conf, omission events $ctl_om, ledger size $ledger"
	echo "flat means a slope of at most SOAK_MAX_SLOPE=$MAX_SLOPE MiB/min over the second half"
} | tee "$RUN_OUT/summary.txt"
log "results: $RUN_OUT/{summary.txt,samples.tsv,meta.txt,logs/} (also $OUT_ROOT/soak-latest)"

if [[ -n $DIED ]]; then
	log "FAILED: died during the run: $DIED(see $RUN_OUT/logs/)"
	exit 3
fi
if ((load_rc != 0)); then
	log "FAILED: the load had failed or missed requests (soakload exit $load_rc; see $RUN_OUT/logs/soakload.log)"
	exit 3
fi
if [[ $ENFORCE == 1 && ($(grow "$rs") != flat || $(grow "$hs") != flat) ]]; then
	log "memory grew faster than $MAX_SLOPE MiB/min over the second half"
	exit 4
fi

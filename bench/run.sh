#!/usr/bin/env bash
# bench/run.sh: tally against nginx, haproxy and Go's httputil.ReverseProxy, each as two
# hops with mutual TLS 1.3 between them, on loopback, measured with wrk. See
# bench/README.md for what it measures and how to read the output.
#
#   bash bench/run.sh                                            # full run, ~12 min
#   BENCH_SKIP_TALLY=1 BENCH_DURATION=3 ROUNDS=1 bash bench/run.sh
#   BENCH_ONLY=direct,nginx bash bench/run.sh
#
# Environment:
#   BENCH_DURATION (or DURATION)  seconds per measurement (default 10)
#   ROUNDS (or BENCH_ROUNDS)      rounds; configurations interleave within each (default 3)
#   BENCH_WARMUP                  seconds of unrecorded load per config and size (default 2)
#   BENCH_ONLY                    comma list out of direct,tally,nginx,haproxy,goproxy
#   BENCH_SKIP_TALLY=1            leave tally out (and do not build it)
#   BENCH_OUT                     results folder (default bench/out)
#   BENCH_KEEP=1                  keep the temp dir (certs, configs, logs) after the run
#   BENCH_ENFORCE=1               exit 4 when a tally target fails
#   BENCH_GOPROXY_H2=0            goproxy hops talk HTTP/1.1 instead of HTTP/2 (default 1)
#   BENCH_TALLY_BIN=PATH          use this tally binary instead of building ./cmd/tally
#   BENCH_CONTROL_SCHED=idle      tally's control plane: idle (SCHED_IDLE, default), nice (nice 19), normal
#
# Exit: 0 done; 1 setup failed; 3 some measurement failed (reported in the table);
# 4 a tally target failed (only with BENCH_ENFORCE=1).
set -euo pipefail

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

DURATION=${BENCH_DURATION:-${DURATION:-10}}
ROUNDS=${BENCH_ROUNDS:-${ROUNDS:-3}}
WARMUP=${BENCH_WARMUP:-2}
SKIP_TALLY=${BENCH_SKIP_TALLY:-0}
ONLY=${BENCH_ONLY:-}
OUT_ROOT=${BENCH_OUT:-$REPO/bench/out}
KEEP=${BENCH_KEEP:-0}
ENFORCE=${BENCH_ENFORCE:-0}
GOPROXY_H2=${BENCH_GOPROXY_H2:-1}
TALLY_BIN=${BENCH_TALLY_BIN:-}
CONTROL_SCHED=${BENCH_CONTROL_SCHED:-idle}
case $CONTROL_SCHED in
idle) CONTROL_PREFIX=(chrt --idle 0) ;;
nice) CONTROL_PREFIX=(nice -n 19) ;;
normal) CONTROL_PREFIX=() ;;
*)
	echo "BENCH_CONTROL_SCHED: want idle, nice or normal, not '$CONTROL_SCHED'" >&2
	exit 1
	;;
esac

SIZES=(1k 64k)
declare -A SIZE_BYTES=([1k]=1024 [64k]=65536)
CONCS=(c32 c1)
declare -A WRK_ARGS=([c32]="-t2 -c32" [c1]="-t1 -c1")
ALL_CONFIGS=(direct tally nginx haproxy goproxy)
HOST_HEADER=backend  # the service name tally's outbound routes by; harmless elsewhere

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	log "FATAL: $*"
	exit 1
}

for v in DURATION ROUNDS WARMUP; do
	[[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || die "$v=${!v}: want a whole number >= 1"
done

# ---- which configurations ------------------------------------------------------------
CONFIGS=()
if [[ -n $ONLY ]]; then
	IFS=, read -r -a want <<<"$ONLY"
	for w in "${want[@]}"; do
		[[ " ${ALL_CONFIGS[*]} " == *" $w "* ]] || die "BENCH_ONLY: unknown configuration '$w' (known: ${ALL_CONFIGS[*]})"
	done
	for c in "${ALL_CONFIGS[@]}"; do
		[[ ",$ONLY," == *",$c,"* ]] && CONFIGS+=("$c")
	done
else
	CONFIGS=("${ALL_CONFIGS[@]}")
fi
if [[ $SKIP_TALLY == 1 ]]; then
	kept=()
	for c in "${CONFIGS[@]}"; do [[ $c == tally ]] || kept+=("$c"); done
	CONFIGS=("${kept[@]}")
fi
((${#CONFIGS[@]} > 0)) || die "no configuration left to measure"
has() { [[ " ${CONFIGS[*]} " == *" $1 "* ]]; }
has direct || log "warning: direct is not measured, so the ×direct ratios stay empty"

# ---- state the EXIT trap cleans up -----------------------------------------------------
TMP=""
BT=""
RUN_OUT=""
POLICY_CREATED=0
STARTED=()            # PIDs this script started, in start order
declare -A PNAME=()   # PID -> name (for messages and log files)

alive() { kill -0 "$1" 2>/dev/null; }

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	if ((${#STARTED[@]})); then
		local live=() kids=() p k i
		for p in "${STARTED[@]}"; do alive "$p" && live+=("$p"); done
		if ((${#live[@]})); then
			# Note the children (nginx workers) while their parents still stand.
			if [[ -x $BT ]]; then
				for p in "${live[@]}"; do
					while read -r k; do [[ $k != "$p" ]] && kids+=("$k"); done < <("$BT" tree "$p" 2>/dev/null)
				done
			fi
			log "stopping ${#live[@]} processes this run started: ${live[*]}"
			kill -TERM "${live[@]}" 2>/dev/null
			for ((i = 0; i < 100; i++)); do
				local any=0
				for p in "${live[@]}" "${kids[@]}"; do alive "$p" && any=1 && break; done
				((any)) || break
				sleep 0.1
			done
			for p in "${live[@]}" "${kids[@]}"; do
				if alive "$p"; then
					log "process $p (${PNAME[$p]:-child}) ignored SIGTERM for 10s: SIGKILL"
					kill -KILL "$p" 2>/dev/null
				fi
			done
			for p in "${live[@]}"; do wait "$p" 2>/dev/null; done
		fi
	fi
	if ((POLICY_CREATED)); then rm -f /usr/sbin/policy-rc.d; fi
	if [[ -n $TMP && -d $TMP ]]; then
		if [[ -n $RUN_OUT && -d $RUN_OUT && -d $TMP/logs ]]; then
			mkdir -p "$RUN_OUT/logs"
			for f in "$TMP"/logs/*; do [[ -f $f ]] && tail -c 1000000 "$f" >"$RUN_OUT/logs/$(basename "$f")"; done
		fi
		# Keep it when set-up failed or the run was cut short; failed measurements are
		# already documented in $RUN_OUT (wrk outputs and log tails).
		if ((rc != 0 && rc != 3 && rc != 4)) || [[ $KEEP == 1 ]]; then
			log "kept $TMP (certificates, configurations, logs)"
		else
			rm -rf "$TMP"
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- tools -------------------------------------------------------------------------------
command -v go >/dev/null || die "go is not on PATH (Go 1.26 is needed to build the helpers)"
command -v timeout >/dev/null || die "timeout (coreutils) is missing"
missing=()
command -v wrk >/dev/null || missing+=(wrk)
has nginx && ! command -v nginx >/dev/null && missing+=(nginx)
has haproxy && ! command -v haproxy >/dev/null && missing+=(haproxy)
if ((${#missing[@]})); then
	if [[ $EUID -ne 0 ]]; then
		die "missing ${missing[*]}; run as root, or install them first: sudo apt-get install -y wrk nginx haproxy"
	fi
	command -v apt-get >/dev/null || die "missing ${missing[*]} and there is no apt-get to install them"
	log "installing wrk nginx haproxy (missing: ${missing[*]})"
	# Debian starts the packaged nginx and haproxy services on install; a policy-rc.d
	# that says "no" keeps this script from leaving daemons it did not mean to start.
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && POLICY_CREATED=1
	fi
	export DEBIAN_FRONTEND=noninteractive
	timeout 600 apt-get update -qq || die "apt-get update failed"
	timeout 900 apt-get install -y -qq wrk nginx haproxy || die "apt-get install wrk nginx haproxy failed"
	if ((POLICY_CREATED)); then rm -f /usr/sbin/policy-rc.d && POLICY_CREATED=0; fi
	for t in "${missing[@]}"; do command -v "$t" >/dev/null || die "$t still missing after apt-get install"; done
fi
HZ=$(getconf CLK_TCK)

# ---- plan --------------------------------------------------------------------------------
n=${#CONFIGS[@]}
measurements=$((ROUNDS * ${#SIZES[@]} * ${#CONCS[@]} * n))
# ~0.7 s of sampling and pause per measurement; warm-ups; ~5 s start-up per configuration.
estimate=$((measurements * (DURATION * 10 + 7) / 10 + n * ${#SIZES[@]} * WARMUP + n * 5 + 10))
log "configurations: ${CONFIGS[*]}; ${#SIZES[@]} sizes x ${#CONCS[@]} loads x $ROUNDS rounds = $measurements measurements of ${DURATION}s"
log "expected duration: ~$((estimate / 60)) min $((estimate % 60)) s (plus the Go builds; tally's first build can take a few minutes)"
START_TS=$(date +%s)

# ---- workspace and builds ------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tally-bench.XXXXXX")
chmod 711 "$TMP" # nginx workers drop to 'nobody' when run as root and must traverse it
mkdir -p "$TMP/bin" "$TMP/logs"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RUN_OUT=$OUT_ROOT/$STAMP
mkdir -p "$RUN_OUT/wrk"
ln -sfn "$STAMP" "$OUT_ROOT/latest"
RAW=$RUN_OUT/raw.csv

log "building helpers (bench/backend, bench/goproxy, bench/benchtool)"
(cd "$REPO" && GOWORK=off timeout 600 go build -o "$TMP/bin/" ./bench/backend ./bench/goproxy ./bench/benchtool) \
	>"$TMP/logs/build.log" 2>&1 || {
	tail -n 30 "$TMP/logs/build.log" >&2
	die "building the bench helpers failed"
}
BT=$TMP/bin/benchtool

if has tally && [[ -n $TALLY_BIN ]]; then
	[[ -x $TALLY_BIN ]] || die "BENCH_TALLY_BIN=$TALLY_BIN is not an executable"
	cp "$TALLY_BIN" "$TMP/tally"
	log "using tally from $TALLY_BIN (not built)"
elif has tally; then
	log "building tally (go build -o \$TMP/tally ./cmd/tally)"
	(cd "$REPO" && GOWORK=off timeout 900 go build -o "$TMP/tally" ./cmd/tally) >"$TMP/logs/tally-build.log" 2>&1 || {
		tail -n 30 "$TMP/logs/tally-build.log" >&2
		die "building tally failed (log above); BENCH_SKIP_TALLY=1 benches the others"
	}
fi

# ---- processes -------------------------------------------------------------------------------
LASTPID=""
# start NAME CMD...: runs CMD in the background, output to $TMP/logs/NAME.log.
start() {
	local name=$1
	shift
	"$@" >"$TMP/logs/$name.log" 2>&1 &
	LASTPID=$!
	STARTED+=("$LASTPID")
	PNAME[$LASTPID]=$name
}

# ready NAME CHECK...: runs CHECK (a bounded wait); on failure shows NAME's log and dies.
ready() {
	local name=$1
	shift
	if ! "$@"; then
		local f
		for f in "$TMP/logs/$name"*.log; do
			[[ -f $f ]] || continue
			log "---- last lines of $(basename "$f") ----"
			tail -n 20 "$f" >&2 || true
		done
		die "$name did not become ready"
	fi
}

mapfile -t PORTS < <("$BT" ports 13)
((${#PORTS[@]} == 13)) || die "could not reserve ports"
P_BACKEND=${PORTS[0]}
P_CTL_GRPC=${PORTS[1]} P_CTL_HTTP=${PORTS[2]} P_TALLY_IN=${PORTS[3]} P_TALLY_OUT=${PORTS[4]}
P_TALLY_ADMIN_B=${PORTS[5]} P_TALLY_ADMIN_A=${PORTS[6]}
P_NGINX_A=${PORTS[7]} P_NGINX_B=${PORTS[8]}
P_HAPROXY_A=${PORTS[9]} P_HAPROXY_B=${PORTS[10]}
P_GO_A=${PORTS[11]} P_GO_B=${PORTS[12]}

CERTS=$TMP/certs
"$BT" certs "$CERTS" || die "generating certificates failed"

declare -A URL=()   # config -> base URL wrk hits
declare -A HOPS=()  # config -> "PID_A PID_B" of the proxy hops (CPU and RSS are theirs)
declare -A AUX=()   # config -> PID of helper processes whose CPU is shown apart (tally control)

start backend "$TMP/bin/backend" -listen "127.0.0.1:$P_BACKEND"
BACKEND_PID=$LASTPID
ready backend "$BT" wait-http -timeout 20s "http://127.0.0.1:$P_BACKEND/healthz"
URL[direct]=http://127.0.0.1:$P_BACKEND

start_tally() {
	local t=$TMP/tally data=$TMP/ctl
	# The control plane is off the request path (sidecars batch their records to it)
	# and in a deployment runs on other machines than the data path. Here it shares
	# the two cores, so by default it only gets CPU the rest leaves idle: its ledger
	# commits, a few milliseconds of CPU each, otherwise preempt the proxies and set
	# the p99. Its CPU is still measured (INFO line), and `benchtool accounting`
	# after the last measurement proves it kept up; README "The tally configuration".
	start tally-control "${CONTROL_PREFIX[@]}" "$t" control --data "$data" --grpc-addr "127.0.0.1:$P_CTL_GRPC" --http-addr "127.0.0.1:$P_CTL_HTTP"
	local ctl=$LASTPID
	ready tally-control "$BT" wait-file -timeout 60s "$data/join-token"
	ready tally-control "$BT" wait-http -timeout 60s "http://127.0.0.1:$P_CTL_HTTP/readyz"
	start tally-b "$t" proxy --join-token-file "$data/join-token" --service backend \
		--app "127.0.0.1:$P_BACKEND" --inbound "127.0.0.1:$P_TALLY_IN" --admin-addr "127.0.0.1:$P_TALLY_ADMIN_B"
	local b=$LASTPID
	ready tally-b "$BT" wait-http -timeout 60s "http://127.0.0.1:$P_TALLY_ADMIN_B/readyz"
	start tally-a "$t" proxy --join-token-file "$data/join-token" --service client \
		--outbound "127.0.0.1:$P_TALLY_OUT" --admin-addr "127.0.0.1:$P_TALLY_ADMIN_A"
	local a=$LASTPID
	ready tally-a "$BT" wait-http -timeout 60s "http://127.0.0.1:$P_TALLY_ADMIN_A/readyz"
	URL[tally]=http://127.0.0.1:$P_TALLY_OUT
	HOPS[tally]="$a $b"
	AUX[tally]=$ctl
}

# nginx_conf DIR: the shared head of both nginx configurations.
nginx_head() {
	local dir=$1
	cat <<EOF
# worker_processes auto = one worker per core (2 here), as nginx is deployed; each hop
# gets the same cores every other proxy gets. Its CPU counts master and workers.
daemon off;
master_process on;
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy_temp;
    fastcgi_temp_path $dir/fastcgi_temp;
    uwsgi_temp_path $dir/uwsgi_temp;
    scgi_temp_path $dir/scgi_temp;
    # Never reconnect the benchmark's connections (default: after 1000 requests).
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    # 64 KiB responses fit in memory buffers: no temp files.
    proxy_buffer_size 16k;
    proxy_buffers 8 16k;
    proxy_max_temp_file_size 0;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
EOF
}

start_nginx() {
	local a=$TMP/nginx-a b=$TMP/nginx-b
	mkdir -p "$a" "$b"
	chmod 755 "$a" "$b"
	{
		nginx_head "$b"
		cat <<EOF
    upstream app {
        server 127.0.0.1:$P_BACKEND;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 120s;
    }
    server {
        listen 127.0.0.1:$P_NGINX_B ssl reuseport;
        ssl_certificate $CERTS/server.pem;
        ssl_certificate_key $CERTS/server.key;
        ssl_protocols TLSv1.3;
        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
        ssl_client_certificate $CERTS/ca.pem;
        ssl_verify_client on;
        location / { proxy_pass http://app; }
    }
}
EOF
	} >"$b/nginx.conf"
	{
		nginx_head "$a"
		cat <<EOF
    upstream hop_b {
        server 127.0.0.1:$P_NGINX_B;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 120s;
    }
    server {
        listen 127.0.0.1:$P_NGINX_A reuseport;
        location / {
            proxy_pass https://hop_b;
            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
            proxy_ssl_certificate $CERTS/client.pem;
            proxy_ssl_certificate_key $CERTS/client.key;
            proxy_ssl_trusted_certificate $CERTS/ca.pem;
            proxy_ssl_verify on;
            proxy_ssl_name backend.bench;
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;
        }
    }
}
EOF
	} >"$a/nginx.conf"
	local h pids=()
	for h in b a; do
		local dir=$TMP/nginx-$h
		timeout 20 nginx -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$TMP/logs/nginx-$h-check.log" 2>&1 || {
			cat "$TMP/logs/nginx-$h-check.log" >&2
			die "nginx-$h configuration rejected"
		}
		start "nginx-$h" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
		pids=("$LASTPID" "${pids[@]}")
	done
	URL[nginx]=http://127.0.0.1:$P_NGINX_A
	HOPS[nginx]="${pids[*]}"
}

haproxy_head() {
	cat <<EOF
global
    nbthread 2
    maxconn 4096
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-server-ciphersuites TLS_AES_128_GCM_SHA256
    ssl-default-server-options ssl-min-ver TLSv1.3
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    http-reuse always
EOF
}

start_haproxy() {
	local a=$TMP/haproxy-a.cfg b=$TMP/haproxy-b.cfg
	{
		haproxy_head
		cat <<EOF
frontend fe_b
    bind 127.0.0.1:$P_HAPROXY_B ssl crt $CERTS/server-bundle.pem ca-file $CERTS/ca.pem verify required alpn http/1.1
    default_backend app
backend app
    server app 127.0.0.1:$P_BACKEND
EOF
	} >"$b"
	{
		haproxy_head
		cat <<EOF
frontend fe_a
    bind 127.0.0.1:$P_HAPROXY_A
    default_backend hop_b
backend hop_b
    server b 127.0.0.1:$P_HAPROXY_B ssl verify required ca-file $CERTS/ca.pem crt $CERTS/client-bundle.pem sni str(backend.bench) verifyhost backend.bench alpn http/1.1
EOF
	} >"$a"
	local h pids=()
	for h in b a; do
		local cfg=$TMP/haproxy-$h.cfg
		timeout 20 haproxy -c -q -f "$cfg" >"$TMP/logs/haproxy-$h-check.log" 2>&1 || {
			cat "$TMP/logs/haproxy-$h-check.log" >&2
			die "haproxy-$h configuration rejected"
		}
		start "haproxy-$h" haproxy -db -f "$cfg"
		pids=("$LASTPID" "${pids[@]}")
	done
	URL[haproxy]=http://127.0.0.1:$P_HAPROXY_A
	HOPS[haproxy]="${pids[*]}"
}

start_goproxy() {
	start goproxy-b "$TMP/bin/goproxy" -listen "127.0.0.1:$P_GO_B" -upstream "http://127.0.0.1:$P_BACKEND" \
		-tls-cert "$CERTS/server.pem" -tls-key "$CERTS/server.key" -client-ca "$CERTS/ca.pem"
	local b=$LASTPID
	start goproxy-a "$TMP/bin/goproxy" -listen "127.0.0.1:$P_GO_A" -upstream "https://127.0.0.1:$P_GO_B" \
		-upstream-ca "$CERTS/ca.pem" -upstream-cert "$CERTS/client.pem" -upstream-key "$CERTS/client.key" \
		-upstream-name backend.bench -h2="$( [[ $GOPROXY_H2 == 0 ]] && echo false || echo true)"
	local a=$LASTPID
	URL[goproxy]=http://127.0.0.1:$P_GO_A
	HOPS[goproxy]="$a $b"
}

for cfg in "${CONFIGS[@]}"; do
	case $cfg in
	direct) ;;
	*)
		log "starting $cfg"
		"start_$cfg"
		;;
	esac
	# The whole chain answers with the backend's exact bodies before any load.
	for size in "${SIZES[@]}"; do
		ready "$cfg" "$BT" probe -timeout 30s -host "$HOST_HEADER" -size "${SIZE_BYTES[$size]}" "${URL[$cfg]}/$size"
	done
	for p in ${HOPS[$cfg]:-}; do alive "$p" || die "$cfg: ${PNAME[$p]} ($p) exited at start; see $TMP/logs/${PNAME[$p]}.log"; done
done

# ---- warm-up (not recorded) ---------------------------------------------------------------------
log "warm-up: ${WARMUP}s per configuration and size at c32"
for cfg in "${CONFIGS[@]}"; do
	for size in "${SIZES[@]}"; do
		wo=$TMP/logs/warmup-$cfg-$size.txt
		if ! timeout -k 5 $((WARMUP + 30)) wrk -t2 -c32 -d"${WARMUP}s" --timeout 5s -H "Host: $HOST_HEADER" \
			"${URL[$cfg]}/$size" >"$wo" 2>&1; then
			log "warning: warm-up of $cfg $size failed: $(tail -n 3 "$wo" | tr '\n' ' ')"
		elif grep -qE 'Socket errors|Non-2xx' "$wo"; then
			log "warning: warm-up of $cfg $size had errors: $(grep -E 'Socket errors|Non-2xx' "$wo" | tr '\n' ' ')"
		fi
	done
done

# ---- measurements ------------------------------------------------------------------------------
# children_cpu_delta BEFORE AFTER: CPU seconds of the children reaped in between, from
# two outputs of the `times` builtin (second line: children's user and system time).
children_cpu_delta() {
	awk 'FNR == 2 {
		t = 0
		for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] }
		if (NR == FNR) t0 = t; else t1 = t
	}
	END { printf "%.3f\n", t1 - t0 }' "$1" "$2"
}

# measure ROUND CONFIG SIZE CONC: one wrk run with CPU and peak-RSS samples around it,
# recorded as one raw CSV row. Returns non-zero when the measurement failed.
measure() {
	local r=$1 cfg=$2 size=$3 conc=$4
	local hops=${HOPS[$cfg]:-} aux=${AUX[$cfg]:-}
	local wo=$RUN_OUT/wrk/r$r-$cfg-$size-$conc.txt
	local rec=(-raw "$RAW" -round "$r" -config "$cfg" -size "$size" -conc "$conc" -hz "$HZ")
	local note="" p
	for p in $hops $aux "$BACKEND_PID"; do
		alive "$p" || note+="${PNAME[$p]} ($p) is gone; "
	done
	if [[ -n $note ]]; then
		"$BT" record "${rec[@]}" -note "${note%; }" || true
		return 1
	fi
	local c0="" c1="" a0="" a1="" b0 b1 rss=""
	if [[ -n $hops ]]; then
		# shellcheck disable=SC2086
		"$BT" hwm -reset $hops || note+="resetting peak RSS failed; "
		# shellcheck disable=SC2086
		c0=$("$BT" cpu $hops) || note+="CPU sample failed; "
	fi
	[[ -n $aux ]] && { a0=$("$BT" cpu "$aux") || note+="CPU sample failed; "; }
	b0=$("$BT" cpu "$BACKEND_PID") || note+="CPU sample failed; "

	local s0 s1 wrc=0
	s0=$("$BT" sys) || s0=""
	times >"$TMP/times0" # this shell's reaped children: wrk (via timeout) is the only one in between
	# shellcheck disable=SC2086
	timeout -k 5 $((DURATION + 30)) wrk ${WRK_ARGS[$conc]} -d"${DURATION}s" --latency --timeout 5s \
		-H "Host: $HOST_HEADER" "${URL[$cfg]}/$size" >"$wo" 2>&1 || wrc=$?
	times >"$TMP/times1"
	s1=$("$BT" sys) || s1=""

	b1=$("$BT" cpu "$BACKEND_PID") || note+="backend gone after the run; "
	[[ -n $aux ]] && { a1=$("$BT" cpu "$aux") || note+="${PNAME[$aux]} gone after the run; "; }
	if [[ -n $hops ]]; then
		# shellcheck disable=SC2086
		c1=$("$BT" cpu $hops) || note+="a $cfg hop is gone after the run; "
		# shellcheck disable=SC2086
		rss=$("$BT" hwm $hops) || rss=""
		rec+=(-cpu "$c0 $c1" -rss "$rss")
	fi
	[[ -n $aux ]] && rec+=(-aux-cpu "$a0 $a1")
	rec+=(-backend-cpu "$b0 $b1" -wrk "$wo" -wrk-exit "$wrc" -load "$(cut -d' ' -f1 /proc/loadavg)")
	rec+=(-sys0 "$s0" -sys1 "$s1" -wrk-cpu "$(children_cpu_delta "$TMP/times0" "$TMP/times1")")
	[[ -n $note ]] && rec+=(-note "${note%; }")
	"$BT" record "${rec[@]}"
}

FAILED=0
for ((r = 1; r <= ROUNDS; r++)); do
	log "round $r of $ROUNDS"
	for size in "${SIZES[@]}"; do
		for conc in "${CONCS[@]}"; do
			for cfg in "${CONFIGS[@]}"; do
				if ! measure "$r" "$cfg" "$size" "$conc"; then
					FAILED=$((FAILED + 1))
					log "MEASUREMENT FAILED: round $r $cfg $size $conc (wrk output: $RUN_OUT/wrk/r$r-$cfg-$size-$conc.txt)"
				fi
				sleep 0.3
			done
		done
	done
done

# ---- accounting --------------------------------------------------------------------------------
# With all its accounting on: every message the bench sent through tally was
# confirmed by the caller's sidecar, received by the callee's, and has its leaf
# in the control plane's ledger (which may lag by a batch), with no omission
# and no dropped record.
ACCOUNTING="not measured"
if has tally; then
	if ACCOUNTING=$("$BT" accounting -timeout 60s -caller "http://127.0.0.1:$P_TALLY_ADMIN_A/metrics" \
		-callee "http://127.0.0.1:$P_TALLY_ADMIN_B/metrics" -control "http://127.0.0.1:$P_CTL_HTTP/metrics" 2>&1); then
		log "tally accounting: $ACCOUNTING"
	else
		FAILED=$((FAILED + 1))
		ACCOUNTING="FAILED: $ACCOUNTING"
		log "MEASUREMENT FAILED: tally $ACCOUNTING"
	fi
fi

# ---- report ------------------------------------------------------------------------------------
{
	echo "date: $STAMP"
	echo "commit: $(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$REPO" diff --quiet HEAD -- 2>/dev/null || echo ' (dirty tree)')"
	echo "machine: $(nproc) cores, $(uname -sr), load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "duration: ${DURATION}s x $ROUNDS rounds, warm-up ${WARMUP}s; configurations: ${CONFIGS[*]}"
	echo "go: $(go version | cut -d' ' -f3)"
	echo "wrk: $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)"
	has tally && echo "tally control plane: $CONTROL_SCHED (${CONTROL_PREFIX[*]:-no prefix})"
	has tally && echo "tally accounting: $ACCOUNTING"
	has nginx && echo "nginx: $(nginx -v 2>&1 | cut -d' ' -f3-)"
	has haproxy && echo "haproxy: $(haproxy -v 2>&1 | head -n 1 | cut -d' ' -f3)"
	[[ -s $TMP/logs/goproxy-a.log ]] && grep -h 'speaks' "$TMP/logs/goproxy-a.log" | sed 's/^.*goproxy: /goproxy between hops: /' | head -n 1
	true
} >"$RUN_OUT/meta.txt"
title=$(printf '# Tally bench %s\n\n```\n%s\n```' "$STAMP" "$(cat "$RUN_OUT/meta.txt")")
report_args=(-raw "$RAW" -summary "$RUN_OUT/summary.csv" -md "$RUN_OUT/report.md"
	-configs "$(IFS=,; echo "${CONFIGS[*]}")" -title "$title")
[[ $ENFORCE == 1 ]] && report_args+=(-enforce)
echo
report_rc=0
"$BT" report "${report_args[@]}" || report_rc=$?
echo
log "results: $RUN_OUT/{report.md,summary.csv,raw.csv,meta.txt,wrk/} (also $OUT_ROOT/latest)"
log "took $(($(date +%s) - START_TS)) s (estimate was ~$estimate s plus builds)"
if ((FAILED > 0)); then
	log "$FAILED measurement(s) FAILED: see the errors column and the log above"
	exit 3
fi
((report_rc == 0)) || exit "$report_rc"

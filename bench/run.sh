#!/usr/bin/env bash
# smartdns load benchmark (issue 4): smartdns vs PowerDNS's geoip backend vs a "floor"
# Python responder, same zone and geo mapping, all on loopback, measured with dnsperf.
#
#   bench/run.sh                       # defaults: about 5 minutes
#   ROUNDS=3 DURATION=5 bench/run.sh   # shorter
#
# Settings (environment):
#   ROUNDS=3         rounds; every round runs every server once per load mode, interleaved
#   DURATION=8       seconds per dnsperf run
#   WARMUP=2         seconds of unmeasured load per server before the rounds (0: none)
#   RATE=20000       total qps of the fixed-rate mode, or several ("20000 40000"), each
#                    below every server's capacity (the report warns otherwise); 0: none
#   MAXLOAD=1        0 skips the max-load mode (as fast as dnsperf's window allows)
#   OUTSTANDING=100  dnsperf -q: queries in flight per dnsperf process
#   QUERIES=100000   lines per query file (measure.py writes new ones, with new random
#                    nonexistent names, for every round and load mode)
#   REUSE_QUERIES=0  1: one pair of query files for all runs, so the nonexistent names
#                    repeat (cached once seen) instead of being new every run
#   SERVERS="..."    which runs, in order; default: smartdns pdns floor smartdns-ecs, plus
#                    smartdns-w2 when `smartdns serve` has --workers. pdns-ecs is also known.
#   SERVER_CPUS=0    CPU list for the servers (taskset -c); CLIENT_CPUS=1 for dnsperf
#   RESULTS=bench/RESULTS.md   where the report goes ("" for nowhere)
#   KEEP_WORK=0      1 keeps the temporary directory (configs, logs) for a look afterwards
#
# Everything listens and sends on 127.0.0.0/8 only; every wait is bounded; every process
# started here is ended when the script exits, however it exits.
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH")

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
RATE=${RATE:-20000}
MAXLOAD=${MAXLOAD:-1}
OUTSTANDING=${OUTSTANDING:-100}
QUERIES=${QUERIES:-100000}
REUSE_QUERIES=${REUSE_QUERIES:-0}
SERVER_CPUS=${SERVER_CPUS:-0}
CLIENT_CPUS=${CLIENT_CPUS:-1}
RESULTS=${RESULTS-$BENCH/RESULTS.md}
KEEP_WORK=${KEEP_WORK:-0}

# Addresses. Each server has its own loopback address, all on port 5300. The clients send
# from two sources that the test GeoIP data (bench/geo.csv) puts in CN and in the US; the ECS
# runs carry a CN or a US client subnet instead.
PORT=5300
SMARTDNS_ADDR=127.0.0.10
PDNS_ADDR=127.0.0.11
FLOOR_ADDR=127.0.0.12
SMARTDNS_W2_ADDR=127.0.0.13
SMARTDNS_NOMETRICS_ADDR=127.0.0.14
SRC_DOMESTIC=127.0.1.1
SRC_OVERSEAS=127.0.2.1
ECS_DOMESTIC_PREFIX=1.0.1.0/24
ECS_OVERSEAS_PREFIX=8.8.8.0/24
# ECS option payloads (RFC 7871): family 1 (IPv4), source prefix 24, scope 0, 3 address bytes.
ECS_DOMESTIC_HEX=00011800010001
ECS_OVERSEAS_HEX=00011800080808
# What the example zone answers for mx.example.com A on each side.
DOMESTIC_A=192.0.2.10
OVERSEAS_A_RE='^198\.51\.100\.1[01]$'

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'bench/run.sh: %s\n' "$*" >&2; exit 1; }

# --- 1. tools ----------------------------------------------------------------------------------

# Debian packages: dnsperf, PowerDNS with the geoip backend, kdig for the answer checks.
need=()
command -v dnsperf >/dev/null || need+=(dnsperf)
command -v pdns_server >/dev/null || need+=(pdns-server)
dpkg -s pdns-backend-geoip >/dev/null 2>&1 || need+=(pdns-backend-geoip)
command -v kdig >/dev/null || need+=(knot-dnsutils)
command -v taskset >/dev/null || need+=(util-linux)
command -v ss >/dev/null || need+=(iproute2)
if ((${#need[@]})); then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The pdns-server package may start a daemon on port 53 (where an init system runs its
# scripts). It is not ours to measure: stop it, by PID, and only pdns_server processes.
for pid in $(ss -lunptH 2>/dev/null | awk '$5 ~ /:53$/' | grep -o '"pdns_[a-z]*",pid=[0-9]*' | sed 's/.*pid=//' | sort -u); do
    log "stopping the packaged pdns_server daemon (pid $pid) listening on port 53"
    kill "$pid" 2>/dev/null || true
done

# The project, from this checkout (editable, so the running code is the tree's code).
PY=$(command -v python3) || die "python3 not found"
if ! "$PY" -c 'import smartdns' 2>/dev/null; then
    log "installing smartdns from $REPO"
    (cd "$REPO" && "$PY" -m pip install -q -e .)
fi
PY=$("$PY" -c 'import sys; print(sys.executable)')  # the real interpreter, not a shim
SMARTDNS=("$PY" -m smartdns)

# --workers: used when `smartdns serve` has it (one worker for the one-core comparison).
HAS_WORKERS=0
[[ $("${SMARTDNS[@]}" serve --help) == *--workers* ]] && HAS_WORKERS=1
if [[ -z ${SERVERS:-} ]]; then
    SERVERS="smartdns pdns floor smartdns-ecs smartdns-nometrics"
    ((HAS_WORKERS)) && SERVERS+=" smartdns-w2"
fi
if [[ " $SERVERS " == *" smartdns-w2 "* ]] && ((!HAS_WORKERS)); then
    die "smartdns-w2 asked for, but 'smartdns serve' has no --workers"
fi

# Nothing of ours may still be listening (a previous run killed with -9, say).
for addr in $SMARTDNS_ADDR $PDNS_ADDR $FLOOR_ADDR $SMARTDNS_W2_ADDR $SMARTDNS_NOMETRICS_ADDR; do
    if ss -lunH "src $addr:$PORT" 2>/dev/null | grep -q .; then
        die "something already listens on $addr:$PORT: $(ss -lunpH "src $addr:$PORT")"
    fi
done

# --- 2. test data ------------------------------------------------------------------------------

WORK=$(mktemp -d /tmp/smartdns-bench.XXXXXX)
STARTED=()    # server PIDs (each the leader of its own process group) to end on exit
MEASURE_PID=  # measure.py while it runs (leader of its group, with its dnsperf processes)

cleanup() {
    local pid i
    [[ -n $MEASURE_PID ]] && kill -TERM -- "-$MEASURE_PID" 2>/dev/null
    for pid in "${STARTED[@]}"; do
        kill -TERM -- "-$pid" 2>/dev/null || true  # the server and any workers it forked
    done
    for pid in "${STARTED[@]}"; do
        for i in $(seq 1 30); do  # up to 3 s each to exit cleanly
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    if ((KEEP_WORK)); then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building test data in $WORK"
"${SMARTDNS[@]}" geodb build "$BENCH/geo.csv" -o "$WORK/geo.mmdb" >/dev/null
mkdir -p "$WORK/zones" "$WORK/pdns/run"
cp "$REPO/zones/example.com.yaml" "$WORK/zones/"
sed "s|@WORK@|$WORK|g" "$BENCH/pdns/pdns.conf.in" >"$WORK/pdns/pdns.conf"
cp "$BENCH/pdns/zones.yaml" "$WORK/pdns/zones.yaml"

# --- 3. servers --------------------------------------------------------------------------------

# start NAME CPUS COMMAND...: run COMMAND pinned to CPUS in a new session (so its PID is also
# its process group, which cleanup kills whole), output to $WORK/NAME.log; sets LAST_PID.
start() {
    local name=$1 cpus=$2
    shift 2
    setsid taskset -c "$cpus" "$@" >"$WORK/$name.log" 2>&1 </dev/null &
    LAST_PID=$!
    STARTED+=("$LAST_PID")
}

# ask SRC ADDR NAME TYPE [kdig options]: the answer section, one value a line.
ask() {
    local src=$1 addr=$2
    shift 2
    kdig -b "$src" @"$addr" -p "$PORT" +short +timeout=1 +retry=0 "$@" 2>/dev/null || true
}

# wait_up NAME ADDR PID: until ADDR answers a query (at most 15 s), or die with the log.
wait_up() {
    local name=$1 addr=$2 pid=$3 deadline=$((SECONDS + 15))
    while ((SECONDS < deadline)); do
        kill -0 "$pid" 2>/dev/null || { cat "$WORK/$name.log" >&2; die "$name exited at start"; }
        [[ -n $(ask "$SRC_DOMESTIC" "$addr" example.com MX) ]] && return 0
        sleep 0.25
    done
    cat "$WORK/$name.log" >&2
    die "$name did not answer on $addr:$PORT within 15 s"
}

# check_geo NAME ADDR [kdig options]: the domestic source must get the domestic exchange, the
# overseas source an overseas one; the MX answer and NXDOMAIN must be right too.
check_geo() {
    local name=$1 addr=$2 got
    shift 2
    got=$(ask "$SRC_DOMESTIC" "$addr" mx.example.com A "$@")
    [[ $got == "$DOMESTIC_A" ]] || die "$name: domestic source got '$got' for mx.example.com A, not $DOMESTIC_A"
    got=$(ask "$SRC_OVERSEAS" "$addr" mx.example.com A "$@")
    [[ $got =~ $OVERSEAS_A_RE ]] || die "$name: overseas source got '$got' for mx.example.com A, not 198.51.100.10/11"
    got=$(ask "$SRC_OVERSEAS" "$addr" example.com MX "$@")
    [[ $got == "10 mx.example.com." ]] || die "$name: example.com MX answered '$got'"
    got=$(kdig -b "$SRC_OVERSEAS" @"$addr" -p "$PORT" +timeout=1 +retry=0 nonexistent-name.example.com A 2>/dev/null | grep -o 'status: [A-Z]*' || true)
    [[ $got == "status: NXDOMAIN" ]] || die "$name: a nonexistent name got '$got', not NXDOMAIN"
    log "$name answers domestic/overseas correctly${*:+ ($*)}"
}

# check_ecs NAME ADDR: with ECS the subnet decides, not the source (sources swapped on purpose).
check_ecs() {
    local name=$1 addr=$2 got
    got=$(ask "$SRC_OVERSEAS" "$addr" mx.example.com A +subnet=$ECS_DOMESTIC_PREFIX)
    [[ $got == "$DOMESTIC_A" ]] || die "$name: ECS $ECS_DOMESTIC_PREFIX got '$got', not $DOMESTIC_A"
    got=$(ask "$SRC_DOMESTIC" "$addr" mx.example.com A +subnet=$ECS_OVERSEAS_PREFIX)
    [[ $got =~ $OVERSEAS_A_RE ]] || die "$name: ECS $ECS_OVERSEAS_PREFIX got '$got', not 198.51.100.10/11"
    log "$name answers by ECS correctly"
}

wants() { [[ " $SERVERS " == *" $1 "* ]]; }

MEASURE=()  # --server/--ecs/--note arguments for measure.py

if wants smartdns || wants smartdns-ecs; then
    workers=()
    ((HAS_WORKERS)) && workers=(--workers 1)
    start smartdns "$SERVER_CPUS" "${SMARTDNS[@]}" serve --listen "$SMARTDNS_ADDR:$PORT" \
        --zones "$WORK/zones" --geodb "$WORK/geo.mmdb" "${workers[@]}"
    SMARTDNS_PID=$LAST_PID
    wait_up smartdns "$SMARTDNS_ADDR" "$SMARTDNS_PID"
    check_geo smartdns "$SMARTDNS_ADDR"
    check_geo smartdns "$SMARTDNS_ADDR" +edns
    check_ecs smartdns "$SMARTDNS_ADDR"
fi
if wants pdns || wants pdns-ecs; then
    start pdns "$SERVER_CPUS" pdns_server --config-dir="$WORK/pdns"
    PDNS_PID=$LAST_PID
    wait_up pdns "$PDNS_ADDR" "$PDNS_PID"
    check_geo pdns "$PDNS_ADDR"
    wants pdns-ecs && check_ecs pdns "$PDNS_ADDR"
fi
if wants floor; then
    start floor "$SERVER_CPUS" "$PY" "$BENCH/floor.py" --listen "$FLOOR_ADDR:$PORT" --lifetime 3600
    FLOOR_PID=$LAST_PID
    wait_up floor "$FLOOR_ADDR" "$FLOOR_PID"
fi
if wants smartdns-nometrics; then
    # The same server with `metrics: false`: no counting on the hot path (issue 5's <10% check).
    printf 'metrics: false\n' >"$WORK/nometrics.yaml"
    workers=()
    ((HAS_WORKERS)) && workers=(--workers 1)
    start smartdns-nometrics "$SERVER_CPUS" "${SMARTDNS[@]}" serve --config "$WORK/nometrics.yaml" \
        --listen "$SMARTDNS_NOMETRICS_ADDR:$PORT" --zones "$WORK/zones" --geodb "$WORK/geo.mmdb" "${workers[@]}"
    NOMETRICS_PID=$LAST_PID
    wait_up smartdns-nometrics "$SMARTDNS_NOMETRICS_ADDR" "$NOMETRICS_PID"
    check_geo smartdns-nometrics "$SMARTDNS_NOMETRICS_ADDR"
fi
if wants smartdns-w2; then
    # Two workers on all CPUs; dnsperf shares CLIENT_CPUS with one of them on a 2-core machine.
    start smartdns-w2 "0-$(($(nproc) - 1))" "${SMARTDNS[@]}" serve --listen "$SMARTDNS_W2_ADDR:$PORT" \
        --zones "$WORK/zones" --geodb "$WORK/geo.mmdb" --workers 2
    W2_PID=$LAST_PID
    wait_up smartdns-w2 "$SMARTDNS_W2_ADDR" "$W2_PID"
    check_geo smartdns-w2 "$SMARTDNS_W2_ADDR"
fi

for name in $SERVERS; do
    case $name in
    smartdns) MEASURE+=(--server "smartdns=$SMARTDNS_ADDR:$PORT:$SMARTDNS_PID")
        ((HAS_WORKERS)) && MEASURE+=(--note "smartdns=--workers 1") ;;
    smartdns-ecs) MEASURE+=(--server "smartdns-ecs=$SMARTDNS_ADDR:$PORT:$SMARTDNS_PID" --ecs smartdns-ecs
        --note "smartdns-ecs=the smartdns process above, ECS on every query") ;;
    pdns) MEASURE+=(--server "pdns=$PDNS_ADDR:$PORT:$PDNS_PID"
        --note "pdns=PowerDNS geoip backend, 1 receiver + 1 distributor thread, default caches") ;;
    pdns-ecs) MEASURE+=(--server "pdns-ecs=$PDNS_ADDR:$PORT:$PDNS_PID" --ecs pdns-ecs
        --note "pdns-ecs=the pdns process above, ECS on every query") ;;
    floor) MEASURE+=(--server "floor=$FLOOR_ADDR:$PORT:$FLOOR_PID"
        --note "floor=bench/floor.py: blocking recvfrom/sendto loop, fixed reply") ;;
    smartdns-nometrics) MEASURE+=(--server "smartdns-nometrics=$SMARTDNS_NOMETRICS_ADDR:$PORT:$NOMETRICS_PID"
        --note "smartdns-nometrics=as smartdns, with metrics: false (no counting)") ;;
    smartdns-w2) MEASURE+=(--server "smartdns-w2=$SMARTDNS_W2_ADDR:$PORT:$W2_PID"
        --note "smartdns-w2=--workers 2 on CPUs 0-$(($(nproc) - 1)), sharing CPU $CLIENT_CPUS with dnsperf") ;;
    *) die "unknown server '$name' in SERVERS" ;;
    esac
done

# --- 4. measure --------------------------------------------------------------------------------

extra=()
for rate in $RATE; do extra+=(--rate "$rate"); done
((MAXLOAD)) || extra+=(--no-max)
((REUSE_QUERIES)) && extra+=(--reuse-queries)
[[ -n $RESULTS ]] && extra+=(--results "$RESULTS")
# In the background and waited for, so that Ctrl-C or a TERM reaches the trap at once (bash
# runs traps only between foreground commands); its own process group holds its dnsperfs.
setsid "$PY" "$BENCH/measure.py" "${MEASURE[@]}" "${extra[@]}" \
    --src-domestic "$SRC_DOMESTIC" --src-overseas "$SRC_OVERSEAS" \
    --workdir "$WORK" --queries-lines "$QUERIES" \
    --ecs-domestic "$ECS_DOMESTIC_HEX" --ecs-overseas "$ECS_OVERSEAS_HEX" \
    --ecs-domestic-prefix "$ECS_DOMESTIC_PREFIX" --ecs-overseas-prefix "$ECS_OVERSEAS_PREFIX" \
    --rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" \
    --outstanding "$OUTSTANDING" --server-cpus "$SERVER_CPUS" --client-cpus "$CLIENT_CPUS" \
    --repo "$REPO" </dev/null &
MEASURE_PID=$!
wait "$MEASURE_PID"
MEASURE_PID=

# The servers must have survived the load.
for pid in "${STARTED[@]}"; do
    kill -0 "$pid" 2>/dev/null || die "a server (pid $pid) died during the benchmark; see KEEP_WORK=1 logs"
done

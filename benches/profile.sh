#!/usr/bin/env bash
# Profiles Meridian alone under wrk load on loopback: two nginx backends (peerbench's
# backend config), Meridian via peerbench-candidate.sh, wrk -t1 -c64 for DURATION seconds.
# Reports req/s, Meridian CPU µs/request, TIME_WAIT sockets towards the backends (i.e.
# upstream connections that were closed, not reused) and, with PERF=1, a `perf record -g`
# profile of the Meridian process (report in $WORKDIR/perf.txt). Bounded: every process is
# started here and stopped by PID on exit; wrk and perf stop after DURATION seconds.
#
#   benches/profile.sh                 # DURATION=10 CONNS=64
#   PERF=1 benches/profile.sh
#   STRACE=1 benches/profile.sh        # syscall counts per request ($WORKDIR/strace.txt)
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10} CONNS=${CONNS:-64} PERF=${PERF:-0}
WORKDIR=${WORKDIR:-$(mktemp -d /tmp/meridian-prof.XXXXXX)}
mkdir -p "$WORKDIR"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done; sleep 0.5
            for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
body="peerbench-64-byte-body-0123456789abcdefghijklmnopqrstuvwxyzABCDE"
for i in 1 2; do
    d=$WORKDIR/backend$i; mkdir -p "$d/tmp"
    cat > "$d.conf" <<CONF
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    access_log off; server_tokens off; keepalive_timeout 60s; keepalive_requests 1000000;
    client_body_temp_path $d/tmp/cb; proxy_temp_path $d/tmp/px; fastcgi_temp_path $d/tmp/fc;
    uwsgi_temp_path $d/tmp/uw; scgi_temp_path $d/tmp/sc;
    server {
        listen 127.0.0.1:1900$i backlog=4096;
        location = /healthz { return 200 "ok"; }
        location / { return 200 "$body"; }
    }
}
CONF
    taskset -c 0 nginx -c "$d.conf" -g 'daemon off;' -p "$d" >/dev/null 2>&1 &
    pids+=($!)
done
PB_LISTEN=127.0.0.1:19104 PB_PORT=19104 PB_BACKENDS=127.0.0.1:19001,127.0.0.1:19002 \
PB_HEALTH_PATH=/healthz PB_THREADS=${THREADS:-1} PB_WORKDIR=$WORKDIR \
    taskset -c 1 "$here/benches/peerbench-candidate.sh" > "$WORKDIR/meridian.log" 2>&1 &
mpid=$!; pids+=($mpid)
for _ in $(seq 100); do
    [[ $(curl -s --max-time 1 http://127.0.0.1:19104/) == "$body" ]] && break; sleep 0.2
done
[[ $(curl -s --max-time 1 http://127.0.0.1:19104/) == "$body" ]] || { echo "meridian not ready"; exit 1; }
taskset -c 0 wrk -t1 -c"$CONNS" -d3s http://127.0.0.1:19104/ > /dev/null   # warm-up
sleep 1
tw0=$(ss -tan state time-wait '( dport = :19001 or dport = :19002 )' | tail -n +2 | wc -l)
t0=$(awk '{print $14+$15}' "/proc/$mpid/stat")
if [[ ${STRACE:-0} == 1 ]]; then     # syscall counts (slows Meridian down; counts only)
    timeout -s INT "$DURATION" strace -c -f -p "$mpid" -o "$WORKDIR/strace.txt" > /dev/null 2>&1 &
    pids+=($!)
fi
if [[ $PERF == 1 ]]; then
    perf record -F 999 -g --call-graph dwarf,16384 -p "$mpid" -o "$WORKDIR/perf.data" \
        -- sleep "$DURATION" > /dev/null 2>&1 &
    pids+=($!)
fi
taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency http://127.0.0.1:19104/ > "$WORKDIR/wrk.txt"
t1=$(awk '{print $14+$15}' "/proc/$mpid/stat")
tw1=$(ss -tan state time-wait '( dport = :19001 or dport = :19002 )' | tail -n +2 | wc -l)
upstream=$(ss -tan state established '( dport = :19001 or dport = :19002 )' | tail -n +2 | wc -l)
reqs=$(awk '/requests in/{print $1}' "$WORKDIR/wrk.txt")
rps=$(awk '/Requests\/sec/{print $2}' "$WORKDIR/wrk.txt")
p50=$(awk '$1=="50%"{print $2}' "$WORKDIR/wrk.txt")
echo "req/s $rps  p50 $p50  requests $reqs  cpu_us/req $(( (t1 - t0) * 1000000 / $(getconf CLK_TCK) / reqs ))" \
     " time_wait->backends before $tw0 after $tw1  established->backends $upstream"
echo "VmHWM $(awk '/VmHWM/{print $2, $3}' /proc/$mpid/status)"
if [[ ${STRACE:-0} == 1 ]]; then
    sleep 1; echo "syscalls per request (over $reqs requests):"
    awk -v n="$reqs" '$NF ~ /^[a-z_0-9]+$/ && $(NF-1) ~ /^[0-9]+$/ && $NF != "total" {c=($(NF-2) ~ /^[0-9]+$/ && NF==6) ? $(NF-2) : $4; printf "  %-16s %.2f\n", $NF, $4/n}' "$WORKDIR/strace.txt" | sort -k2 -rn | head -12
fi
if [[ $PERF == 1 ]]; then
    wait "${pids[-1]}" 2>/dev/null
    perf report -i "$WORKDIR/perf.data" --no-children --percent-limit 0.7 --stdio \
        --sort symbol -g none > "$WORKDIR/perf.txt" 2>/dev/null
    perf report -i "$WORKDIR/perf.data" --children --percent-limit 3 --stdio \
        --sort symbol -g none > "$WORKDIR/perf-children.txt" 2>/dev/null
    echo "perf: $WORKDIR/perf.txt $WORKDIR/perf-children.txt"
fi

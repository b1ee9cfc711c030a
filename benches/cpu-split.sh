#!/usr/bin/env bash
# Where a proxy's CPU goes per request: user vs kernel microseconds, for nginx, HAProxy and
# Meridian (release build) under the same wrk load, one worker each pinned to CPU 1, wrk and
# two nginx backends on CPU 0 (as ../shared/peerbench does). Rounds rotate over the targets.
# Reads utime/stime of the proxy process from /proc before and after each run.
#
#   benches/cpu-split.sh                 # ROUNDS=3 DURATION=8 CONNS=64
#
# Bounded: every process is started here and stopped by PID on exit; each wrk run stops
# after DURATION seconds. Loopback only. Needs nginx, haproxy, wrk (apt-get install).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${MERIDIAN_BIN:-$here/target/release/meridian}
[[ -x $bin ]] || { echo "cpu-split: $bin not built (cargo build --release)" >&2; exit 1; }
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-8} CONNS=${CONNS:-64}
W=$(mktemp -d /tmp/meridian-cpu.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done; sleep 0.5
            for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done; }
trap cleanup EXIT
body="peerbench-64-byte-body-0123456789abcdefghijklmnopqrstuvwxyzABCDE"
temp_paths() { echo "client_body_temp_path $1/cb; proxy_temp_path $1/px; fastcgi_temp_path $1/fc; uwsgi_temp_path $1/uw; scgi_temp_path $1/sc;"; }
for i in 1 2; do
    d=$W/backend$i; mkdir -p "$d"
    cat > "$d.conf" <<CONF
worker_processes 1; pid $d/nginx.pid; error_log $d/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_timeout 60s; keepalive_requests 1000000; $(temp_paths "$d")
  server { listen 127.0.0.1:1900$i backlog=4096;
    location = /healthz { return 200 "ok"; } location / { return 200 "$body"; } } }
CONF
    taskset -c 0 nginx -c "$d.conf" -g 'daemon off;' -p "$d" >/dev/null 2>&1 & pids+=($!)
done
mkdir -p "$W/nginx"
cat > "$W/nginx.conf" <<CONF
worker_processes 1; pid $W/nginx/nginx.pid; error_log $W/nginx/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_timeout 60s; keepalive_requests 1000000; $(temp_paths "$W/nginx")
  upstream be { server 127.0.0.1:19001 max_fails=3 fail_timeout=5s; server 127.0.0.1:19002 max_fails=3 fail_timeout=5s;
    keepalive 64; keepalive_requests 1000000; keepalive_timeout 60s; }
  server { listen 127.0.0.1:19101 backlog=4096;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
taskset -c 1 nginx -c "$W/nginx.conf" -g 'daemon off;' -p "$W/nginx" >/dev/null 2>&1 & pids+=($!)
cat > "$W/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 60s
frontend fe
    bind 127.0.0.1:19102
    default_backend be
backend be
    balance roundrobin
    http-reuse always
    option httpchk GET /healthz
    http-check expect status 200
    server b1 127.0.0.1:19001 check inter 1s fall 3 rise 2
    server b2 127.0.0.1:19002 check inter 1s fall 3 rise 2
CONF
taskset -c 1 haproxy -f "$W/haproxy.cfg" -db >/dev/null 2>&1 & hpid=$!; pids+=($hpid)
PB_LISTEN=127.0.0.1:19104 PB_PORT=19104 PB_BACKENDS=127.0.0.1:19001,127.0.0.1:19002 \
PB_HEALTH_PATH=/healthz PB_THREADS=1 PB_WORKDIR=$W MERIDIAN_BIN=$bin \
    taskset -c 1 "$here/benches/peerbench-candidate.sh" > "$W/meridian.log" 2>&1 & mpid=$!; pids+=($mpid)
for _ in $(seq 100); do
    [[ $(curl -s --max-time 1 http://127.0.0.1:19104/) == "$body" ]] && break; sleep 0.2
done
npid=$(pgrep -P "$(cat "$W/nginx/nginx.pid")" | head -1)
measure() { local name=$1 port=$2 pid=$3
    taskset -c 0 wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$port/" > /dev/null
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$port/" > "$W/wrk.txt"
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    local n rps tck
    n=$(awk '/requests in/{print $1}' "$W/wrk.txt"); rps=$(awk '/Requests\/sec/{print $2}' "$W/wrk.txt")
    tck=$(getconf CLK_TCK)
    awk -v n="$n" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v r="$rps" -v nm="$name" -v t="$tck" 'BEGIN{
        printf "%-9s %8.0f req/s   user %5.1f   kernel %5.1f   total %5.1f us/request\n",
               nm, r, u*1e6/t/n, s*1e6/t/n, (u+s)*1e6/t/n}'
}
echo "wrk -t1 -c$CONNS -d${DURATION}s, $ROUNDS rounds; one worker each on CPU 1; wrk and backends on CPU 0"
for r in $(seq "$ROUNDS"); do
    measure nginx 19101 "$npid"
    measure haproxy 19102 "$hpid"
    measure meridian 19104 "$mpid"
done

#!/usr/bin/env bash
# Instructions per proxied request (callgrind, user space) of nginx, HAProxy and one or more
# Meridian binaries, in one run: ../shared/peerbench/instr.sh (same backends, configs, load
# and method), extended to measure several Meridian builds side by side (before/after a
# change) and to print exact integer totals. The callgrind profiles are kept in the printed
# workdir (callgrind_annotate cg.<name>.<pid>.1).
#   benches/instr.sh [MERIDIAN_BIN ...]   default target/release/meridian; N=20000 C=16
set -uo pipefail
BINS=("${@:-target/release/meridian}")
N=${N:-20000}; C=${C:-16}
W=$(mktemp -d /tmp/instr.XXXXXX); pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done; sleep 1   # TERM: nginx masters stop their workers
           for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done; }
trap cleanup EXIT
body="instr-64-byte-body-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"
for i in 1 2; do
  cat > $W/b$i.conf <<CONF
worker_processes 1; pid $W/b$i.pid; error_log $W/b$i.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:1930$i; location = /healthz { return 200 "ok"; } location / { return 200 "$body"; } } }
CONF
  nginx -c $W/b$i.conf -g 'daemon off;' -p $W >/dev/null 2>&1 & pids+=($!)
done
cat > $W/nginx.conf <<CONF
worker_processes 1; master_process off; daemon off; pid $W/px.pid; error_log $W/px.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream be { server 127.0.0.1:19301; server 127.0.0.1:19302; keepalive 64; }
  server { listen 127.0.0.1:19310; location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
cat > $W/haproxy.cfg <<CONF
global
  nbthread 1
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend f
  bind 127.0.0.1:19311
  default_backend b
backend b
  balance roundrobin
  option httpchk GET /healthz
  server s1 127.0.0.1:19301 check inter 1s
  server s2 127.0.0.1:19302 check inter 1s
CONF
cat > $W/meridian.toml <<CONF
threads = 1
[node]
region = "bench"
[listeners]
http = ["127.0.0.1:19312"]
admin = "127.0.0.1:19313"
[logging]
access_log = false
[health_check]
interval = "1s"
timeout = "500ms"
[reload]
watch = false
[regions.bench]
latitude = 0.0
longitude = 0.0
balance = "round_robin"
backends = [ { address = "127.0.0.1:19301" }, { address = "127.0.0.1:19302" } ]
CONF
measure() { # name port cmd...
  local name=$1 port=$2; shift 2
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$W/cg.$name.%p "$@" > $W/$name.log 2>&1 &
  local vp=$!; pids+=($vp)
  for _ in $(seq 150); do [[ $(curl -s --max-time 2 http://127.0.0.1:$port/) == "$body" ]] && break; sleep 0.3; done
  [[ $(curl -s --max-time 2 http://127.0.0.1:$port/) == "$body" ]] || { echo "$name: not serving"; return; }
  h2load --h1 -n 2000 -c $C http://127.0.0.1:$port/ > /dev/null 2>&1   # warm-up, uninstrumented
  callgrind_control -i on $vp > /dev/null 2>&1
  local out; out=$(h2load --h1 -n $N -c $C http://127.0.0.1:$port/ 2>&1 | grep -E 'succeeded')
  callgrind_control -i off $vp > /dev/null 2>&1
  callgrind_control -d $vp > /dev/null 2>&1; sleep 1
  kill -TERM $vp 2>/dev/null; sleep 2; kill -KILL $vp 2>/dev/null
  local ir; ir=$(cat $W/cg.$name.* 2>/dev/null | awk '/^totals:/{s+=$2} END{printf "%.0f", s}')
  printf '%-12s %12s instructions / %s requests = %8d per request   (%s)\n' "$name" "$ir" "$N" "$((ir / N))" "$out"
}
sleep 1
measure nginx 19310 nginx -c $W/nginx.conf -p $W
measure haproxy 19311 haproxy -db -f $W/haproxy.cfg
i=0
for bin in "${BINS[@]}"; do
  i=$((i + 1)); name=meridian; [[ ${#BINS[@]} -gt 1 ]] && name=meridian$i
  echo "$name = $bin"
  measure $name 19312 "$bin" run --config $W/meridian.toml
done
echo "workdir $W"

#!/usr/bin/env bash
# HTTP/2 (h2c, prior knowledge) load comparison with h2load: Meridian, nginx and HAProxy in
# one run, each with one worker/thread pinned to CPU 1, in front of the same nginx backend;
# h2load and the backend on CPU 0. "direct" is h2load straight to the backend's own h2c
# listener (the floor). The upstream is HTTP/1.1 keep-alive, or with UPSTREAM=h2c HTTP/2
# end to end: Meridian `[upstream] protocol = "h2c"` (streams multiplexed on its pooled
# connections), nginx its only HTTP/2 upstream (`grpc_pass`, one request per connection at a
# time), HAProxy `proto h2`.
#
#   benches/h2.sh                 # 3 rounds x 10 s per target, 16 clients x 10 streams
#   UPSTREAM=h2c benches/h2.sh    # HTTP/2 to the backend too
#   NO_BUILD=1 benches/h2.sh      # skip cargo build
#
# Variables: UPSTREAM (h1 or h2c), DURATION (10), ROUNDS (3), CLIENTS (16), STREAMS (10),
# PEERS ("nginx haproxy"), PIN (1), MAX_TOTAL (240 s: the whole run is killed after it),
# WORKDIR (temp dir).
# Loopback only; every process started here is stopped by PID on exit.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10} ROUNDS=${ROUNDS:-3} CLIENTS=${CLIENTS:-16} STREAMS=${STREAMS:-10}
PEERS=${PEERS-"nginx haproxy"} PIN=${PIN:-1} MAX_TOTAL=${MAX_TOTAL:-240} UPSTREAM=${UPSTREAM:-h1}
[[ $UPSTREAM == h1 || $UPSTREAM == h2c ]] || { echo "h2.sh: UPSTREAM=$UPSTREAM: h1 or h2c" >&2; exit 1; }
WORKDIR=${WORKDIR:-$(mktemp -d /tmp/meridian-h2.XXXXXX)}
mkdir -p "$WORKDIR"
BODY=$(printf 'x%.0s' $(seq 64))
BE_H1=19301 BE_H2=19302
declare -A PORT=([direct]=$BE_H2 [nginx]=19311 [haproxy]=19312 [meridian]=19313)
if [[ $UPSTREAM == h1 ]]; then
    BE_UP=$BE_H1 MERIDIAN_UPSTREAM=""
    NGINX_PASS='proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";'
    HAPROXY_SERVER="option httpchk GET /healthz
    server b1 127.0.0.1:$BE_H1 check inter 1s fall 3 rise 2"
else
    BE_UP=$BE_H2 MERIDIAN_UPSTREAM=$'[upstream]\nprotocol = "h2c"\nh2_max_streams = 100\n'
    NGINX_PASS='grpc_pass grpc://be;'
    # A TCP check: an HTTP/2 httpchk without :authority gets a 400 from nginx.
    HAPROXY_SERVER="server b1 127.0.0.1:$BE_H2 proto h2 check inter 1s fall 3 rise 2"
fi
declare -A PID=()

for tool in h2load nginx curl; do
    command -v "$tool" >/dev/null || { echo "h2.sh: $tool missing (apt-get install nghttp2-client nginx curl)" >&2; exit 1; }
done
[[ $PEERS == *haproxy* ]] && ! command -v haproxy >/dev/null && { echo "h2.sh: haproxy missing" >&2; exit 1; }
estimate=$(( ( ${#PORT[@]} ) * ROUNDS * (DURATION + 3) + 20 ))
(( estimate <= MAX_TOTAL )) || { echo "h2.sh: estimated ${estimate}s > MAX_TOTAL=${MAX_TOTAL}s" >&2; exit 1; }

if [[ -z ${NO_BUILD:-} ]]; then
    (cd "$here" && cargo build --release -p meridian --bin meridian)
fi
export MERIDIAN_BIN=${MERIDIAN_BIN:-$here/target/release/meridian}

cleanup() {
    local p
    for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${PID[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
( sleep "$MAX_TOTAL"; echo "h2.sh: MAX_TOTAL=${MAX_TOTAL}s reached, stopping" >&2; kill -TERM $$ ) &
PID[watchdog]=$!

pin() { if [[ $PIN == 1 ]]; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }
start() {  # start NAME CPU CMD... (no subshell in between: $! is the process itself)
    local name=$1 cpu=$2 pre=(); shift 2
    [[ $PIN == 1 ]] && pre=(taskset -c "$cpu")
    "${pre[@]}" "$@" >"$WORKDIR/$name.log" 2>&1 </dev/null &
    PID[$name]=$!
}
tree() { echo "$1"; pgrep -P "$1" || true; }  # a process and its children (nginx workers)
nginx_top() {
    mkdir -p "$WORKDIR/$1/tmp"
    cat <<EOF
worker_processes 1;
daemon off;
pid $WORKDIR/$1/nginx.pid;
error_log $WORKDIR/$1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    server_tokens off;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    http2_max_requests 1000000;
    client_body_temp_path $WORKDIR/$1/tmp/cb;
    proxy_temp_path $WORKDIR/$1/tmp/px;
    fastcgi_temp_path $WORKDIR/$1/tmp/fc;
    uwsgi_temp_path $WORKDIR/$1/tmp/uw;
    scgi_temp_path $WORKDIR/$1/tmp/sc;
EOF
}

{   nginx_top backend
    cat <<EOF
    server {
        listen 127.0.0.1:$BE_H1 backlog=4096;
        listen 127.0.0.1:$BE_H2 http2 backlog=4096;
        default_type text/plain;
        location = /healthz { return 200 "ok"; }
        location / { return 200 "$BODY"; }
    }
}
EOF
} >"$WORKDIR/backend.conf"
start backend 0 nginx -c "$WORKDIR/backend.conf"

targets=(direct)
if [[ $PEERS == *nginx* ]]; then
    {   nginx_top nginx
        cat <<EOF
    upstream be { server 127.0.0.1:$BE_UP; keepalive 64; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:${PORT[nginx]} http2 backlog=4096;
        location / { $NGINX_PASS }
    }
}
EOF
    } >"$WORKDIR/nginx.conf"
    start nginx 1 nginx -c "$WORKDIR/nginx.conf"
    targets+=(nginx)
fi
if [[ $PEERS == *haproxy* ]]; then
    cat >"$WORKDIR/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 60s
frontend fe
    bind 127.0.0.1:${PORT[haproxy]} proto h2
    default_backend be
backend be
    http-reuse always
    $HAPROXY_SERVER
EOF
    start haproxy 1 haproxy -db -f "$WORKDIR/haproxy.cfg"
    targets+=(haproxy)
fi
MERIDIAN_EXTRA_TOML=$MERIDIAN_UPSTREAM \
PB_LISTEN=127.0.0.1:${PORT[meridian]} PB_PORT=${PORT[meridian]} PB_BACKENDS=127.0.0.1:$BE_UP \
    PB_THREADS=1 PB_WORKDIR=$WORKDIR start meridian 1 "$here/benches/peerbench-candidate.sh"
targets+=(meridian)

for t in "${targets[@]}"; do   # ready: a 200 with the exact body over h2c
    ok=""
    for _ in $(seq 50); do
        if [[ $(curl -s --http2-prior-knowledge --max-time 1 "http://127.0.0.1:${PORT[$t]}/") == "$BODY" ]]; then
            ok=1; break
        fi
        sleep 0.2
    done
    [[ -n $ok ]] || { echo "h2.sh: $t not answering h2c on ${PORT[$t]}; see $WORKDIR/$t.log" >&2; exit 1; }
done

ticks() {  # utime + stime of a process and its children, in clock ticks
    local t=0 p s f
    for p in $(tree "$1"); do
        s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        read -ra f <<<"${s##*) }"
        t=$(( t + f[11] + f[12] ))
    done
    echo "$t"
}
hz=$(getconf CLK_TCK)
printf 'target\tround\treq_s\tfailed\tmean_ms\tcpu_us_per_req\n' >"$WORKDIR/results.tsv"
for (( r = 1; r <= ROUNDS; r++ )); do
    n=${#targets[@]}
    for (( i = 0; i < n; i++ )); do
        t=${targets[$(( (i + r - 1) % n ))]}
        p=${PID[$t]:-}
        pin 0 h2load -c "$CLIENTS" -m "$STREAMS" -D 2 "http://127.0.0.1:${PORT[$t]}/" >/dev/null 2>&1 || true
        t0=$([[ -n $p ]] && ticks "$p" || echo 0)
        out=$(pin 0 h2load -c "$CLIENTS" -m "$STREAMS" -D "$DURATION" "http://127.0.0.1:${PORT[$t]}/" 2>&1)
        t1=$([[ -n $p ]] && ticks "$p" || echo 0)
        echo "$out" >"$WORKDIR/h2load.$t.$r.txt"
        rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' <<<"$out")
        done_=$(awk '/^requests:/ {print $8}' <<<"$out")
        failed=$(awk '/^requests:/ {print $10 + $12}' <<<"$out")
        mean=$(awk '/^time for request:/ {print $6}' <<<"$out")
        cpu=$([[ -n $p && ${done_:-0} -gt 0 ]] && awk -v d=$(( t1 - t0 )) -v hz="$hz" -v n="$done_" \
            'BEGIN { printf "%.1f", d / hz * 1e6 / n }' || echo -)
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$r" "${rps:-0}" "${failed:-?}" "${mean:-?}" "$cpu" \
            | tee -a "$WORKDIR/results.tsv"
    done
done

{
    echo "h2load -c $CLIENTS -m $STREAMS -D $DURATION, $ROUNDS rounds; h2c to the target, $UPSTREAM upstream; load: $(cut -d' ' -f1-3 /proc/loadavg)"
    printf '%-9s %10s %8s %10s %8s %12s %8s\n' target "req/s(med)" ratio failed "mean" "cpu_us/req" "RSS_MiB"
    base=""
    for t in "${targets[@]}"; do
        med() { awk -F'\t' -v t="$t" -v c="$1" '$1 == t { print $c }' "$WORKDIR/results.tsv" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
        rps=$(med 3); [[ $t == nginx ]] && base=$rps
        fails=$(awk -F'\t' -v t="$t" '$1 == t { s += $4 } END { print s }' "$WORKDIR/results.tsv")
        rss=-; [[ $t != direct ]] && rss=$(for p in $(tree "${PID[$t]}"); do cat "/proc/$p/status"; done | awk '/^VmHWM:/ { s += $2 } END { printf "%.1f", s / 1024 }')
        ratio=-; [[ -n $base && $t != direct ]] && ratio=$(awk -v a="$rps" -v b="$base" 'BEGIN { printf "%.2f", a / b }')
        printf '%-9s %10.0f %8s %10s %8s %12s %8s\n' "$t" "$rps" "$ratio" "$fails" "$(med 5)" "$(med 6)" "$rss"
    done
    echo "(ratio: to nginx; mean: h2load's mean time per request; results in $WORKDIR)"
} | tee "$WORKDIR/summary.txt"

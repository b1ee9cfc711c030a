#!/usr/bin/env bash
# Proves the Grafana dashboard (contrib/grafana/meridian.json) and the alert rules
# (contrib/prometheus/meridian-rules.yml) against the real thing: `promtool check rules`,
# then a real Meridian (`meridian run`, temporary config, four python http.server
# backends, one of them named by a DNS name) scraped every second by Debian's prometheus
# (a child process, temporary data dir, loopback port), with traffic from four continents,
# a rejected reload and a whole region killed. Then every panel query, dashboard variable
# and alert expression is evaluated through Prometheus's HTTP API
# (scripts/check-observability.py says how), the alerts those events must raise are
# checked to fire, and finally Meridian is killed and MeridianInstanceDown must fire.
# Every wait is bounded; every process started here is killed on exit.
#
#   scripts/check-observability.sh [path/to/meridian]    # default target/debug/meridian
set -euo pipefail
cd "$(dirname "$0")/.."

MERIDIAN=${1:-target/debug/meridian}
PROMETHEUS=${PROMETHEUS:-/usr/bin/prometheus}
PROMTOOL=${PROMTOOL:-/usr/bin/promtool}
RULES=contrib/prometheus/meridian-rules.yml
DASHBOARD=contrib/grafana/meridian.json

work=$(mktemp -d)
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$status" -ne 0 ]; then
    for log in "$work"/*.log; do
      [ -f "$log" ] && { echo "--- $log (last lines)"; tail -n 30 "$log"; }
    done
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# wait_for SECONDS WHAT COMMAND...: runs COMMAND every 0.2 s until it succeeds.
wait_for() {
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$end" ]; then echo "FAIL: $what: not after ${limit}s" >&2; return 1; fi
    sleep 0.2
  done
}
step() { printf '\n--- %s\n' "$*"; }

[ -x "$MERIDIAN" ] || { echo "no meridian binary at $MERIDIAN (cargo build first)" >&2; exit 1; }
for tool in "$PROMETHEUS" "$PROMTOOL" curl python3 dig; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install prometheus curl python3 dnsutils)" >&2; exit 1; }
done

step "promtool check rules $RULES"
"$PROMTOOL" check rules "$RULES"
alerts=$(grep -c '^ *- alert:' "$RULES")

step "backends (python3 -m http.server) and meridian"
mkdir -p "$work/www"
echo ok > "$work/www/index.html"
ports=()
for i in 1 2 3 4; do
  port=$(free_port)
  ports+=("$port")
  python3 -m http.server "$port" --bind 127.0.0.1 --directory "$work/www" >"$work/backend$i.log" 2>&1 &
  pids+=($!)
done
for port in "${ports[@]}"; do
  wait_for 15 "backend on $port" curl -sf --max-time 1 "http://127.0.0.1:$port/"
done
listen=$(free_port)
admin=$(free_port)
mesh=$(free_port)
peer_mesh=$(free_port)
dns=$(free_port)
cat >"$work/meridian.toml" <<EOF
threads = 1

[node]
name = "us-1"

[mesh]
secret = "observability-check-mesh-secret"
interval = "500ms"
fall = 2

# GeoDNS answers for example.test; eu-west's instance never runs (the mesh holds it down).
[geodns]
listen = ["127.0.0.1:$dns"]
threads = 1

[[geodns.zones]]
name = "example.test"
nameservers = ["ns1.example.test"]
names = ["www"]
records = [{ name = "ns1", type = "A", value = "127.0.0.1" }]

[listeners]
http = ["127.0.0.1:$listen"]
admin = "127.0.0.1:$admin"

[health_check]
path = "/"
interval = "500ms"
timeout = "400ms"
rise = 1
fall = 2

[client]
trusted_proxies = ["127.0.0.1"]

[reload]
watch = false

[regions.us-east]
latitude = 39.04
longitude = -77.49
# A host name: DNS discovery (and its metrics) resolve it through /etc/hosts.
backends = [{ address = "127.0.0.1:${ports[0]}" }, { address = "localhost:${ports[1]}" }]
instances = [{ name = "us-1", public = ["192.0.2.1"], proxy = "127.0.0.1:$listen", mesh = "127.0.0.1:$mesh" }]

[regions.eu-west]
latitude = 53.35
longitude = -6.26
backends = [{ address = "127.0.0.1:${ports[2]}" }, { address = "127.0.0.1:${ports[3]}" }]
instances = [{ name = "eu-1", public = ["198.51.100.1"], proxy = "127.0.0.1:1", mesh = "127.0.0.1:$peer_mesh" }]
EOF
"$MERIDIAN" check "$work/meridian.toml"
"$MERIDIAN" run --config "$work/meridian.toml" --pid-file "$work/meridian.pid" \
  --upgrade-sock "$work/upgrade.sock" --grace-period 1 >"$work/meridian.log" 2>&1 &
meridian_pid=$!
pids+=("$meridian_pid")
wait_for 30 "meridian /healthz" curl -sf --max-time 1 "http://127.0.0.1:$admin/healthz"

step "prometheus (scrape and rule evaluation every second)"
prom_port=$(free_port)
prom="http://127.0.0.1:$prom_port"
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $PWD/$RULES
scrape_configs:
  - job_name: meridian
    static_configs:
      - targets: ["127.0.0.1:$admin"]
EOF
"$PROMETHEUS" --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$work/prometheus.log" 2>&1 &
pids+=($!)
wait_for 30 "prometheus ready" curl -sf --max-time 1 "$prom/-/ready"

step "traffic from four continents and local clients (60 s at most, stopped when done)"
(
  end=$((SECONDS + 60))
  while [ "$SECONDS" -lt "$end" ]; do
    for xff in 81.2.69.160 1.0.16.1 8.8.8.8 200.160.2.3; do
      curl -s -o /dev/null --max-time 2 -H "X-Forwarded-For: $xff" "http://127.0.0.1:$listen/" || true
    done
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$listen/" || true
    # http.server answers DELETE with 501: 5xx responses for the error panels.
    curl -s -o /dev/null --max-time 2 -X DELETE "http://127.0.0.1:$listen/" || true
    # GeoDNS queries from two continents, and one for a name that does not exist.
    for subnet in 81.2.69.0/24 8.8.8.0/24; do
      dig @127.0.0.1 -p "$dns" +time=1 +tries=1 +short www.example.test "+subnet=$subnet" || true
    done
    dig @127.0.0.1 -p "$dns" +time=1 +tries=1 +short nope.example.test || true
    sleep 0.05
  done
) >/dev/null 2>&1 &
pids+=($!)
sleep 5

step "a rejected reload, then eu-west loses both backends"
cp "$work/meridian.toml" "$work/good.toml"
printf '[node]\nregion = 1\n' >"$work/meridian.toml"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X POST "http://127.0.0.1:$admin/reload")
[ "$code" = 422 ] || { echo "FAIL: the invalid reload answered $code, not 422" >&2; exit 1; }
kill "${pids[2]}" "${pids[3]}"
q() { python3 scripts/check-observability.py --prometheus "$prom" --metrics "http://127.0.0.1:$admin/metrics" \
  --dashboard "$DASHBOARD" --alerts "$alerts" --only "$1"; }
wait_for 30 "eu-west down in prometheus" q 'meridian_region_healthy_backends{region="eu-west"} == 0'
wait_for 30 "failovers from eu-west in prometheus" q 'rate(meridian_failovers_total{from="eu-west"}[5s]) > 0'
wait_for 30 "eu-1 held down by the mesh in prometheus" q 'meridian_mesh_peer_down{peer="eu-1"} == 1'
wait_for 30 "GeoDNS answers in prometheus" q 'rate(meridian_geodns_answers_total{region="us-east"}[5s]) > 0'
wait_for 30 "the firing alerts" q 'ALERTS{alertname="MeridianReloadFailed", alertstate="firing"}'

step "every dashboard query, variable and alert expression"
python3 scripts/check-observability.py --prometheus "$prom" --metrics "http://127.0.0.1:$admin/metrics" \
  --dashboard "$DASHBOARD" --alerts "$alerts" \
  --firing MeridianRegionWithoutUsableBackends,MeridianBackendDown,MeridianReloadFailed,MeridianHigh5xxRatio

step "meridian stops: MeridianInstanceDown's expression fires"
metrics_url="http://127.0.0.1:$admin/metrics"
curl -sf --max-time 5 "$metrics_url" >"$work/metrics.txt"
kill "$meridian_pid"
wait "$meridian_pid" 2>/dev/null || true
wait_for 30 "up == 0" python3 scripts/check-observability.py --prometheus "$prom" \
  --metrics "file://$work/metrics.txt" --dashboard "$DASHBOARD" --alerts "$alerts" \
  --only 'up{job="meridian"} == 0'
echo
echo "observability check passed: dashboard, $alerts alert rules, promtool"

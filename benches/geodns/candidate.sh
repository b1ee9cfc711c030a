#!/usr/bin/env bash
# Meridian as the dnsbench candidate (../shared/dnsbench): configures itself from the
# DNSB_* variables dnsbench exports, then stays in the foreground as the answering instance.
#
# GeoDNS answers with the instances the mesh holds up, so the three regions each get an
# instance (us-1 answers the queries; eu-1 and ap-1 only take part in the mesh, at ~1 poll
# per second) and a backend (python3 -m http.server, health-checked by TCP connect), with
# each region's A records as its instance's public addresses. eu-1, ap-1 and the backends
# are children of this process, so dnsbench counts their (small) CPU with Meridian's.
set -euo pipefail
bin=${MERIDIAN_BIN:-$(dirname "$0")/../../target/release/meridian}
work=${DNSB_WORKDIR:?run me from dnsbench.sh}/meridian
mkdir -p "$work"
base=${DNSB_PORT:?}
threads=${DNSB_THREADS:-1}

declare -A ips
order=()
IFS=';' read -ra regions <<< "${DNSB_REGIONS:?}"
for r in "${regions[@]}"; do
    name=${r%%=*}
    ips[$name]=${r#*=}
    order+=("$name")
done
# The default region first: unknown clients fall back to the config's order.
default=${DNSB_DEFAULT_REGION:?}
sorted=("$default")
for r in "${order[@]}"; do [[ $r == "$default" ]] || sorted+=("$r"); done

# region → (instance, DNS port, HTTP port, admin port, mesh port, backend port)
declare -A inst dns http admin mesh backend
i=0
for r in "${sorted[@]}"; do
    inst[$r]="i$i"
    dns[$r]=$((base + i))
    http[$r]=$((base + 10 + i))
    admin[$r]=$((base + 20 + i))
    mesh[$r]=$((base + 30 + i))
    backend[$r]=$((base + 40 + i))
    i=$((i + 1))
done

conf() { # conf REGION: the config of the region's instance
    local me=$1 r lat lon
    cat <<TOML
threads = 1
[node]
name = "${inst[$me]}"
[listeners]
http = ["127.0.0.1:${http[$me]}"]
admin = "127.0.0.1:${admin[$me]}"
[logging]
level = "warn"
access_log = false
[geoip]
database = "${DNSB_MMDB:?}"
[health_check]
kind = "tcp"
interval = "1s"
[reload]
watch = false
[mesh]
secret = "dnsbench-mesh-secret-0123456789"
[steering]
policy = "geo"
[steering.continents]
TOML
    IFS=',' read -ra pairs <<< "${DNSB_CONTINENTS:?}"
    for p in "${pairs[@]}"; do echo "${p%%=*} = [\"${p#*=}\"]"; done
    cat <<TOML
[geodns]
listen = ["127.0.0.1:${dns[$me]}"]
ttl = "${DNSB_TTL:-60}s"
threads = $threads
serial = 1
[[geodns.zones]]
name = "${DNSB_ZONE:?}"
nameservers = ["ns1.${DNSB_ZONE}"]
hostmaster = "hostmaster.${DNSB_ZONE}"
names = ["${DNSB_NAME%%.${DNSB_ZONE}}"]
records = [{ name = "ns1", type = "A", value = "127.0.0.1" }]
TOML
    local k=0
    for r in "${sorted[@]}"; do
        lat=$((k * 20)); lon=$((k * 60 - 60))
        local pub
        pub=$(sed 's/,/", "/g' <<< "${ips[$r]}")
        cat <<TOML
[regions.$r]
latitude = $lat.0
longitude = $lon.0
backends = [{ address = "127.0.0.1:${backend[$r]}" }]
instances = [{ name = "${inst[$r]}", public = ["$pub"], proxy = "127.0.0.1:${http[$r]}", mesh = "127.0.0.1:${mesh[$r]}" }]
TOML
        k=$((k + 1))
    done
}

for r in "${sorted[@]}"; do
    python3 -m http.server "${backend[$r]}" --bind 127.0.0.1 > "$work/backend-$r.log" 2>&1 &
    conf "$r" > "$work/${inst[$r]}.toml"
done
"$bin" check "$work/${inst[$default]}.toml" > /dev/null
# The other regions' instances first, ready before the answering one starts (so its first
# answers already see them, with serial 1 as the peers' static zones have).
for r in "${sorted[@]:1}"; do
    "$bin" run -c "$work/${inst[$r]}.toml" --pid-file "$work/${inst[$r]}.pid" \
        --upgrade-sock "$work/${inst[$r]}.sock" > "$work/${inst[$r]}.log" 2>&1 &
done
for r in "${sorted[@]:1}"; do
    for _ in $(seq 300); do
        curl -fs "http://127.0.0.1:${admin[$r]}/healthz" > /dev/null 2>&1 && break
        sleep 0.1
    done
done
exec "$bin" run -c "$work/${inst[$default]}.toml" --pid-file "$work/${inst[$default]}.pid" \
    --upgrade-sock "$work/${inst[$default]}.sock"

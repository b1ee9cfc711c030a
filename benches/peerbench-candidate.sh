#!/usr/bin/env bash
# peerbench candidate wrapper: writes a Meridian config from peerbench's PB_* variables and
# execs the release binary in the foreground (peerbench tracks it by PID).
#
#   CANDIDATE_CMD='/path/to/benches/peerbench-candidate.sh' peerbench.sh
#
# PB_LISTEN, PB_BACKENDS (comma-separated), PB_HEALTH_PATH, PB_THREADS, PB_WORKDIR come
# from peerbench. MERIDIAN_BIN overrides the binary (default: target/release/meridian next
# to this script's repository). MERIDIAN_EXTRA_TOML is appended to the top level of the
# config (before any table) for experiments.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${MERIDIAN_BIN:-$here/target/release/meridian}
[[ -x $bin ]] || { echo "peerbench-candidate: $bin not built (cargo build --release)" >&2; exit 1; }

: "${PB_LISTEN:?}" "${PB_BACKENDS:?}" "${PB_HEALTH_PATH:=/healthz}" "${PB_THREADS:=1}"
: "${PB_WORKDIR:=$(mktemp -d /tmp/meridian-pb.XXXXXX)}"
dir=$PB_WORKDIR/meridian
mkdir -p "$dir"

# The admin API on a free loopback port: the first closed one from PB_PORT+100 on.
port=${PB_LISTEN##*:}
admin=$((port + 100))
while (exec 3<>"/dev/tcp/127.0.0.1/$admin") 2>/dev/null; do admin=$((admin + 1)); done

backends=""
IFS=, read -ra addrs <<< "$PB_BACKENDS"
for a in "${addrs[@]}"; do backends+="  { address = \"$a\" },"$'\n'; done

cat > "$dir/meridian.toml" <<TOML
threads = $PB_THREADS
${MERIDIAN_EXTRA_TOML:-}

[node]
region = "bench"

[listeners]
http = ["$PB_LISTEN"]
admin = "127.0.0.1:$admin"

[logging]
access_log = false

[health_check]
path = "$PB_HEALTH_PATH"
interval = "1s"
timeout = "500ms"

[reload]
watch = false

[regions.bench]
latitude = 0.0
longitude = 0.0
balance = "round_robin"
backends = [
$backends]
TOML

exec "$bin" run --config "$dir/meridian.toml" \
    --pid-file "$dir/meridian.pid" --upgrade-sock "$dir/upgrade.sock"

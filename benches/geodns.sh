#!/usr/bin/env bash
# GeoDNS side by side: gdnsd (plugin_geoip) and PowerDNS (geoip backend) against Meridian's
# GeoDNS, same zone, same DB-IP database, one core each, dnsperf with client subnets from
# 4,000 networks (../shared/dnsbench; its README says what is measured and how).
#
#   benches/geodns.sh            # builds the release binary first (fat LTO: ~10 min cold)
#   NO_BUILD=1 benches/geodns.sh # with target/release/meridian as it is
#
# Results: the summary table on stdout, everything else in dnsbench's work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${DNSBENCH:-../shared/dnsbench/dnsbench.sh}
[ -x "$bench" ] || { echo "geodns.sh: $bench not found (set DNSBENCH)" >&2; exit 1; }
if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release -p meridian
fi
export MERIDIAN_BIN=$PWD/target/release/meridian
CANDIDATE_CMD="$PWD/benches/geodns/candidate.sh" \
CANDIDATE_PORT=${CANDIDATE_PORT:-19353} CANDIDATE_NAME=meridian \
    exec "$bench" "$@"

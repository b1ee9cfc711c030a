#!/usr/bin/env bash
# Load comparison: builds Meridian (release) and runs ../shared/peerbench with Meridian as
# the candidate next to nginx and HAProxy. Bounded: peerbench aborts itself after MAX_TOTAL
# seconds (default here 290) and stops every process it started.
#
#   benches/load.sh                      # PEERS="nginx haproxy", 3 rounds x 10 s
#   H2LOAD=1 benches/load.sh             # plus one h2load --h1 cross-check per target
#   NO_BUILD=1 benches/load.sh           # skip cargo build
#
# Any peerbench variable (DURATION, ROUNDS, CONNS, PIN, WORKDIR, ...) passes through.
# Results: the summary is printed and kept in $WORKDIR/summary.txt.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
peerbench=${PEERBENCH:-$here/../shared/peerbench/peerbench.sh}
[[ -x $peerbench ]] || peerbench=/work/shared/peerbench/peerbench.sh
[[ -x $peerbench ]] || { echo "load.sh: peerbench.sh not found (set PEERBENCH)" >&2; exit 1; }

if [[ -z ${NO_BUILD:-} ]]; then
    (cd "$here" && CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target} \
        cargo build --release -p meridian --bin meridian)
fi
export MERIDIAN_BIN=${MERIDIAN_BIN:-${CARGO_TARGET_DIR:-$here/target}/release/meridian}

export PEERS=${PEERS-"nginx haproxy"}
export MAX_TOTAL=${MAX_TOTAL:-290}
if [[ ${H2LOAD:-0} == 1 ]]; then
    # Keep the estimate under MAX_TOTAL: 4 targets x (3 s warm-up + 3 x 12 s + 12 s) = 216 s.
    export DURATION=${DURATION:-10} ROUNDS=${ROUNDS:-3}
fi
export CANDIDATE_NAME=${CANDIDATE_NAME:-meridian}
export CANDIDATE_PORT=${CANDIDATE_PORT:-19104}
export CANDIDATE_CMD="$here/benches/peerbench-candidate.sh"

exec timeout --kill-after=10 $((MAX_TOTAL + 20)) "$peerbench"

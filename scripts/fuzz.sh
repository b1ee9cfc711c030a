#!/usr/bin/env bash
# Runs every property test named fuzz_* in the workspace at length: built optimized, one
# test at a time, PROPTEST_CASES cases each, each bounded in wall time. Prints the cases
# and the time of every target; exits non-zero if any fails, times out, or none is found.
#
#   scripts/fuzz.sh                       every fuzz_* test of the workspace
#   scripts/fuzz.sh -p meridian-geoip     only those of the packages named
#   PROPTEST_CASES=20000 scripts/fuzz.sh  fewer cases (default 1000000)
#
# Environment:
#   PROPTEST_CASES  cases per target (default 1000000); proptest applies it over each
#                   test's own default
#   FUZZ_TIMEOUT    wall-time limit per target in seconds (default 3600); a target that
#                   hits it fails: a hang, or more cases than the limit allows
#   FUZZ_PROFILE    cargo profile (default fuzz: release optimizations without LTO, with
#                   overflow checks and debug assertions; "release" for the release profile)
#
# Without -p, the packages built are those whose sources define a `fn fuzz_` test (found
# with grep, so new targets in any crate are picked up); the tests themselves are then
# found by name in each test binary's --list.

set -euo pipefail
cd "$(dirname "$0")/.."

cases=${PROPTEST_CASES:-1000000}
limit=${FUZZ_TIMEOUT:-3600}
profile=${FUZZ_PROFILE:-fuzz}

# The package of every source file that defines a fuzz_* test (the nearest Cargo.toml).
package_of() {
    local dir
    dir=$(dirname "$1")
    while [ ! -f "$dir/Cargo.toml" ]; do dir=$(dirname "$dir"); done
    sed -n '/^\[package\]/,/^\[/ s/^name *= *"\(.*\)"/\1/p' "$dir/Cargo.toml"
}

selection=("$@")
if [ ${#selection[@]} -eq 0 ]; then
    mapfile -t files < <(grep -rlE --include='*.rs' '\bfn fuzz_[A-Za-z0-9_]*\(' \
        --exclude-dir=target --exclude-dir=.git .)
    if [ ${#files[@]} -eq 0 ]; then
        echo "fuzz.sh: no fuzz_* test in the workspace" >&2
        exit 1
    fi
    mapfile -t packages < <(for f in "${files[@]}"; do package_of "$f"; done | sort -u)
    for p in "${packages[@]}"; do selection+=(-p "$p"); done
fi

echo "fuzz.sh: building the tests of ${selection[*]} (profile $profile)" >&2
# One line per test binary: the executable and its package's directory.
binaries=$(cargo test --profile "$profile" --no-run --message-format=json "${selection[@]}" |
    grep -E '"profile":\{[^}]*"test":true\}' |
    sed -nE 's/.*"manifest_path":"([^"]*)\/Cargo\.toml".*"executable":"([^"]+)".*/\2 \1/p' |
    sort -u)

failed=0
ran=0
summary=()
while read -r exe dir; do
    [ -n "$exe" ] || continue
    mapfile -t tests < <("$exe" --list --format terse 2>/dev/null |
        sed -nE 's/^(([A-Za-z0-9_]+::)*fuzz_[A-Za-z0-9_]*): test$/\1/p')
    for test in "${tests[@]}"; do
        ran=$((ran + 1))
        echo "fuzz.sh: $test ($(basename "$exe")): $cases cases, at most ${limit}s" >&2
        start=$(date +%s%N)
        status=0
        # Run from the package directory, as cargo test does (failure seeds are saved
        # next to the test's source).
        (cd "$dir" && PROPTEST_CASES=$cases timeout --kill-after=10 "$limit" \
            "$exe" --exact "$test" --test-threads=1 --quiet) || status=$?
        ms=$((($(date +%s%N) - start) / 1000000))
        seconds=$(printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)))
        case $status in
            0) result=ok ;;
            124 | 137) result="TIMED OUT"; failed=$((failed + 1)) ;;
            *) result="FAILED (exit $status)"; failed=$((failed + 1)) ;;
        esac
        line=$(printf '%-45s %9s cases %8s s  %s' "$test" "$cases" "$seconds" "$result")
        echo "fuzz.sh: $line" >&2
        summary+=("$line")
    done
done <<<"$binaries"

if [ "$ran" -eq 0 ]; then
    echo "fuzz.sh: no fuzz_* test found in the test binaries of ${selection[*]}" >&2
    exit 1
fi
echo
echo "fuzz targets ($profile profile):"
printf '  %s\n' "${summary[@]}"
echo "$((ran - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# Verifies systemd/meridian.service with `systemd-analyze verify` and prints its
# `systemd-analyze security` exposure. The unit names /usr/bin/meridian; the check runs on a
# copy that points at the binary given as $1 (default: target/debug/meridian).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(realpath "${1:-$here/../target/debug/meridian}")
[ -x "$bin" ] || { echo "verify.sh: $bin is not an executable" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s#/usr/bin/meridian#$bin#g" "$here/meridian.service" > "$tmp/meridian.service"
systemd-analyze verify "$tmp/meridian.service"
echo "systemd-analyze verify: ok"
systemd-analyze security --offline=true --threshold=20 "$tmp/meridian.service" | tail -n 1

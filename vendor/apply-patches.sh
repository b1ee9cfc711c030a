#!/usr/bin/env bash
# Re-creates vendor/<crate> from the released crate and applies vendor/patches/<crate>/*.patch
# in order, so that upgrading Pingora is: bump VERSION, run this, fix what no longer applies.
#
#   vendor/apply-patches.sh            # rebuild every vendored crate (CRATES)
#   vendor/apply-patches.sh --check    # rebuild into a temp dir and diff against vendor/ (no changes)
#
# The released crates come from the local cargo cache when present, else from crates.io.
set -euo pipefail
cd "$(dirname "$0")"
VERSION=${PINGORA_VERSION:-0.9.1}
CRATES=(pingora-core pingora-proxy pingora-http pingora-timeout)
check=0
[ "${1:-}" = "--check" ] && check=1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

fetch() { # crate → extracts $out/$crate-$VERSION
  local crate=$1 cached
  cached=$(ls ~/.cargo/registry/cache/*/"$crate-$VERSION.crate" 2>/dev/null | head -n1 || true)
  if [ -n "$cached" ]; then
    tar xzf "$cached" -C "$out"
  else
    curl -sSfL "https://static.crates.io/crates/$crate/$crate-$VERSION.crate" | tar xz -C "$out"
  fi
}

status=0
for crate in "${CRATES[@]}"; do
  fetch "$crate"
  tree="$out/$crate-$VERSION"
  rm -f "$tree/Cargo.lock"
  for p in patches/"$crate"/*.patch; do
    [ -e "$p" ] || continue
    echo "applying $p"
    patch -d "$tree" -p1 --forward --quiet < "$p"
  done
  if [ $check = 1 ]; then
    if ! diff -r "$tree" "$crate" >/dev/null; then
      echo "vendor/$crate differs from $crate $VERSION + its patches:"
      diff -ru "$tree" "$crate" | head -n 40
      status=1
    fi
  else
    rm -rf "$crate"
    cp -a "$tree" "$crate"
  fi
done
[ $check = 1 ] && [ $status = 0 ] && echo "vendor/ matches Pingora $VERSION + patches"
exit $status

#!/usr/bin/env bash
# Runs the vendored Pingora crates' own tests of the modules the patches touch, the patches'
# tests among them (vendor/ is not a workspace member, so `cargo test` does not run them).
# Each crate is copied to a temp dir as a workspace of its own, with main's Cargo.lock;
# artifacts go to main's target dir. Loopback only (the upstream tests that need the
# Internet are not selected).
#
#   vendor/test-patches.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
vendored=(pingora-core pingora-proxy pingora-http pingora-timeout)
run() { # crate features test-filters...
  local crate=$1 features=$2 other
  shift 2
  [ -d "$out/$crate" ] || cp -a "vendor/$crate" "$out/"
  printf '\n[workspace]\n' >> "$out/$crate/Cargo.toml"
  # the other vendored crates, patched, as in the workspace
  printf '\n[patch.crates-io]\n' >> "$out/$crate/Cargo.toml"
  for other in "${vendored[@]}"; do
    [ "$other" = "$crate" ] && continue
    [ -d "$out/$other" ] || cp -a "vendor/$other" "$out/"
    printf '%s = { path = "../%s" }\n' "$other" "$other" >> "$out/$crate/Cargo.toml"
  done
  cp Cargo.lock "$out/$crate/"
  echo "== $crate: $*"
  # One test at a time: upstream's rx-timestamp test gives the kernel 100 µs to apply
  # SO_TIMESTAMPING and missed it once with the module's 365 tests running in parallel.
  cargo test --quiet --manifest-path "$out/$crate/Cargo.toml" --features "$features" --lib -- \
    --test-threads=1 "$@"
}
# core: the idle keep-alive wait and connection state (0004, 0007), body buffers (0003),
# header maps (0008), the pooled-connection check (0009), the idle pool (0010), and the
# modules around them, and the authority checks (0013)
run pingora-core rustls apps:: services:: protocols::l4 protocols::http::v1 protocols::http::authority \
  connectors::idle_pool connectors::tests::pooled_stream_checked connectors::tests::test_unexpected_data
# http: header names given as HeaderName (0001), and all of the crate's tests
run pingora-http ""
# timeout: the threads' recent timer buckets (0001), the clock thread checked for new buckets
# (0002, 0003), and all of the crate's tests
run pingora-timeout ""
# proxy: hop-by-hop removal (0003), the request future (0006, 0008), the session's shutdown
# wake-ups and the HTTP/1 response filter (0007)
run pingora-proxy rustls hop_by_hop request_future_keeps_no_room shutdown_ proxy_h1

#!/usr/bin/env bash
# Builds the Debian package into target/debian/ with cargo-deb (cargo install cargo-deb
# --locked): the meridian binary, the hardened unit (systemd/meridian.service), a default
# /etc/meridian/meridian.toml (a conffile), the sysusers.d entry of the `meridian` user
# (systemd/meridian.sysusers),
# the man pages and shell completions (generated from the CLI by the binary's hidden
# `generate-assets`), the docs and the contrib/ dashboard and alert rules.
#
#   packaging/deb/build.sh                 # release build (fat LTO: ~10 min), then package
#   packaging/deb/build.sh --profile dev   # package the debug build (CI: quick, stripped)
set -euo pipefail
cd "$(dirname "$0")/../.."

profile=release
if [ "${1:-}" = "--profile" ]; then
  profile=$2
  shift 2
fi
case "$profile" in
  dev) dir=debug ;;
  *) dir=$profile ;;
esac
target=$(cargo metadata --format-version 1 --no-deps --offline 2>/dev/null \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

cargo build --profile "$profile" --locked -p meridian
bin="$target/$dir/meridian"
"$bin" check packaging/deb/meridian.toml
rm -rf "$target/$dir/assets"
"$bin" generate-assets "$target/$dir/assets" >/dev/null
gzip -9n "$target/$dir/assets/man/"*.1
cargo deb -p meridian --no-build --profile "$profile" --locked "$@"

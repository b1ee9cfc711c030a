#!/usr/bin/env bash
# Installs the package built by packaging/deb/build.sh on this machine (CI runs it on its
# disposable runner) and checks it: the default config passes `meridian check`, the man
# pages are where `man` finds them, the `meridian` user exists, the installed unit passes
# `systemd-analyze verify`, and the installed binary serves (proxy, admin API, status page)
# as the `meridian` user. Then the package is purged again. Needs root (or sudo).
#
#   packaging/deb/check.sh [target/debian/meridian_*.deb]
set -euo pipefail
cd "$(dirname "$0")/../.."

deb=${1:-$(ls -t target/debian/meridian_*.deb | head -n 1)}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
work=$(mktemp -d)
pid=""
cleanup() {
  local status=$?
  set +e
  if [ -n "$pid" ]; then
    [ -f "$work/run/meridian.pid" ] && $SUDO kill "$(cat "$work/run/meridian.pid")" 2>/dev/null
    $SUDO kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
  [ "$status" -ne 0 ] && [ -f "$work/run.log" ] && tail -n 30 "$work/run.log"
  $SUDO dpkg --purge meridian >/dev/null 2>&1 || true
  $SUDO rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

echo "--- dpkg -i $deb"
$SUDO dpkg -i "$deb"
dpkg -s meridian | grep -E '^(Status|Version|Depends):'

echo "--- meridian check /etc/meridian/meridian.toml (a conffile)"
meridian check /etc/meridian/meridian.toml
dpkg-query -W -f='${Conffiles}\n' meridian | grep -q ' /etc/meridian/meridian.toml '

echo "--- man -w meridian"
if grep -rqs 'path-exclude=/usr/share/man' /etc/dpkg/dpkg.cfg.d/; then
  # Minimal container images tell dpkg to skip man pages: check the package's own copy.
  echo "dpkg here excludes /usr/share/man (/etc/dpkg/dpkg.cfg.d); checking the .deb's pages instead"
  dpkg-deb -x "$deb" "$work/root"
  MANPATH="$work/root/usr/share/man" man -w meridian
  MANPATH="$work/root/usr/share/man" man -w meridian-run
else
  man -w meridian
  man -w meridian-run
fi
for f in /usr/share/bash-completion/completions/meridian /usr/share/zsh/vendor-completions/_meridian \
  /usr/share/fish/vendor_completions.d/meridian.fish /usr/share/doc/meridian/copyright; do
  [ -s "$f" ] || { echo "missing $f" >&2; exit 1; }
done

echo "--- the meridian user and the unit"
getent passwd meridian
unit=$(dpkg -L meridian | grep '/systemd/system/meridian.service$')
grep -qx 'User=meridian' "$unit"
systemd-analyze verify "$unit"
echo "systemd-analyze verify $unit: ok"

echo "--- /usr/bin/meridian serves as the meridian user"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
listen=$(free_port)
admin=$(free_port)
chmod 755 "$work"
sed -e "s/0.0.0.0:8080/127.0.0.1:$listen/" -e "s/127.0.0.1:9901/127.0.0.1:$admin/" \
  /etc/meridian/meridian.toml >"$work/meridian.toml"
chmod 644 "$work/meridian.toml"
# What systemd's RuntimeDirectory=meridian would be.
$SUDO install -d -o meridian -g meridian "$work/run"
$SUDO runuser -u meridian -- /usr/bin/meridian run --config "$work/meridian.toml" \
  --pid-file "$work/run/meridian.pid" --upgrade-sock "$work/run/upgrade.sock" --grace-period 1 \
  >"$work/run.log" 2>&1 &
pid=$!
end=$((SECONDS + 30))
until curl -sf --max-time 1 "http://127.0.0.1:$admin/healthz" >/dev/null; do
  [ "$SECONDS" -lt "$end" ] || { echo "not ready after 30 s" >&2; exit 1; }
  sleep 0.2
done
ps -o user= -p "$(cat "$work/run/meridian.pid")" | grep -qx meridian
# Into a file: `grep -q` stops reading at its match, and curl would fail writing the rest of
# the page into the closed pipe (exit 23 under pipefail).
curl -sf --max-time 5 -o "$work/page.html" "http://127.0.0.1:$admin/"
grep -q '<title>Meridian status</title>' "$work/page.html"
# The default config's backend is a placeholder nobody listens on: a 503, as documented.
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$listen/")
[ "$code" = 503 ] || { echo "proxy answered $code, not 503" >&2; exit 1; }
echo "serving as meridian: admin, status page and proxy answer"
echo
echo "package check passed"

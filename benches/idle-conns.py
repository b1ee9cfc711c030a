#!/usr/bin/env python3
"""Peak RSS of a Meridian process idle and with N idle keep-alive client connections.

Starts a tiny HTTP/1.1 backend (in this process), writes a one-region config, starts
target/release/meridian, and reads VmHWM / VmRSS of the meridian process from /proc:

1. idle: after the first probe round (about 3 s after start), before any client traffic;
2. loaded: after N client connections (default 10,000) each sent one keep-alive GET and
   read its response, then are held idle for HOLD seconds (default 3).

Then closes every connection and stops meridian by PID. Loopback only; bounded by
DEADLINE seconds (default 120) overall. Usage:

    benches/idle-conns.py [--conns 10000] [--threads 1] [--bin target/release/meridian]
"""

import argparse
import http.server
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BODY = b"x" * 64


class Backend(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # header and body are separate writes

    def do_GET(self):  # noqa: N802 (http.server naming)
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def threads_of(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def get(port, path="/", sock=None, timeout=2.0):
    """One keep-alive GET; returns (socket, status)."""
    s = sock or socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the response header")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(rest) < length:
        chunk = s.recv(4096)
        if not chunk:
            break
        rest += chunk
    return s, int(head.split()[1])


def main():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hold", type=float, default=3.0)
    ap.add_argument("--deadline", type=float, default=float(os.environ.get("DEADLINE", 120)))
    ap.add_argument("--bin", default=os.path.join(here, "target/release/meridian"))
    args = ap.parse_args()
    t0 = time.monotonic()

    def left():
        r = args.deadline - (time.monotonic() - t0)
        if r <= 0:
            raise TimeoutError(f"deadline of {args.deadline}s exceeded")
        return r

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 2 * args.conns + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < args.conns + 256:
        sys.exit(f"ulimit -n {want} is too low for {args.conns} connections")

    backend = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Backend)
    backend.daemon_threads = True
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    bport = backend.server_address[1]
    port, admin = free_port(), free_port()

    work = tempfile.mkdtemp(prefix="meridian-mem.")
    conf = os.path.join(work, "meridian.toml")
    with open(conf, "w") as f:
        f.write(
            f"""threads = {args.threads}

[node]
region = "bench"

[listeners]
http = ["127.0.0.1:{port}"]
admin = "127.0.0.1:{admin}"

[logging]
access_log = false

[timeouts]
downstream_idle = "120s"

[health_check]
path = "/healthz"
interval = "1s"
timeout = "500ms"

[reload]
watch = false

[regions.bench]
latitude = 0.0
longitude = 0.0
balance = "round_robin"
backends = [{{ address = "127.0.0.1:{bport}" }}]
"""
        )
    log = open(os.path.join(work, "meridian.log"), "w")
    proc = subprocess.Popen(
        [args.bin, "run", "--config", conf,
         "--pid-file", os.path.join(work, "meridian.pid"),
         "--upgrade-sock", os.path.join(work, "upgrade.sock")],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL,
    )
    socks = []
    try:
        # Ready: /healthz on the admin API answers 200 after the first probe round.
        while True:
            left()
            if proc.poll() is not None:
                sys.exit(f"meridian exited with {proc.returncode}; see {work}/meridian.log")
            try:
                s, status = get(admin, "/healthz")
                s.close()
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        time.sleep(2.0)
        idle_hwm, idle_rss = proc_kb(proc.pid, "VmHWM"), proc_kb(proc.pid, "VmRSS")
        print(f"idle: VmHWM {idle_hwm / 1024:.1f} MiB, VmRSS {idle_rss / 1024:.1f} MiB, "
              f"{threads_of(proc.pid)} threads (threads = {args.threads})", flush=True)

        errors = 0
        t1 = time.monotonic()
        for _ in range(args.conns):
            left()
            try:
                s, status = get(port)
                socks.append(s)
                errors += status != 200
            except OSError:
                errors += 1
        opened = time.monotonic() - t1
        time.sleep(min(args.hold, max(left() - 5, 0)))
        alive = 0
        for s in socks:  # still open on the proxy side? (a closed peer reads b"")
            s.setblocking(False)
            try:
                alive += s.recv(1) != b""
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        hwm, rss = proc_kb(proc.pid, "VmHWM"), proc_kb(proc.pid, "VmRSS")
        print(f"{len(socks)} keep-alive connections ({errors} errors, {alive} still open after "
              f"{args.hold:.0f}s idle; opened in {opened:.1f}s): VmHWM {hwm / 1024:.1f} MiB, "
              f"VmRSS {rss / 1024:.1f} MiB, {(rss - idle_rss) / max(len(socks), 1):.2f} KiB/conn",
              flush=True)
    finally:
        for s in socks:
            s.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        backend.shutdown()
        print(f"logs: {work}")


if __name__ == "__main__":
    main()

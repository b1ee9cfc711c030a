#!/usr/bin/env python3
"""Peak RSS of a proxy idle and with N idle keep-alive client connections: Meridian, and
nginx and HAProxy configured the same way in the same run.

Starts a tiny HTTP/1.1 backend (in this process); for each proxy writes a one-backend
config (one worker/thread, keep-alive to the backend, client keep-alive 120 s), starts it,
and reads VmHWM / VmRSS of its process from /proc:

1. idle: about 2 s after it serves, before any client traffic;
2. loaded: after N client connections (default 10,000) each sent one keep-alive GET and
   read its response, then are held idle for HOLD seconds (default 3).

KiB/conn is the VmRSS growth divided by the connections. Then closes every connection and
stops the proxy by PID. Loopback only; bounded by DEADLINE seconds (default 120) per proxy.
Usage:

    benches/idle-conns.py [--conns 10000] [--threads 1] [--bin target/release/meridian]
                          [--peers nginx,haproxy]   # "" = Meridian only
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
    # Host: the address (the admin API refuses other names: DNS rebinding protection)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
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


def meridian_conf(port, admin, bport, threads):
    return f"""threads = {threads}

[node]
region = "bench"

[listeners]
http = ["127.0.0.1:{port}"]
admin = "127.0.0.1:{admin}"

[logging]
access_log = false

[timeouts]
downstream_idle = "120s"

[limits]
max_connections = 1000000
max_connections_per_ip = 1000000

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


def nginx_conf(work, port, bport, conns):
    return f"""worker_processes 1; master_process off; daemon off; pid {work}/nginx.pid;
error_log {work}/nginx.err warn; worker_rlimit_nofile {2 * conns + 1024};
events {{ worker_connections {conns + 1024}; }}
http {{ access_log off; keepalive_timeout 120s; keepalive_requests 1000000;
  upstream be {{ server 127.0.0.1:{bport}; keepalive 64; }}
  server {{ listen 127.0.0.1:{port} backlog=4096;
    location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
"""


def haproxy_conf(port, bport, conns):
    return f"""global
  nbthread 1
  maxconn {conns + 100}
defaults
  mode http
  maxconn {conns + 100}
  timeout connect 2s
  timeout client 120s
  timeout server 30s
  timeout http-keep-alive 120s
  http-reuse always
frontend f
  bind 127.0.0.1:{port}
  default_backend b
backend b
  server s1 127.0.0.1:{bport}
"""


def measure(name, cmd, port, ready_port, ready_path, work, args, left, conns=None):
    """Starts `cmd`, waits until `ready_port` answers `ready_path` with 200, measures."""
    log = open(os.path.join(work, f"{name}.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    socks = []
    try:
        while True:
            left()
            if proc.poll() is not None:
                sys.exit(f"{name} exited with {proc.returncode}; see {work}/{name}.log")
            try:
                s, status = get(ready_port, ready_path)
                s.close()
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        time.sleep(2.0)
        idle_hwm, idle_rss = proc_kb(proc.pid, "VmHWM"), proc_kb(proc.pid, "VmRSS")
        print(f"{name:9} idle: VmHWM {idle_hwm / 1024:.1f} MiB, VmRSS {idle_rss / 1024:.1f} MiB, "
              f"{threads_of(proc.pid)} threads", flush=True)

        errors = 0
        t1 = time.monotonic()
        for _ in range(conns or args.conns):
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
        print(f"{name:9} {len(socks)} keep-alive connections ({errors} errors, {alive} still "
              f"open after {args.hold:.0f}s idle; opened in {opened:.1f}s): VmHWM "
              f"{hwm / 1024:.1f} MiB, VmRSS {rss / 1024:.1f} MiB, "
              f"{(rss - idle_rss) / max(len(socks), 1):.2f} KiB/conn", flush=True)
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


def main():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hold", type=float, default=3.0)
    ap.add_argument("--deadline", type=float, default=float(os.environ.get("DEADLINE", 120)))
    ap.add_argument("--bin", default=os.path.join(here, "target/release/meridian"))
    ap.add_argument("--peers", default="nginx,haproxy")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # HAProxy wants 2 descriptors per connection of its maxconn; root may raise the hard limit.
    want = max(soft, 4 * args.conns + 1024)
    if want > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            hard = want
        except (ValueError, OSError):
            want = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < args.conns + 256:
        sys.exit(f"ulimit -n {want} is too low for {args.conns} connections")

    backend = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Backend)
    backend.daemon_threads = True
    backend.handle_error = lambda *_: None  # a proxy closing its idle upstream is routine
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    bport = backend.server_address[1]
    work = tempfile.mkdtemp(prefix="meridian-mem.")

    def deadline_from_now():
        t0 = time.monotonic()

        def left():
            r = args.deadline - (time.monotonic() - t0)
            if r <= 0:
                raise TimeoutError(f"deadline of {args.deadline}s exceeded")
            return r
        return left

    try:
        port, admin = free_port(), free_port()
        conf = os.path.join(work, "meridian.toml")
        with open(conf, "w") as f:
            f.write(meridian_conf(port, admin, bport, args.threads))
        cmd = [args.bin, "run", "--config", conf,
               "--pid-file", os.path.join(work, "meridian.pid"),
               "--upgrade-sock", os.path.join(work, "upgrade.sock")]
        # Ready: /healthz on the admin API answers 200 after the first probe round.
        measure("meridian", cmd, port, admin, "/healthz", work, args, deadline_from_now())
        for peer in [p for p in args.peers.split(",") if p]:
            port = free_port()
            if peer == "nginx":
                conf = os.path.join(work, "nginx.conf")
                with open(conf, "w") as f:
                    f.write(nginx_conf(work, port, bport, args.conns))
                cmd = ["nginx", "-c", conf, "-p", work]
            elif peer == "haproxy":
                # HAProxy reserves 2 descriptors per connection of its maxconn: within this
                # process's hard limit it measures fewer connections (KiB/conn still compares).
                conns = min(args.conns, (hard - 1024) // 2 - 100)
                conf = os.path.join(work, "haproxy.cfg")
                with open(conf, "w") as f:
                    f.write(haproxy_conf(port, bport, conns))
                cmd = ["haproxy", "-db", "-f", conf]
                measure(peer, cmd, port, port, "/", work, args, deadline_from_now(), conns)
                continue
            else:
                sys.exit(f"unknown peer {peer}")
            measure(peer, cmd, port, port, "/", work, args, deadline_from_now())
    finally:
        backend.shutdown()
        print(f"logs: {work}")


if __name__ == "__main__":
    main()

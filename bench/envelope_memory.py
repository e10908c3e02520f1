#!/usr/bin/env python3
"""Memory of `POST /v1/requests` under a spike: N concurrent envelopes of S MiB each.

Starts `hestia serve` (the binary given, default target/release/hestia) with a Python backend that
echoes POST bodies, sends the envelopes at once, and reads Hestia's VmHWM (peak) and VmRSS from
/proc/<pid>/status before, right after, and after a few idle seconds. Prints the statuses seen
(200, or 503 `overloaded` beyond `max_envelope_memory_bytes`) and the numbers in MiB.

    bench/envelope_memory.py [--hestia PATH] [--count 60] [--mib 15] [--bound BYTES]
"""

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

BACKEND = r'''
import sys, http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200); self.send_header("content-length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200); self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer.daemon_threads = True
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vm(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0]) // 1024
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hestia", default="target/release/hestia")
    ap.add_argument("--count", type=int, default=60)
    ap.add_argument("--mib", type=float, default=15)
    ap.add_argument("--bound", type=int, default=None, help="max_envelope_memory_bytes")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="hestia-envmem-")
    script = os.path.join(work, "backend.py")
    open(script, "w").write(BACKEND)
    bport, hport = free_port(), free_port()
    bound = f"max_envelope_memory_bytes: {args.bound}\n" if args.bound else ""
    config = os.path.join(work, "hestia_config.yml")
    open(config, "w").write(
        f"database_url: sqlite://{work}/h.db?mode=rwc\nlog: {{level: warn}}\n{bound}"
        f"services:\n  echo:\n    base_url: http://127.0.0.1:{bport}\n"
        f"    start: {{command: {{program: python3, args: ['{script}', '{bport}']}}}}\n"
        f"    readiness: {{tcp: {{address: '127.0.0.1:{bport}'}}}}\n    idle_timeout_ms: 0\n"
    )
    env = dict(os.environ, HESTIA_LISTEN=f"127.0.0.1:{hport}")
    hestia = subprocess.Popen([args.hestia, "serve", "--config", config], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "log"), "w"))
    try:
        for _ in range(300):
            try:
                c = http.client.HTTPConnection("127.0.0.1", hport, timeout=2)
                c.request("GET", "/services/echo/")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        before = vm(hestia.pid)
        body = json.dumps({"serviceId": "echo", "method": "POST", "path": "/",
                           "body": "x" * int(args.mib * 1024 * 1024 - 200)}).encode()
        statuses = Counter()
        start = threading.Barrier(args.count)

        def one():
            c = http.client.HTTPConnection("127.0.0.1", hport, timeout=300)
            start.wait()
            c.request("POST", "/v1/requests", body, {"content-type": "application/json"})
            r = c.getresponse()
            r.read()
            statuses[r.status] += 1
            c.close()

        threads = [threading.Thread(target=one) for _ in range(args.count)]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.time() - t0
        right_after = vm(hestia.pid)
        time.sleep(5)
        idle = vm(hestia.pid)
        print(f"{args.count} envelopes of {args.mib} MiB in {took:.1f} s: statuses {dict(statuses)}")
        print(f"before: RSS {before['VmRSS']} MiB; peak (VmHWM) {right_after['VmHWM']} MiB; "
              f"right after: RSS {right_after['VmRSS']} MiB; after 5 s idle: RSS {idle['VmRSS']} MiB")
    finally:
        hestia.terminate()
        hestia.wait(timeout=20)


if __name__ == "__main__":
    sys.exit(main())

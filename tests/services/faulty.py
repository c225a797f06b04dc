"""A small HTTP forwarder that injects faults (5xx, delays) in front of the S3 server.

Our own test tool: it lets a test say "every third S3 request fails with 503" or "S3 is down",
which no S3 server can be asked to do.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.integration.server import free_port


@dataclass
class Faults:
    fail_every: int = 0  # every Nth request answers 503 SlowDown (0: never)
    delay_every: int = 0  # every Nth request waits `delay` seconds first
    delay: float = 0.0
    down: bool = False  # every request answers 500
    count: int = 0
    injected: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class FaultyProxy:
    def __init__(self, upstream_port: int) -> None:
        self.faults = Faults()
        self.port = free_port()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                f = proxy.faults
                with f.lock:
                    f.count += 1
                    n = f.count
                if f.down or (f.fail_every and n % f.fail_every == 0):
                    with f.lock:
                        f.injected += 1
                    payload = b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"
                    self.send_response(500 if f.down else 503)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if f.delay_every and n % f.delay_every == 0:
                    time.sleep(f.delay)
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("connection",)
                }
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                # A HEAD answer carries the object's length, not the (empty) body's.
                length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

"""A real webhook receiver for event tests: a threaded http.server on a fixed local port that
can be down (not listening), up, or answering errors, and that keeps what it was sent."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    def __init__(self, port: int | None = None, status: int = 200) -> None:
        self.port = port or free_port()
        self.status = status
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.allow_reuse_address = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            posts = list(self.posts)
        return [e for _, body in posts for e in json.loads(body)["events"]]

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.events()
            if predicate(events):
                return events
            time.sleep(0.05)
        raise AssertionError(f"receiver did not get the expected events; got {self.events()}")


def signature_ok(secret: str, headers: dict[str, str], body: bytes) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("x-trustyard-signature", ""), expected)


# Distribution's notification event (notifications/event.go): always-present records, and the
# keys each may carry (omitempty fields appear only when set).
EVENT_KEYS = {"id", "timestamp", "action", "target", "request", "actor", "source"}
TARGET_KEYS = {
    "mediaType", "size", "digest", "urls", "annotations", "platform",
    "length", "repository", "fromRepository", "url", "tag", "references",
}  # fmt: skip
REQUEST_KEYS = {"id", "addr", "host", "method", "useragent"}
ACTOR_KEYS = {"name"}
SOURCE_KEYS = {"addr", "instanceID"}
# What our own actions add to `target` (docs/operations.md, Events); never on Distribution's.
OUR_TARGET_KEYS = {"tag-moved": {"previousDigest"}, "policy-denied": {"reason"}}
OUR_TARGET_KEYS["trust-published"] = {"roles"}


def check_distribution_shape(event: dict[str, Any]) -> None:
    """The event has Distribution's records and no key Distribution does not send."""
    assert set(event) == EVENT_KEYS, set(event) ^ EVENT_KEYS
    allowed = TARGET_KEYS | OUR_TARGET_KEYS.get(event["action"], set())
    assert set(event["target"]) <= allowed, set(event["target"]) - allowed
    assert {"id", "method", "useragent"} <= set(event["request"]) <= REQUEST_KEYS
    assert set(event["actor"]) <= ACTOR_KEYS
    assert set(event["source"]) == SOURCE_KEYS
    assert event["timestamp"].endswith("Z")

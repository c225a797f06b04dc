"""A minimal HTTP/1.1 client on a raw socket, so the client is never what is measured.

Bodies are sent with `socket.sendfile` (zero copy from a page-cached file) and received with
`recv_into` into one reused buffer; keep-alive is used throughout. Only what the benchmarks
need: Content-Length and chunked responses, no TLS, no redirects.
"""

from __future__ import annotations

import os
import select
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

_BUF = 4 << 20


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    received: int  # body bytes received (also when discarded)

    def location(self) -> str:
        """The Location header as a path with query (the reference answers absolute URLs)."""
        parts = urlsplit(self.headers["location"])
        return parts.path + (f"?{parts.query}" if parts.query else "")


class HTTPError(Exception):
    pass


class Connection:
    def __init__(self, host: str, port: int, timeout: float = 120.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.sock: socket.socket | None = None
        self._pending = b""
        self._buf = bytearray(_BUF)

    def _connect(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._pending = b""
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        body_file: int | None = None,
        offset: int = 0,
        count: int = 0,
        keep_body: bool = True,
    ) -> Response:
        """One request; a connection the server closed while idle is reopened once."""
        for attempt in (0, 1):
            sock = self._connect()
            try:
                self._send(sock, method, path, headers or {}, body, body_file, offset, count)
                return self._read_response(sock, method, keep_body)
            except (ConnectionError, HTTPError) as exc:
                self.close()
                if attempt or not isinstance(exc, ConnectionError):
                    raise
        raise AssertionError("unreachable")

    def _send(
        self,
        sock: socket.socket,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        body_file: int | None,
        offset: int,
        count: int,
    ) -> None:
        length = len(body) if body is not None else count if body_file is not None else 0
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if method in ("PUT", "POST", "PATCH") or length:
            lines.append(f"Content-Length: {length}")
        lines += [f"{k}: {v}" for k, v in headers.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        if body is not None and len(body) < 65536:
            sock.sendall(head + body)
            return
        sock.sendall(head)
        if body is not None:
            sock.sendall(body)
        elif body_file is not None and count:
            sent = 0
            while sent < count:
                try:
                    n = os.sendfile(sock.fileno(), body_file, offset + sent, count - sent)
                except BlockingIOError:
                    # the socket has a timeout, so it is non-blocking underneath: wait for room
                    if not select.select([], [sock], [], self.timeout)[1]:
                        raise TimeoutError("send timed out") from None
                    continue
                if n == 0:
                    raise ConnectionError("sendfile sent nothing")
                sent += n

    def _recv_more(self, sock: socket.socket) -> bytes:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        return data

    def _read_response(self, sock: socket.socket, method: str, keep_body: bool) -> Response:
        data = self._pending
        while b"\r\n\r\n" not in data:
            data += self._recv_more(sock)
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            self._pending = rest
            return Response(status, headers, b"", 0)
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body, self._pending = self._read_chunked(sock, rest)
            return Response(status, headers, body if keep_body else b"", len(body))
        length = int(headers.get("content-length", "0"))
        if len(rest) >= length:
            self._pending = rest[length:]
            return Response(status, headers, rest[:length] if keep_body else b"", length)
        self._pending = b""
        if keep_body:
            parts = [rest]
            got = len(rest)
            while got < length:
                chunk = sock.recv(min(_BUF, length - got))
                if not chunk:
                    raise ConnectionError("server closed the connection mid-body")
                parts.append(chunk)
                got += len(chunk)
            return Response(status, headers, b"".join(parts), length)
        view = memoryview(self._buf)
        got = len(rest)
        while got < length:
            n = sock.recv_into(view, min(_BUF, length - got))
            if n == 0:
                raise ConnectionError("server closed the connection mid-body")
            got += n
        return Response(status, headers, b"", length)

    def _read_chunked(self, sock: socket.socket, data: bytes) -> tuple[bytes, bytes]:
        out = bytearray()
        while True:
            while b"\r\n" not in data:
                data += self._recv_more(sock)
            size_line, _, data = data.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(data) < size + 2:
                data += self._recv_more(sock)
            out += data[:size]
            data = data[size + 2 :]
            if size == 0:
                return bytes(out), data


def expect(resp: Response, *statuses: int) -> Response:
    if resp.status not in statuses:
        raise HTTPError(f"HTTP {resp.status} (expected {statuses}): {resp.body[:300]!r}")
    return resp

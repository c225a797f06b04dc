"""The shared bounded-read helper on its own: deadline, declared length, truncated error bodies
and JSON depth, against the malicious server of tests/trust_client/evil.py."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.trust_client.evil import EvilServer, Stream, endless
from trustyard.remote.bounded import BodyError, get_bounded, loads_json, read_body


@pytest.fixture
def srv() -> Iterator[EvilServer]:
    with EvilServer() as s:
        yield s


def test_a_trickling_body_ends_at_the_deadline(srv: EvilServer) -> None:
    def trickle() -> Iterator[bytes]:
        while True:
            yield b" "
            time.sleep(0.02)

    srv.routes["/slow"] = Stream(trickle)
    start = time.monotonic()
    with httpx.Client(timeout=5) as c, c.stream("GET", f"{srv.url}/slow") as r:
        with pytest.raises(BodyError, match=r"took longer than 0\.5 s"):
            read_body(r, 1 << 20, "slow answer", deadline=0.5)
    assert time.monotonic() - start < 5


def test_declared_length_error_bodies_and_limits(srv: EvilServer) -> None:
    srv.routes["/big"] = Stream(endless(b"a", 1 << 30), headers={"Content-Length": str(1 << 30)})
    srv.routes["/err"] = Stream(endless(b"e", 1 << 30), status=500)
    srv.routes["/ok"] = b"x" * 100
    with httpx.Client(timeout=5) as c:
        with c.stream("GET", f"{srv.url}/big") as r:
            with pytest.raises(BodyError, match="larger than the 1000 byte limit"):
                read_body(r, 1000, "big answer")
        err = get_bounded(c, f"{srv.url}/err", 1 << 20, "error")
        assert err.status_code == 500 and len(err.content) == 64 * 1024
        assert get_bounded(c, f"{srv.url}/ok", 100, "ok").content == b"x" * 100
        with pytest.raises(BodyError, match="larger than the 99 byte limit"):
            get_bounded(c, f"{srv.url}/ok", 99, "ok")


def test_json_depth_is_checked_without_recursion() -> None:
    assert loads_json(b"[" * 64 + b"]" * 64, "x") == loads_json(b"[" * 64 + b"]" * 64, "x")
    with pytest.raises(BodyError, match="nested too deeply"):
        loads_json(b"[" * 65 + b"]" * 65, "x")
    with pytest.raises(BodyError, match="nested too deeply"):
        loads_json(b'{"a":' * 100_000, "x")
    with pytest.raises(BodyError, match="x is not valid JSON"):
        loads_json(b"\xff{", "x")

"""Mirror settings, prefix mapping and the singleflight, without servers."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from starlette.requests import ClientDisconnect
from starlette.responses import StreamingResponse
from starlette.types import Message, Scope

from trustyard.config import ConfigError, MirrorSettings, load_settings
from trustyard.http.v2 import _FillResponse
from trustyard.registry import mirror_fill
from trustyard.registry.mirror import Mirror
from trustyard.registry.mirror_fill import SingleFlight, Tee


def settings_with(mirrors: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> object:
    for key in list(os.environ):
        if key.startswith("TRUSTYARD"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TRUSTYARD_MIRRORS", mirrors)
    return load_settings(data_dir=tmp_path)


def test_mirrors_from_env_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = settings_with(
        '[{"prefix": "hub", "upstream": "https://registry-1.docker.io", '
        '"upstream_prefix": "library", "ttl_seconds": 60, "fallbacks": ["https://mirror.gcr.io"]},'
        ' {"prefix": "quay", "upstream": "https://quay.io"}]',
        monkeypatch,
        tmp_path,
    )
    hub, quay = s.mirrors  # type: ignore[attr-defined]
    assert (hub.prefix, hub.upstream_prefix, hub.ttl_seconds) == ("hub", "library", 60)
    assert hub.fallbacks == ("https://mirror.gcr.io",) and hub.tls_verify is True
    assert quay.ttl_seconds == 300 and quay.timeout_seconds == 30


@pytest.mark.parametrize(
    ("mirrors", "message"),
    [
        (
            '[{"prefix": "hub", "upstream": "http://a"}, {"prefix": "hub", "upstream": "http://b"}]',
            "mirror prefixes 'hub' and 'hub' overlap",
        ),
        (
            '[{"prefix": "a", "upstream": "http://a"}, {"prefix": "a/b", "upstream": "http://b"}]',
            "mirror prefixes 'a' and 'a/b' overlap",
        ),
        ('[{"prefix": "hub", "upstream": "ftp://x"}]', "mirrors.0.upstream"),
        ('[{"prefix": "Hub!", "upstream": "http://x"}]', "mirrors.0.prefix"),
        (
            '[{"prefix": "hub", "upstream": "http://x", "password": "p"}]',
            "password needs a username",
        ),
        (
            '[{"prefix": "hub", "upstream": "http://x", "username": "u", "password": "p", '
            '"password_env": "X"}]',
            "give only one of password, password_env",
        ),
        ('[{"prefix": "hub", "upstream": "http://x", "fallbacks": ["nope"]}]', "fallback 'nope'"),
        ('[{"prefix": "hub", "upstream": "http://x", "ttl_seconds": -1}]', "ttl_seconds"),
        ('[{"prefix": "hub", "upstream": "http://x", "colour": 1}]', "colour"),
        ("not json", "mirrors must be a JSON list of mirror tables"),
    ],
)
def test_bad_mirror_settings_are_clear(
    mirrors: str, message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="invalid configuration") as caught:
        settings_with(mirrors, monkeypatch, tmp_path)
    assert message in str(caught.value)


def test_siblings_do_not_overlap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = settings_with(
        '[{"prefix": "hub", "upstream": "http://a"}, {"prefix": "hubx", "upstream": "http://b"}]',
        monkeypatch,
        tmp_path,
    )
    assert len(s.mirrors) == 2  # type: ignore[attr-defined]


def test_password_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UP_PW", "from-env")
    assert (
        MirrorSettings(prefix="a", upstream="http://x", username="u", password_env="UP_PW").secret()
        == "from-env"
    )
    (tmp_path / "pw").write_text("from-file\n")
    m = MirrorSettings(prefix="a", upstream="http://x", username="u", password_file=tmp_path / "pw")
    assert m.secret() == "from-file"
    assert "from-file" not in repr(m)
    monkeypatch.delenv("UP_PW")
    with pytest.raises(ConfigError, match="UP_PW, which is not set"):
        MirrorSettings(prefix="a", upstream="http://x", username="u", password_env="UP_PW").secret()
    with pytest.raises(ConfigError, match="cannot read password_file"):
        MirrorSettings(
            prefix="a", upstream="http://x", username="u", password_file=tmp_path / "none"
        ).secret()


def test_prefix_mapping() -> None:
    hub = Mirror("hub", [], "library")
    assert hub.covers("hub/alpine") and hub.covers("hub") and not hub.covers("hubx/alpine")
    assert hub.upstream_name("hub/alpine") == "library/alpine"
    assert hub.upstream_name("hub/a/b") == "library/a/b"
    assert Mirror("q/x", [], "").upstream_name("q/x/app") == "app"


def test_singleflight_shares_one_run_and_survives_a_cancelled_waiter() -> None:
    async def scenario() -> None:
        flight: SingleFlight[int] = SingleFlight()
        runs = 0
        release = asyncio.Event()

        async def work() -> int:
            nonlocal runs
            runs += 1
            await release.wait()
            return 42

        first = asyncio.create_task(flight.run("k", work))
        second = asyncio.create_task(flight.run("k", work))
        await asyncio.sleep(0)
        first.cancel()  # a client that hung up
        await asyncio.sleep(0)
        assert flight.running("k")
        release.set()
        assert await second == 42
        assert runs == 1 and not flight.running("k")
        assert await flight.run("k", work) == 42 and runs == 2

    asyncio.run(scenario())


def test_tee_detached_reader_never_blocks_the_fill() -> None:
    async def scenario() -> None:
        tee = Tee()
        for i in range(5):
            await tee.put(b"x" * i)
        tee.detach()
        for _ in range(100):  # more than the queue holds: would block if still attached
            await asyncio.wait_for(tee.put(b"y"), 1)

    asyncio.run(scenario())


def test_tee_drops_a_reader_that_never_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A response that never started (client gone first) must not stall the fill."""
    monkeypatch.setattr(mirror_fill, "STALL_SECONDS", 0.05)

    async def scenario() -> None:
        tee = Tee()
        for _ in range(40):
            await asyncio.wait_for(tee.put(b"z"), 1)
        assert not tee.attached

    asyncio.run(scenario())


def test_fill_response_lets_go_of_the_fill_when_the_client_hangs_up() -> None:
    """A send that fails (client gone) leaves the body generator suspended, not closed: the
    streamed-fill response itself detaches the tee, so the fill never waits on that client."""

    async def receive() -> Message:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            raise OSError("client hung up")

    async def scenario() -> None:
        scope: Scope = {"type": "http", "asgi": {"spec_version": "2.4"}}
        plain = Tee()
        body = plain.body()
        for tee in (plain, Tee()):
            tee.open(None)
            await tee.put(b"first chunk")
        with pytest.raises(ClientDisconnect):
            await StreamingResponse(body)(scope, receive, send)
        assert plain.attached  # the generator still lives: the fill would stall on it

        ours = Tee()
        ours.open(None)
        await ours.put(b"first chunk")
        with pytest.raises(ClientDisconnect):
            await _FillResponse(ours, {})(scope, receive, send)
        assert not ours.attached
        for _ in range(100):  # more than the queue holds: the fill runs on alone
            await asyncio.wait_for(ours.put(b"more"), 1)

    asyncio.run(scenario())

"""A worker on the embedded default does not import what only optional features use.

httpx (with click, which it pulls in) costs every worker ~4 MiB RSS after start-up
(docs/benchmarks.md, second round): it is the client of the pull-through mirror, the webhook
poster and remote trust servers, and is imported only where one of them is configured. jinja2
renders the web UI's pages and is imported on the first one. A module-level import anywhere on
the worker's path brings them back; this catches that.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

STARTUP = """
import asyncio, json, sys
from trustyard.http.app import create_app
from trustyard.config import load_settings

async def main():
    app = create_app(load_settings())
    async with app.router.lifespan_context(app):
        pass

asyncio.run(main())
print(json.dumps(sorted(m for m in ("httpx", "click", "jinja2") if m in sys.modules)))
"""


def started(tmp_path: Path, **env: str) -> list[str]:
    """The optional modules a worker's app holds after its lifespan started and stopped."""
    proc = subprocess.run(
        [sys.executable, "-c", STARTUP],
        capture_output=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "TRUSTYARD_DATA_DIR": str(tmp_path / "data"), **env},
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return list(json.loads(proc.stdout.decode().splitlines()[-1]))


def test_the_embedded_default_imports_no_http_client_or_templates(tmp_path: Path) -> None:
    assert started(tmp_path) == []


def test_a_configured_mirror_still_gets_its_client(tmp_path: Path) -> None:
    """The other side: the lazy import really happens where the feature is on."""
    mirrors = json.dumps([{"prefix": "hub", "upstream": "https://127.0.0.1:9"}])
    assert "httpx" in started(tmp_path, TRUSTYARD_MIRRORS=mirrors)

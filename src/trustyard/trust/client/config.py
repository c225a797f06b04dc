"""Where the trust client keeps its state and which server it asks: Notary's `config.json`.

The config file is Notary's (`trust_dir`, `remote_server.url`, `remote_server.root_ca`,
`trust_pinning`), so one file serves both clients; root keys imported with `trustyard trust key
import` are pinned in `<trust_dir>/pins.json` and merged into the file's pins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustyard.trust.client.errors import TrustError
from trustyard.trust.client.pinning import PinningError, TrustPinning, load_root_material


@dataclass(frozen=True)
class ClientConfig:
    trust_dir: Path
    server: str | None = None
    pinning: TrustPinning = field(default_factory=TrustPinning)
    root_ca: Path | None = None

    @property
    def pins_file(self) -> Path:
        return self.trust_dir / "pins.json"


def default_trust_dir() -> Path:
    return Path.home() / ".trustyard" / "trust"


def load_config(
    config_file: Path | None, trust_dir: Path | None = None, server: str | None = None
) -> ClientConfig:
    """Notary's config.json (optional) with command-line overrides and imported pins."""
    raw: dict[str, Any] = {}
    base = Path.cwd()
    if config_file is not None:
        try:
            raw = json.loads(config_file.read_text())
        except OSError as exc:
            raise TrustError(f"cannot read config {config_file}: {exc.strerror}") from None
        except ValueError:
            raise TrustError(f"config {config_file} is not valid JSON") from None
        if not isinstance(raw, dict):
            raise TrustError(f"config {config_file} must be a JSON object")
        base = config_file.parent
    remote = raw.get("remote_server") or {}
    tdir = trust_dir or (
        Path(str(raw["trust_dir"])).expanduser() if raw.get("trust_dir") else default_trust_dir()
    )
    if not tdir.is_absolute():
        tdir = base / tdir
    try:
        pinning = TrustPinning.from_json(raw.get("trust_pinning"), base)
    except PinningError as exc:
        raise TrustError(str(exc)) from None
    pins_file = tdir / "pins.json"
    if pins_file.exists():
        try:
            imported = json.loads(pins_file.read_text()).get("certs", {})
            pinning = pinning.merged({g: tuple(ids) for g, ids in imported.items()})
        except (ValueError, AttributeError, TypeError):
            raise TrustError(f"{pins_file} is corrupt") from None
    root_ca = remote.get("root_ca")
    return ClientConfig(
        trust_dir=tdir,
        server=server or remote.get("url"),
        pinning=pinning,
        root_ca=(base / Path(root_ca).expanduser()) if root_ca else None,
    )


def import_root_pin(config: ClientConfig, data: bytes, source: str, gun: str) -> tuple[str, str]:
    """Pin a known-good root certificate or public key for a GUN (or `prefix*`)."""
    try:
        keyid, what = load_root_material(data, source)
    except PinningError as exc:
        raise TrustError(str(exc)) from None
    pins: dict[str, Any] = {"certs": {}}
    if config.pins_file.exists():
        pins = json.loads(config.pins_file.read_text())
    ids = pins.setdefault("certs", {}).setdefault(gun, [])
    if keyid not in ids:
        ids.append(keyid)
    config.pins_file.parent.mkdir(parents=True, exist_ok=True)
    config.pins_file.write_text(json.dumps(pins, indent=2, sort_keys=True) + "\n")
    return keyid, what

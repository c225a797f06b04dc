"""One typed, frozen settings object. The only module that reads the environment.

Precedence, highest first: command-line flags, `TRUSTYARD_*` environment variables, the TOML
config file (`--config` or `TRUSTYARD_CONFIG`), built-in defaults.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "TRUSTYARD_"
# The resolved settings, handed from `trustyard serve` to its worker processes.
_WORKER_ENV = "TRUSTYARD__RESOLVED_SETTINGS"

MiB = 1024 * 1024


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "trustyard"


class ConfigError(ValueError):
    """The configuration is unusable; the message says which setting and why."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(5000, ge=0, le=65535)
    data_dir: Path = Field(default_factory=default_data_dir)
    workers: int = Field(1, ge=1, le=64)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Registry behaviour
    delete_enabled: bool = True
    max_manifest_bytes: int = Field(4 * MiB, ge=1024)
    max_blob_bytes: int = Field(64 * 1024 * MiB, ge=0, description="0 means no limit")
    fsync: bool = True
    # Garbage collection and upload expiry
    gc_grace_seconds: float = Field(3600.0, ge=0)
    upload_max_age_seconds: float = Field(86400.0, ge=0)
    upload_purge_interval_seconds: float = Field(3600.0, ge=0, description="0 disables")

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "storage"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "metadata.db"


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in Settings.model_fields:
        key = ENV_PREFIX + field.upper()
        if key in environ:
            values[field] = environ[key]
    return values


def _from_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return data


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from defaults, file, environment and `overrides` (None values ignored)."""
    environ = dict(os.environ)
    values: dict[str, Any] = {}
    file = config_file or (
        Path(environ[ENV_PREFIX + "CONFIG"]) if ENV_PREFIX + "CONFIG" in environ else None
    )
    if file is not None:
        values.update(_from_file(file))
    values.update(_from_env(environ))
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None


def export_for_workers(settings: Settings) -> None:
    """Pass the resolved settings to worker processes started after this call."""
    os.environ[_WORKER_ENV] = settings.model_dump_json()


def settings_for_worker() -> Settings:
    """Settings in a worker process: what `export_for_workers` passed, else the usual sources."""
    raw = os.environ.get(_WORKER_ENV)
    return Settings.model_validate_json(raw) if raw else load_settings()

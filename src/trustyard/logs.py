"""Process-wide logging for the entry points (`trustyard serve`, its workers, the CLI)."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level: str) -> None:
    """JSON lines on stderr: one event per line, machine-readable, no secrets."""
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )

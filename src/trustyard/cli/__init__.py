"""The `trustyard` command: one entry point, one module per command group."""

from trustyard.cli.app import app


def main() -> None:
    """Console-script entry point."""
    app()

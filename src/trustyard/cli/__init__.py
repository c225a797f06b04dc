"""The `trustyard` command: one entry point, one module per command group."""

import sys

from trustyard.cli.app import app
from trustyard.metadata.errors import MetadataError
from trustyard.storage.errors import StorageError


def main() -> None:
    """Console-script entry point.

    Commands report their own errors; a store that cannot be reached or read in a command that
    does not (the database or object store down) still ends in one line, never a traceback.
    """
    try:
        app()
    except (MetadataError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)

"""Blob storage: the `Storage` port (base.py) and its backends (filesystem.py, s3.py).

Import the ports from base.py (this package's `__init__` re-exports nothing, so importing a
port never loads a backend); the backends are opened by `trustyard.wiring`.
"""

"""Metadata: the `MetadataStore` port (base.py) and its SQL backends (SQLite, PostgreSQL).

Import the ports from base.py (this package's `__init__` re-exports nothing, so importing a
port never loads a backend); the database is opened (and its schema checked) by
`trustyard.wiring`.
"""

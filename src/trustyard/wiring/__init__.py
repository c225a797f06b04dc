"""The one composition root: `Settings` -> one database, stores, storage, cache, policy, auth.

The only package that names concrete backends (`metadata.sql` and the other `*_sql` stores,
`metadata.sqlite` / `metadata.postgres`, `storage.filesystem` / `storage.s3`, `cache.memory` /
`cache.redis`, the generation stamps); `http.app` and the CLI build on what it opens.
"""

from trustyard.wiring.backends import manifest_lookups, open_cache, open_storage
from trustyard.wiring.database import (
    Database,
    SchemaMismatch,
    is_postgres_url,
    open_database,
    upgrade_database,
)
from trustyard.wiring.services import Services, open_services

__all__ = [
    "Database",
    "SchemaMismatch",
    "Services",
    "is_postgres_url",
    "manifest_lookups",
    "open_cache",
    "open_database",
    "open_services",
    "open_storage",
    "upgrade_database",
]

"""Metadata: the `MetadataStore` port (base.py) and its SQL backends (SQLite, PostgreSQL).

Only the ports are re-exported here; the database is opened (and its schema checked) by
`trustyard.wiring`.
"""

from trustyard.metadata.base import GcPlan, ManifestRecord, MetadataStore, UploadRecord

__all__ = ["GcPlan", "ManifestRecord", "MetadataStore", "UploadRecord"]

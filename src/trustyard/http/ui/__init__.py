"""The web UI at /ui/ (docs/ui.md): server-rendered pages over `registry.browse`.

Reading works without JavaScript. Who may see what is the /v2 API's own rule (`auth.access`):
a repository the caller cannot pull is a 404 on every page and absent from every list.
"""

from __future__ import annotations

from trustyard.http.ui.views import routes

__all__ = ["routes"]

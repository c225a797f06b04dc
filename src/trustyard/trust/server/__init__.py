"""The Notary v1 trust server's use cases: serve and validate TUF metadata, hold server keys.

No HTTP types: the routes are `trustyard.http.trust_routes`. The store is the `trust.store` port.
"""

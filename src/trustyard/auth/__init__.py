"""Authentication and authorization: key IDs, scopes, JWT tokens, users, robots and ACLs.

Use-case layer (same row as `trustyard.registry`): no HTTP types except in `auth.server`,
which holds the thin `/auth/token` routes.
"""

"""Notary v1-compatible trust: the TUF model and store port here, `server/` and `client/` below."""

"""Notary v1-compatible trust server: TUF metadata, validation, server-held keys."""

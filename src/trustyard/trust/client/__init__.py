"""A TUF client for any Notary v1 server: fetch, verify, pin roots, sign and publish, audit.

Never imports the trust server: what both sides need is in `trust.model`, `trust.store`'s records
or `trustyard.crypto`.
"""

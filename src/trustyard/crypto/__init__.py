"""Crypto shared by the server side and the client side: keys, key IDs, chains, PKCS#11, canonical JSON.

Pure (stdlib, `cryptography`, python-pkcs11, securesystemslib's canonical JSON): no HTTP, no storage.
The registry policy, the trust server, the trust client and the signing toolkit all import it; it
imports nothing of theirs.
"""

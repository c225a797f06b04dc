"""Talking to other servers as a client: bounded, deadline-limited reads of what they answer.

Used by the signing toolkit, the trust client and the registry's remote policy sources alike.
"""

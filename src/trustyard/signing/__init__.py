"""Client-side image signing, compatible with ir-sign (seed 004): keys, chain, layout, archives.

Never imports server code (http, registry, storage, metadata): it works on files and layouts.
"""

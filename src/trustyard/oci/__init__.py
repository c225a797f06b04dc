"""Pure OCI domain: digests, names, media types, manifests, referrers, error codes. No I/O."""

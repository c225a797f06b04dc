"""A TUF client for any Notary v1 server: fetch, verify, pin roots, sign and publish, audit.

`repository.TrustClient` is the facade the CLI uses; its parts: `transport` (HTTP, credentials,
the token exchange of `trustyard.remote`), `fetch` and `verify` (a collection as a TUF client
checks it), `trusted` (the last verified copies), `documents`, `roots`, `targets` and
`delegations` (what the client signs), `config` and `pinning`, `keys` (file and PKCS#11 keys).
`remote` is the registry policy's async reader; `lookup` and `audit` serve `trustyard
signatures` and `trustyard trust audit`.

Never imports the trust server nor the signing toolkit: what both sides need is in
`trust.model`, `trustyard.crypto` or `trustyard.remote`.
"""

// Verify a sigstore bundle with sigstore-js (@sigstore/verify), key-based and offline:
// an empty trusted root (no Fulcio, no Rekor, no TSA), our public key found by the bundle's
// `publicKey.hint`, and every log/timestamp threshold at 0.
//   node verify.js BUNDLE.json PUBLIC.pem [ARTIFACT]
// Prints a JSON line {"ok": true, ...} and exits 0, or {"ok": false, "code", "error"} and exits 1.
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const { bundleFromJSON } = require('@sigstore/bundle');
const { Verifier, toSignedEntity, toTrustMaterial } = require('@sigstore/verify');

function main() {
  const [bundlePath, keyPath, artifactPath] = process.argv.slice(2);
  const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(bundlePath, 'utf8')));
  const spki = crypto
    .createPublicKey(fs.readFileSync(keyPath))
    .export({ type: 'spki', format: 'der' });
  const hint = bundle.verificationMaterial.content.publicKey.hint;
  const emptyRoot = {
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [],
    certificateAuthorities: [],
    ctlogs: [],
    timestampAuthorities: [],
  };
  const keys = { [hint]: { rawBytes: spki, keyDetails: 'PKIX_ECDSA_P256_SHA_256' } };
  const verifier = new Verifier(toTrustMaterial(emptyRoot, keys), {
    tlogThreshold: 0,
    ctlogThreshold: 0,
    timestampThreshold: 0,
  });
  const artifact = artifactPath ? fs.readFileSync(artifactPath) : undefined;
  verifier.verify(toSignedEntity(bundle, artifact));
  const payload = JSON.parse(Buffer.from(bundle.content.dsseEnvelope.payload).toString());
  console.log(JSON.stringify({ ok: true, hint, subject: payload.subject }));
}

try {
  main();
} catch (err) {
  console.log(JSON.stringify({ ok: false, code: err.code || null, error: String(err.message) }));
  process.exit(1);
}

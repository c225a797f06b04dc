#!/usr/bin/env bash
# Installs everything trustyard's test suite needs on a fresh Debian machine (run as root):
# the real clients and servers the integration tests drive, then the Python package with its
# test extras into the project's virtual environment (scripts/venv.sh: .venv, made from
# $PYTHON). Safe to run again: apt skips what is there, the venv is reused while up to date.
set -euo pipefail

DEBIAN_PACKAGES=(
  skopeo podman umoci      # container clients used by the interop tests
  docker-registry          # the reference registry (benchmarks)
  wrk hey                  # HTTP load generators (benchmarks: GET with wrk, HEAD with hey)
  openssl curl jq          # signing interop and endpoint checks
  apache2-utils            # htpasswd -B for the htpasswd auth-mode tests
  notary                   # notary-server: token-auth interop
  softhsm2 opensc          # PKCS#11 token for the signing tests; pkcs11-tool (opensc) lists its keys
  gnupg                    # simple-signing (skopeo/podman --sign-by) tests
  nodejs                   # sigstore-js checks of our bundles (npm: below, tests/signatures)
  uidmap fuse-overlayfs    # podman's storage helpers
  postgresql redis-server haproxy   # scale-out backends and the load balancer in front of replicas
  prometheus               # scrapes /metrics in the operations test
  nginx                    # serves `trustyard export static` trees in the export tests
  python3-venv             # Debian's python3 makes the project venv (.venv) only with it
  chromium                 # the web UI's browser tests (Playwright drives /usr/bin/chromium)
)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  command -v docker >/dev/null || missing+=(docker.io)
  command -v npm >/dev/null || missing+=(npm)  # NodeSource's nodejs bundles its own npm
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
else
  echo "not root or no apt-get: install these yourself: ${DEBIAN_PACKAGES[*]}" >&2
fi

bash "$(dirname "$0")/venv.sh" test

#!/usr/bin/env bash
# Makes (or reuses) the project's virtual environment and installs trustyard into it, editable.
#   scripts/venv.sh serve   the package                  scripts/venv.sh test   with the test extra
# PYTHON (default: the python3 first on PATH) makes the venv; VENV (default .venv) is where.
# A no-op in milliseconds when the venv exists for this interpreter and is newer than
# pyproject.toml, so `make serve` starts at once. Debian's python3 is marked externally managed
# (PEP 668): everything goes into the venv, nothing into the system interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

what="${1:-serve}"
case "$what" in
  serve) spec="." ;;
  test) spec=".[test]" ;;
  *) echo "usage: $0 serve|test" >&2; exit 2 ;;
esac
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
# The venv itself (first on PATH inside make) never makes the venv.
PATH="$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF -e "$PWD/$VENV/bin" -e "$VENV/bin" | paste -sd:)"

die() { echo "error: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null || die "no '$PYTHON' on PATH: install Python 3.11 (Debian 12: apt-get install python3) or run make PYTHON=/path/to/python3.11"
# Which interpreter, exactly (no Python started: this is the fast path of every `make serve`);
# a venv made by another one (PYTHON changed) is made again.
made_with="$(readlink -f "$(command -v "$PYTHON")")"

stamp_ok() {
  [ -f "$VENV/.made-with" ] && [ "$(cat "$VENV/.made-with")" = "$made_with" ] \
    && [ -x "$VENV/bin/python" ] && [ "$1" -nt pyproject.toml ]
}
if stamp_ok "$VENV/.installed-$what" || { [ "$what" = serve ] && stamp_ok "$VENV/.installed-test"; }; then
  exit 0
fi
version="$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "trustyard needs Python 3.11 or newer; $made_with is $version (run make PYTHON=/path/to/python3.11)"

# Debian splits ensurepip (and so `python3 -m venv`) into python3-venv.
case "$made_with" in /usr/bin/python3*) debian=yes ;; *) debian=no ;; esac
if ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ "$debian" = yes ]; then
    echo "installing Debian's python3-venv (the venv module's pip) ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
  elif [ "$debian" = yes ]; then
    die "Debian's python3 cannot make a virtual environment without python3-venv; install it as root with: apt-get install python3-venv"
  else
    die "$made_with ($version) has no ensurepip, so it cannot make a virtual environment with pip; use another Python: make PYTHON=/usr/bin/python3"
  fi
fi

if [ -e "$VENV" ] && ! { [ -f "$VENV/.made-with" ] && [ "$(cat "$VENV/.made-with")" = "$made_with" ]; }; then
  echo "making $VENV again: it was not made by $made_with"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "making the virtual environment $VENV with $made_with ($version) ..."
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" || { rm -rf "$VENV"; die "'$PYTHON -m venv $VENV' failed (see above)"; }
  printf '%s\n' "$made_with" >"$VENV/.made-with"
fi
echo "installing trustyard$([ "$what" = test ] && echo ' with its test extra') into $VENV ..."
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec"
touch "$VENV/.installed-$what"

#!/usr/bin/env bash
# Installs schemathesis, the property-based API fuzzer from PyPI that
# api-server/tests/openapi_fuzz.rs runs against ember-api, into a virtual
# environment cached outside the repository (no-op when present). Prints
# the path of its executable on the last line.
set -euo pipefail
SCHEMATHESIS_VERSION=4.32.5
cache_root="${EMBER_CACHE_DIR:-$HOME/.cache/ember}"
venv="$cache_root/schemathesis-$SCHEMATHESIS_VERSION"
# Written last: an install cut short is redone, never taken as finished.
# (A venv's scripts name their interpreter by absolute path, so it is
# built in place rather than staged and moved.)
if [[ ! -f "$venv/.installed" ]]; then
  rm -rf "$venv"
  mkdir -p "$cache_root"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2
  touch "$venv/.installed"
fi
echo "$venv/bin/schemathesis"

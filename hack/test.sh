#!/usr/bin/env bash
# Runs Ember's whole test suite: unit tests, and integration tests against a
# real local control plane and real PostgreSQL servers that the tests start
# themselves. Builds the control-plane binaries first when they are missing
# (hack/build-control-plane.sh; cached outside the repository).
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ember/target}"
EMBER_CP_BIN="$(bash hack/build-control-plane.sh | tail -n 1)"
export EMBER_CP_BIN
cargo test --workspace "$@"

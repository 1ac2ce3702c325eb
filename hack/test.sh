#!/usr/bin/env bash
# Runs Ember's whole test suite: unit tests, and integration tests against a
# real local cluster (control plane, kwok nodes and a real node), real
# PostgreSQL servers and real model weights, all started by the tests.
#
# Builds what is missing first, cached outside the repository: the control
# plane (hack/build-control-plane.sh), the node components
# (hack/build-node.sh), the OCI images from the release binaries
# (hack/build-images.sh), and schemathesis (hack/install-schemathesis.sh). The tests run in the same release build as the
# images, so the workspace is compiled once, not once for tests and once
# for images. The real-node tests need root.
# Extra arguments go to `cargo test` (and skip the dev.sh check).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ember/target}"
EMBER_CP_BIN="$(bash hack/build-control-plane.sh | tail -n 1)"
EMBER_NODE_BIN="$(bash hack/build-node.sh | tail -n 1)"
images="$(bash hack/build-images.sh)"
EMBER_IMAGES_DIR="$(tail -n 1 <<<"$images")"
# schemathesis (PyPI), which fuzzes ember-api from its OpenAPI description.
EMBER_SCHEMATHESIS="$(bash hack/install-schemathesis.sh | tail -n 1)"
export EMBER_CP_BIN EMBER_NODE_BIN EMBER_IMAGES_DIR EMBER_SCHEMATHESIS
# Reproducible images: the same inputs again give the same digests.
if [[ "$(bash hack/build-images.sh 2>/dev/null)" != "$images" ]]; then
  echo "hack/build-images.sh gave other digests on a second run:" >&2
  echo "$images" >&2; bash hack/build-images.sh 2>/dev/null >&2; exit 1
fi
echo "images reproducible:" >&2; head -n 3 <<<"$images" >&2
cargo test --release --workspace "$@"
# The README's main command end to end, as the last test: config/default
# in-cluster (operator and ember-api in pods from the local images), the
# example Tenant and MiniLM on the real node, embeddings through ember-api
# checked against the reference. Skipped when arguments select tests.
if [[ $# -eq 0 ]]; then
  bash hack/dev.sh --check
fi

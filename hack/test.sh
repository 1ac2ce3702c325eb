#!/usr/bin/env bash
# Runs Ember's whole test suite: unit tests, and integration tests against a
# real local cluster (control plane, kwok nodes and a real node), real
# PostgreSQL servers and real model weights, all started by the tests.
#
# Builds what is missing first, cached outside the repository: the control
# plane (hack/build-control-plane.sh), the node components
# (hack/build-node.sh), and the OCI images from the release binaries
# (hack/build-images.sh). The tests run in the same release build as the
# images, so the workspace is compiled once, not once for tests and once
# for images. The real-node tests need root.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ember/target}"
EMBER_CP_BIN="$(bash hack/build-control-plane.sh | tail -n 1)"
EMBER_NODE_BIN="$(bash hack/build-node.sh | tail -n 1)"
EMBER_IMAGES_DIR="$(bash hack/build-images.sh | tail -n 1)"
export EMBER_CP_BIN EMBER_NODE_BIN EMBER_IMAGES_DIR
cargo test --release --workspace "$@"

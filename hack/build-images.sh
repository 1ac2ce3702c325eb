#!/usr/bin/env bash
# Builds Ember's container images as OCI archives, without Docker or any
# container engine: release binaries of ember-runtime, ember-operator and
# ember-api, each packaged by `ember-image` (hack/images/) into
#   $CARGO_TARGET_DIR/images/<name>.oci.tar   image <registry>/<name>:<version>
# Load them with `ctr -n k8s.io images import`, push them with
# `skopeo copy oci-archive:...` (hack/images/README.md).
#
# Reproducible: the same commit built on the same toolchain gives the same
# manifest digests. Every timestamp is SOURCE_DATE_EPOCH, by default the
# last commit's time. The revision label is `git rev-parse HEAD` even when
# the tree has uncommitted changes: a dirty build carries the revision of
# the commit it started from, so only build releases from a clean tree.
#
# Prints one `name digest` line per image, then the images directory as the
# last line (read it with `tail -n 1`).
#
# Environment:
#   CARGO_TARGET_DIR         default $HOME/.cache/ember/target
#   EMBER_IMAGE_REGISTRY     registry and path before the name, default ghcr.io/ember-dev
#   EMBER_IMAGE_REVISION     revision label, default `git rev-parse HEAD`
#   SOURCE_DATE_EPOCH        timestamps, default `git log -1 --format=%ct`
#   EMBER_IMAGES_SKIP_BUILD  1: package the binaries already in $CARGO_TARGET_DIR/release
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ember/target}"
registry="${EMBER_IMAGE_REGISTRY:-ghcr.io/ember-dev}"
images=(ember-runtime ember-operator ember-api)

# A field of [workspace.package] in the root Cargo.toml, e.g. `version`.
workspace_package() {
  awk -v key="$1" '
    /^\[/ { in_section = ($0 == "[workspace.package]") }
    in_section && $1 == key && $2 == "=" { gsub(/"/, "", $3); print $3; exit }
  ' Cargo.toml
}
version="$(workspace_package version)"
source_url="$(workspace_package repository)"
[[ -n $version && -n $source_url ]] || { echo "no version or repository under [workspace.package] in Cargo.toml" >&2; exit 1; }
revision="${EMBER_IMAGE_REVISION:-$(git rev-parse HEAD)}"
# Not exported: the C build scripts (ring, psm, onig_sys through cc) rerun
# when SOURCE_DATE_EPOCH changes, so cargo would rebuild ~30 crates here
# and again for the tests. Only ember-image gets it.
source_date_epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}"
if [[ -n "$(git status --porcelain 2>/dev/null)" ]]; then
  echo "warning: uncommitted changes; the images still say revision $revision" >&2
fi

if [[ "${EMBER_IMAGES_SKIP_BUILD:-0}" != 1 ]]; then
  echo "building release binaries into $CARGO_TARGET_DIR/release" >&2
  # The same build as the test suite's (`cargo test --release`), which also
  # links every binary: a `cargo build --bins` resolves features without the
  # dev-dependencies and would recompile ~30 shared crates, then the tests
  # would recompile them back.
  cargo test --release --workspace --no-run >&2
fi

release="$CARGO_TARGET_DIR/release"
for binary in ember-image "${images[@]}"; do
  [[ -x "$release/$binary" ]] || { echo "missing $release/$binary (build it, or unset EMBER_IMAGES_SKIP_BUILD)" >&2; exit 1; }
done

out="$CARGO_TARGET_DIR/images"
mkdir -p "$out"
for name in "${images[@]}"; do
  digest="$("$release/ember-image" \
    --binary "$release/$name" \
    --image "$registry/$name:$version" \
    --image-version "$version" \
    --revision "$revision" \
    --source "$source_url" \
    --source-date-epoch "$source_date_epoch" \
    --output "$out/$name.oci.tar")"
  echo "$name $digest"
done
echo "$out"

#!/usr/bin/env bash
# Builds the local Kubernetes control plane used by tests and `hack/dev.sh`:
# kube-apiserver, kube-controller-manager, kube-scheduler (k8s.io/kubernetes),
# etcd (go.etcd.io/etcd/server/v3) and kwok, all from their Go modules through
# the Go module proxy, pinned by the go.mod/go.sum files under hack/tools/.
#
# Output goes to a cache outside the repository keyed by the versions, so a
# fresh clone on a warm machine reuses it and a cold machine builds it once.
# Prints the binary directory on stdout (the last line) and does nothing else
# when every binary is already there.
#
# Why from source: clusters here (and users' air-gapped ones) cannot reach
# release download sites; the Go module proxy is the one source we may use.
set -euo pipefail

ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tools/k8s/version.sh
source "$here/tools/k8s/version.sh"
cache_root="${EMBER_CACHE_DIR:-$HOME/.cache/ember}"
bin_dir="${EMBER_CP_BIN:-$cache_root/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION}"

binaries=(kube-apiserver kube-controller-manager kube-scheduler etcd kwok)
missing=0
for b in "${binaries[@]}"; do [[ -x "$bin_dir/$b" ]] || missing=1; done
if [[ $missing == 0 ]]; then
  echo "$bin_dir"
  exit 0
fi

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-trimpath -mod=readonly"
mkdir -p "$bin_dir"
staging="$(mktemp -d "$bin_dir/.build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT

ld="$(k8s_ldflags)"

echo "building Kubernetes $K8S_VERSION control plane into $bin_dir (cold: ~20-40 min on 2 cores)" >&2
(cd "$here/tools/k8s" && go build -ldflags "$ld" -o "$staging/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler)
echo "building etcd $ETCD_VERSION" >&2
(cd "$here/tools/etcd" && go build -ldflags "-s -w" -o "$staging/etcd" go.etcd.io/etcd/server/v3)
echo "building kwok $KWOK_VERSION" >&2
(cd "$here/tools/kwok" && go build -ldflags "-s -w" \
  -o "$staging/kwok" sigs.k8s.io/kwok/cmd/kwok)

# kwok's standalone binary has no built-in stages; keep the upstream stage
# definitions of the pinned version next to the binaries for the harness.
kwok_src="$(cd "$here/tools/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
mkdir -p "$staging/kwok-stages"
for f in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
  pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
  cp "$kwok_src/kustomize/stage/$f.yaml" "$staging/kwok-stages/$(basename "$f").yaml"
done
chmod -R u+w "$staging/kwok-stages"

"$staging/kube-apiserver" --version >&2
"$staging/etcd" --version | sed -n 1p >&2  # sed reads it all: no SIGPIPE under pipefail

# Move into place last so an interrupted build never looks complete.
mv "$staging/kwok-stages" "$bin_dir/" 2>/dev/null || { rm -rf "$bin_dir/kwok-stages"; mv "$staging/kwok-stages" "$bin_dir/"; }
for b in "${binaries[@]}"; do mv -f "$staging/$b" "$bin_dir/$b"; done
echo "$bin_dir"

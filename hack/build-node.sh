#!/usr/bin/env bash
# Builds the parts of a real Kubernetes node for the local cluster, next to
# the control plane of hack/build-control-plane.sh:
#   kubelet, kube-proxy            k8s.io/kubernetes (same pinned module)
#   containerd, shim, ctr          github.com/containerd/containerd/v2
#   runc                           github.com/opencontainers/runc (cgo, seccomp)
#   bridge, host-local, loopback,
#   portmap (CNI plugins)          github.com/containernetworking/plugins
#   coredns                        github.com/coredns/coredns (cluster DNS)
#   pause                          build/pause/linux/pause.c of k8s.io/kubernetes
# all from the Go module proxy, pinned by the go.mod/go.sum files under
# hack/tools/, and gcc for pause and runc's C parts (libseccomp-dev).
#
# Output goes to a cache outside the repository keyed by the versions; prints
# the directory on stdout (the last line) and does nothing else when every
# binary is already there.
set -euo pipefail

CONTAINERD_VERSION=v2.4.2
RUNC_VERSION=v1.4.4
CNI_VERSION=v1.10.0
COREDNS_VERSION=v1.15.0
PAUSE_VERSION=3.10.2

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tools/k8s/version.sh
source "$here/tools/k8s/version.sh"
cache_root="${EMBER_CACHE_DIR:-$HOME/.cache/ember}"
bin_dir="${EMBER_NODE_BIN:-$cache_root/bin/node-k8s-$K8S_VERSION-containerd-$CONTAINERD_VERSION-runc-$RUNC_VERSION-cni-$CNI_VERSION-coredns-$COREDNS_VERSION}"

binaries=(kubelet kube-proxy containerd containerd-shim-runc-v2 ctr runc coredns pause
  cni/bridge cni/host-local cni/loopback cni/portmap)
missing=0
for b in "${binaries[@]}"; do [[ -x "$bin_dir/$b" ]] || missing=1; done
if [[ $missing == 0 ]]; then
  echo "$bin_dir"
  exit 0
fi

export GOTOOLCHAIN=local GOFLAGS="-trimpath -mod=readonly"
mkdir -p "$bin_dir"
staging="$(mktemp -d "$bin_dir/.build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging/cni"

ld="$(k8s_ldflags)"
echo "building kubelet and kube-proxy $K8S_VERSION into $bin_dir" >&2
(cd "$here/tools/k8s" && CGO_ENABLED=0 go build -ldflags "$ld" -o "$staging/" \
  k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)

echo "building containerd $CONTAINERD_VERSION" >&2
(cd "$here/tools/containerd" && CGO_ENABLED=0 go build \
  -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" -o "$staging/" \
  github.com/containerd/containerd/v2/cmd/containerd \
  github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
  github.com/containerd/containerd/v2/cmd/ctr)

# runc needs cgo (its nsenter is C) and libseccomp: the restricted Pod
# Security profile requires RuntimeDefault seccomp, which a runc built
# without seccomp refuses.
echo "building runc $RUNC_VERSION" >&2
(cd "$here/tools/runc" && CGO_ENABLED=1 go build -tags "seccomp urfave_cli_no_docs" \
  -ldflags "-s -w -X main.gitCommit=$RUNC_VERSION" -o "$staging/runc" github.com/opencontainers/runc)

echo "building CNI plugins $CNI_VERSION" >&2
(cd "$here/tools/cni" && CGO_ENABLED=0 go build -ldflags "-s -w" -o "$staging/cni/" \
  github.com/containernetworking/plugins/plugins/main/bridge \
  github.com/containernetworking/plugins/plugins/ipam/host-local \
  github.com/containernetworking/plugins/plugins/main/loopback \
  github.com/containernetworking/plugins/plugins/meta/portmap)

echo "building coredns $COREDNS_VERSION" >&2
(cd "$here/tools/coredns" && CGO_ENABLED=0 go build -ldflags "-s -w" -o "$staging/coredns" github.com/coredns/coredns)

# The pod sandbox ("pause") image cannot be pulled here; its source ships in
# the kubernetes module and builds as a static C program.
k8s_src="$(cd "$here/tools/k8s" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
gcc -Os -static -Wall -DVERSION="v$PAUSE_VERSION" -o "$staging/pause" "$k8s_src/build/pause/linux/pause.c"
strip "$staging/pause"

"$staging/kubelet" --version >&2
"$staging/containerd" --version >&2
"$staging/runc" --version | sed -n 1p >&2

# Move into place last so an interrupted build never looks complete.
mkdir -p "$bin_dir/cni"
for b in "${binaries[@]}"; do mv -f "$staging/$b" "$bin_dir/$b"; done
echo "$bin_dir"
